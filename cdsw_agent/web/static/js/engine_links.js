/* "Open JupyterLab": engine content is served on its own origin, never the workbench's
   (cdsw_agent/sessions/engine_origin.py). The link asks the workbench for a one-time launch URL
   on that origin and opens it in a new tab that cannot reach back to this page. */
"use strict";
(() => {
  document.addEventListener("click", async (event) => {
    const link = event.target.closest("a[data-engine-access]");
    if (!link) return;
    event.preventDefault();
    const tab = window.open("about:blank", "_blank");
    if (tab) tab.opener = null;
    try {
      const access = await CDSW.api("POST", link.dataset.engineAccess,
        { path: link.dataset.enginePath || "lab" });
      if (tab) tab.location.href = access.url; else window.location.assign(access.url);
    } catch (err) {
      if (tab) tab.close();
      CDSW.showError(link.closest("[data-error-scope]"), err, link);
    }
  });
})();
