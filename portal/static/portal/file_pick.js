/* The new-job form's input pickers: a filter box per slot (words match a file's name, its dataset or its job's
   label) and the list of what is picked, kept in view while groups are folded. No inline script (CSP). */
(function () {
  "use strict";

  function filter(box) {
    const field = box.closest("[data-slot]");
    const words = box.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    for (const group of field.querySelectorAll(".pick-group")) {
      const label = group.querySelector(".pick-label").textContent.toLowerCase();
      let shown = 0;
      for (const item of group.querySelectorAll("label[data-name]")) {
        const text = label + " " + item.dataset.name.toLowerCase();
        const hit = words.every((w) => text.includes(w));
        item.hidden = !hit;
        if (hit) shown++;
      }
      group.hidden = shown === 0;
      if (words.length && shown) group.open = true;
    }
  }

  function summarise(field) {
    const out = field.querySelector(".pick-summary");
    if (!out) return;
    out.replaceChildren(...Array.from(field.querySelectorAll("input[type=checkbox]:checked"), (box) => {
      const tag = document.createElement("span");
      tag.className = "tag picked";
      tag.textContent = box.dataset.label;
      return tag;
    }));
  }

  document.addEventListener("input", (event) => {
    if (event.target.matches && event.target.matches("input.pick-filter")) filter(event.target);
  });
  document.addEventListener("change", (event) => {
    const el = event.target;
    if (el.matches && el.matches(".file-pick input[type=checkbox]")) summarise(el.closest("[data-slot]"));
  });
})();
