"""The sonographer's page (HTML + JavaScript, no external resources), served by echo_guidance.display.server.

The page subscribes to ``/events`` (Server-Sent Events; one JSON state per guidance update, see
:mod:`echo_guidance.display.state`) and draws on canvases: the frame, the translation arrow and ⊙/⊗
symbol and the rocking arc over it (primitives computed in Python by
``echo_guidance.guidance.presentation.guidance_graphics``), the tilt and rotate dials, the six numbers
with per-axis confidence bars, the overall confidence, the target plane, "plane reached" and the
instructions. What each state shows (waiting, stale, no guidance, low confidence, plane reached,
guiding) comes with the state as ``view`` (``echo_guidance.guidance.presentation.guidance_view``); the
page only draws it, and switches to the state's ``stale_view`` by itself when no event has come for
1.5 s (``?stale_after_ms=N`` changes that). ``/?once=1`` fetches ``/state.json`` once instead
(screenshots, tests; with ``stale_after_ms`` the page still goes stale after that long).

Layout: the image canvas is at a fixed place (:data:`IMAGE_CANVAS_RECT`, CSS pixels) so screenshot tests
can look for the arrows there.
"""

IMAGE_CANVAS_RECT = (20, 84, 512, 512)
"""(left, top, width, height) of the image canvas in CSS pixels."""

PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>echo guidance</title>
<style>
  body { margin: 0; background: #111418; color: #e8e8e8; font: 16px/1.35 system-ui, sans-serif; }
  #header { position: absolute; left: 20px; top: 12px; right: 20px; height: 60px; display: flex;
            align-items: center; gap: 24px; }
  #plane { font-size: 34px; font-weight: 700; letter-spacing: 0.5px; }
  #badge { font-size: 22px; font-weight: 700; padding: 6px 16px; border-radius: 8px; background: #444; }
  #badge.guiding { background: #1f4e8c; } #badge.plane_reached { background: #1e7a34; }
  #badge.no_guidance { background: #8c1f1f; } #badge.stale { background: #6b5b16; }
  #badge.low_confidence { background: #9a5a00; } #badge.waiting { background: #444; }
  #image { position: absolute; left: __LEFT__px; top: __TOP__px; width: __W__px; height: __H__px;
           background: #000; border-radius: 6px; }
  #panel { position: absolute; left: 556px; top: 84px; width: 520px; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  td { padding: 3px 6px; } td.axis { width: 60px; color: #aaa; } td.value { width: 110px; text-align: right;
  font-size: 22px; font-weight: 600; } td.bar { width: 260px; }
  .bar-outer { height: 12px; background: #2a2f36; border-radius: 6px; overflow: hidden; }
  .bar-inner { height: 100%; background: #4a90d9; width: 0%; }
  #numbers.greyed td.value, #numbers.greyed td.unit { color: #6c6c6c; }
  #numbers.greyed .bar-inner { background: #555; }
  #overall { margin: 10px 0 6px; font-size: 18px; } #overall.greyed { color: #e0a040; }
  #instructions { margin: 8px 0; padding-left: 20px; color: #ffdca0; font-size: 20px; min-height: 56px; }
  #more { color: #888; font-size: 13px; min-height: 18px; }
  #dials { display: flex; gap: 24px; margin-top: 6px; }
  .dial { text-align: center; color: #aaa; font-size: 13px; }
  .dial canvas { width: 150px; height: 150px; background: #1b1f24; border-radius: 6px; display: block; }
  #status { margin-top: 10px; color: #ff8080; min-height: 22px; }
  #status.low_confidence, #status.stale { color: #e0a040; }
  #meta { margin-top: 6px; color: #777; font-size: 12px; }
</style></head>
<body>
<div id="header"><div id="plane">Target: –</div><div id="badge" class="waiting">WAITING</div></div>
<canvas id="image" width="__W__" height="__H__"></canvas>
<div id="panel">
  <table id="numbers"></table>
  <div id="overall">Confidence: –</div>
  <ul id="instructions"></ul>
  <div id="more"></div>
  <div id="dials">
    <div class="dial"><canvas id="tilt" width="150" height="150"></canvas>tilt (side view, +y right)</div>
    <div class="dial"><canvas id="rotate" width="150" height="150"></canvas>rotate (seen from handle)</div>
  </div>
  <div id="status"></div>
  <div id="meta"></div>
</div>
<script>
"use strict";
const AXES = [["x", "mm"], ["y", "mm"], ["z", "mm"], ["roll", "°"], ["pitch", "°"], ["yaw", "°"]];
const table = document.getElementById("numbers");
for (const [name, unit] of AXES) {
  const row = table.insertRow();
  row.innerHTML = `<td class="axis">${name}</td><td class="value" id="v-${name}">–</td>` +
    `<td class="unit">${unit}</td><td class="bar"><div class="bar-outer"><div class="bar-inner" ` +
    `id="c-${name}"></div></div></td>`;
}
let lastEvent = 0, lastState = null;
const picture = new Image();

function drawPrimitives(ctx, prims, x0, y0, w, h) {
  for (const p of prims) {
    ctx.strokeStyle = p.colour; ctx.fillStyle = p.colour;
    ctx.lineWidth = Math.max(1, p.width * h); ctx.lineCap = "round";
    if (p.kind === "line") {
      const ax = x0 + p.from[0] * w, ay = y0 + p.from[1] * h, bx = x0 + p.to[0] * w, by = y0 + p.to[1] * h;
      ctx.beginPath(); ctx.moveTo(ax, ay); ctx.lineTo(bx, by); ctx.stroke();
      if (p.head) head(ctx, bx, by, Math.atan2(by - ay, bx - ax), 0.06 * h);
    } else if (p.kind === "arc") {
      const cx = x0 + p.centre[0] * w, cy = y0 + p.centre[1] * h, r = p.radius * h;
      const a0 = p.start_deg * Math.PI / 180, a1 = p.end_deg * Math.PI / 180;
      ctx.beginPath(); ctx.arc(cx, cy, r, a0, a1, a1 < a0); ctx.stroke();
      if (p.head) {
        const tangent = a1 + (a1 >= a0 ? 1 : -1) * Math.PI / 2;
        head(ctx, cx + r * Math.cos(a1), cy + r * Math.sin(a1), tangent, 0.05 * h);
      }
    } else if (p.kind === "dot" || p.kind === "cross") {
      const cx = x0 + p.centre[0] * w, cy = y0 + p.centre[1] * h, r = Math.max(3, p.radius * h);
      ctx.beginPath(); ctx.arc(cx, cy, r, 0, 2 * Math.PI); ctx.stroke();
      if (p.kind === "dot") { ctx.beginPath(); ctx.arc(cx, cy, r / 3, 0, 2 * Math.PI); ctx.fill(); }
      else { const k = r * 0.7; ctx.beginPath(); ctx.moveTo(cx - k, cy - k); ctx.lineTo(cx + k, cy + k);
             ctx.moveTo(cx - k, cy + k); ctx.lineTo(cx + k, cy - k); ctx.stroke(); }
    }
  }
}
function head(ctx, x, y, angle, size) {
  ctx.beginPath();
  for (const side of [-1, 1]) {
    const a = angle + Math.PI + side * 28 * Math.PI / 180;
    ctx.moveTo(x, y); ctx.lineTo(x + size * Math.cos(a), y + size * Math.sin(a));
  }
  ctx.stroke();
}
function imageRect(canvas, image) {
  if (!image) return [0, 0, canvas.width, canvas.height];
  const s = Math.min(canvas.width / image.width, canvas.height / image.height);
  const w = image.width * s, h = image.height * s;
  return [(canvas.width - w) / 2, (canvas.height - h) / 2, w, h];
}
function drawImageCanvas(state) {
  const canvas = document.getElementById("image"), ctx = canvas.getContext("2d");
  ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  const [x0, y0, w, h] = imageRect(canvas, state.image);
  if (state.image && picture.complete && picture.naturalWidth) {
    ctx.imageSmoothingEnabled = true; ctx.drawImage(picture, x0, y0, w, h);
  }
  const g = state.guidance, view = state.view;
  if (view.arrows && g && g.graphics) drawPrimitives(ctx, g.graphics.image, x0, y0, w, h);
  if (view.banner) {
    ctx.fillStyle = BANNER_COLOURS[view.state] || "rgba(140, 31, 31, 0.85)";
    ctx.fillRect(x0, y0 + h / 2 - 30, w, 60);
    ctx.fillStyle = "#fff"; ctx.font = "bold 28px system-ui, sans-serif"; ctx.textAlign = "center";
    ctx.fillText(view.banner, x0 + w / 2, y0 + h / 2 + 10);
  }
}
const BANNER_COLOURS = {stale: "rgba(107, 91, 22, 0.9)", low_confidence: "rgba(154, 90, 0, 0.9)",
                        no_guidance: "rgba(140, 31, 31, 0.85)", waiting: "rgba(68, 68, 68, 0.85)"};
function drawDial(id, prims) {
  const canvas = document.getElementById(id), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (prims) drawPrimitives(ctx, prims, 0, 0, canvas.width, canvas.height);
}
function render(state) {
  lastState = state; lastEvent = Date.now();
  const g = state.guidance, view = state.view;
  document.getElementById("plane").textContent = "Target: " + (g ? g.target_plane : "–");
  const badge = document.getElementById("badge");
  badge.className = view.state; badge.textContent = view.badge;
  const numbers = g && view.numbers !== "cleared";
  table.className = view.numbers;
  AXES.forEach(([name], i) => {
    const value = numbers ? (g.action[i] >= 0 ? "+" : "") + g.action[i].toFixed(1) : "–";
    document.getElementById("v-" + name).textContent = value;
    const bar = numbers ? (100 * g.axis_confidence[i]).toFixed(0) + "%" : "0%";
    document.getElementById("c-" + name).style.width = bar;
  });
  const overall = document.getElementById("overall");
  overall.textContent = "Confidence: " + (numbers ? (100 * g.confidence).toFixed(0) + " %" : "–");
  overall.className = view.numbers;
  const list = document.getElementById("instructions");
  list.innerHTML = "";
  for (const line of view.instructions) {
    const li = document.createElement("li"); li.textContent = line; list.appendChild(li);
  }
  const more = view.instructions_omitted;
  document.getElementById("more").textContent =
    more ? `${more} smaller correction${more > 1 ? "s" : ""} not listed (see the arrows)` : "";
  const graphics = view.arrows && g ? g.graphics : null;
  drawDial("tilt", graphics ? graphics.tilt : null);
  drawDial("rotate", graphics ? graphics.rotate : null);
  const status = document.getElementById("status");
  status.textContent = view.note; status.className = view.state;
  const pairing = state.image && state.image.matched ? "matched" : "nearest";
  const meta = g ? `${g.model_id} · frame ${pairing} · update ${state.seq}` : "";
  document.getElementById("meta").textContent = meta;
  if (state.image) {
    picture.onload = () => drawImageCanvas(lastState);
    if (picture.src !== state.image.src) picture.src = state.image.src; else drawImageCanvas(state);
  } else drawImageCanvas(state);
  document.body.dataset.seq = state.seq;
  document.body.dataset.state = view.state;
}
const params = new URLSearchParams(location.search);
const once = params.has("once");
// No event for stale_after_ms (default 1.5 s; server or network gone): show the stale view the server
// sent with the state. With ?once=1 only when stale_after_ms is given (a test of this path).
const quietMs = Number(params.get("stale_after_ms") || 1500);
if (!once || params.has("stale_after_ms")) setInterval(() => {
  const quiet = Date.now() - lastEvent > quietMs;
  if (lastState && lastState.stale_view && quiet && lastState.view.state !== "stale") {
    lastState.view = lastState.stale_view; render(lastState); lastEvent = 0;
  }
}, Math.min(500, quietMs / 2));
if (once) {
  fetch("/state.json").then(r => r.json()).then(render);
} else {
  const events = new EventSource("/events");
  events.onmessage = (e) => render(JSON.parse(e.data));
}
</script>
</body></html>
"""


def page_html():
    """The page with the image canvas placed at :data:`IMAGE_CANVAS_RECT`."""
    left, top, width, height = IMAGE_CANVAS_RECT
    return (
        PAGE.replace('__LEFT__', str(left))
        .replace('__TOP__', str(top))
        .replace('__W__', str(width))
        .replace('__H__', str(height))
    )
