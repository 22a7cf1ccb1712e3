// The live page: stats and events over server-sent events, the MJPEG stream in an <img>, controls.
"use strict";
const $ = id => document.getElementById(id);
const fmt = (v, digits = 1, unit = "") => v == null ? "-" : Number(v).toFixed(digits) + unit;
const esc = s => String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const STAGE_COLORS = {capture: "#8dd3c7", preprocess: "#ffffb3", infer: "#fb8072", postprocess: "#80b1d3", render: "#fdb462", output: "#b3de69"};
let state = {paused: false, overlay: true};
let memoryStarted = false;

const speed = new LiveChart($("chart-fps"), $("legend-fps"), [{key: "fps", label: "FPS", color: "#4fb3ff"}]);
const latency = new LiveChart($("chart-latency"), $("legend-latency"), [
  {key: "latency_p50_ms", label: "latency p50 ms", color: "#69d18b"},
  {key: "latency_p95_ms", label: "latency p95 ms", color: "#ffb347"},
]);
const stages = new LiveChart($("chart-stages"), $("legend-stages"),
  Object.entries(STAGE_COLORS).map(([key, color]) => ({key, label: key + " ms", color})));

function describeEvent(e) {
  const box = e.box ? ` box [${e.box.join(", ")}]` : "";
  switch (e.type) {
    case "object": return `object ${e.what}` + (e.what === "appeared" ? `: score ${fmt(e.score, 2)}${e.depth_m != null ? ", " + fmt(e.depth_m, 2) + " m" : ""}${box}` : "");
    case "clip_query": return `<span class="match">query match</span> "${esc(e.query)}" score ${fmt(e.score, 3)} (frame ${e.index})`;
    case "label": return `label ${esc(e.label)} ${fmt(100 * e.prob, 0)}%`;
    case "memory": return `remembered frame ${e.index}` + (e.label ? ` (${esc(e.label)})` : "");
    case "control": return `run ${e.what}`;
    default: return esc(e.type || "event");
  }
}

function addEvent(e) {
  const li = document.createElement("li");
  li.className = "event " + (e.type || "");
  const t = e.time ? new Date(e.time * 1000).toLocaleTimeString() : "";
  li.innerHTML = `<span class="t">${t}</span>${describeEvent(e)}`;
  const list = $("events");
  list.insertBefore(li, list.firstChild);
  while (list.children.length > 50) list.removeChild(list.lastChild);
}

function showStats(s) {
  $("title").textContent = s.title;
  $("fps").textContent = fmt(s.fps, 1);
  $("latency").textContent = `${fmt(s.latency_p50_ms, 1)} / ${fmt(s.latency_p95_ms, 1)} ms`;
  $("frames").textContent = s.frames;
  $("dropped").textContent = s.dropped;
  $("viewers").textContent = s.viewers;
  const o = s.object || {};
  $("obj-box").textContent = o.box ? `[${o.box.join(", ")}]` : "none";
  $("obj-score").textContent = fmt(o.score, 3);
  $("obj-depth").textContent = fmt(o.depth_m, 2, " m");
  if (s.clip) {
    $("clip").hidden = false;
    const c = s.clip;
    $("clip-label").textContent = c.label ? `${c.label} (${fmt(100 * c.prob, 0)}%)` : "-";
    $("clip-query").textContent = c.query ? `"${c.query}"` : "-";
    $("clip-score").textContent = c.query_score == null ? "-" : fmt(c.query_score, 3) + (c.query_match ? " MATCH" : "");
    $("clip-hits").textContent = c.query_events;
    $("clip-indexed").textContent = c.indexed;
  }
  speed.push(s);
  latency.push(s);
  stages.push(s.stages_ms || {});
  state.paused = s.paused; state.overlay = s.overlay;
  $("pause").textContent = s.paused ? "Resume" : "Pause";
  $("pause").classList.toggle("on", s.paused);
  $("overlay").classList.toggle("on", s.overlay);
  if (s.memory && !memoryStarted) { memoryStarted = true; $("memory").hidden = false; initMemory(); }
}

function connect() {
  const source = new EventSource("/events");
  source.addEventListener("open", () => { $("status").textContent = "live"; $("status").classList.add("live"); });
  source.addEventListener("error", () => { $("status").textContent = "reconnecting"; $("status").classList.remove("live"); });
  source.addEventListener("stats", m => showStats(JSON.parse(m.data)));
  source.addEventListener("event", m => addEvent(JSON.parse(m.data)));
}

async function control(change) {
  const r = await fetch("/api/control", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(change)});
  if (r.ok) { const now = await r.json(); state = now; }
}
$("pause").addEventListener("click", () => control({paused: !state.paused}));
$("overlay").addEventListener("click", () => control({overlay: !state.overlay}));
$("stream").addEventListener("error", () => setTimeout(() => { $("stream").src = "/stream?" + Date.now(); }, 2000));
connect();
