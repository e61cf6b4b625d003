// Drover's dashboard: a sign-in with a bearer token (kept in this tab's sessionStorage), the
// workflow list with filters, and a workflow's detail live over its event stream, with controls for
// operators. Everything it shows comes from the REST API; values are set as text, never as HTML.
"use strict";

const TOKEN_KEY = "drover.token";
const main = () => document.getElementById("main");
let stream = null; // the open event stream's AbortController
let role = null;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    // Through the CSSOM: the page's CSP refuses inline style attributes.
    else if (k === "style") Object.assign(e.style, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

class ApiError extends Error {
  constructor(status, body) {
    super(`${status} ${body.error || ""}: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}`);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  let json;
  try { json = JSON.parse(text); } catch { json = { error: "error", detail: text }; }
  if (resp.status === 401) { signOut(json.detail); throw new ApiError(401, json); }
  if (!resp.ok) throw new ApiError(resp.status, json);
  return json;
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  role = null;
  renderSignIn(message);
}

function renderSignIn(message) {
  closeStream();
  document.getElementById("who").textContent = "";
  document.getElementById("signout").hidden = true;
  const input = el("input", { type: "password", id: "token", "data-testid": "token", placeholder: "API token", autocomplete: "off" });
  const form = el("form", { class: "signin", onsubmit: async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try { await whoami(); route(); } catch (e) { /* signOut already showed why */ }
  } },
    el("h2", {}, "Sign in"),
    el("label", { for: "token" }, "Bearer token (operator or viewer)"),
    input,
    el("button", { type: "submit", "data-testid": "signin" }, "Sign in"),
    message ? el("div", { class: "error", "data-testid": "signin-error" }, message) : null);
  main().replaceChildren(form);
  input.focus();
}

async function whoami() {
  const me = await api("GET", "/v1/whoami");
  role = me.role;
  document.getElementById("who").textContent = `${me.name} (${me.role})`;
  document.getElementById("signout").hidden = false;
}

function closeStream() { if (stream) { stream.abort(); stream = null; } }

const ENDED = ["succeeded", "failed", "cancelled"];
function age(ms) {
  const s = Math.max(0, Math.floor((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s`; if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`; return `${Math.floor(s / 86400)}d`;
}
function stateCell(w) {
  return el("span", { class: `state ${w.state}`, "data-testid": "state" }, w.state + (w.paused ? " (paused)" : ""));
}
function bar(fraction, testid) {
  const pct = Math.round(fraction * 1000) / 10;
  return el("span", { class: "bar", title: `${pct}%`, "data-testid": testid, "data-value": pct },
    el("span", { style: { width: `${pct}%` } }));
}

// How far along a workflow is: as `drover watch` computes it (services/cli/watch.rs).
function fraction(w, stepsTotal) {
  if (w.state === "succeeded") return 1;
  const p = w.progress || {};
  if (typeof p.percent === "number") return Math.min(1, Math.max(0, p.percent / 100));
  if (typeof p.bytes === "number" && p.total_bytes > 0) return Math.min(1, p.bytes / p.total_bytes);
  const step = typeof w.step_index === "number" ? w.step_index : (typeof w.step === "number" ? w.step : 0);
  const kids = (w.children || []);
  const within = kids.length ? kids.reduce((a, c) => a + fraction(c, c.steps_total || 0), 0) / kids.length : 0;
  return Math.min(1, Math.max(0, (step + within) / Math.max(1, stepsTotal)));
}

function label(w) {
  const i = w.input || {};
  // A workflow that names a cluster says which: node names repeat across clusters.
  const where = w.cluster ? ` (${w.cluster})` : "";
  if (i.namespace && i.vmi) return `${w.kind} ${i.namespace}/${i.vmi}${where}`;
  const name = i.node || i.name || i.hostname || i.machine;
  return (name ? `${w.kind} ${name}` : w.kind) + where;
}

function note(progress) {
  if (!progress || typeof progress !== "object") return "";
  return Object.entries(progress)
    .filter(([, v]) => ["string", "number", "boolean"].includes(typeof v))
    .map(([k, v]) => `${k}=${v}`).join(" ");
}

// The list.
async function renderList(params) {
  closeStream();
  const q = new URLSearchParams(params);
  const state = el("select", { "data-testid": "filter-state" },
    ["", "pending", "running", "waiting", "compensating", "succeeded", "failed", "cancelled", "paused"]
      .map((s) => el("option", { value: s, selected: q.get("state") === s }, s || "any state")));
  const kind = el("input", { placeholder: "kind", value: q.get("kind") || "", "data-testid": "filter-kind" });
  const lbl = el("input", { placeholder: "label key=value", value: q.get("label") || "" });
  const all = el("input", { type: "checkbox", checked: q.get("all") === "true", "data-testid": "filter-all" });
  const apply = () => {
    const n = new URLSearchParams();
    if (state.value) n.set("state", state.value);
    if (kind.value.trim()) n.set("kind", kind.value.trim());
    if (lbl.value.trim()) n.set("label", lbl.value.trim());
    if (all.checked) n.set("all", "true");
    location.hash = `#/?${n}`;
  };
  const filters = el("div", { class: "filters" }, state, kind, lbl,
    el("label", {}, all, " children too"), el("button", { onclick: apply }, "Filter"));
  const body = el("tbody");
  const error = el("div", { class: "error" });
  const more = el("button", { hidden: true }, "More");
  main().replaceChildren(el("h2", {}, "Workflows"), filters, error,
    el("table", { "data-testid": "list" },
      el("thead", {}, el("tr", {}, ["ID", "Kind", "State", "Step", "Age"].map((h) => el("th", {}, h)))), body),
    more);
  let cursor = null;
  const load = async (append) => {
    const p = new URLSearchParams(q);
    p.set("limit", "50");
    if (append && cursor) p.set("cursor", cursor);
    try {
      const page = await api("GET", `/v1/workflows?${p}`);
      const rows = page.items.map((w) => el("tr", { class: "row", "data-testid": "row", "data-id": w.id,
        onclick: () => { location.hash = `#/w/${encodeURIComponent(w.id)}`; } },
        el("td", { class: "id" }, w.id), el("td", {}, w.kind), el("td", {}, stateCell(w)),
        el("td", {}, ENDED.includes(w.state) ? "" : String(w.step)), el("td", {}, age(w.created_ms))));
      if (append) body.append(...rows); else body.replaceChildren(...rows);
      if (!rows.length && !append) body.append(el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No workflows.")));
      cursor = page.next_cursor || null;
      more.hidden = !cursor;
      error.textContent = "";
    } catch (e) { error.textContent = e.message; }
  };
  more.onclick = () => load(true);
  await load(false);
}

// One workflow, live.
function renderDetail(id) {
  closeStream();
  const head = el("div");
  const controls = el("div", { class: "controls" });
  const error = el("div", { class: "error", "data-testid": "control-error" });
  const timeline = el("tbody");
  const children = el("tbody");
  const status = el("div", { class: "muted", "data-testid": "stream" }, "connecting");
  main().replaceChildren(head, controls, error, status,
    el("h3", {}, "Steps"),
    el("table", { class: "timeline" }, el("thead", {}, el("tr", {},
      ["#", "Step", "Status", "Attempts", "Timeline"].map((h) => el("th", {}, h)))), timeline),
    el("h3", {}, "Children"),
    el("table", { "data-testid": "children" }, el("thead", {}, el("tr", {},
      ["Workflow", "State", "Step", "Progress", ""].map((h) => el("th", {}, h)))), children));
  const control = async (action, body) => {
    error.textContent = "";
    try {
      await api("POST", `/v1/workflows/${encodeURIComponent(id)}/${action}`, body === undefined ? null : body);
    } catch (e) { error.textContent = e.message; }
  };
  const draw = (w) => {
    const total = (w.steps || []).length;
    head.replaceChildren(...[el("h2", {}, label(w), " ", stateCell(w)),
      el("div", { class: "muted" }, el("span", { class: "id" }, w.id), `  created ${age(w.created_ms)} ago`),
      el("div", {}, "Overall ", bar(fraction(w, total), "overall"),
        " ", el("span", { "data-testid": "overall-text" }, `${Math.round(fraction(w, total) * 1000) / 10}%`)),
      w.error ? el("div", { class: "error" }, `Error: ${w.error.message || JSON.stringify(w.error)}`) : null,
      w.progress ? el("div", { class: "muted" }, note(w.progress)) : null].filter(Boolean));
    controls.replaceChildren();
    if (role === "operator" && !ENDED.includes(w.state)) {
      controls.append(
        w.paused ? el("button", { "data-testid": "resume", onclick: () => control("resume") }, "Resume")
                 : el("button", { "data-testid": "pause", onclick: () => control("pause") }, "Pause"),
        el("button", { "data-testid": "cancel", onclick: () => {
          if (confirm(`Cancel ${w.kind} ${w.id}? Completed steps are compensated.`)) control("cancel");
        } }, "Cancel"));
      const name = el("input", { placeholder: "signal name", "data-testid": "signal-name" });
      const payload = el("input", { placeholder: "JSON payload", "data-testid": "signal-payload" });
      controls.append(name, payload, el("button", { "data-testid": "signal", onclick: () => {
        let body = null;
        try { body = payload.value.trim() ? JSON.parse(payload.value) : null; }
        catch (e) { error.textContent = `the payload is not JSON: ${e.message}`; return; }
        const signal = name.value.trim();
        // A signal moves a workflow on (a node back from maintenance, an approval): ask first.
        if (confirm(`Send signal ${signal} to ${w.kind} ${w.id}?`)) control(`signals/${encodeURIComponent(signal)}`, body);
      } }, "Send signal"));
    }
    if (role === "operator" && w.state === "failed") {
      controls.append(el("button", { "data-testid": "retry", onclick: () => {
        if (confirm(`Retry ${w.kind} ${w.id} from its failed step?`)) control("retry");
      } }, "Retry"));
    }
    const start = w.created_ms;
    const end = Math.max(w.finished_ms || Date.now(), start + 1);
    timeline.replaceChildren(...(w.steps || []).map((s) => {
      const from = s.started_ms ? (s.started_ms - start) / (end - start) : 0;
      // A step still running reaches now; an ended one its last attempt's end.
      const to = s.status === "current" ? 1 : (s.ended_ms ? (s.ended_ms - start) / (end - start) : from);
      const span = el("span", { class: "bar" }, el("span", { style: { left: `${from * 100}%`, width: `${Math.max(0.5, (to - from) * 100)}%` } }));
      return el("tr", {}, el("td", {}, s.index), el("td", {}, s.name), el("td", {}, s.status),
        el("td", {}, s.attempts), el("td", {}, s.started_ms ? span : ""));
    }));
    const rows = [];
    const add = (c, depth) => {
      rows.push(el("tr", { class: `indent${depth}`, "data-testid": `child-${depth}`, "data-id": c.id },
        el("td", {}, el("a", { href: `#/w/${encodeURIComponent(c.id)}` }, label(c))),
        el("td", {}, stateCell(c)), el("td", {}, ENDED.includes(c.state) ? "" : (c.step || "")),
        el("td", {}, bar(fraction(c, c.steps_total || 0), "child-progress")),
        el("td", { class: "muted" }, note(c.progress))));
      for (const g of c.children || []) add(g, depth + 1);
    };
    for (const c of w.children || []) add(c, 1);
    children.replaceChildren(...rows);
  };
  const controller = new AbortController();
  stream = controller;
  const follow = async () => {
    while (!controller.signal.aborted) {
      try {
        const resp = await fetch(`/v1/workflows/${encodeURIComponent(id)}/events?depth=2`, {
          headers: { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}`, Accept: "text/event-stream" },
          signal: controller.signal });
        if (!resp.ok) {
          const body = await resp.json().catch(() => ({}));
          if (resp.status === 401) { signOut(body.detail); return; }
          status.textContent = new ApiError(resp.status, body).message;
          return;
        }
        status.textContent = "live";
        const reader = resp.body.getReader();
        const decoder = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
          let at;
          while ((at = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, at);
            buf = buf.slice(at + 2);
            let event = "message"; const data = [];
            for (const line of block.split("\n")) {
              const i = line.indexOf(":");
              const field = i < 0 ? line : line.slice(0, i);
              const v = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
              if (field === "event") event = v; else if (field === "data") data.push(v);
            }
            if (!data.length) continue;
            const json = JSON.parse(data.join("\n"));
            if (event === "workflow") draw(json);
            else if (event === "end") { status.textContent = `ended: ${json.state}`; return; }
            else if (event === "error") status.textContent = json.detail;
          }
        }
      } catch (e) {
        if (controller.signal.aborted) return;
        status.textContent = `reconnecting: ${e.message}`;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  };
  follow();
}

async function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) { renderSignIn(); return; }
  if (!role) { try { await whoami(); } catch { return; } }
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/w\/(.+)$/);
  if (m) renderDetail(decodeURIComponent(m[1]));
  else renderList((hash.split("?")[1]) || "");
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("signout").addEventListener("click", () => signOut());
  route();
});
