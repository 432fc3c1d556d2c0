// keel dashboard: no framework, no network beyond this daemon. Live data
// comes as Server-Sent Events read with fetch(), so that the token travels
// in a header (EventSource cannot send one) and never in a URL.
"use strict";

const SPAN_MS = 15 * 60 * 1000;  // charts show the last 15 minutes
const POINT_MS = 2000;           // at most one chart point per app per 2 s
const MAX_LOG = 1000;            // log lines kept in the page

let token = "";
const hist = new Map();          // app -> [{t, cpu, mem}]
const cards = new Map();         // app -> {root, ...elements}
let lastCrashKey = "";
let logAbort = null;
let eventsAbort = null;
const logLines = [];             // {app, instance, stream, line, time}

const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const k of kids) e.append(k);
  return e;
}

function fmtBytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
function fmtDur(ms) {
  if (ms <= 0) return "–";
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  if (m) return m + "m " + s + "s";
  return s + "s";
}
function fmtAgo(iso) {
  const t = Date.parse(iso);
  if (!t) return "–";
  return fmtDur(Date.now() - t) + " ago";
}

function toast(msg, bad) {
  const t = $("toast");
  t.textContent = msg;
  t.className = bad ? "toast bad" : "toast";
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, bad ? 8000 : 4000);
}

function headers() { return { "Authorization": "Bearer " + token }; }

// ---- sign in ----

function showLogin(msg) {
  $("main").hidden = true;
  $("login").hidden = false;
  const e = $("login-error");
  e.hidden = !msg;
  e.textContent = msg || "";
  setConn(false, "signed out");
}

async function signIn() {
  if (!token) { showLogin(""); return; }
  let resp;
  try {
    resp = await fetch("/api/state", { headers: headers(), cache: "no-store" });
  } catch (err) {
    showLogin("Cannot reach the daemon: " + err.message);
    return;
  }
  if (resp.status === 401) {
    sessionStorage.removeItem("keel-token");
    showLogin("That token is wrong. Run keel web to see the current one.");
    return;
  }
  if (!resp.ok) { showLogin("The daemon answered " + resp.status); return; }
  $("login").hidden = true;
  $("main").hidden = false;
  render(await resp.json());
  followEvents();
  followLogs();
}

// ---- Server-Sent Events over fetch ----

async function sse(url, signal, onEvent, onOpen) {
  const resp = await fetch(url, { headers: headers(), signal, cache: "no-store" });
  if (resp.status === 401) { showLogin("The token is no longer valid. Run keel web to see the current one."); throw new Error("unauthorized"); }
  if (!resp.ok) throw new Error(url + ": " + resp.status);
  if (onOpen) onOpen();
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let name = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, data);
    }
  }
}

function setConn(on, text) {
  const c = $("conn");
  c.className = "conn " + (on ? "on" : "off");
  c.textContent = text;
}

function followEvents() {
  if (eventsAbort) eventsAbort.abort();
  const ctl = new AbortController();
  eventsAbort = ctl;
  const loop = async (delay) => {
    try {
      await sse("/api/events", ctl.signal, (name, data) => {
        const v = JSON.parse(data);
        if (name === "history") loadHistory(v);
        else if (name === "state") render(v);
      }, () => setConn(true, "live"));
      delay = 500;
    } catch (err) {
      if (ctl.signal.aborted || err.message === "unauthorized") return;
    }
    setConn(false, "reconnecting…");
    setTimeout(() => loop(Math.min(delay * 2, 10000)), delay);
  };
  loop(500);
}

// ---- state ----

function loadHistory(h) {
  for (const [app, points] of Object.entries(h || {})) {
    const cur = hist.get(app) || [];
    const merged = points.concat(cur.filter((p) => p.t > (points.length ? points[points.length - 1].t : 0)));
    hist.set(app, merged);
  }
}

function addPoint(app, t, cpu, mem) {
  let ps = hist.get(app);
  if (!ps) { ps = []; hist.set(app, ps); }
  if (ps.length && t - ps[ps.length - 1].t < POINT_MS) {
    ps[ps.length - 1] = { t: ps[ps.length - 1].t, cpu, mem };
  } else {
    ps.push({ t, cpu, mem });
  }
  while (ps.length && ps[0].t < t - SPAN_MS) ps.shift();
}

function render(st) {
  const now = Date.parse(st.time) || Date.now();
  $("updated").textContent = "updated " + new Date(now).toLocaleTimeString();
  const byApp = new Map();
  for (const i of st.instances) {
    if (!byApp.has(i.app)) byApp.set(i.app, []);
    byApp.get(i.app).push(i);
  }
  // Summary.
  let online = 0, restarts = 0, mem = 0, cpu = 0;
  for (const i of st.instances) {
    if (i.status === "online") online++;
    restarts += i.restarts; mem += i.memory_bytes; cpu += i.cpu_percent;
  }
  const sum = $("summary");
  sum.replaceChildren(
    stat("apps", byApp.size),
    stat("instances online", online + " / " + st.instances.length),
    stat("restarts", restarts),
    stat("CPU", cpu.toFixed(1) + " %"),
    stat("memory", fmtBytes(mem)),
    stat("crash groups", st.crashes.length));

  // App cards, in name order; gone apps removed.
  const apps = $("apps");
  for (const [name, card] of cards) {
    if (!byApp.has(name)) { card.root.remove(); cards.delete(name); }
  }
  $("no-apps").hidden = byApp.size > 0;
  for (const name of [...byApp.keys()].sort()) {
    const insts = byApp.get(name);
    let card = cards.get(name);
    if (!card) { card = makeCard(name); cards.set(name, card); }
    apps.append(card.root); // keeps the order
    let c = 0, m = 0;
    for (const i of insts) { c += i.cpu_percent; m += i.memory_bytes; }
    addPoint(name, now, c, m);
    fillCard(card, name, insts);
  }
  renderCrashes(st.crashes);
  // The log tail's app list.
  const sel = $("log-app");
  const have = new Set([...sel.options].map((o) => o.value));
  for (const name of [...byApp.keys()].sort()) {
    if (!have.has(name)) sel.append(el("option", { value: name, text: name }));
  }
}

function stat(label, value) {
  return el("div", { class: "stat" }, el("b", { text: String(value) }), el("span", { class: "muted", text: label }));
}

function actionButton(action, target, label) {
  const b = el("button", { type: "button", text: label, "data-action": action, "data-target": target });
  b.addEventListener("click", () => ask(action, target));
  return b;
}

function makeCard(name) {
  const scale = el("input", { type: "number", min: 1, max: 1024, value: 1, "data-scale": name, title: "instances" });
  const scaleBtn = el("button", { type: "button", text: "Scale", "data-action": "scale", "data-target": name });
  scaleBtn.addEventListener("click", () => ask("scale", name, parseInt(scale.value, 10)));
  const badge = el("span", { class: "badge" });
  const head = el("div", { class: "apphead" }, el("h3", { text: name }), badge,
    el("div", { class: "actions" },
      actionButton("reload", name, "Reload"), actionButton("restart", name, "Restart"),
      actionButton("stop", name, "Stop"), actionButton("start", name, "Start"), scale, scaleBtn));
  const cpu = chart("CPU", "cpu"), mem = chart("memory", "mem");
  const tbody = el("tbody");
  const table = el("table", { class: "grid" },
    el("thead", {}, el("tr", {}, ...["#", "pid", "status", "CPU", "memory", "restarts", "uptime", "reason", ""].map((h, i) =>
      el("th", { text: h, class: i >= 3 && i <= 6 ? "num" : "" })))), tbody);
  const root = el("div", { class: "app", "data-app": name }, head, el("div", { class: "charts" }, cpu.root, mem.root), table);
  return { root, badge, tbody, cpu, mem, scale, scaleSet: false };
}

function fillCard(card, name, insts) {
  const online = insts.filter((i) => i.status === "online").length;
  card.badge.textContent = online + " / " + insts.length + " online";
  card.badge.className = "badge " + (online === insts.length ? "s-online" : online ? "s-waiting" : "s-errored");
  if (!card.scaleSet && document.activeElement !== card.scale) card.scale.value = insts.length;
  const rows = insts.map((i) => {
    const tr = el("tr", { "data-app": i.app, "data-instance": String(i.instance), "data-pid": String(i.pid), "data-status": i.status },
      el("td", { text: String(i.instance) }),
      el("td", { text: i.pid ? String(i.pid) : "–" }),
      el("td", {}, el("span", { class: "badge s-" + i.status, text: i.status })),
      el("td", { class: "num", text: i.cpu_percent.toFixed(1) + " %" }),
      el("td", { class: "num", text: fmtBytes(i.memory_bytes) }),
      el("td", { class: "num", text: String(i.restarts) }),
      el("td", { class: "num", text: i.pid ? fmtDur(i.uptime_ms) : "–" }),
      el("td", { class: "reason", text: i.reason || i.status_text || "" }),
      el("td", {}, actionButton("restart", i.app + ":" + i.instance, "Restart")));
    return tr;
  });
  card.tbody.replaceChildren(...rows);
  const ps = hist.get(name) || [];
  drawChart(card.cpu, ps, (p) => p.cpu, (v) => v.toFixed(1) + " %");
  drawChart(card.mem, ps, (p) => p.mem, fmtBytes);
}

// ---- charts: plain SVG ----

const SVGNS = "http://www.w3.org/2000/svg";
function chart(label, cls) {
  const svg = document.createElementNS(SVGNS, "svg");
  svg.setAttribute("viewBox", "0 0 600 70");
  svg.setAttribute("preserveAspectRatio", "none");
  const area = document.createElementNS(SVGNS, "path");
  area.setAttribute("class", "area");
  const line = document.createElementNS(SVGNS, "path");
  line.setAttribute("class", "line");
  svg.append(area, line);
  const now = el("span");
  const span = el("span", { text: "last 15 min" });
  const root = el("div", { class: "chart " + cls },
    el("div", { class: "label" }, el("span", {}, label + " · ", span), now), svg);
  return { root, svg, area, line, now, span };
}

function drawChart(c, ps, get, fmt) {
  if (!ps.length) { c.line.setAttribute("d", ""); c.area.setAttribute("d", ""); c.now.textContent = ""; return; }
  // The window is the last 15 minutes once there is that much; before,
  // what there is (at least a minute), so a fresh page shows a line.
  const t1 = ps[ps.length - 1].t;
  const span = Math.min(SPAN_MS, Math.max(60000, t1 - ps[0].t));
  const t0 = t1 - span;
  c.span.textContent = span >= SPAN_MS ? "last 15 min" : "last " + fmtDur(span);
  let max = 0;
  for (const p of ps) max = Math.max(max, get(p));
  max = max > 0 ? max * 1.15 : 1;
  const x = (t) => ((t - t0) / span) * 600;
  const y = (v) => 68 - (v / max) * 64;
  let d = "";
  ps.forEach((p, i) => { d += (i ? "L" : "M") + x(p.t).toFixed(1) + " " + y(get(p)).toFixed(1); });
  c.line.setAttribute("d", d);
  c.area.setAttribute("d", d + "L" + x(t1).toFixed(1) + " 70L" + x(ps[0].t).toFixed(1) + " 70Z");
  c.now.textContent = "now " + fmt(get(ps[ps.length - 1])) + " · peak " + fmt(max / 1.15);
}

// ---- crash groups ----

function renderCrashes(groups) {
  const key = JSON.stringify(groups.map((g) => [g.id, g.count, g.last_seen]));
  $("no-crashes").hidden = groups.length > 0;
  $("crashes").hidden = groups.length === 0;
  const tbody = $("crashes").tBodies[0];
  if (key === lastCrashKey) {
    // Only the "ago" columns move.
    for (const tr of tbody.rows) {
      const g = groups.find((x) => x.id === tr.dataset.id);
      if (g) { tr.cells[3].textContent = fmtAgo(g.first_seen); tr.cells[4].textContent = fmtAgo(g.last_seen); }
    }
    return;
  }
  lastCrashKey = key;
  const open = new Set([...tbody.querySelectorAll("details[open]")].map((d) => d.dataset.id));
  tbody.replaceChildren(...groups.map((g) => {
    const det = el("details", { "data-id": g.id }, el("summary", { text: g.title || g.signature }), el("pre", { text: g.last_stack || "(no stack recorded)" }));
    det.open = open.has(g.id);
    return el("tr", { "data-id": g.id },
      el("td", { text: g.app }), el("td", { class: "title" }, det), el("td", { class: "num", text: String(g.count) }),
      el("td", { text: fmtAgo(g.first_seen), title: g.first_seen }), el("td", { text: fmtAgo(g.last_seen), title: g.last_seen }));
  }));
}

// ---- actions ----

const verbs = {
  reload: ["Reload", "Start a new process for each instance, wait until it is ready, then stop the old one. No request is dropped for apps that share sockets."],
  restart: ["Restart", "Stop the process, then start a new one. Requests in flight may fail."],
  stop: ["Stop", "Stop gracefully: signal, wait kill_timeout, then SIGKILL. It stays stopped until started."],
  start: ["Start", "Start the instances that are stopped or errored."],
  scale: ["Scale", "Change the number of instances."],
};

function ask(action, target, n) {
  const [verb, what] = verbs[action];
  $("modal-title").textContent = action === "scale" ? `Scale ${target} to ${n} instances?` : `${verb} ${target}?`;
  $("modal-text").textContent = what;
  const ok = $("modal-ok");
  ok.textContent = verb;
  ok.dataset.action = action;
  $("modal").hidden = false;
  ok.focus();
  ok.onclick = async () => {
    $("modal").hidden = true;
    await act(action, target, n);
  };
}

async function act(action, target, n) {
  const body = { action, target };
  if (action === "scale") body.instances = n;
  toast(`${action} ${target}…`);
  try {
    const resp = await fetch("/api/action", {
      method: "POST", headers: Object.assign({ "Content-Type": "application/json" }, headers()), body: JSON.stringify(body),
    });
    const v = await resp.json();
    if (resp.status === 401) { showLogin("The token is no longer valid."); return; }
    if (!resp.ok) { toast(`${action} ${target} failed: ${v.error}`, true); return; }
    toast(`${action} ${target}: done` + (v.message ? " — " + v.message : ""));
  } catch (err) {
    toast(`${action} ${target} failed: ${err.message}`, true);
  }
}

// ---- logs ----

function followLogs() {
  if (logAbort) logAbort.abort();
  const ctl = new AbortController();
  logAbort = ctl;
  logLines.length = 0;
  drawLogs();
  const app = $("log-app").value;
  const loop = async (delay) => {
    try {
      await sse("/api/logs?lines=200" + (app ? "&app=" + encodeURIComponent(app) : ""), ctl.signal, (name, data) => {
        if (name !== "log") return;
        logLines.push(JSON.parse(data));
        if (logLines.length > MAX_LOG) logLines.splice(0, logLines.length - MAX_LOG);
        scheduleLogs();
      });
    } catch (err) {
      if (ctl.signal.aborted || err.message === "unauthorized") return;
    }
    setTimeout(() => loop(Math.min(delay * 2, 10000)), delay);
  };
  loop(1000);
}

let logTimer = 0;
function scheduleLogs() {
  if (!logTimer) logTimer = setTimeout(() => { logTimer = 0; drawLogs(); }, 150);
}

function drawLogs() {
  if ($("log-pause").checked) return;
  const f = $("log-filter").value.toLowerCase();
  const pre = $("log");
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  const shown = logLines.filter((l) => !f || l.line.toLowerCase().includes(f) || l.app.toLowerCase().includes(f));
  pre.replaceChildren(...shown.map((l) => el("div", { class: l.stream === "err" ? "err" : "" },
    el("span", { class: "src", text: `${l.app}:${l.instance} ` }), l.line)));
  $("log-count").textContent = `${shown.length} of ${logLines.length} lines`;
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

// ---- start ----

// tokenFromHash takes the token from a URL like keel web prints
// (/#token=…), keeps it for this tab and drops it from the address bar.
function tokenFromHash() {
  const m = /(?:^#|&)token=([0-9a-fA-F]+)/.exec(location.hash);
  if (!m) return false;
  token = m[1];
  sessionStorage.setItem("keel-token", token);
  history.replaceState(null, "", location.pathname);
  return true;
}

window.addEventListener("hashchange", () => { if (tokenFromHash()) signIn(); });

window.addEventListener("DOMContentLoaded", () => {
  if (!tokenFromHash()) token = sessionStorage.getItem("keel-token") || "";
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("keel-token", token);
    signIn();
  });
  $("modal-cancel").addEventListener("click", () => { $("modal").hidden = true; });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") $("modal").hidden = true; });
  $("log-app").addEventListener("change", followLogs);
  $("log-filter").addEventListener("input", drawLogs);
  $("log-pause").addEventListener("change", drawLogs);
  signIn();
});
