/* The live job page: status, progress, queue position, timeline and outputs (polled JSON rendered by the
   server's own templates), the log tail (incremental reads of the log API) with the algorithms' JSON
   progress lines (design §6) shown as readable text, a table of the latest value of each metric, metric
   plots per epoch drawn as SVG, and a progress bar that follows the log as well as the polled job. */
(function () {
  "use strict";
  const root = document.getElementById("job");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  let terminal = root.dataset.terminal === "1";

  function pct(p) { return Math.round((p || 0) * 1000) / 10; }

  // The bar shows the newest progress known: the polled job's (the worker's last heartbeat) or, while the job
  // runs, the last progress line of the log when that one is ahead (heartbeats lag the log by seconds).
  const polled = { status: $("job-status").textContent.trim(), progress: Number($("job-bar").getAttribute("aria-valuenow")) / 100,
                   stage: "", epoch: null };
  let fromLog = null; // the last progress line read: {progress, stage, epoch}

  function showProgress() {
    const useLog = fromLog && polled.status === "running" && fromLog.progress >= polled.progress;
    const shown = useLog ? fromLog : polled;
    const p = pct(shown.progress);
    $("job-bar").querySelector("span").style.width = p + "%";
    $("job-bar").setAttribute("aria-valuenow", String(p));
    $("job-pct").textContent = Math.round(p) + " %";
    if (useLog || polled.stage || polled.epoch) {
      $("job-stage").textContent = (shown.stage ? "stage " + shown.stage : "") + (shown.epoch ? " · epoch " + shown.epoch : "");
    }
  }

  function apply(job) {
    const status = $("job-status");
    status.textContent = job.status;
    status.className = "status status-" + job.status;
    Object.assign(polled, { status: job.status, progress: job.progress || 0, stage: job.stage, epoch: job.epoch });
    showProgress();
    const waiting = $("job-waiting");
    const wait = (job.queue_position ? `#${job.queue_position} in the ${job.queue} queue` : "") +
                 (job.waiting_reason ? " — waiting: " + job.waiting_reason : "");
    waiting.textContent = wait;
    waiting.hidden = !wait;
    $("job-reason").textContent = job.reason || "";
    $("job-reason").hidden = !job.reason;
    for (const [name, html] of Object.entries(job.sections || {})) {
      const el = $("section-" + name);
      if (el && el.innerHTML !== html) el.innerHTML = html;
    }
    $("cancel-form").hidden = !job.cancellable;
    document.title = `${job.status} · ${document.title.replace(/^\w+ · /, "")}`;
  }

  // --- log tail, progress lines as text, metrics ---------------------------------------------------------
  const log = $("job-log");
  const rawBox = $("log-raw");
  let offset = 0, logDone = false, partial = "";
  const lines = []; // complete lines read so far: {raw, obj} (obj: the parsed progress line, or null)
  const KEEP_LINES = 20000; // the page keeps the log's tail; the download has all of it
  const series = {}; // metric name → [[epoch, value]], per-epoch metrics only
  const latest = {}; // metric name → {value, epoch}: the last value of every numeric metric

  function progressLine(text) {
    const t = text.trim();
    if (!t.startsWith("{") || t.indexOf('"progress"') < 0) return null;
    try {
      const obj = JSON.parse(t);
      return obj && typeof obj === "object" && typeof obj.progress === "number" ? obj : null;
    } catch (e) { return null; }
  }

  // "val_rmse_lat" → "val RMSE lat" (nm); "resolution_nm" → "resolution" (nm); "val_jaccard" → "val JI".
  const WORDS = { jaccard: "JI", rmse: "RMSE", lr: "LR", gflops: "GFLOP/s", crlb: "CRLB", eff: "efficiency", ji: "JI" };
  function metricName(key) {
    const words = key.split("_");
    let unit = "";
    if (words.length > 1 && words[words.length - 1] === "nm") { words.pop(); unit = "nm"; }
    else if (words.includes("rmse") && !words.includes("photon") && !words.includes("over")) unit = "nm";
    return { label: words.map((w) => WORDS[w] || w).join(" "), unit };
  }
  function num(v) {
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2).replace(/\.?0+e/, "e");
    return String(+v.toPrecision(a >= 100 ? 5 : 3));
  }
  function value(v) {
    if (Array.isArray(v)) return v.every((x) => typeof x === "number") && v.length === 2 ? v.map(num).join(" × ") : v.map((x) => (typeof x === "object" ? JSON.stringify(x) : num(x))).join(", ");
    if (v && typeof v === "object") return JSON.stringify(v);
    return num(v);
  }
  function describe(obj) {
    const parts = [Math.round(obj.progress * 100) + " %"];
    if (obj.stage) parts.push(String(obj.stage));
    if (obj.epoch != null) parts.push("epoch " + obj.epoch);
    if (obj.message) parts.push(String(obj.message));
    if (obj.metrics && typeof obj.metrics === "object") {
      for (const [k, v] of Object.entries(obj.metrics)) {
        const m = metricName(k);
        parts.push(`${m.label} ${v == null ? "—" : value(v)}${m.unit && typeof v === "number" ? " " + m.unit : ""}`);
      }
    }
    for (const [k, v] of Object.entries(obj)) {
      if (["progress", "stage", "epoch", "message", "metrics"].includes(k)) continue;
      parts.push(`${k.replace(/_/g, " ")} ${value(v)}`);
    }
    return parts.join(" · ");
  }

  function lineNode(line) {
    if (!line.obj || rawBox.checked) return document.createTextNode(line.raw + "\n");
    const span = document.createElement("span");
    span.className = "progress-line";
    span.title = line.raw;
    span.textContent = describe(line.obj) + "\n";
    return span;
  }

  function takeMetrics(obj) {
    if (!obj.metrics || typeof obj.metrics !== "object") return false;
    let plotted = false;
    for (const [k, v] of Object.entries(obj.metrics)) {
      if (typeof v !== "number" || !Number.isFinite(v)) continue;
      latest[k] = { value: v, epoch: obj.epoch };
      if (obj.epoch == null || k === "lr") continue;
      const s = series[k] || (series[k] = []);
      const last = s[s.length - 1];
      if (last && last[0] === obj.epoch) last[1] = v; else s.push([obj.epoch, v]);
      plotted = true;
    }
    return plotted;
  }

  // Lower is better for losses and errors, higher for detection and efficiency scores; others have no best.
  function better(key) {
    const k = key.toLowerCase();
    if (/loss|rmse|crlb|error|rejection/.test(k)) return -1;
    if (/jaccard|(^|_)ji|eff|precision|recall|accuracy/.test(k)) return 1;
    return 0;
  }

  function drawMetrics() {
    const names = Object.keys(latest);
    $("metrics-card").hidden = names.length === 0;
    const rows = names.map((k) => {
      const m = metricName(k), unit = m.unit ? " " + m.unit : "";
      let best = "";
      const dir = better(k), s = series[k];
      if (dir && s && s.length > 1) {
        const [e, v] = s.reduce((a, b) => (dir * (b[1] - a[1]) > 0 ? b : a));
        best = `${num(v)}${unit} <span class="muted">(epoch ${e})</span>`;
      }
      return `<tr data-metric="${Locus.esc(k)}"><td>${Locus.esc(m.label)}</td><td class="num">${Locus.esc(num(latest[k].value) + unit)}</td>` +
             `<td class="num">${latest[k].epoch == null ? "" : Locus.esc(latest[k].epoch)}</td><td class="num">${best}</td></tr>`;
    });
    $("metrics-table").querySelector("tbody").innerHTML = rows.join("");
  }

  function render(all) {
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
    const frag = document.createDocumentFragment();
    for (const line of all) frag.appendChild(lineNode(line));
    log.appendChild(frag);
    while (log.childNodes.length > KEEP_LINES + 1) log.removeChild(log.firstChild);
    if (stick) log.scrollTop = log.scrollHeight;
  }

  function take(text, final) {
    const parts = (partial + text).split("\n");
    partial = final ? "" : parts.pop();
    if (final && parts[parts.length - 1] === "") parts.pop();
    const fresh = parts.map((raw) => ({ raw: raw.replace(/\r$/, ""), obj: progressLine(raw) }));
    let plotted = false, metrics = false;
    for (const line of fresh) {
      if (!line.obj) continue;
      fromLog = { progress: line.obj.progress, stage: line.obj.stage, epoch: line.obj.epoch };
      metrics = takeMetrics(line.obj) || metrics || !!line.obj.metrics;
      plotted = plotted || (line.obj.epoch != null && !!line.obj.metrics);
    }
    lines.push(...fresh);
    if (lines.length > KEEP_LINES) lines.splice(0, lines.length - KEEP_LINES);
    render(fresh);
    if (metrics) drawMetrics();
    if (plotted) drawPlots();
    if (fromLog && !terminal) showProgress();
  }

  rawBox.addEventListener("change", () => {
    log.textContent = "";
    render(lines);
    if (partial) log.appendChild(document.createTextNode(partial));
  });

  let pending = null; // the text node of a line still being written
  async function readLog() {
    if (logDone) return false;
    const body = await Locus.fetchJSON(`${log.dataset.url}?offset=${offset}`);
    if (pending) { pending.remove(); pending = null; }
    if (body.text || body.complete) take(body.text || "", body.complete);
    if (partial) { pending = document.createTextNode(partial); log.appendChild(pending); }
    offset = body.next_offset;
    $("log-state").textContent = body.complete ? "complete" : "live";
    if (body.complete) logDone = true;
    return !logDone;
  }

  // --- plots --------------------------------------------------------------------------------------------
  const COLORS = ["#2f6fa8", "#d9822b", "#0b7a75", "#9b59b6", "#c0392b", "#7f8c8d"];
  function group(name) {
    const n = name.toLowerCase();
    if (n.includes("loss")) return "Loss";
    if (n.includes("jaccard") || n === "ji" || n.includes("_ji") || n.startsWith("ji")) return "Jaccard index";
    if (n.includes("rmse")) return "RMSE (nm)";
    if (n.includes("eff")) return "Efficiency";
    return name;
  }

  function drawPlots() {
    const groups = {};
    for (const [name, points] of Object.entries(series)) (groups[group(name)] = groups[group(name)] || []).push([name, points]);
    const box = $("plots");
    box.hidden = false;
    box.innerHTML = "";
    for (const [title, lines] of Object.entries(groups)) box.appendChild(plot(title, lines));
  }

  function plot(title, lines) {
    const W = 420, H = 206, L = 46, R = 10, T = 10, B = 36;
    const pts = lines.flatMap(([, p]) => p).filter(([, v]) => Number.isFinite(v));
    let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 + 1e-9; y1 += Math.abs(y1) * 0.1 + 1e-9; }
    const pad = (y1 - y0) * 0.06; y0 -= pad; y1 += pad;
    const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    const fmt = (v) => Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : +v.toPrecision(3);
    let svg = `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="${Locus.esc(title)} per epoch">`;
    for (let i = 0; i <= 4; i++) {
      const y = y0 + (y1 - y0) * i / 4;
      svg += `<line x1="${L}" x2="${W - R}" y1="${sy(y)}" y2="${sy(y)}" stroke="#e2e7ee"/>` +
             `<text x="${L - 5}" y="${sy(y) + 3}" text-anchor="end" font-size="10" fill="#5d6b7a">${fmt(y)}</text>`;
    }
    const ticks = Math.min(6, x1 - x0);
    for (let i = 0; i <= ticks; i++) {
      const x = Math.round(x0 + (x1 - x0) * i / ticks);
      svg += `<text x="${sx(x)}" y="${H - 20}" text-anchor="middle" font-size="10" fill="#5d6b7a">${x}</text>`;
    }
    svg += `<text x="${(L + W - R) / 2}" y="${H - 3}" text-anchor="middle" font-size="10" fill="#5d6b7a">epoch</text>`;
    lines.forEach(([name, points], i) => {
      const c = COLORS[i % COLORS.length];
      const good = points.filter(([, v]) => Number.isFinite(v));
      svg += `<polyline class="series" data-metric="${Locus.esc(name)}" fill="none" stroke="${c}" stroke-width="2" points="${good.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ")}"/>`;
      for (const [x, y] of good) svg += `<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="2.5" fill="${c}"/>`;
    });
    svg += "</svg>";
    const div = document.createElement("div");
    div.className = "plot";
    div.dataset.plot = title;
    div.innerHTML = `<h4>${Locus.esc(title)}</h4>${svg}<div class="legend">${lines.map(([name]) =>
      `<span title="${Locus.esc(name)}"><i></i>${Locus.esc(metricName(name).label)}</span>`).join("")}</div>`;
    // Colours through the CSSOM: the Content-Security-Policy refuses inline style attributes.
    div.querySelectorAll(".legend i").forEach((swatch, i) => { swatch.style.background = COLORS[i % COLORS.length]; });
    return div;
  }

  // --- polling ---------------------------------------------------------------------------------------------
  Locus.poll(readLog, 1000);
  if (!terminal) {
    Locus.poll(async () => {
      const job = await Locus.fetchJSON(root.dataset.live);
      apply(job);
      if (job.terminal) { terminal = true; return false; }
      return true;
    }, 1000);
  }
})();
