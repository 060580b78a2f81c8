// Small SVG charts drawn from the JSON the API returns: the training loss curve, an eval task's
// scores per model, and the candidate's deltas with their intervals. Each chart carries a text
// title and description for screen readers, and the numbers are also in a table beside it.

const NS = "http://www.w3.org/2000/svg";
const COLOURS = ["#0550ae", "#bc4c00", "#116329", "#8250df"];

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function frame(width, height, title, description) {
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  const id = `chart-${Math.random().toString(36).slice(2)}`;
  root.setAttribute("aria-labelledby", `${id}-t ${id}-d`);
  root.append(svg("title", { id: `${id}-t` }, title), svg("desc", { id: `${id}-d` }, description));
  return root;
}

function scale(lo, hi, a, b) { return (v) => (hi === lo ? (a + b) / 2 : a + ((v - lo) / (hi - lo)) * (b - a)); }

// Train loss (line) and eval loss (points) against the step.
export function lossCurve(history, title) {
  const train = history.filter((r) => typeof r.loss === "number");
  const evals = history.filter((r) => typeof r.eval_loss === "number");
  const all = [...train.map((r) => r.loss), ...evals.map((r) => r.eval_loss)];
  const steps = history.map((r) => r.step);
  const W = 560, H = 240, L = 48, R = 12, T = 24, B = 32;
  const x = scale(Math.min(...steps), Math.max(...steps), L, W - R);
  const y = scale(0, Math.max(...all) * 1.05, H - B, T);
  const root = frame(W, H, title, `Training loss from ${train.length ? train[0].loss.toFixed(3) : "-"} to `
    + `${train.length ? train[train.length - 1].loss.toFixed(3) : "-"} over ${steps.length} logged steps; `
    + `${evals.length} evaluation point(s).`);
  axes(root, W, H, L, R, T, B, y, Math.max(...all) * 1.05, "step", "loss");
  if (train.length) {
    root.append(svg("polyline", { fill: "none", stroke: COLOURS[0], "stroke-width": 1.5,
      points: train.map((r) => `${x(r.step).toFixed(1)},${y(r.loss).toFixed(1)}`).join(" ") }));
  }
  for (const r of evals) root.append(svg("circle", { cx: x(r.step), cy: y(r.eval_loss), r: 4, fill: COLOURS[1] }));
  root.append(svg("text", { x: W - R - 150, y: T }, "— train   ● eval"));
  root.append(svg("text", { x: L, y: H - 4 }, String(Math.min(...steps))),
    svg("text", { x: W - R - 20, y: H - 4 }, String(Math.max(...steps))));
  return root;
}

function axes(root, W, H, L, R, T, B, y, top, xLabel, yLabel) {
  root.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#57606a" }),
    svg("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#57606a" }));
  for (const v of [0, top / 2, top]) {
    root.append(svg("text", { x: 4, y: y(v) + 4 }, v.toFixed(2)));
  }
  root.append(svg("text", { x: (W - L) / 2, y: H - 4 }, xLabel), svg("text", { x: 4, y: T - 8 }, yLabel));
}

// Horizontal bars: one group per metric (values in [0, 1]), one bar per model role.
export function scoreBars(task, roles, title) {
  const metrics = [...new Set(roles.flatMap((r) => Object.entries(task.metrics[r])
    .filter(([, v]) => typeof v === "number" && v >= 0 && v <= 1).map(([m]) => m)))].sort();
  if (!metrics.length) return null;
  const band = 10 * roles.length + 8, L = 150, W = 560, T = 24 + 14 * roles.length;
  const H = T + band * metrics.length + 24;
  const x = scale(0, 1, L, W - 16);
  const root = frame(W, H, title, `Scores in [0, 1] of ${roles.join(", ")} on ${metrics.length} metric(s).`);
  roles.forEach((role, i) => {
    root.append(svg("rect", { x: L, y: 8 + 14 * i, width: 10, height: 10, fill: COLOURS[i % COLOURS.length] }),
      svg("text", { x: L + 16, y: 17 + 14 * i }, role));
  });
  metrics.forEach((metric, m) => {
    const top = T + m * band;
    root.append(svg("text", { x: 4, y: top + band / 2 + 2 }, metric));
    roles.forEach((role, i) => {
      const value = task.metrics[role][metric];
      if (typeof value !== "number") return;
      root.append(svg("rect", { x: L, y: top + i * 10, width: Math.max(0.5, x(value) - L), height: 9,
        fill: COLOURS[i % COLOURS.length] }, undefined));
    });
  });
  root.append(svg("line", { x1: L, y1: T - 2, x2: L, y2: H - 20, stroke: "#57606a" }),
    svg("text", { x: L - 4, y: H - 6 }, "0"), svg("text", { x: W - 24, y: H - 6 }, "1"));
  return root;
}

// Points with interval whiskers around a zero line: the candidate minus another model.
export function deltaIntervals(deltas, title) {
  const names = Object.keys(deltas).sort();
  if (!names.length) return null;
  const lo = Math.min(0, ...names.map((n) => deltas[n].low));
  const hi = Math.max(0, ...names.map((n) => deltas[n].high));
  const pad = (hi - lo) * 0.08 || 0.1;
  const L = 150, W = 560, T = 16, row = 22, H = T + row * names.length + 24;
  const x = scale(lo - pad, hi + pad, L, W - 16);
  const root = frame(W, H, title, names.map((n) => `${n}: ${deltas[n].delta.toFixed(3)} `
    + `[${deltas[n].low.toFixed(3)}, ${deltas[n].high.toFixed(3)}]`).join("; "));
  root.append(svg("line", { x1: x(0), y1: T - 8, x2: x(0), y2: H - 20, stroke: "#8c959f", "stroke-dasharray": "3 3" }),
    svg("text", { x: x(0) - 3, y: H - 6 }, "0"),
    svg("text", { x: L, y: H - 6 }, (lo - pad).toFixed(2)), svg("text", { x: W - 40, y: H - 6 }, (hi + pad).toFixed(2)));
  names.forEach((name, i) => {
    const cy = T + i * row + row / 2;
    const d = deltas[name];
    root.append(svg("text", { x: 4, y: cy + 4 }, name),
      svg("line", { x1: x(d.low), y1: cy, x2: x(d.high), y2: cy, stroke: COLOURS[0], "stroke-width": 2 }),
      svg("circle", { cx: x(d.delta), cy, r: 4, fill: COLOURS[0] }));
  });
  return root;
}
