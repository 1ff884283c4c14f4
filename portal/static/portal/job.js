/* The live job page: status, progress, queue position, timeline and outputs (polled JSON rendered by the
   server's own templates), the log tail (incremental reads of the log API), and metric plots per epoch
   drawn as SVG from the JSON progress lines in the log. */
(function () {
  "use strict";
  const root = document.getElementById("job");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  let terminal = root.dataset.terminal === "1";

  function pct(p) { return Math.round((p || 0) * 1000) / 10; }

  function apply(job) {
    const status = $("job-status");
    status.textContent = job.status;
    status.className = "status status-" + job.status;
    const p = pct(job.progress);
    $("job-bar").querySelector("span").style.width = p + "%";
    $("job-bar").setAttribute("aria-valuenow", String(p));
    $("job-pct").textContent = Math.round(p) + " %";
    $("job-stage").textContent = (job.stage ? "stage " + job.stage : "") + (job.epoch ? " · epoch " + job.epoch : "");
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

  // --- log tail and metrics ---------------------------------------------------------------------------
  const log = $("job-log");
  let offset = 0, logDone = false, partial = "";
  const series = {}; // metric name → [[epoch, value]]

  function takeProgressLines(text) {
    const lines = (partial + text).split("\n");
    partial = lines.pop();
    let changed = false;
    for (const line of lines) {
      const t = line.trim();
      if (!t.startsWith("{") || t.indexOf('"progress"') < 0) continue;
      let obj;
      try { obj = JSON.parse(t); } catch (e) { continue; }
      if (obj.epoch == null || !obj.metrics) continue;
      for (const [k, v] of Object.entries(obj.metrics)) {
        if (typeof v !== "number" || k === "lr") continue;
        const s = series[k] || (series[k] = []);
        const last = s[s.length - 1];
        if (last && last[0] === obj.epoch) last[1] = v; else s.push([obj.epoch, v]);
        changed = true;
      }
    }
    if (changed) drawPlots();
  }

  async function readLog() {
    if (logDone) return false;
    const body = await Locus.fetchJSON(`${log.dataset.url}?offset=${offset}`);
    if (body.text) {
      const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
      log.textContent += body.text;
      if (log.textContent.length > 400000) log.textContent = "…\n" + log.textContent.slice(-300000);
      if (stick) log.scrollTop = log.scrollHeight;
      takeProgressLines(body.text);
    }
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
      `<span><i></i>${Locus.esc(name)}</span>`).join("")}</div>`;
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
