/* Resumable chunked uploads into a dataset (API: /api/v1/datasets/<id>/uploads/, /api/v1/uploads/<id>/).
   The server says how many bytes it already has (after a reload, the same file finds its unfinished upload),
   chunks continue from there, the file is hashed here (sha256) as it goes, and the server verifies it. */
(function () {
  "use strict";
  const input = document.getElementById("upload-input");
  if (!input) return;
  const list = document.getElementById("upload-list");
  const dataset = input.dataset.dataset;
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function item(file) {
    const li = document.createElement("li");
    li.dataset.name = file.name;
    li.innerHTML = `<div class="top"><strong class="name"></strong><span class="state">waiting</span></div>
      <div class="progress-row mt-s"><div class="bar big" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="0"><span></span></div>
      <span class="bar-label pct">0 %</span></div><div class="sha"></div>`;
    li.querySelector(".name").textContent = file.name;
    list.appendChild(li);
    return {
      li,
      state(text, cls) { const s = li.querySelector(".state"); s.textContent = text; s.className = "state" + (cls ? " " + cls : ""); },
      progress(fraction) {
        const pct = Math.floor(Math.min(1, Math.max(0, fraction)) * 1000) / 10;
        li.querySelector(".bar > span").style.width = pct + "%";
        li.querySelector(".bar").setAttribute("aria-valuenow", String(pct));
        li.querySelector(".pct").textContent = (pct === 100 ? "100" : pct.toFixed(1)) + " %";
      },
      sha(text) { li.querySelector(".sha").textContent = text; },
    };
  }

  /* PUT one chunk with XHR (fetch has no upload progress); resolves with the upload's JSON. */
  function putChunk(upload, blob, offset, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", `/api/v1/uploads/${upload.id}/chunk/?offset=${offset}`);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.setRequestHeader("X-CSRFToken", Locus.csrf());
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = (e) => onProgress(e.loaded);
      xhr.onload = () => {
        let body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body);
        else { const err = new Error((body && body.error && body.error.message) || `HTTP ${xhr.status}`); err.status = xhr.status; reject(err); }
      };
      xhr.onerror = () => { const err = new Error("connection lost"); err.status = 0; reject(err); };
      xhr.send(blob);
    });
  }

  /* Hash the file in order while its chunks travel: the chunk after the one in flight is hashed meanwhile, so
     a big file costs about one pass, not a hashing pass and then an upload pass. */
  async function send(file, ui, fresh) {
    ui.state("starting…");
    let upload = await Locus.fetchJSON(`/api/v1/datasets/${dataset}/uploads/`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ name: file.name, size: file.size }),
    });
    const resumed = upload.received > 0;
    const chunk = upload.chunk_bytes;
    const sha = new LocusSha256.Sha256();
    let hashed = 0;
    async function hashUpTo(limit) {
      while (hashed < limit) {
        const end = Math.min(limit, hashed + 4 * 1024 * 1024);
        sha.update(new Uint8Array(await file.slice(hashed, end).arrayBuffer()));
        hashed = end;
      }
    }
    if (resumed) {
      ui.state(`resuming at ${Locus.bytes(upload.received)} (checking the part already sent)`);
      await hashUpTo(upload.received);
    }
    let failures = 0;
    ui.progress(file.size ? upload.received / file.size : 0);
    while (upload.received < file.size) {
      const start = upload.received, end = Math.min(start + chunk, file.size);
      if (!failures) ui.state(`uploading ${Locus.bytes(start)} of ${Locus.bytes(file.size)}`);
      const sending = putChunk(upload, file.slice(start, end), start, (loaded) => ui.progress((start + loaded) / file.size));
      const hashing = hashUpTo(Math.min(file.size, end + chunk));
      try {
        upload = await sending;
        failures = 0;
        ui.progress(upload.received / file.size);
      } catch (err) {
        await hashing;
        if (err.status && err.status !== 409 && err.status < 500) throw err;
        failures++;
        ui.state(`connection problem (${err.message}); retrying…`, "error");
        await sleep(Math.min(15000, 500 * 2 ** Math.min(failures, 5)));
        try { upload = await Locus.fetchJSON(`/api/v1/uploads/${upload.id}/`); } catch (e) { /* next round */ }
        continue;
      }
      await hashing;
    }
    await hashUpTo(file.size);
    const digest = sha.hex();
    ui.sha("sha256 " + digest);
    ui.state("verifying checksum…");
    let stored;
    try {
      stored = await Locus.fetchJSON(`/api/v1/uploads/${upload.id}/complete/`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ sha256: digest }),
      });
    } catch (err) {
      // An unfinished upload of another file with the same name and size was continued: start afresh once.
      if (resumed && !fresh && err.status === 400) return send(file, ui, true);
      throw err;
    }
    ui.progress(1);
    ui.state("stored, checksum verified", "done");
    ui.sha("sha256 " + stored.sha256);
    addRow(stored);
  }

  function addRow(file) {
    const tbody = document.querySelector("#files-table tbody");
    if (!tbody) return;
    const empty = tbody.querySelector(".no-files");
    if (empty) empty.remove();
    const tr = document.createElement("tr");
    tr.dataset.file = file.name;
    tr.innerHTML = `<td><a href="/files/${Locus.esc(file.id)}/">${Locus.esc(file.name)}</a></td><td class="num">${Locus.bytes(file.size)}</td>
      <td><span class="sha">${Locus.esc(file.sha256)}</span></td><td>just now</td>`;
    tbody.appendChild(tr);
  }

  async function sendAll(files) {
    for (const file of files) {
      const ui = item(file);
      try { await send(file, ui); } catch (err) { ui.state(`failed: ${err.message}`, "error"); }
    }
  }

  document.querySelectorAll("[data-discard]").forEach((button) => button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await fetch(`/api/v1/uploads/${button.dataset.discard}/`, { method: "DELETE", credentials: "same-origin",
                                                                  headers: { "X-CSRFToken": Locus.csrf() } });
      button.closest("li").remove();
    } catch (err) { button.disabled = false; }
  }));

  input.addEventListener("change", () => { sendAll(Array.from(input.files)); input.value = ""; });
  const zone = document.getElementById("dropzone");
  if (zone) {
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); sendAll(Array.from(e.dataTransfer.files)); });
  }
})();
