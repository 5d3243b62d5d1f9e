// dlm playground: chat with this server and watch block diffusion decode, step by step.
//
// The page streams /v1/chat/completions with `stream_options.include_steps`: besides the usual
// `data:` chunks the server then writes one SSE comment line per diffusion step,
// `: dlm.step {json}`, before the chunk(s) carrying that step's text. `fetch` reads the stream
// (EventSource cannot POST); every step is rendered on its own (the view never skips a step)
// and kept, so a finished answer can be replayed with the slider.
"use strict";

const $ = (id) => document.getElementById(id);
const STEP_PREFIX = ": dlm.step ";
const KEY_STORE = "dlm.apiKey";

const state = {
  apiKey: sessionStorage.getItem(KEY_STORE) || "",
  history: [], // the conversation sent with the next prompt
  last: null, // the last answer: {body, result}, for "compare" and the replay slider
  busy: null, // the AbortController of the request in flight
};

// ---- API --------------------------------------------------------------------------------------

/** An error answer of the API, carrying its message. */
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (state.apiKey) h["Authorization"] = "Bearer " + state.apiKey;
  return h;
}

/** The API's own message from an error response (OpenAI shape), else the HTTP status. */
async function errorOf(resp) {
  let message = `HTTP ${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) {
    // not JSON: keep the status line
  }
  if (resp.status === 401) askForKey(message);
  return new ApiError(resp.status, message);
}

async function getJson(path) {
  const resp = await fetch(path, { headers: headers(false) });
  if (!resp.ok) throw await errorOf(resp);
  return resp.json();
}

/** SSE events of a response body: `{step}` for a `: dlm.step` line, `{data}` for a data event. */
async function* sseEvents(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let data = [];
  for (;;) {
    const { value, done } = await reader.read();
    buf += done ? decoder.decode() : decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      let line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (data.length) yield { data: data.join("\n") };
        data = [];
      } else if (line.startsWith(STEP_PREFIX)) {
        yield { step: parseStep(line.slice(STEP_PREFIX.length)) };
      } else if (line.startsWith("data:")) {
        const v = line.slice(5);
        data.push(v.startsWith(" ") ? v.slice(1) : v);
      } // other comments (keep-alives) and fields (event:, id:, retry:) are ignored
    }
    if (done) {
      if (data.length) yield { data: data.join("\n") };
      return;
    }
  }
}

function parseStep(json) {
  try {
    return JSON.parse(json);
  } catch (e) {
    throw new Error(`the server sent a malformed dlm.step line (${e.message}): ${json.slice(0, 120)}`);
  }
}

/**
 * Reads `events` as fast as the network delivers them, stamping each with its arrival time, and
 * hands them out one by one: timings stay true while the display is paced.
 */
function readAhead(events) {
  const items = [];
  let wake = null;
  let finished = false;
  let failure = null;
  (async () => {
    try {
      for await (const ev of events) {
        ev.at = performance.now();
        items.push(ev);
        if (wake) wake();
      }
    } catch (e) {
      failure = e;
    }
    finished = true;
    if (wake) wake();
  })();
  return async function next() {
    while (!items.length) {
      if (failure) throw failure;
      if (finished) return null;
      await new Promise((resolve) => (wake = resolve));
      wake = null;
    }
    return items.shift();
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Streams one chat completion. `onStep(step, steps)` runs for every diffusion step, `onText(piece)`
 * for every text piece, in the order the server sent them. Resolves to what the answer measured.
 */
async function streamChat(body, { onStep, onText, pace = 0, signal }) {
  const t0 = performance.now();
  const resp = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers(true),
    body: JSON.stringify(body),
    signal,
  });
  if (!resp.ok) throw await errorOf(resp);
  const result = { text: "", steps: [], usage: null, timings: null, finish: null, ttftMs: null, totalMs: null };
  const next = readAhead(sseEvents(resp.body));
  for (let ev; (ev = await next()); ) {
    if (signal && signal.aborted) throw new DOMException("stopped", "AbortError");
    if (ev.step) {
      result.steps.push(ev.step);
      if (onStep) onStep(ev.step, result.steps);
      // Each step gets its own turn (observers see every state); slow motion keeps it on screen.
      await (pace > 0 ? sleep(pace) : null);
      continue;
    }
    if (ev.data === "[DONE]") break;
    const chunk = JSON.parse(ev.data);
    if (chunk.error) throw new ApiError(0, chunk.error.message || JSON.stringify(chunk.error));
    const choice = chunk.choices && chunk.choices[0];
    const piece = choice && choice.delta && choice.delta.content;
    if (piece) {
      if (result.ttftMs === null) result.ttftMs = ev.at - t0;
      result.text += piece;
      if (onText) onText(piece);
    }
    if (choice && choice.finish_reason) {
      result.finish = choice.finish_reason;
      result.totalMs = ev.at - t0;
    }
    if (chunk.usage) result.usage = chunk.usage;
    if (chunk.timings) result.timings = chunk.timings;
  }
  if (result.totalMs === null) result.totalMs = performance.now() - t0;
  return result;
}

// ---- the request --------------------------------------------------------------------------------

function numberField(id) {
  const v = $(id).value.trim();
  return v === "" ? undefined : Number(v);
}

/** The request body for `messages` with the controls' settings, in `mode` ("dlm" or "ar"). */
function requestBody(messages, mode) {
  const body = {
    model: $("model").value || undefined,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    max_tokens: numberField("max-tokens"),
    temperature: numberField("temperature"),
    mode,
  };
  if (mode === "dlm") {
    body.stream_options.include_steps = true;
    body.block_size = numberField("block-size");
    body.small_block_size = numberField("sub-block-size");
    body.threshold = numberField("threshold");
  }
  return body;
}

const selectedMode = () => ($("mode-ar").checked ? "ar" : "dlm");

// ---- the diffusion view -------------------------------------------------------------------------

/** Hue for the n-th step of a block: blue for the first, through green, to red from the 12th on. */
const hue = (n) => Math.round(220 - (Math.min(n, 12) - 1) * 20);
/** Background opacity for a confidence (null: decided without one). */
const alpha = (conf) => (conf === null || conf === undefined ? 0.55 : (0.15 + 0.85 * conf).toFixed(3));

function showPiece(piece) {
  if (piece === "") return "∅";
  if (piece.trim() === "") return piece.replace(/\n/g, "↵").replace(/ /g, "␣");
  return piece.replace(/\n/g, "↵");
}

/** The block after `steps[k-1]`: that step, and for each position which step of its block committed it. */
function blockAfter(steps, k) {
  const cur = steps[k - 1];
  let first = k - 1;
  while (first > 0 && steps[first - 1].block === cur.block && steps[first - 1].index === cur.index) first--;
  const how = new Map();
  for (let i = first; i < k; i++) {
    for (const c of steps[i].committed) how.set(c.pos, { n: i - first + 1, conf: c.confidence });
  }
  return { cur, how, fresh: new Set(cur.committed.map((c) => c.pos)) };
}

function tokenCell(view, i, tag) {
  const { cur, how, fresh } = view;
  const cell = document.createElement(tag);
  cell.className = "cell";
  const pos = cur.block_start + i;
  if (i < cur.prompt_len_in_block) {
    cell.classList.add("prompt");
    cell.textContent = showPiece(cur.pieces[i]);
    cell.title = `position ${pos}: prompt token ${cur.tokens[i]}`;
  } else if (cur.masked[i]) {
    cell.classList.add("mask");
    cell.title = `position ${pos}: mask`;
  } else {
    const h = how.get(i);
    cell.classList.add("tok");
    cell.textContent = showPiece(cur.pieces[i]);
    if (h) {
      cell.style.setProperty("--h", hue(h.n));
      cell.style.setProperty("--a", alpha(h.conf));
      if (h.conf === null) cell.classList.add("noconf");
    }
    if (fresh.has(i)) cell.classList.add("new");
    const conf = h && h.conf !== null ? `, confidence ${h.conf.toFixed(3)}` : "";
    cell.title = `position ${pos}: token ${cur.tokens[i]} ${JSON.stringify(cur.pieces[i])}` +
      (h ? `, step ${h.n} of the block${conf}` : "");
  }
  return cell;
}

/** Draws the block after `steps[k-1]` into the live row (or clears it for k = 0). */
function drawRow(steps, k) {
  const row = $("block-row");
  if (k === 0) {
    row.replaceChildren();
    row.dataset.step = "0";
    row.dataset.masks = "0";
    $("step-info").textContent = "no diffusion steps";
    return;
  }
  const view = blockAfter(steps, k);
  const { cur } = view;
  const [lo, hi] = cur.sub_block;
  const width = Math.max(1, hi - lo);
  const cells = cur.tokens.map((_, i) => {
    const cell = tokenCell(view, i, "span");
    if (i >= lo && i < hi) cell.classList.add("active");
    if (i > 0 && i % width === 0) cell.classList.add("edge");
    return cell;
  });
  row.replaceChildren(...cells);
  const masks = cur.masked.filter(Boolean).length;
  row.dataset.step = String(cur.step);
  row.dataset.block = String(cur.block);
  row.dataset.masks = String(masks);
  $("step-info").textContent =
    `block ${cur.block} · step ${cur.step} · sub-block [${lo}, ${hi}) · ${masks} masks left · ` +
    `${cur.forward_passes} forward passes · ${cur.elapsed_ms.toFixed(1)} ms` + (cur.final ? " · block done" : "");
}

/** One finished block as a line of the block transcript. */
function blockLine(steps, k) {
  const view = blockAfter(steps, k);
  const line = document.createElement("div");
  line.className = "block-line";
  const label = document.createElement("span");
  label.className = "block-label";
  const n = k - steps.findIndex((s) => s.block === view.cur.block);
  label.textContent = `block ${view.cur.block} · ${n} steps`;
  line.append(label, ...view.cur.tokens.map((_, i) => tokenCell(view, i, "span")));
  return line;
}

/** The live view: called for every step as it arrives. */
function liveStep(step, steps) {
  drawRow(steps, steps.length);
  if (step.final) {
    const list = $("blocks");
    list.append(blockLine(steps, steps.length));
    list.scrollTop = list.scrollHeight;
  }
}

/** Replays a finished answer at step k (the slider). */
function replay(k) {
  const steps = state.last ? state.last.result.steps : [];
  const lines = [];
  for (let i = 1; i <= k; i++) if (steps[i - 1].final) lines.push(blockLine(steps, i));
  $("blocks").replaceChildren(...lines);
  drawRow(steps, k);
  $("step-label").textContent = k ? `step ${k} / ${steps.length}` : `0 / ${steps.length}`;
}

function resetView() {
  $("blocks").replaceChildren();
  drawRow([], 0);
  $("step-info").textContent = "waiting for the first step…";
  const slider = $("step-slider");
  slider.disabled = true;
  slider.max = "0";
  slider.value = "0";
  $("step-label").textContent = "—";
}

function armSlider(steps) {
  const slider = $("step-slider");
  slider.max = String(steps.length);
  slider.value = String(steps.length);
  slider.disabled = steps.length === 0;
  $("step-label").textContent = steps.length ? `step ${steps.length} / ${steps.length}` : "no steps (AR)";
}

// ---- numbers ------------------------------------------------------------------------------------

/** What an answer measured, as numbers for the stats panel and the comparison. */
function figures(result) {
  const tokens = result.usage ? result.usage.completion_tokens : null;
  const forwards = result.timings ? result.timings.forward_passes
    : result.steps.length ? result.steps[result.steps.length - 1].forward_passes : null;
  return {
    tokens,
    forwards,
    perForward: tokens !== null && forwards ? tokens / forwards : null,
    tokensPerSecond: tokens !== null && result.totalMs > 0 ? tokens / (result.totalMs / 1000) : null,
    ttftMs: result.ttftMs,
    steps: result.steps.length,
  };
}

const fmt = (v, digits = 1) => (v === null || v === undefined || Number.isNaN(v) ? "—" : v.toFixed(digits));

function statsTable(title, f) {
  const rows = [
    ["tokens", fmt(f.tokens, 0)],
    ["forward passes", fmt(f.forwards, 0)],
    ["tokens / forward", fmt(f.perForward, 2)],
    ["tokens / s", fmt(f.tokensPerSecond, 1)],
    ["time to first token", f.ttftMs === null ? "—" : `${fmt(f.ttftMs, 0)} ms`],
    ["diffusion steps", fmt(f.steps, 0)],
  ];
  const dl = document.createElement("dl");
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dd.dataset.stat = k;
    dl.append(dt, dd);
  }
  const h = document.createElement("h3");
  h.textContent = title;
  return [h, dl];
}

function showStats(mode, result) {
  $("stats").replaceChildren(...statsTable(`this answer (${mode.toUpperCase()})`, figures(result)));
}

function showComparison(a, b) {
  const fa = figures(a.result);
  const fb = figures(b.result);
  const box = $("compare-result");
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const t of ["", a.mode.toUpperCase(), b.mode.toUpperCase()]) head.append(Object.assign(document.createElement("th"), { textContent: t }));
  const rows = [
    ["tokens / s", (f) => fmt(f.tokensPerSecond, 1)],
    ["forward passes", (f) => fmt(f.forwards, 0)],
    ["tokens / forward", (f) => fmt(f.perForward, 2)],
    ["time to first token (ms)", (f) => fmt(f.ttftMs, 0)],
    ["tokens", (f) => fmt(f.tokens, 0)],
  ];
  const tbody = table.createTBody();
  for (const [name, get] of rows) {
    const r = tbody.insertRow();
    r.insertCell().textContent = name;
    r.insertCell().textContent = get(fa);
    r.insertCell().textContent = get(fb);
  }
  const speeds = document.createElement("div");
  speeds.className = "speeds";
  const top = Math.max(fa.tokensPerSecond || 0, fb.tokensPerSecond || 0) || 1;
  for (const [run, f] of [[a, fa], [b, fb]]) {
    const bar = document.createElement("div");
    bar.className = `speed speed-${run.mode}`;
    bar.dataset.mode = run.mode;
    bar.dataset.tokensPerSecond = String(f.tokensPerSecond);
    bar.style.setProperty("--w", ((f.tokensPerSecond || 0) / top).toFixed(3));
    bar.textContent = `${run.mode.toUpperCase()} ${fmt(f.tokensPerSecond, 1)} tokens/s`;
    speeds.append(bar);
  }
  const same = a.result.text === b.result.text;
  const note = document.createElement("p");
  note.className = "hint";
  note.textContent = same ? "Both modes wrote the same text." : `${b.mode.toUpperCase()} wrote: ${b.result.text}`;
  const h = document.createElement("h3");
  h.textContent = `${a.mode.toUpperCase()} vs ${b.mode.toUpperCase()}, same prompt`;
  box.replaceChildren(h, speeds, table, note);
  box.hidden = false;
}

// ---- chat ---------------------------------------------------------------------------------------

function addMessage(role, text) {
  const msg = document.createElement("div");
  msg.className = `msg ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "you" : "model";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  msg.append(who, body);
  $("transcript").append(msg);
  scrollDown();
  return msg;
}

function scrollDown() {
  const t = $("transcript");
  t.scrollTop = t.scrollHeight;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function setBusy(controller) {
  state.busy = controller;
  $("send").textContent = controller ? "Stop" : "Send";
  $("compare").disabled = !!controller || !state.last;
  $("new-chat").disabled = !!controller;
}

function describe(e) {
  if (e.name === "AbortError") return "stopped";
  if (e instanceof ApiError) return e.message;
  return `cannot reach the server: ${e.message}`;
}

async function send() {
  if (state.busy) {
    state.busy.abort();
    return;
  }
  const text = $("prompt").value.trim();
  if (!text) return;
  clearError();
  const mode = selectedMode();
  const body = requestBody([...state.history, { role: "user", content: text }], mode);
  const asked = addMessage("user", text);
  const answer = addMessage("assistant", "");
  answer.classList.add("pending");
  const out = answer.querySelector(".text");
  resetView();
  if (mode === "ar") $("step-info").textContent = "AR: one token per forward pass, no diffusion steps";
  const controller = new AbortController();
  setBusy(controller);
  try {
    const result = await streamChat(body, {
      onStep: liveStep,
      onText: (piece) => {
        out.textContent += piece;
        scrollDown();
      },
      pace: Number($("pace").value),
      signal: controller.signal,
    });
    answer.classList.remove("pending");
    state.history = [...body.messages, { role: "assistant", content: result.text }];
    state.last = { mode, body, result };
    $("prompt").value = "";
    showStats(mode, result);
    armSlider(result.steps);
    if (!result.steps.length) $("step-info").textContent = "AR: one token per forward pass, no diffusion steps";
    $("compare").textContent = mode === "dlm" ? "Compare with AR" : "Compare with DLM";
    $("compare-result").hidden = true;
  } catch (e) {
    asked.remove();
    answer.remove();
    $("step-info").textContent = "no answer";
    showError(describe(e));
  } finally {
    setBusy(null);
  }
}

/** Runs the last answer's prompt again in the other mode and shows both speeds side by side. */
async function compare() {
  const last = state.last;
  if (!last || state.busy) return;
  clearError();
  const other = last.mode === "dlm" ? "ar" : "dlm";
  const body = requestBody(last.body.messages, other);
  const box = $("compare-result");
  box.hidden = false;
  box.textContent = `running the same prompt in ${other.toUpperCase()} mode…`;
  const controller = new AbortController();
  setBusy(controller);
  try {
    const result = await streamChat(body, { signal: controller.signal });
    showComparison(last, { mode: other, result });
  } catch (e) {
    box.hidden = true;
    showError(describe(e));
  } finally {
    setBusy(null);
  }
}

function newChat() {
  state.history = [];
  state.last = null;
  $("transcript").replaceChildren();
  $("stats").replaceChildren();
  $("compare-result").hidden = true;
  $("compare").disabled = true;
  clearError();
  resetView();
  $("step-info").textContent = "no answer yet";
}

// ---- server, models, key ------------------------------------------------------------------------

function askForKey(reason) {
  $("key-reason").textContent = !reason
    ? "API key for this server:"
    : state.apiKey
      ? `The server refused the key: ${reason}`
      : `This server needs an API key: ${reason}`;
  $("key-panel").hidden = false;
  $("api-key").focus();
}

const MODELS_FAILED = "cannot list the models: ";

async function loadModels() {
  try {
    const list = await getJson("/v1/models");
    const select = $("model");
    select.replaceChildren(...list.data.map((m) => new Option(m.id, m.id)));
    const card = list.data[0];
    const dlm = card && card.dlm;
    if (dlm) {
      $("block-size").placeholder = `default ${dlm.block_size}`;
      if (dlm.small_block_size) $("sub-block-size").placeholder = `default ${dlm.small_block_size}`;
      if (dlm.threshold !== undefined) $("threshold").placeholder = `default ${dlm.threshold}`;
      const canDlm = dlm.mask_token_id !== null && dlm.mask_token_id !== undefined;
      $("mode-dlm").disabled = !canDlm;
      (dlm.mode === "ar" || !canDlm ? $("mode-ar") : $("mode-dlm")).checked = true;
    }
    $("key-panel").hidden = true;
    if ($("error").textContent.startsWith(MODELS_FAILED)) clearError();
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) showError(`${MODELS_FAILED}${describe(e)}`);
  }
}

/** `/metrics` text → {name: value} for unlabelled series. */
function parseMetrics(text) {
  const out = {};
  for (const line of text.split("\n")) {
    const m = /^([a-z_]+) ([0-9.eE+-]+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

async function pollStatus() {
  const status = $("status");
  try {
    const health = await fetch("/health");
    if (!health.ok) {
      status.textContent = "● loading the model…";
      status.className = "status loading";
      return;
    }
    const m = parseMetrics(await (await fetch("/metrics")).text());
    status.textContent =
      `● ready · ${m.dlm_live_sequences ?? "?"} live sequences · ${m.dlm_slots_busy ?? "?"}/${m.dlm_slots_total ?? "?"} slots busy · ` +
      `queue ${m.dlm_queue_depth ?? "?"} · ${m.dlm_forward_passes_total ?? "?"} forward passes served`;
    status.className = "status ok";
    // Loaded after the page was: fetch the model list now (unless waiting for a key).
    if (!$("model").options.length && $("key-panel").hidden) loadModels();
  } catch (e) {
    status.textContent = "● server unreachable";
    status.className = "status down";
  }
}

function legend() {
  const box = $("legend-steps");
  for (let n = 1; n <= 12; n++) {
    const cell = document.createElement("span");
    cell.className = "cell tok";
    cell.style.setProperty("--h", hue(n));
    cell.style.setProperty("--a", "1");
    cell.textContent = n === 12 ? "12+" : String(n);
    box.append(cell);
  }
}

// ---- wiring -------------------------------------------------------------------------------------

function init() {
  legend();
  resetView();
  $("step-info").textContent = "no answer yet";
  $("chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      send();
    }
  });
  $("compare").addEventListener("click", compare);
  $("new-chat").addEventListener("click", newChat);
  $("step-slider").addEventListener("input", (e) => replay(Number(e.target.value)));
  $("key-button").addEventListener("click", () => askForKey(""));
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.apiKey = $("api-key").value.trim();
    if (state.apiKey) sessionStorage.setItem(KEY_STORE, state.apiKey);
    else sessionStorage.removeItem(KEY_STORE);
    $("api-key").value = "";
    $("key-panel").hidden = true;
    clearError();
    loadModels();
  });
  loadModels();
  pollStatus();
  setInterval(pollStatus, 3000);
}

init();
