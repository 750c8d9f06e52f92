/* File browser: new file or folder in the current folder, and uploads with progress. */
"use strict";
(() => {
  const bar = document.getElementById("file-actions");
  if (!bar) return;
  const project = bar.dataset.project;
  const folder = bar.dataset.path;
  const join = (name) => (folder ? folder + "/" : "") + name.replace(/^\/+/, "");
  const editorUrl = (path) => "/projects/" + project + "/files/" + path.split("/").map(encodeURIComponent).join("/");

  const newForm = document.getElementById("new-file-form");
  newForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    CDSW.clearErrors(newForm);
    const kind = e.submitter ? e.submitter.value : "file";
    const path = join(newForm.elements.name.value.trim());
    try {
      if (kind === "folder") {
        await CDSW.api("POST", "/api/v1/projects/" + project + "/files/mkdir", { path: path });
        window.location.reload();
      } else {
        await CDSW.api("PUT", "/api/v1/projects/" + project + "/files/content", { path: path, content: "" });
        window.location.assign(editorUrl(path));
      }
    } catch (err) {
      CDSW.showError(newForm, err);
    }
  });

  const upForm = document.getElementById("upload-form");
  upForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    CDSW.clearErrors(upForm);
    const input = upForm.elements.files;
    if (!input.files.length) {
      CDSW.showError(upForm, new CDSW.ApiFailure(422, "choose at least one file to upload"));
      return;
    }
    const data = new FormData();
    Array.from(input.files).forEach((f) => data.append("files", f));
    const progress = upForm.querySelector("progress");
    progress.hidden = false;
    try {
      await CDSW.upload("/api/v1/projects/" + project + "/files/upload?path=" + encodeURIComponent(folder), data,
        (f) => { progress.value = f; });
      window.location.reload();
    } catch (err) {
      progress.hidden = true;
      CDSW.showError(upForm, err);
    }
  });
})();
