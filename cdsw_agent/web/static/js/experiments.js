/* The experiments table: pick runs to compare, and follow running runs by re-rendering the
   table from the server while any is active (the picks survive each refresh). */
"use strict";
(() => {
  const holder = () => document.getElementById("runs");
  const compare = document.getElementById("compare");
  const picked = new Set();
  let following = false;

  function sync() {
    holder().querySelectorAll("input.pick").forEach((box) => {
      box.checked = picked.has(box.value);
      box.closest("tr").classList.toggle("selected", box.checked);
    });
    compare.disabled = picked.size < 2;
  }

  document.addEventListener("change", (e) => {
    const box = e.target.closest("#runs input.pick");
    if (!box) return;
    if (box.checked) picked.add(box.value); else picked.delete(box.value);
    sync();
  });

  compare.addEventListener("click", () => {
    const ids = Array.from(picked).sort((a, b) => Number(a) - Number(b)).join(",");
    window.location.assign(window.location.pathname + "/compare?ids=" + encodeURIComponent(ids));
  });

  async function follow() {
    following = true;
    try {
      await CDSW.refresh("#runs");
      sync();
    } catch (err) {
      CDSW.showError(holder().parentElement, err, holder());
      following = false;
      return;
    }
    if (holder().dataset.active) window.setTimeout(follow, 2000);
    else following = false;
  }

  document.addEventListener("experiment-started", () => {
    const form = document.getElementById("experiment-form");
    form.querySelector('[name="arguments"]').select();
    if (!following) follow();
  });
  if (holder().dataset.active) window.setTimeout(follow, 2000);
})();
