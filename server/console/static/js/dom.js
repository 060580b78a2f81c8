// DOM helpers. Everything a caller stored (titles, texts, names, reports) reaches the page as
// text nodes only: h() never parses markup, so a hostile document title stays a string.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      el.className = value;
    } else if (name === "value" || name === "checked" || name === "disabled") {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(el, ...children);
  return el;
}

export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

// Polite screen-reader announcement of what just happened ("Answer complete", "3 results").
export function announce(message) {
  const region = document.getElementById("announcer");
  region.textContent = "";
  window.setTimeout(() => { region.textContent = message; }, 50);
}

// A table from column headers and rows of cells (strings, numbers or nodes).
export function table(caption, headers, rows, { numeric = [] } = {}) {
  return h("table", {},
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {}, headers.map((name, i) =>
      h("th", { scope: "col", class: numeric.includes(i) ? "num" : null }, name)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell, i) =>
      i === 0 ? h("th", { scope: "row" }, cell)
        : h("td", { class: numeric.includes(i) ? "num" : null }, cell))))));
}

export function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits);
  return String(value);
}

export function errorBox(err) {
  const code = err && err.code ? ` (${err.code})` : "";
  return h("div", { class: "error", role: "alert" }, `${err.message || err}${code}`);
}

export function facts(pairs) {
  return h("dl", { class: "facts" },
    pairs.filter(([, v]) => v !== undefined).map(([k, v]) => [h("dt", {}, k), h("dd", {}, fmt(v))]));
}

export function copyButton(getText, label = "Copy") {
  const button = h("button", { type: "button", class: "secondary" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(getText());
      announce("Copied to the clipboard");
    } catch {
      announce("Copy failed: select the text and copy it by hand");
    }
  });
  return button;
}
