/* New project: one form, four sources. Blank/template/git post JSON; upload posts the archive
   as multipart with a progress bar. */
"use strict";
(() => {
  const form = document.getElementById("new-project");
  const sections = form.querySelectorAll("[data-source]");
  const source = () => form.querySelector('input[name="source"]:checked').value;

  function show() {
    sections.forEach((s) => {
      const on = s.dataset.source === source();
      s.hidden = !on;
      s.querySelectorAll("[name]").forEach((el) => { el.disabled = !on; });
    });
  }
  form.addEventListener("change", (e) => { if (e.target.name === "source") show(); });
  show();

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    CDSW.clearErrors(form);
    const body = CDSW.serialize(form);
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      let project;
      if (source() === "upload") {
        const file = form.querySelector('input[name="archive"]').files[0];
        if (!file) throw new CDSW.ApiFailure(422, "archive: choose an archive to upload", [{ field: "archive", message: "missing" }]);
        const data = new FormData();
        Object.entries(body).forEach(([k, v]) => { if (k !== "archive" && v !== null) data.append(k, v); });
        data.append("archive", file);
        const bar = document.getElementById("upload-progress");
        bar.hidden = false;
        project = await CDSW.upload("/api/v1/projects/upload", data, (f) => { bar.value = f; });
      } else {
        delete body.archive;
        project = await CDSW.api("POST", "/api/v1/projects", body);
      }
      window.location.assign("/projects/" + project.id);
    } catch (err) {
      CDSW.showError(form, err);
    } finally {
      button.disabled = false;
    }
  });
})();
