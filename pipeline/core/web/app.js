/* deepfake-detect: the page of `deepfake-detect serve`. Plain JS, no framework, nothing from a CDN.

What it does: upload one photo or video (POST /v1/jobs, with upload progress), poll the job
(GET /v1/jobs/<id>) until it is done or failed, then show the verdict, one row per person with a
timeline of its face scores, the keyframes, each member's heatmap panels, the annotated video and
the files to download; plus the recent jobs (GET /v1/jobs) and the model card (GET /v1/model-card).
With API keys on, the key typed in #api-key goes out as X-API-Key, and media is fetched as blobs
(an <img> or <video> cannot send a header).

Stable selectors (tests/test_server_browser.py relies on them; keep them when restyling):
  #file-input                 the <input type=file>; choosing a file starts the upload
  #drop-zone                  drop target for a file
  #sampling-mode, #sampling-value, #threshold, #render, #api-key   the form's options
  #status, #upload-progress, #analysis-progress, #status-line       progress of the current job
  #error                      one-line error (HTTP 413/415/503, failed job, ...); hidden when none
  #result                     everything about the finished job; hidden until then
  #verdict                    the verdict banner; its data-verdict is real|fake|inconclusive|no_face|error
  #verdict-word, #verdict-numbers
  #tracks .track              one per person; data-track-id
  svg.timeline                a person's score timeline (inside .track); polyline.scores is the plotted line,
                              line.threshold the dashed threshold, circle.point one per analysed face
  #keyframes img              keyframe images (boxes, scores, heatmaps)
  #heatmaps img               per-face member heatmap panels
  #player video               the annotated video (#player img for a photo)
  #downloads a                files; a.report-download is the JSON report, a.html-download the HTML one
  #provenance, #about          provenance facts (C2PA, metadata); input, detector and settings
  body[data-mode=report]      the page as a self-contained HTML report (`analyze --html`): the job is the
                              JSON in script#embedded-job, every file a data: URL, nothing fetched
  #jobs li, #jobs .job-open   recent jobs; data-job-id
  body[data-state]            idle|uploading|queued|running|done|failed|error: what the page is showing
*/
"use strict";

(() => {
  const POLL_MS = 700;
  const JOBS_REFRESH_MS = 10000;
  const LIMITS_LINE = "Research baseline: above chance only on some fakes; read the model card before trusting a verdict.";
  const VERDICT_WORDS = {
    real: "Real", fake: "Fake", inconclusive: "Inconclusive", no_face: "No face found", error: "Error",
  };
  const SVG_NS = "http://www.w3.org/2000/svg";
  const MEMBER_COLOURS = ["#7c8db5", "#b58a5c", "#6fa38a", "#a9739b"];

  const $ = (sel, root = document) => root.querySelector(sel);
  const state = {
    apiKey: sessionStorage.getItem("deepfake-detect-api-key") || "",
    jobId: null,
    generation: 0,      // bumped whenever another job is opened: stale polls stop
    xhr: null,
    objectUrls: [],
    info: null,
    shownReport: null,  // the report on show, to redraw the timelines when the width changes
  };

  // ---------- small helpers ----------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    return node;
  }

  const fmt = (x, digits = 2) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "-");

  function fmtBytes(n) {
    if (typeof n !== "number" || !Number.isFinite(n)) return "";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n >= 10 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
  }

  function fmtTime(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const same = d.toDateString() === new Date().toDateString();
    return same ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })
      : d.toLocaleString([], { dateStyle: "short", timeStyle: "short" });
  }

  function basename(p) {
    return String(p || "").split(/[\\/]/).pop().split("?")[0];
  }

  function setPageState(s) { document.body.dataset.state = s; }

  // ---------- HTTP ----------

  class HttpError extends Error {
    constructor(status, detail, retryAfter) {
      super(detail || `HTTP ${status}`);
      this.status = status;
      this.detail = detail;
      this.retryAfter = retryAfter;
    }
  }

  function detailText(body, fallback) {
    if (body && typeof body === "object" && "detail" in body) {
      const d = body.detail;
      if (typeof d === "string") return d;
      if (Array.isArray(d) && d.length) {  // FastAPI's validation errors
        return d.map((e) => [(e.loc || []).filter((x) => x !== "body").join("."), e.msg].filter(Boolean).join(": ")).join("; ");
      }
      return JSON.stringify(d);
    }
    return fallback;
  }

  function parseJson(text) {
    try { return JSON.parse(text); } catch { return null; }
  }

  function authHeaders() {
    return state.apiKey ? { "X-API-Key": state.apiKey } : {};
  }

  async function api(path, options = {}) {
    let res;
    try {
      res = await fetch(path, { ...options, headers: { Accept: "application/json", ...authHeaders(), ...(options.headers || {}) } });
    } catch {
      throw new HttpError(0, "cannot reach the server");
    }
    const text = await res.text();
    if (!res.ok) {
      throw new HttpError(res.status, detailText(parseJson(text), text.trim().slice(0, 200) || res.statusText),
        res.headers.get("Retry-After"));
    }
    const type = res.headers.get("Content-Type") || "";
    return type.includes("json") ? parseJson(text) : text;
  }

  /** One line a person can act on, for an HTTP error. */
  function errorLine(err, what = "") {
    if (!(err instanceof HttpError)) return `${what}${err && err.message ? err.message : String(err)}`;
    const detail = err.detail ? `: ${err.detail}` : "";
    switch (err.status) {
      case 0: return "Cannot reach the server. Is `deepfake-detect serve` still running?";
      case 401: showKeyField(); return `An API key is needed${state.apiKey ? " (the one given was refused)" : ""}: type it in the API key field.`;
      case 403: showKeyField(); return `This API key is not allowed${detail}`;
      case 404: return `Not found${detail} (the job may have been deleted or expired).`;
      case 413: return `File too large${detail}`;
      case 415: return `Not a photo or video${detail}`;
      case 422: return `Invalid options${detail}`;
      case 429:
      case 503: {
        const wait = err.retryAfter ? ` Try again in ${err.retryAfter} s.` : " Try again in a moment.";
        return `The server is busy (${err.detail || "queue full"}).${wait}`;
      }
      default: return `${what}Server error ${err.status}${detail}`;
    }
  }

  function showError(line) {
    const box = $("#error");
    box.textContent = line;
    box.hidden = !line;
  }

  function showKeyField() {
    const row = $("#api-key-row");
    if (row.hidden) {
      row.hidden = false;
      $("#api-key").focus();
    }
  }

  /** URL an <img>/<video> can load: the file's own URL, or a blob fetched with the key when keys are on. */
  async function mediaUrl(url) {
    if (!state.apiKey) return url;
    const res = await fetch(url, { headers: authHeaders() });
    if (!res.ok) throw new HttpError(res.status, res.statusText);
    const obj = URL.createObjectURL(await res.blob());
    state.objectUrls.push(obj);
    return obj;
  }

  function setMedia(node, attr, url) {
    mediaUrl(url).then((u) => node.setAttribute(attr, u)).catch((e) => showError(errorLine(e, "Cannot load a file: ")));
  }

  function releaseObjectUrls() {
    for (const u of state.objectUrls) URL.revokeObjectURL(u);
    state.objectUrls = [];
  }

  // ---------- upload ----------

  function uploadOptions(form) {
    const mode = $("#sampling-mode").value;
    const value = $("#sampling-value").value.trim();
    if (mode && value) form.append(mode, value);
    const threshold = $("#threshold").value.trim();
    if (threshold) form.append("threshold", threshold);
    form.append("render", $("#render").checked ? "true" : "false");
  }

  function maxUploadBytes() {
    const info = state.info || {};
    const limits = info.limits || {};
    for (const v of [limits.max_upload_bytes, limits.max_file_bytes, info.max_upload_bytes]) {
      if (typeof v === "number" && v > 0) return v;
    }
    return null;
  }

  function startUpload(file) {
    if (!file) return;
    const cap = maxUploadBytes();
    if (cap && file.size > cap) {
      showError(`File too large: ${fmtBytes(file.size)}, the limit is ${fmtBytes(cap)}.`);
      return;
    }
    if (state.xhr) state.xhr.abort();
    closeJob();
    showError("");
    setPageState("uploading");
    $("#status").hidden = false;
    $("#status-file").textContent = `${file.name} (${fmtBytes(file.size)})`;
    $("#upload-row").hidden = false;
    setProgress("#upload-progress", "#upload-text", 0, 1, "0 %");
    setProgress("#analysis-progress", "#analysis-text", 0, 1, "");
    $("#status-line").textContent = "Uploading…";
    $("#cancel-button").hidden = false;

    const form = new FormData();
    form.append("file", file, file.name);
    uploadOptions(form);
    const xhr = new XMLHttpRequest();
    state.xhr = xhr;
    xhr.open("POST", "/v1/jobs");
    xhr.setRequestHeader("Accept", "application/json");
    if (state.apiKey) xhr.setRequestHeader("X-API-Key", state.apiKey);
    xhr.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      setProgress("#upload-progress", "#upload-text", e.loaded, e.total,
        `${Math.floor((100 * e.loaded) / e.total)} % of ${fmtBytes(e.total)}`);
    });
    xhr.upload.addEventListener("load", () => {
      setProgress("#upload-progress", "#upload-text", 1, 1, "100 %");
      $("#status-line").textContent = "Uploaded; the server is checking the file…";
    });
    xhr.addEventListener("load", () => {
      state.xhr = null;
      $("#cancel-button").hidden = true;
      const body = parseJson(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300 && body && body.id) {
        setProgress("#upload-progress", "#upload-text", 1, 1, "100 %");
        openJob(body.id, { keepStatus: true, initial: body });
        refreshJobs();
        return;
      }
      failUpload(new HttpError(xhr.status, detailText(body, xhr.responseText.trim().slice(0, 200) || xhr.statusText),
        xhr.getResponseHeader("Retry-After")));
    });
    xhr.addEventListener("error", () => { state.xhr = null; failUpload(new HttpError(0, "")); });
    xhr.addEventListener("abort", () => {
      state.xhr = null;
      $("#cancel-button").hidden = true;
      $("#status-line").textContent = "Upload cancelled.";
      setPageState("idle");
    });
    xhr.send(form);
  }

  function failUpload(err) {
    $("#cancel-button").hidden = true;
    $("#status-line").textContent = "";
    $("#status").hidden = true;
    setPageState("error");
    showError(errorLine(err, "Upload failed: "));
  }

  function setProgress(barSel, textSel, done, total, text) {
    const bar = $(barSel);
    if (total > 0) {
      bar.max = total;
      bar.value = Math.min(done, total);
    } else {
      bar.removeAttribute("value");  // indeterminate
    }
    $(textSel).textContent = text;
  }

  // ---------- jobs ----------

  function closeJob() {
    state.generation += 1;
    state.jobId = null;
    state.shownReport = null;
    releaseObjectUrls();
    $("#result").hidden = true;
    for (const sel of ["#tracks", "#keyframes", "#heatmaps", "#player", "#downloads", "#messages"]) $(sel).replaceChildren();
    markCurrentJob();
  }

  function openJob(id, { keepStatus = false, initial = null } = {}) {
    closeJob();
    state.jobId = id;
    const gen = state.generation;
    if (location.hash !== `#job=${encodeURIComponent(id)}`) history.replaceState(null, "", `#job=${encodeURIComponent(id)}`);
    showError("");
    $("#status").hidden = false;
    if (!keepStatus) {
      $("#upload-row").hidden = true;
      $("#status-file").textContent = "";
    }
    if (initial) showProgress(initial);
    markCurrentJob();
    poll(id, gen, 0);
  }

  async function poll(id, gen, failures) {
    if (gen !== state.generation) return;
    let job;
    try {
      job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
    } catch (err) {
      if (gen !== state.generation) return;
      // a dropped connection or a restarting server: keep trying a while; anything else is final
      if ((err.status === 0 || err.status >= 502) && failures < 20) {
        $("#status-line").textContent = "Lost contact with the server; retrying…";
        setTimeout(() => poll(id, gen, failures + 1), POLL_MS * 2);
        return;
      }
      setPageState("error");
      $("#status").hidden = true;
      showError(errorLine(err, "Cannot read the job: "));
      return;
    }
    if (gen !== state.generation) return;
    showProgress(job);
    if (job.state === "done" || job.state === "failed") {
      showJob(job);
      refreshJobs();
      return;
    }
    setTimeout(() => poll(id, gen, 0), POLL_MS);
  }

  function showProgress(job) {
    setPageState(job.state || "queued");
    if (job.filename && !$("#status-file").textContent) $("#status-file").textContent = job.filename;
    const p = job.progress || {};
    const done = Number(p.frames_done) || 0;
    const total = Number(p.frames_total) || 0;
    const line = $("#status-line");
    if (job.state === "queued") {
      setProgress("#analysis-progress", "#analysis-text", 0, 0, "");
      const ahead = typeof job.queue_position === "number" && job.queue_position > 0 ? ` (${job.queue_position} ahead)` : "";
      line.textContent = `Waiting in the queue${ahead}…`;
    } else if (job.state === "running") {
      if (total > 0) {
        setProgress("#analysis-progress", "#analysis-text", done, total, `${done} / ${total} frames`);
        line.textContent = done >= total ? "Explaining and rendering…" : "Analysing frames…";
      } else {
        setProgress("#analysis-progress", "#analysis-text", 0, 0, "");
        line.textContent = "Reading the file…";
      }
    } else if (job.state === "done") {
      setProgress("#analysis-progress", "#analysis-text", 1, 1, total ? `${total} / ${total} frames` : "done");
      line.textContent = "Done.";
    } else if (job.state === "failed") {
      setProgress("#analysis-progress", "#analysis-text", 0, 1, "");
      line.textContent = "Failed.";
    }
  }

  // ---------- files ----------

  /** Each file as {name, url, kind, key}: kind from the server when it is one we know, else from the name. */
  function classifyFiles(job) {
    const report = job.report || {};
    const byBase = {};  // file name -> the report's output key (keyframe_0, keyframe_0_track1_heatmaps, ...)
    for (const [key, path] of Object.entries(report.outputs || {})) {
      if (typeof path === "string") byBase[basename(path)] = key;
    }
    return (job.files || []).map((f) => {
      const name = f.name || basename(f.url);
      const key = byBase[basename(name)] || byBase[basename(f.url)] || name;
      return { name, url: f.url, key, kind: fileKind(f.kind, name, key) };
    });
  }

  function fileKind(kind, name, key) {
    const n = `${name} ${key}`.toLowerCase();
    if (/heatmap/.test(n) || /keyframe_\d+_frame\d+_track\d+\.png/.test(n)) return "heatmaps";
    if (/keyframe/.test(n)) return "keyframe";
    if (/\.(mp4|webm|mov|m4v)(\s|$)/.test(n) || /annotated_video/.test(n)) return "video";
    if (/annotated/.test(n) && /\.(png|jpe?g|webp)(\s|$)/.test(n)) return "image";
    if (/\.json(\s|$)/.test(n) || kind === "report") return "report";
    const k = String(kind || "").toLowerCase();
    if (k.includes("heatmap")) return "heatmaps";
    if (k.includes("keyframe")) return "keyframe";
    if (k.includes("video")) return "video";
    if (k.includes("image")) return "image";
    return k || "other";
  }

  const keyframeIndex = (f) => { const m = /keyframe_(\d+)/.exec(`${f.key} ${f.name}`); return m ? Number(m[1]) : null; };
  const trackIndex = (f) => { const m = /track_?(\d+)/.exec(`${f.key} ${f.name}`); return m ? Number(m[1]) : null; };

  // ---------- the result ----------

  function showJob(job) {
    const report = job.report;
    const verdict = job.verdict || (report && report.verdict) || (job.state === "failed" ? "error" : "");
    if (job.state === "failed") {
      setPageState("failed");
      const reason = job.error || (report && report.errors && report.errors[0]) || "unknown error";
      showError(`Analysis failed: ${reason}`);
    } else {
      setPageState("done");
      if (verdict === "no_face") showError("");
    }
    if (!report) {
      $("#result").hidden = true;
      return;
    }
    $("#result").hidden = false;
    renderVerdict(report, verdict);
    renderMessages(report);
    const files = classifyFiles(job);
    const player = renderPlayer(files);
    state.shownReport = report;
    renderTracks(report, player);
    renderKeyframes(report, files);
    renderHeatmaps(report, files);
    renderProvenance(report);
    renderAbout(job, report);
    renderDownloads(job, files);
  }

  function facts(holder, rows) {
    holder.replaceChildren();
    for (const [term, value] of rows) {
      if (value === null || value === undefined || value === "") continue;
      holder.append(el("dt", { text: term }), el("dd", { text: String(value) }));
    }
  }

  function renderProvenance(report) {
    const p = report.provenance;
    $("#provenance-section").hidden = !p;
    if (!p) return;
    const meta = p.metadata || {};
    const actions = (p.actions || []).map((a) => [a.action, a.digital_source_type, a.software_agent].filter(Boolean).join(" · "));
    facts($("#provenance"), [
      ["Content credentials", `${p.c2pa}: ${p.note || ""}`],
      ["Declares generation", p.declares_generated ? "yes: made (or partly made) by a generative model" : "no"],
      ["Validation codes", (p.validation_codes || []).join(", ")],
      ["Claim generator", p.claim_generator],
      ["Signer", [p.signer_common_name, p.signer_issuer].filter(Boolean).join(", ")],
      ["Signed at", p.signed_at],
      ["Actions", actions.join("; ")],
      ["Ingredients", (p.ingredients || []).map((i) => i.title).filter(Boolean).join(", ")],
      ["Encoder / software", meta.encoder],
      ["Created", meta.creation_time],
      ["Camera", [meta.camera_make, meta.camera_model].filter(Boolean).join(" ")],
      ["GPS data", meta.gps_present ? "present" : "none"],
      ["Metadata note", meta.note],
    ]);
  }

  function renderAbout(job, report) {
    const i = report.input || {};
    const m = report.model || {};
    facts($("#about"), [
      ["File", i.path],
      ["Kind", i.kind],
      ["Size", typeof i.size_bytes === "number" ? fmtBytes(i.size_bytes) : null],
      ["Frames", i.width ? `${i.width}x${i.height}` + (i.fps ? `, ${fmt(i.fps)} fps, ${fmt(i.duration_s)} s` : "") : null],
      ["sha256", i.sha256],
      ["Detector", m.name ? `${m.name} ${m.version} (${(m.members || []).join(" + ")}, ${m.combiner}) on ${m.device}` : null],
      ["Detector sha256", m.sha256],
      ["Report", `schema ${report.schema_version}, deepfake-detect ${report.tool_version}, ${report.created}`],
    ]);
    const settings = job.settings || job.options;
    $("#settings-details").hidden = !settings;
    $("#settings").textContent = settings ? JSON.stringify(settings, null, 2) : "";
  }

  function renderVerdict(report, verdict) {
    const box = $("#verdict");
    box.dataset.verdict = verdict;
    $("#verdict-word").textContent = VERDICT_WORDS[verdict] || verdict || "-";
    const parts = [];
    if (verdict === "no_face") {
      parts.push(`No face found in ${report.frames_analysed || 0} analysed frames: nothing to judge.`);
    } else if (verdict === "error") {
      parts.push((report.errors && report.errors[0]) || "The file could not be analysed.");
    } else {
      parts.push(`score ${fmt(report.score)}`);
      if (typeof report.threshold === "number") parts.push(`threshold ${fmt(report.threshold)}`);
      if (typeof report.fake_percentage === "number") parts.push(`fake in ${report.fake_percentage.toFixed(0)} % of analysed frames`);
      parts.push(`${report.frames_with_faces || 0} of ${report.frames_analysed || 0} frames with faces`);
    }
    $("#verdict-numbers").textContent = parts.join(" · ");
    $("#verdict-basis").textContent = provenanceLine(report);
  }

  // What the file's content credentials say, beside the detector (report.provenance, schema 1.3)
  function provenanceLine(report) {
    const p = report.provenance;
    if (!p) return "";
    const trust = p.c2pa === "valid" ? "intact, trusted signer" : p.c2pa === "untrusted" ? "intact, signer not in the trust list" : p.c2pa;
    if (report.verdict_basis === "provenance") {
      const agents = (p.actions || []).map((a) => a.software_agent).filter(Boolean);
      return `Decided by content credentials (C2PA, ${trust}): the file declares itself made by a generative model` +
        (agents.length ? ` (${agents.join(", ")})` : "") + `. The detector alone said: ${VERDICT_WORDS[report.detector_verdict] || report.detector_verdict}.`;
    }
    if (p.c2pa === "absent") return "Content credentials: none. That rules nothing out.";
    if (p.c2pa === "invalid") return "Content credentials: invalid (the file changed after signing, or they were forged).";
    return `Content credentials (C2PA): ${trust}; no generative model declared.`;
  }

  function renderMessages(report) {
    const list = $("#messages");
    list.replaceChildren();
    for (const e of report.errors || []) list.append(el("li", { class: "msg-error", text: e }));
    for (const w of report.warnings || []) list.append(el("li", { class: "msg-warning", text: w }));
    const model = report.model;
    if (model) {
      list.append(el("li", { class: "msg-info", text: `Detector ${model.name || ""} ${model.version || ""} (${(model.members || []).join(" + ")}, ${model.combiner || ""}, ${model.device || ""}).` }));
    }
  }

  function renderPlayer(files) {
    const holder = $("#player");
    holder.replaceChildren();
    // the annotated file first, should the server also list the uploaded original
    const pick = (kind) => files.find((f) => f.kind === kind && /annotated/i.test(f.name)) || files.find((f) => f.kind === kind);
    const video = pick("video");
    const image = pick("image");
    let node = null;
    if (video) {
      $("#player-title").textContent = "Annotated video";
      node = el("video", { controls: true, preload: "metadata", playsinline: true });
      node.append(document.createTextNode("Your browser cannot play this video; download it below."));
      setMedia(node, "src", video.url);
    } else if (image) {
      $("#player-title").textContent = "Annotated photo";
      node = el("img", { alt: "The photo with each face's box, score and heatmap" });
      setMedia(node, "src", image.url);
    }
    if (node) holder.append(node);
    $("#player-section").hidden = !node;
    return video ? node : null;
  }

  function renderTracks(report, player) {
    const holder = $("#tracks");
    holder.replaceChildren();
    const tracks = report.tracks || [];
    $("#tracks-section").hidden = tracks.length === 0;
    const duration = report.input && typeof report.input.duration_s === "number" ? report.input.duration_s : null;
    const members = (report.model && report.model.members) || [];
    $("#tracks-hint").textContent = "Each person's face score over time (0 = real, 1 = fake); the dashed line is the threshold."
      + (player ? " Click a point to jump the video there." : "");
    for (const track of tracks) {
      const verdict = track.verdict || "";
      const head = el("div", { class: "track-head" },
        el("h4", { text: `Person #${track.id}` }),
        el("span", { class: `chip chip-${verdict}`, text: VERDICT_WORDS[verdict] || verdict }),
        el("span", { class: "num", text: `score ${fmt(track.score)}` }),
        el("span", { class: "hint", text: (track.faces || []).length === 1 ? "1 face" : `${(track.faces || []).length} faces` }),
        track.counted === false ? el("span", { class: "hint", text: "seen in too few frames to count" }) : null);
      const plot = timeline(track, report.threshold, duration, members, player);
      const item = (cls, text, style) => el("span", { class: "legend-item" }, el("span", { class: `key ${cls}`, style }), text);
      const legend = el("p", { class: "legend" }, item("key-scores", "ensemble score"),
        ...members.map((m, i) => item("key-member", m, `border-color:${MEMBER_COLOURS[i % MEMBER_COLOURS.length]}`)),
        item("key-threshold", `threshold ${fmt(report.threshold)}`));
      const row = el("article", { class: "track", "data-track-id": track.id }, head, plot, legend);
      holder.append(row);
    }
  }

  /** The SVG timeline of one person's face scores: x = time (s), y = score 0..1, dashed threshold. */
  function timeline(track, threshold, duration, members, player) {
    // drawn in the container's own pixels, so that labels keep their size at any width (redrawn on resize)
    const W = Math.max(300, Math.round($("#tracks").clientWidth || 800));
    const H = W < 520 ? 170 : 210, L = 40, R = 12, T = 12, B = 30;
    const faces = (track.faces || []).filter((f) => typeof f.score === "number" && typeof f.time_s === "number")
      .sort((a, b) => a.time_s - b.time_s);
    const lastT = faces.length ? faces[faces.length - 1].time_s : 0;
    const still = !(Math.max(duration || 0, lastT) > 0);  // a photo: one frame, no time axis
    const xMax = still ? 1 : Math.max(duration || 0, lastT);
    const x = (t) => (still ? L + (W - L - R) / 2 : L + ((W - L - R) * t) / xMax);
    const y = (s) => T + (H - T - B) * (1 - Math.max(0, Math.min(1, s)));
    const scores = faces.map((f) => f.score);
    const lo = scores.length ? Math.min(...scores) : NaN, hi = scores.length ? Math.max(...scores) : NaN;
    const label = still ? `Person ${track.id}: score ${fmt(hi)}; threshold ${fmt(threshold)}`
      : `Person ${track.id}: ${faces.length} face scores over ${fmt(xMax, 1)} s, from ${fmt(lo)} to ${fmt(hi)}; threshold ${fmt(threshold)}`;
    const root = svg("svg", { class: "timeline", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });
    const title = svg("title");
    title.textContent = label;
    root.append(title);
    root.append(svg("rect", { class: "plot-bg", x: L, y: T, width: W - L - R, height: H - T - B }));
    for (const s of [0, 0.25, 0.5, 0.75, 1]) {
      root.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(s), y2: y(s) }));
      const t = svg("text", { class: "tick", x: L - 6, y: y(s) + 4, "text-anchor": "end" });
      t.textContent = s.toFixed(s % 0.5 ? 2 : 1);
      root.append(t);
    }
    for (const t of still ? [] : niceTicks(xMax)) {
      root.append(svg("line", { class: "grid grid-x", x1: x(t), x2: x(t), y1: T, y2: H - B }));
      const lab = svg("text", { class: "tick", x: x(t), y: H - B + 16, "text-anchor": "middle" });
      lab.textContent = `${+t.toFixed(2)} s`;
      root.append(lab);
    }
    if (typeof threshold === "number") {
      root.append(svg("line", { class: "threshold", x1: L, x2: W - R, y1: y(threshold), y2: y(threshold), "stroke-dasharray": "6 4" }));
    }
    members.forEach((m, i) => {
      const pts = faces.filter((f) => f.member_scores && typeof f.member_scores[m] === "number")
        .map((f) => `${x(f.time_s).toFixed(1)},${y(f.member_scores[m]).toFixed(1)}`);
      const colour = MEMBER_COLOURS[i % MEMBER_COLOURS.length];
      if (pts.length > 1) root.append(svg("polyline", { class: "member", "data-member": m, points: pts.join(" "), stroke: colour }));
      else if (pts.length === 1) {  // one face (a photo): a line of one point would not show
        const [cx, cy] = pts[0].split(",");
        root.append(svg("line", { class: "member", "data-member": m, x1: +cx - 14, x2: +cx + 14, y1: cy, y2: cy, stroke: colour }));
      }
    });
    if (faces.length) {
      root.append(svg("polyline", { class: "scores", points: faces.map((f) => `${x(f.time_s).toFixed(1)},${y(f.score).toFixed(1)}`).join(" ") }));
    }
    for (const f of faces) {
      const above = typeof threshold === "number" && f.score >= threshold;
      const c = svg("circle", { class: `point${above ? " above" : ""}`, cx: x(f.time_s).toFixed(1), cy: y(f.score).toFixed(1), r: faces.length > 60 ? 2.5 : 4 });
      const tip = svg("title");
      const mem = Object.entries(f.member_scores || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
      tip.textContent = `${fmt(f.time_s)} s (frame ${f.frame_index}): score ${fmt(f.score)}${mem ? ` (${mem})` : ""}`;
      c.append(tip);
      if (player) {
        c.addEventListener("click", () => seek(player, f.time_s));
        c.classList.add("seekable");
      }
      root.append(c);
    }
    if (still) {
      const lab = svg("text", { class: "tick", x: x(0), y: H - B + 16, "text-anchor": "middle" });
      lab.textContent = "photo (one frame)";
      root.append(lab);
    }
    const ylab = svg("text", { class: "axis-label", x: 12, y: T + (H - T - B) / 2, transform: `rotate(-90 12 ${T + (H - T - B) / 2})`, "text-anchor": "middle" });
    ylab.textContent = "p(fake)";
    root.append(ylab);
    return root;
  }

  function niceTicks(max) {
    const raw = max / 5;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => max / s <= 6) || raw;
    const ticks = [];
    for (let t = 0; t <= max + 1e-9; t += step) ticks.push(t);
    return ticks;
  }

  function seek(player, t) {
    if (!player) return;
    player.currentTime = t;
    player.scrollIntoView({ behavior: "smooth", block: "nearest" });
  }

  function figure(file, caption, alt) {
    const img = el("img", { alt: `${alt}: ${caption}`, decoding: "async" });
    setMedia(img, "src", file.url);
    const link = el("a", { href: file.url, target: "_blank", rel: "noopener", title: "Open full size" }, img);
    if (state.apiKey) link.addEventListener("click", (e) => { e.preventDefault(); window.open(img.src, "_blank", "noopener"); });
    return el("figure", {}, link, el("figcaption", { text: caption }));
  }

  function renderKeyframes(report, files) {
    const holder = $("#keyframes");
    holder.replaceChildren();
    const frames = files.filter((f) => f.kind === "keyframe").sort((a, b) => (keyframeIndex(a) ?? 0) - (keyframeIndex(b) ?? 0));
    const player = $("#player video");
    for (const f of frames) {
      const n = keyframeIndex(f);
      const k = n !== null && report.keyframes ? report.keyframes[n] : null;
      const caption = k ? `${fmt(k.time_s)} s · frame ${k.frame_index} · person #${k.track_id} · score ${fmt(k.score)}` : f.name;
      const fig = figure(f, caption, "keyframe");
      if (k && player) {
        fig.querySelector("figcaption").append(" ", el("button", {
          type: "button", class: "link-button", text: "play from here", onclick: () => seek(player, k.time_s),
        }));
      }
      holder.append(fig);
    }
    $("#keyframes-section").hidden = frames.length === 0;
  }

  function renderHeatmaps(report, files) {
    const holder = $("#heatmaps");
    holder.replaceChildren();
    const panels = files.filter((f) => f.kind === "heatmaps")
      .sort((a, b) => (keyframeIndex(a) ?? 0) - (keyframeIndex(b) ?? 0) || (trackIndex(a) ?? 0) - (trackIndex(b) ?? 0));
    for (const f of panels) {
      const n = keyframeIndex(f), t = trackIndex(f);
      const k = n !== null && report.keyframes ? report.keyframes[n] : null;
      const caption = [n !== null ? `keyframe ${n + 1}` : null, k ? `${fmt(k.time_s)} s` : null, t !== null ? `person #${t}` : null]
        .filter(Boolean).join(" · ") || f.name;
      holder.append(figure(f, caption, "heatmap panel (crop | each member | ensemble)"));
    }
    $("#heatmaps-section").hidden = panels.length === 0;
  }

  /** A download's file name: the server stores the upload as input.<ext>; give it the upload's name back. */
  function downloadName(job, name) {
    const base = basename(name);
    if (base === "report.json" && job.filename) return `${job.filename}.json`;
    return job.filename ? base.replace(/^input\.[A-Za-z0-9]+/, job.filename) : base;
  }

  function renderDownloads(job, files) {
    const list = $("#downloads");
    list.replaceChildren();
    const report = files.find((f) => f.kind === "report");
    // the JSON report: the server's file when there is one (and no key is needed), else the job's copy
    const href = report && !state.apiKey ? report.url
      : URL.createObjectURL(new Blob([JSON.stringify(job.report, null, 2)], { type: "application/json" }));
    if (!(report && !state.apiKey)) state.objectUrls.push(href);
    const reportName = downloadName(job, report ? report.name : `${job.filename || job.id}.json`);
    list.append(el("li", {}, el("a", { href, download: reportName, class: "report-download", text: "Report (JSON)" }),
      el("span", { class: "hint", text: ` ${reportName}` })));
    if (job.id && document.body.dataset.mode !== "report") {   // the same page, self-contained, to hand on
      const url = `/v1/jobs/${encodeURIComponent(job.id)}/report.html`;
      const htmlName = `${job.filename || job.id}.html`;
      const a = el("a", { href: url, download: htmlName, class: "html-download", text: "Report (HTML, opens offline)" });
      if (state.apiKey) {
        a.addEventListener("click", async (e) => {
          e.preventDefault();
          try {
            el("a", { href: await mediaUrl(url), download: htmlName }).click();
          } catch (err) { showError(errorLine(err, "Cannot download: ")); }
        });
      }
      list.append(el("li", {}, a, el("span", { class: "hint", text: ` ${htmlName}` })));
    }
    for (const f of files) {
      if (f === report) continue;
      const name = downloadName(job, f.name);
      const a = el("a", { href: f.url, download: name, text: name });
      if (state.apiKey) {
        a.addEventListener("click", async (e) => {
          e.preventDefault();
          try {
            const u = await mediaUrl(f.url);
            el("a", { href: u, download: name }).click();
          } catch (err) { showError(errorLine(err, "Cannot download: ")); }
        });
      }
      list.append(el("li", {}, a, el("span", { class: "hint", text: ` ${f.kind}` })));
    }
  }

  // ---------- recent jobs ----------

  async function refreshJobs() {
    let body;
    try {
      body = await api("/v1/jobs?limit=20");
    } catch (err) {
      if (err.status === 401 || err.status === 403) {
        showKeyField();
        $("#jobs-empty").hidden = false;
        $("#jobs-empty").textContent = "Type the API key to see the jobs.";
      }
      return;
    }
    const jobs = (body && body.jobs) || [];
    const list = $("#jobs");
    list.replaceChildren();
    $("#jobs-empty").hidden = jobs.length > 0;
    $("#jobs-empty").textContent = "No jobs yet.";
    for (const j of jobs) {
      const verdict = j.verdict || "";
      const basis = j.verdict_basis === "provenance" ? " (c2pa)" : "";   // decided by content credentials
      const stateText = j.state === "done" ? (VERDICT_WORDS[verdict] || verdict) + basis : j.state;
      const open = el("button", { type: "button", class: "job-open", "data-job-id": j.id, onclick: () => openJob(j.id) },
        el("span", { class: "job-name", text: j.filename || j.id }),
        el("span", { class: `chip chip-${j.state === "done" ? verdict : j.state}`, text: stateText }),
        el("span", { class: "hint", text: fmtTime(j.created) }));
      const del = el("button", {
        type: "button", class: "secondary small job-delete", "aria-label": `Delete job ${j.filename || j.id}`, text: "Delete",
        onclick: () => deleteJob(j.id),
      });
      list.append(el("li", { "data-job-id": j.id }, open, del));
    }
    markCurrentJob();
  }

  function markCurrentJob() {
    for (const li of document.querySelectorAll("#jobs li")) {
      const current = li.dataset.jobId === state.jobId;
      li.classList.toggle("current", current);
      const b = li.querySelector(".job-open");
      if (b) { if (current) b.setAttribute("aria-current", "true"); else b.removeAttribute("aria-current"); }
    }
  }

  async function deleteJob(id) {
    try {
      await api(`/v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
    } catch (err) {
      showError(errorLine(err, "Cannot delete the job: "));
      return;
    }
    if (state.jobId === id) {
      closeJob();
      $("#status").hidden = true;
      history.replaceState(null, "", location.pathname);
      setPageState("idle");
    }
    refreshJobs();
  }

  // ---------- server info and model card ----------

  async function loadInfo() {
    try {
      state.info = await api("/v1/info");
    } catch (err) {
      if (err.status === 401 || err.status === 403) showKeyField();
      return;
    }
    const info = state.info || {};
    const parts = [];
    const tool = info.tool_version || info.version || (info.tool && info.tool.version);
    if (tool) parts.push(`deepfake-detect ${tool}`);
    const det = info.detector || info.model || {};
    if (det && (det.version || det.name)) parts.push(`detector ${det.name || ""} ${det.version || ""}`.trim());
    const cap = maxUploadBytes();
    if (cap) parts.push(`files up to ${fmtBytes(cap)}`);
    if (parts.length) $("#server-info").textContent = parts.join(" · ");
    if (info.auth === true || info.api_keys === true || info.auth_required === true || (info.auth && info.auth.required)) showKeyField();
  }

  async function showModelCard(e) {
    const dialog = $("#model-card-dialog");
    if (typeof dialog.showModal !== "function") return;  // old browser: follow the link
    e.preventDefault();
    let text;
    try {
      const body = await api("/v1/model-card", { headers: { Accept: "text/markdown, text/plain, application/json" } });
      text = typeof body === "string" ? body : (body && (body.markdown || body.text || body.model_card)) || JSON.stringify(body, null, 2);
    } catch (err) {
      text = errorLine(err, "Cannot load the model card: ");
    }
    $("#model-card-text").textContent = text;
    dialog.showModal();
  }

  // ---------- wiring ----------

  function wire() {
    setPageState("idle");
    $("#model-limits").title = LIMITS_LINE;
    const input = $("#file-input");
    input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      if (file) startUpload(file);
      input.value = "";  // choosing the same file again starts another job
    });
    const zone = $("#drop-zone");
    for (const ev of ["dragenter", "dragover"]) {
      zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.add("over"); });
    }
    for (const ev of ["dragleave", "drop"]) zone.addEventListener(ev, () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      const files = e.dataTransfer && e.dataTransfer.files;
      if (!files || !files.length) return;
      startUpload(files[0]);
      if (files.length > 1) $("#status-line").textContent += " (one file at a time: only the first was sent)";
    });
    // a file dropped beside the zone must not make the browser navigate away to it
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());

    const mode = $("#sampling-mode");
    mode.addEventListener("change", () => {
      const v = $("#sampling-value");
      v.disabled = !mode.value;
      v.placeholder = { frames: "32", fps: "2", every: "10" }[mode.value] || "";
      v.step = mode.value === "fps" ? "any" : "1";
      if (mode.value) v.focus();
    });
    const key = $("#api-key");
    key.value = state.apiKey;
    if (state.apiKey) $("#api-key-row").hidden = false;
    key.addEventListener("input", () => {  // the next request uses it at once, even before the field is left
      state.apiKey = key.value.trim();
      sessionStorage.setItem("deepfake-detect-api-key", state.apiKey);
    });
    key.addEventListener("change", () => {
      showError("");
      loadInfo();
      refreshJobs();
      if (state.jobId) openJob(state.jobId);
    });
    // Enter in a field must not submit (and reload) the page
    $("#upload-form").addEventListener("submit", (e) => {
      e.preventDefault();
      if (document.activeElement === key) key.dispatchEvent(new Event("change"));
    });
    $("#cancel-button").addEventListener("click", () => { if (state.xhr) state.xhr.abort(); });
    $("#jobs-refresh").addEventListener("click", refreshJobs);
    for (const a of document.querySelectorAll(".model-card-link")) a.addEventListener("click", showModelCard);
    window.addEventListener("hashchange", openFromHash);
    let resizeTimer = null;
    let lastWidth = window.innerWidth;
    window.addEventListener("resize", () => {
      clearTimeout(resizeTimer);
      resizeTimer = setTimeout(() => {
        if (window.innerWidth === lastWidth || !state.shownReport || $("#result").hidden) return;
        lastWidth = window.innerWidth;
        renderTracks(state.shownReport, $("#player video"));
      }, 200);
    });
    setInterval(() => { if (!document.hidden) refreshJobs(); }, JOBS_REFRESH_MS);
  }

  function openFromHash() {
    const m = /^#job=(.+)$/.exec(location.hash);
    if (m) {
      const id = decodeURIComponent(m[1]);
      if (id !== state.jobId) openJob(id);
    }
  }

  /** The page as a saved report: the job and its files are in the page itself; nothing is fetched. */
  function showEmbedded(job) {
    document.body.dataset.mode = "report";
    state.apiKey = "";   // a server's key left in this tab must not make the page fetch its own data: URLs
    for (const sel of ["#upload", "#status", "#jobs-section"]) $(sel).hidden = true;
    for (const text of document.querySelectorAll(".limits, .verdict-limits")) text.textContent = job.limits || LIMITS_LINE;
    if (job.model_card) {
      const open = el("a", { href: "#model-card", text: "Model card" });
      open.addEventListener("click", (e) => {
        e.preventDefault();
        $("#model-card-text").textContent = job.model_card;
        $("#model-card-dialog").showModal();
      });
      $("#model-limits").append(" ", open);
    }
    $("#server-info").textContent = `deepfake-detect ${(job.report && job.report.tool_version) || ""} · report written ${(job.report && job.report.created) || ""}`;
    showJob(job);
  }

  const embedded = document.getElementById("embedded-job");
  if (embedded) {
    showEmbedded(JSON.parse(embedded.textContent));
  } else {
    wire();
    loadInfo();
    refreshJobs();
    openFromHash();
  }
})();
