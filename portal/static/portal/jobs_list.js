/* The jobs list refreshes its rows' status, progress, queue position and waiting reason from JSON. */
(function () {
  "use strict";
  const table = document.getElementById("jobs-table");
  if (!table) return;
  Locus.poll(async () => {
    const body = await Locus.fetchJSON(table.dataset.live);
    const shown = Array.from(table.querySelectorAll("tbody tr[data-job]"), (tr) => tr.dataset.job).join();
    if (body.jobs.length && shown !== body.jobs.map((j) => j.id).join()) {
      table.querySelector("tbody").innerHTML = body.rows_html; // jobs came or went: take the server's rows
      return true;
    }
    for (const job of body.jobs) {
      const tr = table.querySelector(`tr[data-job="${job.id}"]`);
      if (!tr) continue;
      const status = tr.querySelector('[data-field="status"]');
      status.textContent = job.status;
      status.className = "status status-" + job.status;
      const p = Math.round((job.progress || 0) * 100);
      tr.querySelector('[data-field="bar"]').style.width = p + "%";
      tr.querySelector('[data-field="pct"]').textContent = p + " %";
      tr.querySelector('[data-field="stage"]').textContent = (job.stage || "") + (job.epoch ? ` · epoch ${job.epoch}` : "");
      const queue = tr.querySelector('[data-field="queue"]');
      queue.innerHTML = (job.queue_position ? `#${job.queue_position} on ` : "") + `<code>${Locus.esc(job.queue)}</code>` +
        (job.waiting_reason ? `<div class="waiting">${Locus.esc(job.waiting_reason)}</div>` : "");
    }
    return true;
  }, 2000);
})();
