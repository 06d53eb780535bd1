// ltxv studio: a page over the server's own /v1/videos API. No build step, no dependencies.
"use strict";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["completed", "failed"]);
const SIZES_SMALL = ["96x64", "64x96", "128x96", "192x128", "256x160"];
const SIZES = ["704x480", "768x512", "480x704", "512x768", "512x512", "1024x576", "576x1024", "1216x704", "704x1216"];

const state = {
  token: localStorage.getItem("ltxv-token") || null,
  jobs: new Map(), // id -> job object
  cards: new Map(), // id -> card element
  streams: new Map(), // id -> AbortController
  blobs: new Map(), // id -> object URL of the finished video
  file: null,
  limits: null,
};

// --- the API, with the token asked for once ------------------------------------------------------------------------

let tokenWait = null;
function askToken() {
  if (!tokenWait) {
    tokenWait = new Promise((resolve) => {
      const dialog = $("token-dialog");
      $("token-input").value = "";
      dialog.addEventListener("close", () => {
        state.token = $("token-input").value.trim() || null;
        if (state.token) localStorage.setItem("ltxv-token", state.token);
        $("token-button").hidden = false;
        tokenWait = null;
        resolve();
      }, { once: true });
      dialog.showModal();
    });
  }
  return tokenWait;
}

async function api(path, options = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    if (state.token) headers.set("Authorization", `Bearer ${state.token}`);
    const res = await fetch(path, { ...options, headers });
    if (res.status !== 401) return res;
    await askToken();
  }
}

async function apiJSON(path, options) {
  const res = await api(path, options);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(body.error ? body.error.message : `HTTP ${res.status}`);
  return body;
}

async function blobURL(path) {
  const res = await api(path);
  if (!res.ok) return null;
  return URL.createObjectURL(await res.blob());
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const uuid = () => (crypto.randomUUID ? crypto.randomUUID() : `${Date.now()}-${Math.random().toString(16).slice(2)}`);

// --- the form ------------------------------------------------------------------------------------------------------

function fillSizes(suggested) {
  const small = parseInt(suggested.size, 10) < 256;
  const list = [suggested.size, ...(small ? SIZES_SMALL : SIZES)];
  const max = state.limits ? state.limits.max_pixels : Infinity;
  const select = $("size");
  select.innerHTML = "";
  for (const size of [...new Set(list)]) {
    const [w, h] = size.split("x").map(Number);
    if (w * h > max) continue;
    const label = `${w} × ${h}`;
    select.add(new Option(label, size));
  }
  $("frames").value = suggested.num_frames;
}

function updateDuration() {
  const frames = Number($("frames").value);
  const fps = Number($("fps").value) || 30;
  const ok = frames >= 1 && (frames - 1) % 8 === 0;
  $("duration").textContent = ok
    ? `${frames} frames · ${(frames / fps).toFixed(2)} s at ${fps} fps`
    : `frames must be 8n+1 (e.g. ${Math.max(1, Math.round((frames - 1) / 8) * 8 + 1)})`;
  $("duration").style.color = ok ? "" : "var(--bad)";
}

function setFile(file) {
  state.file = file || null;
  $("drop-empty").hidden = !!file;
  $("drop-full").hidden = !file;
  const thumb = $("media-thumb");
  thumb.innerHTML = "";
  if (!file) return;
  $("media-name").textContent = `${file.name} · ${(file.size / 1024).toFixed(0)} KB`;
  const isVideo = file.type.startsWith("video/");
  $("v2v-option").hidden = !isVideo;
  if (!isVideo) document.querySelector('input[name="media-use"][value="first"]').checked = true;
  const el = document.createElement(isVideo ? "video" : "img");
  el.src = URL.createObjectURL(file);
  if (isVideo) Object.assign(el, { muted: true, autoplay: true, loop: true, playsInline: true });
  thumb.append(el);
}

function formData() {
  const fd = new FormData();
  fd.set("prompt", $("prompt").value);
  fd.set("size", $("size").value);
  fd.set("num_frames", $("frames").value);
  fd.set("fps", $("fps").value);
  const optional = { seed: "seed", preset: "preset", negative_prompt: "negative", num_inference_steps: "steps",
    guidance_scale: "guidance" };
  for (const [name, id] of Object.entries(optional)) if ($(id).value.trim() !== "") fd.set(name, $(id).value.trim());
  if (state.file) {
    const use = document.querySelector('input[name="media-use"]:checked').value;
    if (use === "v2v") {
      fd.set("input_media", state.file);
      if ($("denoise").value) fd.set("denoise_strength", $("denoise").value);
    } else {
      fd.set("reference", state.file);
      fd.set("conditioning", JSON.stringify([{ part: "reference", frame: 0, strength: Number($("strength").value) }]));
    }
  }
  return fd;
}

async function submit(event) {
  event.preventDefault();
  const button = $("submit");
  $("form-error").textContent = "";
  button.disabled = true;
  button.textContent = "Queuing…";
  try {
    const job = await apiJSON("/v1/videos", { method: "POST", body: formData(), headers: { "Idempotency-Key": uuid() } });
    upsert(job);
    follow(job.id);
  } catch (e) {
    $("form-error").textContent = e.message;
  } finally {
    button.disabled = false;
    button.textContent = "Generate";
  }
}

// --- job cards -----------------------------------------------------------------------------------------------------

function describe(job) {
  const x = job.ltxv || {};
  if (job.status === "queued") return "queued";
  if (job.status === "completed") return "done";
  if (job.status === "failed") return job.error && job.error.code === "cancelled" ? "cancelled" : "failed";
  if (x.cancel_requested) return "cancelling…";
  if (x.stage === "denoise" || (x.stage && x.step)) {
    const pass = x.passes > 1 ? `pass ${x.pass}/${x.passes} · ` : "";
    const after = x.stage === "upsample" ? " · upsampling" : x.stage === "decode" ? " · decoding" : "";
    return `${pass}step ${x.step}/${x.steps}${after}`;
  }
  return x.stage === "write" ? "writing" : "starting";
}

function upsert(job) {
  state.jobs.set(job.id, job);
  let card = state.cards.get(job.id);
  if (!card) {
    card = $("card").content.firstElementChild.cloneNode(true);
    card.dataset.id = job.id;
    card.querySelector(".cancel").onclick = () => cancelJob(job.id);
    card.querySelector(".delete").onclick = () => deleteJob(job.id);
    const [w, h] = job.size.split("x").map(Number);
    card.querySelector(".media").style.aspectRatio = `${w} / ${h}`;
    state.cards.set(job.id, card);
    const grid = $("jobs");
    const newer = [...grid.children].find((c) => state.jobs.get(c.dataset.id).created_at < job.created_at);
    grid.insertBefore(card, newer || null);
  }
  card.className = `card ${job.status}`;
  card.querySelector(".state").textContent = describe(job);
  card.querySelector(".pct").textContent = job.status === "failed" ? "" : `${job.progress}%`;
  card.querySelector(".fill").style.width = `${job.status === "failed" ? 100 : job.progress}%`;
  card.querySelector(".prompt").textContent = job.prompt;
  const x = job.ltxv || {};
  card.querySelector(".meta").textContent =
    `${job.size} · ${x.num_frames} frames · ${job.seconds} s · seed ${x.seed} · ${job.model}` +
    (x.attempt > 1 ? ` · attempt ${x.attempt}` : "");
  card.querySelector(".err").textContent =
    job.status === "failed" && job.error && job.error.code !== "cancelled" ? job.error.message : "";
  card.querySelector(".cancel").hidden = TERMINAL.has(job.status);
  if (job.status === "completed") showVideo(job, card);
  else if (x.preview && !card.querySelector(".still")) showPreview(job.id, x.preview, 1);
  $("empty").hidden = state.cards.size > 0;
}

async function showVideo(job, card) {
  if (state.blobs.has(job.id)) return;
  state.blobs.set(job.id, "pending");
  const url = await blobURL(`/v1/videos/${job.id}/content`);
  if (!url || !state.cards.has(job.id)) return;
  state.blobs.set(job.id, url);
  const video = Object.assign(document.createElement("video"), {
    src: url, controls: true, loop: true, muted: true, autoplay: true, playsInline: true,
  });
  const media = card.querySelector(".media");
  stopAnimation(media);
  media.replaceChildren(video);
  video.play().catch(() => {});
  const link = card.querySelector(".download");
  Object.assign(link, { href: url, download: `${job.id}.mp4`, hidden: false });
}

async function showPreview(id, path, frames, tile) {
  const url = await blobURL(path); // served with Cache-Control: no-store
  const card = state.cards.get(id);
  if (!url || !card || state.blobs.has(id)) return URL.revokeObjectURL(url || "");
  const media = card.querySelector(".media");
  let still = media.querySelector(".still");
  if (!still) {
    still = document.createElement("div");
    still.className = "still";
    media.replaceChildren(still);
  }
  if (still.dataset.url) URL.revokeObjectURL(still.dataset.url);
  still.dataset.url = url;
  still.dataset.frames = frames;
  still.style.backgroundImage = `url(${url})`;
  still.style.backgroundSize = `${frames * 100}% 100%`;
  if (!media.timer) {
    let i = 0;
    media.timer = setInterval(() => { // play the strip of latent frames as a little flip-book
      const n = Number(still.dataset.frames) || 1;
      i = (i + 1) % n;
      still.style.backgroundPosition = n > 1 ? `${(i / (n - 1)) * 100}% 0` : "0 0";
    }, 160);
  }
}

function stopAnimation(media) {
  if (media.timer) clearInterval(media.timer);
  media.timer = null;
}

async function cancelJob(id) {
  try {
    upsert(await apiJSON(`/v1/videos/${id}/cancel`, { method: "POST" }));
  } catch (e) {
    $("form-error").textContent = e.message;
  }
}

async function deleteJob(id) {
  try {
    await apiJSON(`/v1/videos/${id}`, { method: "DELETE" });
  } catch (e) {
    if (!/no video/.test(e.message)) return ($("form-error").textContent = e.message);
  }
  removeCard(id);
}

function removeCard(id) {
  const ctrl = state.streams.get(id);
  if (ctrl) ctrl.abort();
  const card = state.cards.get(id);
  if (card) {
    stopAnimation(card.querySelector(".media"));
    card.remove();
  }
  const url = state.blobs.get(id);
  if (url && url !== "pending") URL.revokeObjectURL(url);
  state.cards.delete(id);
  state.jobs.delete(id);
  state.blobs.delete(id);
  $("empty").hidden = state.cards.size > 0;
}

// --- live events (server-sent events over fetch, so the token can go in a header) ----------------------------------

function parseEvent(chunk) {
  const ev = { event: "message", data: "", id: null };
  for (const line of chunk.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const i = line.indexOf(":");
    const [key, value] = i < 0 ? [line, ""] : [line.slice(0, i), line.slice(i + 1).replace(/^ /, "")];
    if (key === "data") ev.data += value;
    else if (key === "event" || key === "id") ev[key] = value;
  }
  return ev.data ? ev : null;
}

function onEvent(id, ev) {
  const data = JSON.parse(ev.data);
  const job = state.jobs.get(id);
  if (!job) return;
  if (data.video) return upsert(data.video);
  if (ev.event === "started") upsert({ ...job, status: "in_progress", ltxv: { ...job.ltxv, attempt: data.attempt, stage: "starting" } });
  if (ev.event === "progress") {
    const { progress, ...live } = data;
    upsert({ ...job, status: "in_progress", progress: Math.max(job.progress, progress), ltxv: { ...job.ltxv, ...live } });
  }
  if (ev.event === "preview") showPreview(id, data.url, data.frames, data.tile);
  if (ev.event === "deleted") removeCard(id);
}

async function follow(id) {
  if (state.streams.has(id)) return;
  const ctrl = new AbortController();
  state.streams.set(id, ctrl);
  let last = 0;
  let finished = false;
  while (!finished && !ctrl.signal.aborted) {
    try {
      const headers = last ? { "Last-Event-ID": String(last) } : {};
      const res = await api(`/v1/videos/${id}/events`, { signal: ctrl.signal, headers });
      if (!res.ok) break;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const ev = parseEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (!ev) continue;
          if (ev.id) last = Number(ev.id);
          onEvent(id, ev);
          if (["completed", "failed", "deleted"].includes(ev.event)) finished = true;
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) break;
    }
    if (!finished) await sleep(1000);
  }
  state.streams.delete(id);
}

// --- start ---------------------------------------------------------------------------------------------------------

async function refreshJobs() {
  const page = await apiJSON("/v1/videos?limit=50");
  const seen = new Set();
  for (const job of page.data) {
    seen.add(job.id);
    const known = state.jobs.get(job.id);
    if (!known || known.status !== job.status || job.progress > known.progress) upsert(job);
    if (!TERMINAL.has(job.status)) follow(job.id);
  }
  for (const id of [...state.cards.keys()]) if (!seen.has(id) && page.data.length < 50) removeCard(id);
}

async function refreshStatus() {
  const el = $("status");
  try {
    const h = await (await fetch("/healthz")).json();
    el.className = "status up";
    $("status-text").textContent = `${h.workers} worker${h.workers === 1 ? "" : "s"} · ${h.running} running · ${h.queued} queued`;
  } catch (e) {
    el.className = "status down";
    $("status-text").textContent = "server unreachable";
  }
}

async function start() {
  $("create").addEventListener("submit", submit);
  $("frames").addEventListener("input", updateDuration);
  $("fps").addEventListener("input", updateDuration);
  $("dice").onclick = () => ($("seed").value = Math.floor(Math.random() * 2 ** 31));
  $("strength").oninput = () => ($("strength-out").value = Number($("strength").value).toFixed(2));
  $("token-button").onclick = () => askToken();
  const drop = $("drop");
  const media = $("media");
  drop.onclick = (e) => { if (!e.target.closest(".drop-full")) media.click(); };
  drop.onkeydown = (e) => { if (e.key === "Enter" || e.key === " ") media.click(); };
  media.onchange = () => setFile(media.files[0]);
  $("media-clear").onclick = () => { media.value = ""; setFile(null); };
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); setFile(e.dataTransfer.files[0]); };

  refreshStatus();
  setInterval(refreshStatus, 4000);
  try {
    const models = await apiJSON("/v1/models");
    const info = models.data[0].ltxv;
    state.limits = info.limits;
    fillSizes(info.suggested);
    for (const name of info.presets) $("preset").add(new Option(name, name));
    $("preset").options[0].text = `server default${info.default_preset ? ` (${info.default_preset})` : ""}`;
    $("prompt").maxLength = info.limits.max_prompt_chars;
  } catch (e) {
    $("form-error").textContent = e.message;
  }
  updateDuration();
  await refreshJobs().catch((e) => ($("form-error").textContent = e.message));
  setInterval(() => refreshJobs().catch(() => {}), 5000);
}

start();
