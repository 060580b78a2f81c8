// Chat playground: a model and a collection, a streamed answer with its numbered sources and the
// grounding verdict, and the same request as curl and openai-SDK code to copy.

import { api, stream } from "./api.js";
import { announce, append, clear, copyButton, errorBox, facts, fmt, h } from "./dom.js";

const DEFAULT_MAX_TOKENS = 128;

export async function render(main, session) {
  // The grounded model a newcomer should ask first: a prod alias, then any adapter, then bases
  // (a pretrained base's chat answers are noise).
  const rank = (m) => (m.id.endsWith("@prod") ? 0 : m.parent ? 1 : 2);
  const models = [...(await api("/v1/models")).data].sort((a, b) => rank(a) - rank(b)).map((m) => m.id);
  let collections = [];
  if (session.can("ingest")) {
    collections = (await api("/v1/collections")).data.map((c) => c.name);
  }
  const model = h("select", { id: "chat-model", name: "model" }, models.map((id) => h("option", { value: id }, id)));
  const collection = h("input", { id: "chat-collection", name: "collection", list: "chat-collections",
    value: collections.includes("demo") ? "demo" : (collections[0] || ""), placeholder: "none: plain chat" });
  const mode = h("select", { id: "chat-mode" }, ["hybrid", "dense", "sparse"].map((m) => h("option", { value: m }, m)));
  const maxTokens = h("input", { id: "chat-max-tokens", type: "number", min: 1, max: 4096, value: DEFAULT_MAX_TOKENS });
  const question = h("textarea", { id: "chat-question", required: true, rows: 3 });
  const send = h("button", { type: "submit", id: "chat-send" }, "Ask");
  const stop = h("button", { type: "button", id: "chat-stop", class: "secondary", disabled: true,
    onclick: () => { if (controller) controller.abort(); } }, "Stop");
  const output = h("section", { id: "chat-output", "aria-label": "Answer" });
  const code = h("section", { id: "chat-code", "aria-label": "The request as code" });

  let controller = null;
  const form = h("form", { id: "chat-form" },
    h("div", { class: "row" },
      h("label", { for: "chat-model" }, "Model", model),
      h("label", { for: "chat-collection" }, "Collection (retrieval)", collection,
        h("datalist", { id: "chat-collections" }, collections.map((c) => h("option", { value: c })))),
      h("label", { for: "chat-mode" }, "Search", mode),
      h("label", { for: "chat-max-tokens" }, "Max tokens", maxTokens)),
    h("label", { for: "chat-question" }, "Question", question),
    h("div", { class: "toolbar" }, send, stop));
  // Enter sends, Shift+Enter is a new line (as chat boxes do).
  question.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {
      model: model.value,
      messages: [{ role: "user", content: question.value.trim() }],
      max_tokens: Number(maxTokens.value) || DEFAULT_MAX_TOKENS,
      temperature: 0,
    };
    if (collection.value.trim()) body.rag = { collection: collection.value.trim(), mode: mode.value };
    renderCode(code, body);
    controller = new AbortController();
    send.disabled = true;
    stop.disabled = false;
    try {
      await ask(output, body, controller.signal);
    } finally {
      send.disabled = false;
      stop.disabled = true;
      controller = null;
    }
  });

  main.append(h("h1", {}, "Chat"),
    h("p", { class: "muted" }, "Ask through the OpenAI-compatible API. With a collection, the "
      + "gateway retrieves sources, the answer cites them as [n], and the verdict says whether it "
      + "answered or abstained."),
    form, output, code);
  return () => { if (controller) controller.abort(); };
}

async function ask(output, body, signal) {
  clear(output);
  const answer = h("div", { class: "answer", id: "chat-answer", "aria-live": "off" });
  const verdict = h("div", { id: "chat-verdict" });
  const sources = h("div", { id: "chat-sources" });
  output.append(h("h2", {}, "Answer"), answer, verdict, sources);
  let grounding = null;
  try {
    await stream("/v1/chat/completions", { ...body, stream: true }, (chunk) => {
      if (chunk.sources) renderSources(sources, chunk.sources);
      if (chunk.grounding) grounding = chunk.grounding;
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) answer.append(choice.delta.content);
      }
    }, signal);
  } catch (err) {
    if (err.name === "AbortError") {
      output.append(h("p", { class: "muted", role: "status" }, "Stopped: the gateway cancels the engine's work."));
      return;
    }
    output.append(errorBox(err));
    announce(`Request failed: ${err.message}`);
    return;
  }
  if (grounding) renderVerdict(verdict, grounding);
  linkCitations(answer, sources);
  announce(`Answer complete${grounding ? `: ${grounding.status}` : ""}. ${answer.textContent}`);
}

function renderVerdict(el, g) {
  const answered = g.status === "answered";
  const decision = g.answerability || {};
  const support = g.support || {};
  append(clear(el),
    h("h3", {}, "Grounding verdict"),
    h("p", {},
      h("span", { class: `badge ${answered ? "ok" : "warn"}`, id: "chat-status" }, g.status),
      " ", h("span", { id: "chat-reason" }, `reason: ${g.reason}`),
      g.citations && g.citations.length ? ` · cites ${g.citations.map((i) => `[${i}]`).join(" ")}` : "",
      g.invalid_citations && g.invalid_citations.length
        ? ` · cites sources that do not exist: ${g.invalid_citations.join(", ")}` : ""),
    facts([
      ["best source similarity", g.top_score],
      ["retrieval gate threshold", g.threshold],
      ["answerability score", decision.score],
      ["answerability threshold", decision.threshold],
      ["decided by", decision.decision],
      ["P(abstain first token)", decision.p_abstain],
      ["question coverage", decision.question_coverage],
      ["answer words in cited sources", support.overlap],
      ["support check", support.supported === undefined ? undefined : (support.supported ? "supported" : "NOT supported")],
    ]));
}

// Once the answer is complete, each [n] in it becomes a button that opens source n below.
function linkCitations(answer, sources) {
  const text = answer.textContent;
  if (!/\[\d+\]/.test(text)) return;
  clear(answer);
  for (const part of text.split(/(\[\d+\])/)) {
    const cited = /^\[(\d+)\]$/.exec(part);
    const target = cited && sources.querySelector(`li[value="${cited[1]}"] details`);
    if (!target) { answer.append(part); continue; }
    answer.append(h("button", { type: "button", class: "cite", "aria-label": `Show source ${cited[1]}`,
      onclick: () => { target.open = true; target.querySelector("summary").focus(); } }, part));
  }
}

function renderSources(el, sources) {
  clear(el);
  if (!sources.length) return;
  el.append(h("h3", {}, `Sources (${sources.length})`),
    h("ol", { class: "sources", id: "chat-source-list" }, sources.map((s) => h("li", { value: s.index },
      h("details", {},
        h("summary", {}, `[${s.index}] ${s.title || s.doc_id}`, h("span", { class: "muted" },
          ` · score ${fmt(s.score)} · ${s.doc_id} · updated ${s.updated_at}`)),
        s.uri ? h("p", { class: "muted" }, s.uri) : null,
        h("pre", {}, s.text))))));
}

function renderCode(el, body) {
  const base = `${location.origin}/v1`;
  const payload = JSON.stringify(body, null, 2);
  const curl = `curl ${base}/chat/completions \\\n  -H "Authorization: Bearer $RAGDOCK_API_KEY" \\\n`
    + `  -H "Content-Type: application/json" \\\n  -d '${payload.replaceAll("'", "'\\''")}'`;
  const { model, messages, rag, ...rest } = body;
  const kwargs = Object.entries(rest).map(([k, v]) => `    ${k}=${py(v)},`);
  const python = [
    "import os",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url="${base}", api_key=os.environ["RAGDOCK_API_KEY"])`,
    "reply = client.chat.completions.create(",
    `    model=${py(model)},`,
    `    messages=${py(messages)},`,
    ...kwargs,
    rag ? `    extra_body=${py({ rag })},` : null,
    ")",
    "print(reply.choices[0].message.content)",
    rag ? 'print(reply.model_extra["grounding"], reply.model_extra["sources"])' : null,
  ].filter((line) => line !== null).join("\n");
  append(clear(el),
    h("h2", {}, "This request as code"),
    h("h3", {}, "curl"), h("pre", { id: "chat-curl" }, curl), copyButton(() => curl, "Copy curl"),
    h("h3", {}, "Python (openai SDK)"), h("pre", { id: "chat-python" }, python),
    copyButton(() => python, "Copy Python"));
}

// A JSON value written as a Python literal (True, False, None; ", " and ": " as Python prints).
function py(value) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (Array.isArray(value)) return `[${value.map(py).join(", ")}]`;
  if (typeof value === "object") {
    return `{${Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${py(v)}`).join(", ")}}`;
  }
  return JSON.stringify(value);
}
