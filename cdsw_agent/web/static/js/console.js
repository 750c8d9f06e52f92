/* The workbench console: the session's transcript (so a reload or a stopped session still shows
   it), code run from the editor or the prompt with its outputs streamed in order from the
   execute API (one JSON event per line), the session's start progress and its controls. */
"use strict";
(() => {
  const root = document.getElementById("workbench");
  if (!root) return;
  const sid = root.dataset.session;
  const base = "/api/v1/sessions/" + sid;
  const out = document.getElementById("console-output");
  const input = document.getElementById("console-input");
  const prompt = document.getElementById("console-prompt");
  const interactive = root.dataset.interactive === "yes";
  const ACTIVE = ["starting", "running"];
  let stopping = false;  // Stop was asked; the page shows "stopping" until the engine is gone
  const LONG_INPUT = 6;  // lines of an input shown before it folds
  let status = root.dataset.status;
  let logOffset = 0;
  const queue = [];
  let busy = false;
  const history = [];
  let historyAt = 0;

  // --- rendering -------------------------------------------------------------------------

  function scrollDown() { out.scrollTop = out.scrollHeight; }

  function newCell(code) {
    const cell = document.createElement("div");
    cell.className = "cell";
    const echo = document.createElement("pre");
    echo.className = "in";
    echo.textContent = code.replace(/\n+$/, "");
    if (echo.textContent.split("\n").length > LONG_INPUT) {  // a whole file: folded, click to unfold
      echo.classList.add("folded");
      echo.title = "click to show all of the code";
      echo.addEventListener("click", () => echo.classList.toggle("folded"));
    }
    const outputs = document.createElement("div");
    outputs.className = "outputs";
    cell.append(echo, outputs);
    out.appendChild(cell);
    scrollDown();
    return outputs;
  }

  function note(text, cls) {
    const div = document.createElement("div");
    div.className = "console-event " + (cls || "");
    div.textContent = text;
    out.appendChild(div);
    scrollDown();
  }

  const EVENTS = {
    starting: (e) => "starting the engine (" + (e.kernel || "kernel") + ")",
    interrupt: (e) => "kernel interrupted" + (e.user ? " by " + e.user : ""),
    restart: (e) => "kernel restarted" + (e.user ? " by " + e.user : "") + "; variables are gone",
    kerberos: (e) => e.reason,  // no Kerberos credential: the notice itself
  };

  let currentBox = null;
  function renderEntry(entry) {
    if (entry.kind === "input") currentBox = newCell(entry.code);
    else if (entry.kind === "output") {
      if (!currentBox) currentBox = newCell("");
      if (entry.type === "result") { if (entry.status !== "ok") currentBox.parentElement.classList.add("failed"); return; }
      CDSWOutputs.append(currentBox, entry);
      scrollDown();
    } else if (entry.kind === "event") {
      const text = EVENTS[entry.event] ? EVENTS[entry.event](entry) : "session " + entry.event + (entry.reason ? ": " + entry.reason : "");
      note(text, entry.event === "failed" || entry.event === "kerberos" ? "error-text" : "");
      currentBox = null;
    }
  }

  async function loadTranscript() {
    try {
      const response = await CDSW.api("GET", out.dataset.logUrl + "?offset=" + logOffset, null, { raw: true });
      const text = await response.text();
      logOffset = Number(response.headers.get("X-Log-Offset") || logOffset);
      text.split("\n").filter(Boolean).forEach((line) => {
        try { renderEntry(JSON.parse(line)); } catch (e) { /* a torn line: skip it */ }
      });
    } catch (err) {
      CDSW.showError(out.parentElement, err, out);
    }
  }

  // --- running code ----------------------------------------------------------------------

  async function execute(code) {
    const box = newCell(code);
    let response;
    try {
      response = await CDSW.api("POST", base + "/execute", { code: code }, { raw: true });
    } catch (err) {
      CDSWOutputs.append(box, { type: "error", ename: "", evalue: "", traceback: [err.message] });
      box.parentElement.classList.add("failed");
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      pending += decoder.decode(value || new Uint8Array(), { stream: !done });
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        if (!line) continue;
        const event = JSON.parse(line);
        if (event.type === "result") {
          if (event.status !== "ok") box.parentElement.classList.add("failed");
          box.parentElement.dataset.done = event.status;
        } else {
          CDSWOutputs.append(box, event);
          scrollDown();
        }
      }
      if (done) break;
    }
  }

  async function drain() {
    if (busy) return;
    busy = true;
    try {
      while (queue.length) await execute(queue.shift());
    } finally {
      busy = false;
    }
  }

  function run(code) {
    if (!code || !code.trim()) return;
    if (status !== "running") { note("the session is " + status + "; start a new one to run code", "error-text"); return; }
    queue.push(code);
    drain();
  }

  // --- session state and controls ----------------------------------------------------------

  function setStatus(s, reason) {
    status = s;
    root.dataset.status = s;
    const badge = document.querySelector("#session-status .status-badge");
    if (badge) { badge.textContent = s; badge.className = "status-badge s-" + s; }
    const progress = document.getElementById("session-progress");
    progress.hidden = s !== "starting";
    if (reason) document.getElementById("session-reason").textContent = reason;
    const live = s === "running";
    document.querySelectorAll("#run-file, #run-selection, #console-prompt button, #console-input, #tab-terminal, [data-session-action]")
      .forEach((el) => { el.disabled = !live && !(s === "starting" && el.dataset.sessionAction === "stop"); });
    if (input) input.placeholder = live ? "Enter runs, Shift+Enter adds a line" : "the session is " + s;
    for (const id of ["open-lab", "open-spark-ui", "open-web-app"]) {
      const link = document.getElementById(id);
      if (link) link.hidden = !live;
    }
    if (live && input) input.focus();
  }

  async function follow() {
    try {
      const s = await CDSW.api("GET", base);
      if (stopping && ACTIVE.includes(s.status)) { window.setTimeout(follow, 1000); return; }
      if (s.status !== status || s.status === "starting") setStatus(s.status, s.reason);
      if (s.status === "failed" || s.status === "stopped") {
        note("session " + s.status + (s.reason ? ": " + s.reason : ""), s.status === "failed" ? "error-text" : "");
        return;
      }
      if (s.status === "starting") window.setTimeout(follow, 1000);
    } catch (err) {
      CDSW.showError(root, err, document.getElementById("session-status"));
    }
  }

  async function followLog() {  // view-only shares read the owner's console as it grows
    await loadTranscript();
    if (ACTIVE.includes(status)) window.setTimeout(followLog, 2000);
  }

  async function sessionAction(button) {
    const what = button.dataset.sessionAction;
    if (what === "stop" && !window.confirm("Stop this session? Its console log stays readable.")) return;
    CDSW.clearErrors(root);
    button.disabled = true;
    const before = status;
    // the engine may take several seconds to go: the page says "stopping" at once
    if (what === "stop") { stopping = true; setStatus("stopping"); }
    try {
      const result = await CDSW.api("POST", base + "/" + what);
      if (what === "stop") {
        stopping = ACTIVE.includes(result.status);
        setStatus(stopping ? "stopping" : result.status, result.reason);
        if (stopping) follow(); else note("session stopped", "");
        document.dispatchEvent(new CustomEvent("cdsw:session-ended"));
      } else {
        note(result.message, "");
      }
    } catch (err) {
      if (what === "stop") { stopping = false; setStatus(before); }
      CDSW.showError(root, err, button);
    } finally {
      if (status === "running") button.disabled = false;
    }
  }

  // --- wiring ------------------------------------------------------------------------------

  out.addEventListener("load", scrollDown, true);  // plots arrive after their cell scrolled
  root.addEventListener("click", (e) => {
    const button = e.target.closest("[data-session-action]");
    if (button) sessionAction(button);
  });
  const runFile = document.getElementById("run-file");
  const runSelection = document.getElementById("run-selection");
  if (runFile) runFile.addEventListener("click", () => run(window.CDSWEditor.text()));
  if (runSelection) runSelection.addEventListener("click", () => run(window.CDSWEditor.selection()));
  document.addEventListener("keydown", (e) => {
    if (!interactive || !(e.ctrlKey || e.metaKey) || e.key !== "Enter" || e.target === input) return;
    if (!e.target.closest(".editor-panel")) return;
    e.preventDefault();
    run(e.shiftKey ? window.CDSWEditor.text() : window.CDSWEditor.selection());
  });

  if (prompt) {
    prompt.addEventListener("submit", (e) => {
      e.preventDefault();
      const code = input.value;
      if (!code.trim()) return;
      history.push(code);
      historyAt = history.length;
      input.value = "";
      input.rows = 1;
      run(code);
    });
    // Tab: completion from the session's kernel (POST .../complete); at the start of a line or
    // after a space it indents. Several matches: their common prefix, and the list to pick from.
    const choices = document.createElement("div");
    choices.id = "console-completions";
    choices.className = "completions";
    choices.hidden = true;
    prompt.after(choices);
    const replaceRange = (start, end, text) => {
      input.setRangeText(text, start, end, "end");
      input.dispatchEvent(new Event("input"));
    };
    const commonPrefix = (words) => words.reduce((p, w) => {
      let i = 0;
      while (i < p.length && i < w.length && p[i] === w[i]) i += 1;
      return p.slice(0, i);
    });
    async function completeAtCursor() {
      const pos = input.selectionStart;
      let found;
      try {
        found = await CDSW.api("POST", base + "/complete", { code: input.value, cursor_pos: pos });
      } catch (err) { return; }
      const matches = found.matches || [];
      choices.replaceChildren();
      choices.hidden = matches.length < 2;
      if (!matches.length) return;
      const prefix = matches.length === 1 ? matches[0] : commonPrefix(matches);
      if (prefix.length > found.cursor_end - found.cursor_start) {
        replaceRange(found.cursor_start, found.cursor_end, prefix);
      }
      if (matches.length > 1) {
        const start = found.cursor_start;
        for (const m of matches.slice(0, 50)) {
          const b = document.createElement("button");
          b.type = "button";
          b.textContent = m;
          b.addEventListener("click", () => {
            replaceRange(start, input.selectionStart, m);
            choices.hidden = true;
            input.focus();
          });
          choices.append(b);
        }
      }
    }
    input.addEventListener("keydown", (e) => {
      if (e.key === "Tab" && !e.shiftKey && !e.ctrlKey && !e.altKey && !e.metaKey) {
        e.preventDefault();
        const before = input.value.slice(0, input.selectionStart);
        if (!before.trim() || /\s$/.test(before)) { replaceRange(input.selectionStart, input.selectionEnd, "    "); return; }
        completeAtCursor();
        return;
      }
      if (e.key !== "Tab") choices.hidden = true;
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); prompt.requestSubmit(); return; }
      const atEdge = !input.value.includes("\n");
      if (e.key === "ArrowUp" && atEdge && historyAt > 0) { e.preventDefault(); input.value = history[--historyAt]; }
      if (e.key === "ArrowDown" && atEdge && historyAt < history.length) {
        e.preventDefault();
        historyAt += 1;
        input.value = historyAt < history.length ? history[historyAt] : "";
      }
    });
    input.addEventListener("input", () => { input.rows = Math.min(8, input.value.split("\n").length); });
  }

  // files open in the editor in place (the console and terminal stay connected)
  document.querySelector(".tree-panel").addEventListener("click", async (e) => {
    const link = e.target.closest("a[data-path]");
    if (!link || e.ctrlKey || e.metaKey || e.shiftKey || !window.CDSWEditor) return;
    e.preventDefault();
    try {
      if (!(await window.CDSWEditor.open(link.dataset.path))) return;
      document.querySelectorAll(".tree a[aria-current]").forEach((a) => a.removeAttribute("aria-current"));
      link.setAttribute("aria-current", "page");
      window.history.replaceState(null, "", link.href);
    } catch (err) {
      CDSW.showError(link.parentElement, err, link);
    }
  });

  // tabs: Console | Terminal
  document.querySelectorAll(".console-tabs [role=tab]").forEach((tab) => {
    tab.addEventListener("click", () => {
      document.querySelectorAll(".console-tabs [role=tab]").forEach((t) => {
        const on = t === tab;
        t.setAttribute("aria-selected", on ? "true" : "false");
        document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
      });
      if (tab.id === "tab-terminal") document.dispatchEvent(new CustomEvent("cdsw:terminal-shown"));
    });
  });

  (async () => {
    await loadTranscript();
    if (status === "starting") follow();
    if (!interactive && ACTIVE.includes(status)) window.setTimeout(followLog, 2000);
    if (status === "running" && input) input.focus();
  })();
})();
