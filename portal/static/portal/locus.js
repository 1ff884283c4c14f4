/* Shared helpers of the portal's pages: CSRF token, JSON fetch, byte formatting, polling, and the behaviour
   that markup asks for through data attributes (below). */
(function () {
  "use strict";
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  async function fetchJSON(url, options) {
    const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    opts.headers = Object.assign({ Accept: "application/json" }, opts.headers);
    if (opts.method && opts.method !== "GET") opts.headers["X-CSRFToken"] = csrf();
    const response = await fetch(url, opts);
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      const err = new Error((body && body.error && body.error.message) || `HTTP ${response.status}`);
      err.status = response.status;
      err.body = body;
      throw err;
    }
    return body;
  }

  function bytes(n) {
    if (n < 1024) return `${n} B`;
    const units = ["KB", "MB", "GB", "TB"];
    let v = n, i = -1;
    do { v /= 1024; i++; } while (v >= 1024 && i < units.length - 1);
    return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
  }

  /* Call fn every `ms` until it returns false; a failing call is retried at the next tick. */
  function poll(fn, ms) {
    let stopped = false;
    async function tick() {
      if (stopped) return;
      let again = true;
      try { again = (await fn()) !== false; } catch (e) { again = true; }
      if (again && !stopped) setTimeout(tick, document.hidden ? ms * 4 : ms);
    }
    setTimeout(tick, 0);
    return () => { stopped = true; };
  }

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }

  /* The page's Content-Security-Policy (portal/csp.py) allows no inline script, handler attribute or style
     attribute, so markup states what it needs in data attributes and this sets it up:
       data-pct="42"           a progress bar's width, also in markup inserted later (polled sections, rows);
       data-autosubmit         a <select> that submits its form when changed;
       data-confirm="Sure?"    a <form> that asks before it submits;
       data-reveal             a <select> that shows the [data-when-for=its id][data-when=its value] sub-form
                               and hides (and disables, so that they are neither sent nor validated) the others. */
  function sizeBars(root) {
    if (root.matches && root.matches("[data-pct]")) root.style.width = root.dataset.pct + "%";
    if (root.querySelectorAll) for (const el of root.querySelectorAll("[data-pct]")) el.style.width = el.dataset.pct + "%";
  }
  function reveal(select) {
    for (const box of document.querySelectorAll(`[data-when-for="${CSS.escape(select.id)}"]`)) {
      const on = box.dataset.when === select.value && !select.disabled;
      box.hidden = !on;
      for (const el of box.querySelectorAll("input, select, textarea")) el.disabled = !on;
      if (on) for (const inner of box.querySelectorAll("select[data-reveal]")) reveal(inner);
    }
  }
  document.addEventListener("DOMContentLoaded", () => {
    sizeBars(document);
    for (const select of document.querySelectorAll("select[data-reveal]")) reveal(select);
    new MutationObserver((changes) => {
      for (const change of changes) for (const node of change.addedNodes) sizeBars(node);
    }).observe(document.body, { childList: true, subtree: true });
  });
  document.addEventListener("change", (event) => {
    const el = event.target;
    if (el.matches && el.matches("select[data-autosubmit]") && el.form) el.form.submit();
    if (el.matches && el.matches("select[data-reveal]")) reveal(el);
  });
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  window.Locus = { csrf, fetchJSON, bytes, poll, esc };
})();
