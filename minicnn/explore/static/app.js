// minicnn explore: draws what the server computes. No computation of the network happens here:
// the page sends the drawing, gets every layer's output back and paints it.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null,           // GET /api/info
  result: null,         // the last POST /api/analyse
  chosenClass: null,    // the class whose saliency is shown (null: the predicted one)
  inFlight: false, dirty: false, lastBlob: null, drawn: false,
  inspect: null,        // {layer index, channel}
};

// ---------------------------------------------------------------------------------------------
// Arrays from the server (see minicnn/explore/encode.py)
// ---------------------------------------------------------------------------------------------
function bytesOf(b64) {
  const text = atob(b64);
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}
function floats(payload) { return new Float32Array(bytesOf(payload.data).buffer); }
/** Values of a "picture" payload, each mapped to [-1, 1] (signed) or [0, 1]. */
function unit(payload) {
  const q = bytesOf(payload.data);
  const out = new Float32Array(q.length);
  if (payload.signed) for (let i = 0; i < q.length; i++) out[i] = (q[i] - 127.5) / 127.5;
  else for (let i = 0; i < q.length; i++) out[i] = q[i] / 255;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Colour maps: viridis-like for values >= 0, blue-white-red for signed values
// ---------------------------------------------------------------------------------------------
function lut(anchors) {
  const table = new Uint8Array(256 * 3);
  for (let i = 0; i < 256; i++) {
    const t = i / 255 * (anchors.length - 1), k = Math.min(Math.floor(t), anchors.length - 2), f = t - k;
    for (let c = 0; c < 3; c++) table[i * 3 + c] = Math.round(anchors[k][c] * (1 - f) + anchors[k + 1][c] * f);
  }
  return table;
}
const VIRIDIS = lut([[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]]);
const DIVERGING = lut([[40, 70, 170], [59, 111, 216], [140, 170, 235], [246, 246, 246],
  [240, 150, 120], [232, 69, 44], [160, 20, 30]]);

/** RGBA bytes for values in [0, 1] (signed=false) or [-1, 1] (signed=true). */
function paint(values, signed, rgba, offset = 0, count = values.length) {
  const table = signed ? DIVERGING : VIRIDIS;
  for (let i = 0; i < count; i++) {
    const v = values[offset + i];
    const k = Math.max(0, Math.min(255, Math.round(signed ? (v + 1) * 127.5 : v * 255))) * 3;
    rgba[i * 4] = table[k]; rgba[i * 4 + 1] = table[k + 1]; rgba[i * 4 + 2] = table[k + 2]; rgba[i * 4 + 3] = 255;
  }
}
function putValues(canvas, values, width, height, signed, offset = 0) {
  canvas.width = width; canvas.height = height;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  paint(values, signed, image.data, offset, width * height);
  ctx.putImageData(image, 0, 0);
}
/** A gray (H, W) or colour (H, W, 3) picture payload of values in [0, 1], as an image (not a
 *  colour map): 0 is black, 1 white, whatever the payload's scale. */
function putImage(canvas, payload) {
  const [h, w, c] = [payload.shape[0], payload.shape[1], payload.shape[2] || 1];
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  const v = unit(payload).map((x) => x * payload.scale);
  for (let i = 0; i < w * h; i++) {
    for (let k = 0; k < 3; k++) {
      const x = c === 3 ? v[i * 3 + k] : v[i];
      image.data[i * 4 + k] = Math.round(Math.max(0, Math.min(1, x)) * 255);
    }
    image.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}
const fmt = (v, digits = 3) => (Math.abs(v) >= 1000 || (Math.abs(v) < 0.001 && v !== 0)) ? v.toExponential(1) : v.toFixed(digits);
const thousands = (n) => n.toLocaleString("en-US");

function setStatus(text, kind) { const s = $("status"); s.textContent = text; s.dataset.state = kind; }

// ---------------------------------------------------------------------------------------------
// The run: title, layer skeleton, filters, summary
// ---------------------------------------------------------------------------------------------
const EXPLAIN = {
  Conv2d: "each map: one kernel slid over the input",
  ReLU: "negative values set to 0",
  MaxPool2d: "the largest value of each window",
  AvgPool2d: "the mean of each window",
  AdaptiveAvgPool2d: "the mean of each map",
  BatchNorm2d: "each channel shifted and scaled",
  Flatten: "the maps laid out as one vector",
  Linear: "every input times a weight, summed, per output",
  BasicBlock: "two convolutions plus a shortcut",
  Dropout: "off while predicting",
};

async function loadInfo() {
  const response = await fetch("/api/info");
  const info = await response.json();
  state.info = info;
  $("run-title").textContent = `${info.run} · ${info.model} trained on ${info.dataset} · ` +
    `input ${info.input_shape.join("×")} · ${info.classes.length} classes`;
  document.title = `minicnn explore · ${info.run}`;
  if (info.input_shape[0] === 3) $("draw-note").textContent = "A colour run: upload a photo for a fair test (a drawing is white on black).";
  if (info.task === "detection") setUpDetection(info); else buildBars(info.classes);
  buildLayers(info);
  buildFilters(info.filters);
  buildSummary(info);
}

function buildBars(classes) {
  const bars = $("bars");
  bars.replaceChildren();
  const longest = Math.max(...classes.map((c) => c.length));
  bars.style.setProperty("--label-width", `${Math.min(9, Math.max(1.2, longest * 0.62))}em`);
  classes.forEach((name, k) => {
    const row = el("div", { class: "bar", "data-class": k, title: `saliency for ${name}` },
      el("span", { class: "label", text: name }), el("span", { class: "track" }, el("span", { class: "fill" })),
      el("span", { class: "value", text: "" }));
    row.addEventListener("click", () => chooseClass(k));
    bars.append(row);
  });
}

function mapSize(h) { return Math.max(30, Math.min(64, Math.round(h * 2.2))); }

function buildLayers(info) {
  const box = $("layers");
  box.replaceChildren();
  info.layers.forEach((layer, index) => {
    const head = el("div", { class: "layer-head" },
      el("span", { class: "idx", text: layer.name }),
      el("span", { class: "kind" + (layer.conv ? " conv" : ""), text: layer.kind }),
      el("span", { class: "shape", text: "→ " + layer.shape.join(" × ") }),
      el("span", { class: "explain", text: info.task === "detection" && index === info.layers.length - 1 ?
        `per ${info.stride}-pixel cell: 0 objectness · 1, 2 centre · 3, 4 size · ${HEAD}… class logits` : EXPLAIN[layer.kind] || "" }));
    const body = el("div", { class: layer.shape.length === 3 ? "maps" : "vector", id: `layer-${index}` });
    if (layer.shape.length === 3) {
      const [c, h, w] = layer.shape, size = mapSize(h);
      for (let k = 0; k < c; k++) {
        const canvas = el("canvas", { class: "px fmap", width: w, height: h, "data-layer": index, "data-channel": k,
          title: `${layer.kind} ${layer.name}, channel ${k}` });
        canvas.style.width = size + "px"; canvas.style.height = Math.round(size * h / w) + "px";
        canvas.addEventListener("click", () => openInspector(index, k));
        body.append(canvas);
      }
    } else {
      body.append(el("canvas", { class: "vec", "data-layer": index }));
      if (index === info.layers.length - 1 && layer.shape[0] === info.classes.length) {
        body.append(el("div", { class: "class-axis" }, ...info.classes.map((c) => el("span", { text: c }))));
      }
    }
    box.append(el("div", { class: "layer" }, head, body));
  });
  box.prepend(el("p", { class: "empty", id: "layers-empty", text: "Draw something: every layer's output appears here." }));
}

function buildFilters(filters) {
  const box = $("filters");
  box.replaceChildren();
  if (!filters) { box.append(el("p", { class: "empty", text: "This network has no convolution." })); return; }
  const [o, i, kh, kw] = filters.shape, w = floats(filters);
  let scale = 0;
  for (const v of w) scale = Math.max(scale, Math.abs(v));
  $("filters-note").textContent = `${o} kernels of ${i}×${kh}×${kw}` + (i === 3 ? ", shown as colour" : i > 1 ? ", input channel 0 shown" : "");
  if (i === 3) $("filters-explain").textContent = "Each small square is one kernel of the first convolution, its weights " +
    "for red, green and blue shown as a colour (stretched to the kernel's own range): the colour and pattern it responds to most.";
  for (let f = 0; f < o; f++) {
    const canvas = el("canvas", { class: "px", title: `kernel ${f}` });
    if (i === 3) {   // colour kernels: each normalised to its own range, as RGB
      const part = w.subarray(f * 3 * kh * kw, (f + 1) * 3 * kh * kw);
      let lo = Infinity, hi = -Infinity;
      for (const v of part) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      canvas.width = kw; canvas.height = kh;
      const ctx = canvas.getContext("2d"), image = ctx.createImageData(kw, kh);
      for (let p = 0; p < kh * kw; p++) {
        for (let c = 0; c < 3; c++) image.data[p * 4 + c] = Math.round((part[c * kh * kw + p] - lo) / (hi - lo || 1) * 255);
        image.data[p * 4 + 3] = 255;
      }
      ctx.putImageData(image, 0, 0);
    } else {
      const values = new Float32Array(kh * kw);
      for (let p = 0; p < kh * kw; p++) values[p] = w[f * i * kh * kw + p] / (scale || 1);
      putValues(canvas, values, kw, kh, true);
    }
    box.append(canvas);
  }
}

function buildSummary(info) {
  const table = $("summary");
  table.replaceChildren(el("tr", {}, el("th", { text: "layer" }), el("th", { text: "type" }),
    el("th", { text: "output" }), el("th", { class: "n", text: "parameters" }), el("th", { class: "n", text: "FLOPs" })));
  for (const row of info.summary) {
    table.append(el("tr", {}, el("td", { text: row.name }), el("td", { text: row.kind }),
      el("td", { text: row.shape.join("×") }), el("td", { class: "n", text: thousands(row.parameters) }),
      el("td", { class: "n", text: thousands(row.flops) })));
  }
  table.append(el("tr", { class: "total" }, el("td", { text: "total" }), el("td"), el("td"),
    el("td", { class: "n", text: thousands(info.total_parameters) }), el("td", { class: "n", text: thousands(info.total_flops) })));
}

// ---------------------------------------------------------------------------------------------
// Drawing pad
// ---------------------------------------------------------------------------------------------
const pad = $("pad"), padCtx = pad.getContext("2d");
function clearPad() {
  padCtx.fillStyle = "#000"; padCtx.fillRect(0, 0, pad.width, pad.height);
  $("pad-hint").hidden = false; state.drawn = false; state.lastBlob = null;
}
function padPoint(event) {
  const r = pad.getBoundingClientRect();
  return [(event.clientX - r.left) * pad.width / r.width, (event.clientY - r.top) * pad.height / r.height];
}
let stroke = null;
pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  stroke = padPoint(event);
  padCtx.fillStyle = "#fff";
  padCtx.beginPath(); padCtx.arc(stroke[0], stroke[1], $("brush").value / 2, 0, 2 * Math.PI); padCtx.fill();
  $("pad-hint").hidden = true; state.drawn = true;
  schedule();
});
pad.addEventListener("pointermove", (event) => {
  if (!stroke) return;
  const point = padPoint(event);
  padCtx.strokeStyle = "#fff"; padCtx.lineWidth = $("brush").value; padCtx.lineCap = "round"; padCtx.lineJoin = "round";
  padCtx.beginPath(); padCtx.moveTo(stroke[0], stroke[1]); padCtx.lineTo(point[0], point[1]); padCtx.stroke();
  stroke = point;
  schedule();
});
for (const type of ["pointerup", "pointercancel"]) pad.addEventListener(type, () => { if (stroke) { stroke = null; schedule(); } });
$("clear").addEventListener("click", () => { clearPad(); showEmpty(); });
$("enhance").addEventListener("change", () => { if (state.lastBlob || state.drawn) send(state.lastBlob); });
$("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  event.target.value = "";
  if (!file) return;
  try {
    const bitmap = await createImageBitmap(file);
    clearPad();
    const s = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
    padCtx.fillStyle = "#fff"; padCtx.fillRect(0, 0, pad.width, pad.height);
    padCtx.drawImage(bitmap, (pad.width - bitmap.width * s) / 2, (pad.height - bitmap.height * s) / 2, bitmap.width * s, bitmap.height * s);
    $("pad-hint").hidden = true;
  } catch (error) { /* the server will say what is wrong with it */ }
  state.lastBlob = file;     // the file itself, so the result is what `minicnn predict` gives
  send(file);
});

// Send at most one drawing at a time; strokes made meanwhile go in the next one.
function schedule() { state.lastBlob = null; if (state.inFlight) { state.dirty = true; return; } send(null); }
async function send(blob) {
  state.inFlight = true; state.dirty = false;
  setStatus("thinking…", "busy");
  const started = performance.now();
  try {
    const body = blob || await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
    const enhance = $("enhance").checked ? "1" : "0";
    const response = await fetch(`/api/analyse?enhance=${enhance}`, { method: "POST", body,
      headers: { "Content-Type": body.type || "application/octet-stream" } });
    const result = await response.json();
    if (!response.ok) throw new Error(result.error || response.statusText);
    state.result = result;
    state.chosenClass = null;
    render(result);
    setStatus(`${Math.round(performance.now() - started)} ms`, "ready");
  } catch (error) {
    setStatus("error", "error");
    $("draw-note").textContent = String(error.message || error);
  } finally {
    state.inFlight = false;
    if (state.dirty) send(null);
  }
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------
function showEmpty() {
  $("predicted-label").textContent = "?"; $("predicted-prob").textContent = "";
  $("det-list").replaceChildren();
  if (state.info && state.info.task === "detection") { const v = $("det-view"); v.width = v.width; }
  document.querySelectorAll(".bar").forEach((bar) => { bar.querySelector(".fill").style.width = "0"; bar.querySelector(".value").textContent = ""; bar.classList.remove("best", "chosen"); });
}

function render(result) {
  if (result.task === "detection") { renderDetection(result); return; }
  const classes = state.info.classes;
  $("predicted-label").textContent = classes[result.predicted];
  $("predicted-prob").textContent = `${(100 * result.probabilities[result.predicted]).toFixed(1)} % sure`;
  $("draw-note").textContent = result.inverted ? "Dark ink on a light background: inverted, as the training images are light on dark." : "";
  document.querySelectorAll(".bar").forEach((bar, k) => {
    const p = result.probabilities[k];
    bar.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    bar.querySelector(".value").textContent = `${(100 * p).toFixed(1)}%`;
    bar.classList.toggle("best", k === result.predicted);
  });
  renderSteps(result.steps);
  renderLayers(result.layers);
  renderSaliency(result.saliency);
  if (state.inspect) openInspector(state.inspect.layer, state.inspect.channel);
}

function renderSteps(steps) {
  const box = $("steps");
  box.replaceChildren();
  steps.forEach((step, i) => {
    const canvas = el("canvas", { class: "px" });
    if (step.name.startsWith("normalised") && step.shape.length === 2) {
      putValues(canvas, unit(step), step.shape[1], step.shape[0], step.signed);   // signed: a colour map
    } else if (step.name.startsWith("normalised")) {
      // Colour: each value v in [-scale, scale] shown as (v / scale + 1) / 2, so 0 is mid-gray.
      putImage(canvas, { ...step, signed: false, scale: 1, data: btoa(String.fromCharCode(...bytesOf(step.data).map((q) => step.signed ? q : 128 + q / 2))) });
    } else putImage(canvas, step);
    const range = step.name.startsWith("normalised") ? `, ${step.signed ? "−" : "0 to "}${fmt(step.scale, 2)}${step.signed ? " to " + fmt(step.scale, 2) : ""}` : "";
    const fig = el("figure", { class: "step-fig" }, canvas, el("figcaption", { text: `${step.name} (${step.shape[0]}×${step.shape[1]}${range})` }));
    box.append(el("div", { class: "step" }, i ? el("span", { class: "arrow", text: "→" }) : null, fig));
  });
}

function renderLayers(layers) {
  const empty = $("layers-empty");
  if (empty) empty.remove();
  layers.forEach((layer, index) => {
    const body = $(`layer-${index}`);
    if (layer.maps) {
      const [c, h, w] = layer.shape, values = unit(layer.maps);
      body.querySelectorAll("canvas").forEach((canvas, k) => putValues(canvas, values, w, h, layer.maps.signed, k * h * w));
    } else {
      drawVector(body.querySelector("canvas"), floats(layer.values), body);
    }
  });
}

function drawVector(canvas, values, body) {
  let scale = 0;
  for (const v of values) scale = Math.max(scale, Math.abs(v));
  scale = scale || 1;
  const signed = values.some((v) => v < 0);
  if (values.length > 256) {            // long vectors (Flatten): a strip of colour cells
    body.classList.add("strip");
    const width = values.length >= 1000 ? 112 : 50, height = Math.ceil(values.length / width);
    const cell = Math.max(3, Math.floor(Math.min(784, body.clientWidth || 784) / width));
    const scaled = values.map((v) => v / scale);
    canvas.width = width; canvas.height = height;
    const ctx = canvas.getContext("2d"), image = ctx.createImageData(width, height);
    paint(scaled, signed, image.data);
    ctx.putImageData(image, 0, 0);
    canvas.style.width = `${width * cell}px`; canvas.style.height = `${height * cell}px`;
    return;
  }
  const cssWidth = Math.min(900, canvas.parentElement.clientWidth || 600);
  canvas.width = cssWidth * devicePixelRatio; canvas.height = 72 * devicePixelRatio;
  canvas.style.width = cssWidth + "px";
  const ctx = canvas.getContext("2d");
  ctx.setTransform(devicePixelRatio, 0, 0, devicePixelRatio, 0, 0);
  ctx.clearRect(0, 0, cssWidth, 72);
  const n = values.length, slot = cssWidth / n, zero = signed ? 36 : 69;
  ctx.fillStyle = "#d8d1c3"; ctx.fillRect(0, zero, cssWidth, 1);
  for (let i = 0; i < n; i++) {
    const v = values[i] / scale, h = v * (signed ? 34 : 66);
    ctx.fillStyle = v >= 0 ? "#e0662d" : "#3b6fd8";
    ctx.fillRect(i * slot + slot * 0.12, v >= 0 ? zero - h : zero, Math.max(1, slot * 0.76), Math.abs(h));
  }
}

function chooseClass(k) {
  if (!state.result) return;
  state.chosenClass = k;
  fetch(`/api/saliency?input=${state.result.id}&class=${k}`).then((r) => r.json()).then((payload) => {
    if (!payload.error) renderSaliency(payload);
  });
}

function prepared() {   // the prepared image (before normalising): the last step before it
  const steps = state.result.steps;
  return steps[steps.length - 2];
}

function renderSaliency(payload) {
  const classes = state.info.classes;
  document.querySelectorAll(".bar").forEach((bar, k) => bar.classList.toggle("chosen", k === payload.class));
  $("why-caption").textContent = `saliency for “${classes[payload.class]}”`;
  paintSaliency(payload);
}

/** The input and, beside it, d score / d pixel over the dimmed input. */
function paintSaliency(payload) {
  const input = prepared();
  putImage($("why-input"), input);
  const [c, h, w] = payload.shape, g = floats(payload);
  // One value per pixel: the channel with the largest magnitude, keeping its sign.
  const s = new Float32Array(h * w);
  let scale = 0;
  for (let p = 0; p < h * w; p++) {
    let best = 0;
    for (let k = 0; k < c; k++) { const v = g[k * h * w + p]; if (Math.abs(v) > Math.abs(best)) best = v; }
    s[p] = best; scale = Math.max(scale, Math.abs(best));
  }
  const canvas = $("why-saliency");
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(w, h);
  const base = unit(input), gray = input.shape.length === 3;
  for (let p = 0; p < h * w; p++) {
    const v = s[p] / (scale || 1), a = Math.min(1, Math.abs(v) * 1.6);
    const b = 90 * (gray ? (base[p * 3] + base[p * 3 + 1] + base[p * 3 + 2]) / 3 : base[p]);   // the input, dimmed
    const colour = v >= 0 ? [232, 69, 44] : [59, 111, 216];
    for (let k = 0; k < 3; k++) image.data[p * 4 + k] = Math.round(b * (1 - a) + colour[k] * a);
    image.data[p * 4 + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
}

// ---------------------------------------------------------------------------------------------
// Inspector: one map enlarged; for a convolution, how each value is made
// ---------------------------------------------------------------------------------------------
function openInspector(index, channel) {
  if (!state.result) return;
  state.inspect = { layer: index, channel };
  const info = state.info.layers[index], layer = state.result.layers[index];
  const [c, h, w] = layer.shape;
  $("insp-title").textContent = `Layer ${info.name}: ${info.kind}, channel ${channel} of ${c} (${h}×${w})`;
  const values = unit(layer.maps);
  putValues($("insp-map"), values, w, h, layer.maps.signed, channel * h * w);
  $("insp-caption").textContent = `values from ${layer.maps.signed ? "−" : "0 to "}${fmt(layer.maps.scale)}` + (layer.maps.signed ? ` to ${fmt(layer.maps.scale)}` : "");
  $("insp-conv").hidden = !info.conv;
  if (info.conv) {
    putImage($("insp-input"), prepared());
    $("insp-math").replaceChildren(el("p", { class: "empty", text: "Hover (or tap) a pixel of the map to see the window it reads and the dot product that makes it." }));
    $("insp-prev").replaceChildren();
  }
  $("inspector").hidden = false;
}
function closeInspector() { $("inspector").hidden = true; state.inspect = null; }
$("insp-close").addEventListener("click", closeInspector);
$("inspector").addEventListener("click", (event) => { if (event.target.id === "inspector") closeInspector(); });
document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeInspector(); });

let hoverTimer = null, hoverKey = "";
function hover(event) {
  if (!state.inspect || !state.info.layers[state.inspect.layer].conv) return;
  const canvas = $("insp-map"), r = canvas.getBoundingClientRect();
  const x = Math.floor((event.clientX - r.left) / r.width * canvas.width);
  const y = Math.floor((event.clientY - r.top) / r.height * canvas.height);
  if (x < 0 || y < 0 || x >= canvas.width || y >= canvas.height) return;
  const key = `${state.inspect.layer}/${state.inspect.channel}/${y}/${x}`;
  if (key === hoverKey) return;
  hoverKey = key;
  clearTimeout(hoverTimer);
  hoverTimer = setTimeout(() => explainPixel(y, x), 25);
}
$("insp-map").addEventListener("pointermove", hover);
$("insp-map").addEventListener("pointerdown", hover);

async function explainPixel(y, x) {
  const { layer: index, channel } = state.inspect;
  const name = state.info.layers[index].name;
  const response = await fetch(`/api/conv?input=${state.result.id}&layer=${name}&channel=${channel}&y=${y}&x=${x}`);
  const d = await response.json();
  if (!response.ok || !state.inspect) return;
  // The output map, with the hovered pixel marked.
  const layer = state.result.layers[index], [c, h, w] = layer.shape;
  const mapCanvas = $("insp-map");
  putValues(mapCanvas, unit(layer.maps), w, h, layer.maps.signed, channel * h * w);
  const mctx = mapCanvas.getContext("2d");
  mctx.strokeStyle = "#ff2d95"; mctx.lineWidth = Math.max(0.15, w / 150); mctx.strokeRect(x + 0.05, y + 0.05, 0.9, 0.9);
  // Receptive field on the network's input.
  const input = $("insp-input");
  putImage(input, prepared());
  box(input, d.boxes["0"]);
  // ... and on the previous layer's maps (the channels this kernel reads).
  const prev = $("insp-prev");
  prev.replaceChildren();
  if (index > 0 && state.result.layers[index - 1].maps) {
    const before = state.result.layers[index - 1], [pc, ph, pw] = before.shape, pv = unit(before.maps);
    const shown = d.input_channels.slice(0, 24);
    for (const k of shown) {
      const cv = el("canvas", { class: "px", title: `channel ${k}` });
      putValues(cv, pv, pw, ph, before.maps.signed, k * ph * pw);
      box(cv, d.boxes[String(index)]);
      prev.append(cv);
    }
    $("insp-prev-caption").textContent = `the window on layer ${state.info.layers[index - 1].name}'s output` +
      (d.input_channels.length > shown.length ? ` (${shown.length} of ${d.input_channels.length} channels shown)` : ` (${shown.length} channels)`);
    $("insp-prev-fig").hidden = false;
  } else $("insp-prev-fig").hidden = true;
  renderMath(d);
}

function box(canvas, [top, bottom, left, right]) {
  // Redraw at a larger size so that a one-pixel box stays visible.
  const scale = Math.max(1, Math.floor(168 / canvas.width));
  const copy = document.createElement("canvas");
  copy.width = canvas.width; copy.height = canvas.height;
  copy.getContext("2d").drawImage(canvas, 0, 0);
  canvas.width = copy.width * scale; canvas.height = copy.height * scale;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(copy, 0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "rgba(255, 45, 149, 0.18)";
  ctx.fillRect(left * scale, top * scale, (right - left + 1) * scale, (bottom - top + 1) * scale);
  ctx.strokeStyle = "#ff2d95"; ctx.lineWidth = Math.max(1, scale / 3);
  ctx.strokeRect(left * scale + 0.5, top * scale + 0.5, (right - left + 1) * scale - 1, (bottom - top + 1) * scale - 1);
}

function numberGrid(values, rows, cols, scale) {
  const grid = el("div", { class: "grid" });
  grid.style.gridTemplateColumns = `repeat(${cols}, auto)`;
  for (let i = 0; i < rows * cols; i++) {
    const v = values[i], t = Math.max(-1, Math.min(1, v / (scale || 1)));
    const k = Math.round((t + 1) * 127.5) * 3;
    const cell = el("span", { text: Math.abs(v) < 0.005 ? "0.00" : v.toFixed(2) });
    cell.style.background = `rgb(${DIVERGING[k]}, ${DIVERGING[k + 1]}, ${DIVERGING[k + 2]})`;
    cell.style.color = Math.abs(t) > 0.6 ? "#fff" : "#222";
    grid.append(cell);
  }
  return grid;
}
const maxAbs = (a) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);

function renderMath(d) {
  const [kh, kw] = d.kernel_size, per = kh * kw;
  const windowValues = floats(d.window), kernel = floats(d.kernel), products = floats(d.products);
  const math = $("insp-math");
  math.replaceChildren();
  const [top, bottom, left, right] = d.window_box;
  const own = d.boxes[String(Math.max(...Object.keys(d.boxes).map(Number)))];
  const padded = d.window_box.some((v, i) => v !== own[i]);
  math.append(el("p", { text: `Output (${d.y}, ${d.x}) of channel ${d.channel} reads rows ${top}…${bottom}, columns ${left}…${right} of its input` +
    (padded ? " (partly padding, read as 0)" : "") + ":" }));
  const terms = el("div", { class: "terms" });
  const channels = d.input_channels.length, shown = Math.min(channels, 3);
  const ws = maxAbs(windowValues), ks = maxAbs(kernel), ps = maxAbs(products);
  for (let c = 0; c < shown; c++) {
    const part = (a) => a.subarray(c * per, (c + 1) * per);
    let partial = 0;
    for (const v of part(products)) partial += v;
    terms.append(el("div", { class: "grid-op", title: `input channel ${d.input_channels[c]}` },
      numberGrid(part(windowValues), kh, kw, ws), el("span", { class: "op", text: "⊙" }),
      numberGrid(part(kernel), kh, kw, ks), el("span", { class: "op", text: "=" }),
      numberGrid(part(products), kh, kw, ps), el("span", { class: "op", text: `Σ ${fmt(partial)}` })));
  }
  math.append(el("div", { class: "sum", text: `window ⊙ kernel, ${channels > 1 ? `input channel${shown > 1 ? "s" : ""} ${d.input_channels.slice(0, shown).join(", ")}` : "one input channel"}` +
    (channels > shown ? ` (and ${channels - shown} more)` : "") }), terms);
  const sum = products.reduce((a, v) => a + v, 0);
  const line = el("div", { class: "sum" });
  line.append(`Σ of all ${products.length} products = ${fmt(sum)};  + bias ${fmt(d.bias)}  =  `, el("b", { text: fmt(d.dot) }),
    `  (the layer's output here: ${fmt(d.value)})`);
  math.append(line);
  const unrolled = Array.from(windowValues.subarray(0, 12), (v) => fmt(v, 2)).join(", ");
  math.append(el("p", { class: "note", text: `im2col unrolls this window into one column of ${products.length} numbers ` +
    `[${unrolled}${products.length > 12 ? ", …" : ""}]; the kernel is one row of the weight matrix, so the whole layer is one matrix product.` }));
}

// ---------------------------------------------------------------------------------------------
// Detection runs: the boxes `minicnn detect` finds, and why one of them is there
// ---------------------------------------------------------------------------------------------
const HEAD = 5;   // objectness, tx, ty, tw, th; the class logits follow (minicnn/detection/head.py)
// One colour per class, far apart in hue so that neighbouring boxes of two classes differ.
const BOX_COLOURS = ["#ff6b6b", "#ffa94d", "#ffd43b", "#a9e34b", "#38d9a9", "#4dabf7", "#9775fa",
  "#f783ac", "#e599f7", "#69db7c"];
const boxColour = (k) => BOX_COLOURS[k % BOX_COLOURS.length];
const percent = (p) => `${(100 * p).toFixed(1)} %`;

function setUpDetection(info) {
  const [, h, w] = info.input_shape;
  pad.width = 3 * w; pad.height = 3 * h;      // three pad pixels per input pixel
  clearPad();                                 // resizing a canvas empties it
  $("brush").min = 4; $("brush").max = 20; $("brush").value = 9;
  $("pad-hint").textContent = "draw a few digits";
  $("draw-tip").textContent = `A scene is ${w}×${h} pixels with digits 20 to 40 pixels tall: draw two or three ` +
    "digits apart from each other, each a quarter to two fifths of the pad's height, or upload a scene.";
  $("enhance-label").textContent = "invert & stretch";
  $("enhance-check").title = "as `minicnn detect` does; off is --no-preprocess";
  $("predict-title").textContent = "Detections";
  $("bars").hidden = true;
  $("det").hidden = false;
  $("predict-note").textContent = `Each ${info.stride}-pixel cell of the last layer's grid says whether an object's ` +
    `centre is in it, where its box is and which class. Boxes scoring at least ${info.threshold} are kept and ` +
    "overlapping ones removed (non-maximum suppression): the same boxes as minicnn detect finds. Click a box to ask “why” for it.";
  $("why-note").textContent = "Saliency: how much the box's score (its cell's objectness × class probability) " +
    "changes per unit of ink at each pixel (∂ score / ∂ pixel, from the layers' own backward), the box drawn on top.";
  $("steps-command").textContent = "minicnn detect";
}

function renderDetection(result) {
  const boxes = result.boxes;
  const leftToRight = [...boxes].sort((a, b) => a.box[0] - b.box[0]);
  $("predicted-label").textContent = boxes.length ? leftToRight.map((b) => b.label).join(" ") : "–";
  $("predicted-prob").textContent = boxes.length ? `${boxes.length} box${boxes.length > 1 ? "es" : ""}, left to right`
    : `nothing scores ${state.info.threshold} or more`;
  $("draw-note").textContent = result.inverted ? "Dark objects on a light background: inverted, as the scenes are light on dark." : "";
  drawBoxes($("det-view"), result);
  const list = $("det-list");
  list.replaceChildren();
  boxes.forEach((b, k) => {
    const swatch = el("i", { class: "swatch" });
    swatch.style.background = boxColour(b.class);
    const item = el("li", { class: "det-box", "data-box": k, title: "saliency for this box" }, swatch,
      el("b", { text: b.label }), el("span", { class: "score", text: percent(b.score) }),
      el("span", { class: "where", text: `x ${Math.round(b.box[0])}–${Math.round(b.box[2])}, y ${Math.round(b.box[1])}–${Math.round(b.box[3])}` }));
    item.addEventListener("click", () => chooseBox(k));
    list.append(item);
  });
  renderSteps(result.steps);
  renderLayers(result.layers);
  renderBoxSaliency(result.saliency);
  if (state.inspect) openInspector(state.inspect.layer, state.inspect.channel);
}

/** The picture as the detector saw it, its boxes drawn on it with label and score. */
function drawBoxes(view, result) {
  const [ph, pw] = result.picture_size, source = document.createElement("canvas");
  putImage(source, result.picture);
  const cssScale = 288 / Math.max(ph, pw), dpr = window.devicePixelRatio || 1;
  view.width = Math.round(pw * cssScale * dpr); view.height = Math.round(ph * cssScale * dpr);
  view.style.width = `${Math.round(pw * cssScale)}px`;
  const ctx = view.getContext("2d"), s = view.width / pw;    // canvas pixels per picture pixel
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(source, 0, 0, view.width, view.height);
  ctx.font = `bold ${Math.round(12 * dpr)}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  for (const b of result.boxes) {
    const [x0, y0, x1, y1] = b.box.map((v) => v * s), colour = boxColour(b.class);
    ctx.strokeStyle = colour; ctx.lineWidth = 2 * dpr;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    const text = `${b.label} ${Math.round(100 * b.score)}%`, tw = ctx.measureText(text).width + 6 * dpr, th = 16 * dpr;
    const ty = y0 >= th ? y0 - th : y0;             // above the box when there is room
    ctx.fillStyle = colour; ctx.fillRect(x0 - dpr, ty, tw, th);
    ctx.fillStyle = "#111"; ctx.fillText(text, x0 + 2 * dpr, ty + 2 * dpr);
  }
}

/** A box (network-input pixels, x0 y0 x1 y1) outlined on a canvas of the network's input. */
function outline(canvas, [x0, y0, x1, y1], colour) {
  const scale = Math.max(1, Math.floor(336 / canvas.width)), copy = document.createElement("canvas");
  copy.width = canvas.width; copy.height = canvas.height;
  copy.getContext("2d").drawImage(canvas, 0, 0);
  canvas.width = copy.width * scale; canvas.height = copy.height * scale;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(copy, 0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = colour; ctx.lineWidth = Math.max(2, scale);
  ctx.strokeRect(x0 * scale, y0 * scale, (x1 - x0) * scale, (y1 - y0) * scale);
}

function renderBoxSaliency(payload) {
  const boxes = state.result.boxes;
  document.querySelectorAll(".det-box").forEach((item, k) => item.classList.toggle("chosen", k === payload.box));
  if (payload.box === null) {
    const best = floats(state.result.cell_scores).reduce((m, v) => Math.max(m, v), 0);
    $("why-caption").textContent = `no box: saliency for the best cell's score (${percent(best)})`;
    paintSaliency(payload);
    return;
  }
  const b = boxes[payload.box];
  $("why-caption").textContent = `saliency for the box “${b.label}” (${percent(b.score)})`;
  paintSaliency(payload);
  for (const id of ["why-input", "why-saliency"]) outline($(id), b.input_box, boxColour(b.class));
}

function chooseBox(k) {
  if (!state.result) return;
  fetch(`/api/saliency?input=${state.result.id}&box=${k}`).then((r) => r.json()).then((payload) => {
    if (!payload.error) renderBoxSaliency(payload);
  });
}

// ---------------------------------------------------------------------------------------------
clearPad();
loadInfo().then(() => setStatus("ready: draw", "ready")).catch((error) => setStatus(`cannot load the run: ${error}`, "error"));
