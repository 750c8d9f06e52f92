/* A model's monitoring: replica states and counts re-rendered from the server every few
   seconds, and the chosen replica's log, refreshed as well. */
"use strict";
(() => {
  const holder = document.getElementById("monitoring");
  if (!holder) return;
  const EVERY_MS = 3000;
  const logCard = document.getElementById("replica-log-card");
  const logPre = document.getElementById("replica-log");
  const modelApi = "/api/v1/projects/" + holder.dataset.project + "/models/" + holder.dataset.model;
  let replica = null;

  async function showLog() {
    if (replica === null) return;
    try {
      const text = await CDSW.api("GET", modelApi + "/replicas/" + replica + "/log?lines=200");
      const atBottom = logPre.scrollTop + logPre.clientHeight >= logPre.scrollHeight - 4;
      logPre.textContent = text || "(no output yet)";
      if (atBottom) logPre.scrollTop = logPre.scrollHeight;
    } catch (err) {
      CDSW.clearErrors(logCard);
      CDSW.showError(logCard, err, logPre);
    }
  }

  async function tick() {
    try {
      await CDSW.refresh("#monitoring, #deployment-status");
      await showLog();
    } catch (err) {
      CDSW.clearErrors(document.querySelector(".page"));
      CDSW.showError(document.querySelector(".page"), err, document.querySelector(".subnav"));
    }
    window.setTimeout(tick, EVERY_MS);
  }

  document.addEventListener("click", (e) => {
    const button = e.target.closest("[data-log]");
    if (!button) return;
    replica = button.dataset.log;
    document.getElementById("replica-log-name").textContent = button.dataset.name;
    logCard.hidden = false;
    showLog();
  });
  window.setTimeout(tick, EVERY_MS);
})();
