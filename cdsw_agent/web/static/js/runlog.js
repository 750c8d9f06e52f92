/* A run's log, tailed from the log API (X-Log-Offset) until the run is final; the status badge
   follows X-Run-Status and the page reloads once to show the final facts. */
"use strict";
(() => {
  const pre = document.getElementById("run-log");
  if (!pre) return;
  const ACTIVE = ["queued", "running"];
  let offset = 0;
  const startedActive = ACTIVE.includes(pre.dataset.status);

  async function poll() {
    let status = pre.dataset.status;
    try {
      const response = await CDSW.api("GET", pre.dataset.url + "?offset=" + offset, null, { raw: true });
      const text = await response.text();
      offset = Number(response.headers.get("X-Log-Offset") || offset);
      status = response.headers.get("X-Run-Status") || status;
      if (text) {
        pre.appendChild(document.createTextNode(text));
        pre.scrollTop = pre.scrollHeight;
      }
      if (!pre.textContent && !ACTIVE.includes(status)) pre.textContent = "(this run wrote no output)";
    } catch (err) {
      CDSW.showError(pre.parentElement, err, pre);
      return;
    }
    if (ACTIVE.includes(status)) {
      const badge = document.querySelector("#run-status .status-badge");
      if (badge) { badge.textContent = status; badge.className = "status-badge s-" + status; }
      window.setTimeout(poll, 1000);
    } else if (startedActive) {
      window.location.reload();
    }
  }
  poll();
})();
