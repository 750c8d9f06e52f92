/* A run's rich outputs (tables, images, interactive plots its script displayed), read once from
   the outputs API and drawn like the console's (outputs.js); runlog.js reloads the page when an
   active run ends, which reads them again. */
"use strict";
(() => {
  const box = document.getElementById("run-outputs");
  if (!box) return;
  (async () => {
    let items;
    try {
      items = await CDSW.api("GET", box.dataset.url);
    } catch (err) {
      box.parentElement.hidden = false;
      CDSW.showError(box.parentElement, err, box);
      return;
    }
    if (!Array.isArray(items) || !items.length) return;
    for (const item of items) CDSWOutputs.append(box, item);
    box.parentElement.hidden = false;
  })();
})();
