/* The file editor: CodeMirror when its assets are installed (a plain textarea otherwise), Save
   and Ctrl/Cmd+S write through the files API, refusing to overwrite a file changed elsewhere. */
"use strict";
(() => {
  const area = document.getElementById("editor");
  if (!area) return;
  const status = document.getElementById("editor-status");
  const saveButton = document.getElementById("save");
  const readOnly = area.dataset.readonly !== undefined;
  let modified = area.dataset.modified ? Number(area.dataset.modified) : null;
  let dirty = false;

  let editor = null;
  if (window.CodeMirror) {
    editor = window.CodeMirror.fromTextArea(area, {
      mode: area.dataset.mode || null, lineNumbers: true, matchBrackets: true, indentUnit: 4,
      readOnly: readOnly, viewportMargin: Infinity,
      extraKeys: { "Tab": (cm) => cm.execCommand(cm.somethingSelected() ? "indentMore" : "insertSoftTab") },
    });
    editor.on("change", () => setDirty(true));
  } else {
    area.addEventListener("input", () => setDirty(true));
  }
  const text = () => (editor ? editor.getValue() : area.value);

  function setDirty(on) {
    dirty = on;
    status.textContent = on ? "unsaved changes" : status.textContent;
    document.title = (on ? "● " : "") + document.title.replace(/^● /, "");
  }

  async function save() {
    if (readOnly || !saveButton) return;
    saveButton.disabled = true;
    CDSW.clearErrors(saveButton.parentElement);
    try {
      const body = { path: area.dataset.path, content: text() };
      if (modified !== null) body.expected_modified = modified;
      const entry = await CDSW.api("PUT", "/api/v1/projects/" + area.dataset.project + "/files/content", body);
      modified = entry.modified;
      setDirty(false);
      status.textContent = "saved " + new Date().toLocaleTimeString();
    } catch (err) {
      CDSW.showError(saveButton.parentElement, err, saveButton);
      status.textContent = "not saved";
    } finally {
      saveButton.disabled = false;
    }
  }

  if (saveButton) saveButton.addEventListener("click", save);
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "s") { e.preventDefault(); save(); }
  });
  window.addEventListener("beforeunload", (e) => { if (dirty) { e.preventDefault(); e.returnValue = ""; } });
})();
