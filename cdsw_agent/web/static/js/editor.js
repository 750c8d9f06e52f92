/* The file editor: CodeMirror when its assets are installed (a plain textarea otherwise), Save
   and Ctrl/Cmd+S write through the files API, refusing to overwrite a file changed elsewhere.
   The workbench drives it through window.CDSWEditor (the text, the selection, open a file). */
"use strict";
(() => {
  const area = document.getElementById("editor");
  if (!area) return;
  const status = document.getElementById("editor-status");
  const saveButton = document.getElementById("save");
  const filename = document.getElementById("editor-filename");
  const readOnly = area.dataset.readonly !== undefined;
  const modes = area.dataset.modes ? JSON.parse(area.dataset.modes) : {};
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
    if (readOnly || !saveButton || !area.dataset.path) return;
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

  /* Replaces the buffer with another project file (the workbench opens files in place). */
  async function open(path) {
    if (dirty && !window.confirm("Discard the unsaved changes to " + area.dataset.path + "?")) return false;
    const file = await CDSW.api("GET", "/api/v1/projects/" + area.dataset.project + "/files/content?path=" + encodeURIComponent(path));
    const dot = path.lastIndexOf(".");
    const mode = modes[dot >= 0 ? path.slice(dot).toLowerCase() : ""] || null;
    area.dataset.path = path;
    modified = file.modified;
    if (editor) { editor.setOption("mode", mode); editor.setValue(file.content); editor.clearHistory(); }
    else area.value = file.content;
    setDirty(false);
    status.textContent = "";
    if (filename) { filename.textContent = path; filename.title = path; }
    return true;
  }

  if (saveButton) saveButton.addEventListener("click", save);
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "s") { e.preventDefault(); save(); }
  });
  window.addEventListener("beforeunload", (e) => { if (dirty) { e.preventDefault(); e.returnValue = ""; } });

  window.CDSWEditor = {
    text: text,
    path: () => area.dataset.path,
    /* the selected text, or else the cursor's line */
    selection: () => {
      if (editor) return editor.somethingSelected() ? editor.getSelection() : editor.getLine(editor.getCursor().line);
      const s = area.value.slice(area.selectionStart, area.selectionEnd);
      if (s) return s;
      const start = area.value.lastIndexOf("\n", area.selectionStart - 1) + 1;
      const end = area.value.indexOf("\n", area.selectionStart);
      return area.value.slice(start, end < 0 ? undefined : end);
    },
    open: open,
    save: save,
  };
})();
