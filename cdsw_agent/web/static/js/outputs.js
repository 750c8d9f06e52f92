/* Console outputs as DOM: the execute API's events (and the transcript's entries) rendered in
   order. Text never goes through innerHTML; ANSI colours (tracebacks) become classed spans; HTML
   outputs go into a sandboxed srcdoc frame (no scripts, and the page's CSP is inherited);
   images are <img> from data: URLs; plotly figures (application/vnd.plotly.v1+json) are drawn
   by the workbench's own plotly.js in a frame that may run scripts but has an opaque origin
   (sandbox without allow-same-origin: no cookie, no storage, no access to this page), under
   the inherited CSP that loads scripts from the workbench only. */
"use strict";
const CDSWOutputs = (() => {
  const SGR = /\x1b\[([0-9;]*)m/g;
  const OTHER_ESCAPES = /\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07/g;
  const COLOURS = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];

  /* Appends `text` with its ANSI SGR colours (8/16 colours, bold) as spans to `parent`. */
  function ansi(parent, text) {
    let fg = null, bg = null, bold = false, last = 0, match;
    const flush = (chunk) => {
      if (!chunk) return;
      chunk = chunk.replace(OTHER_ESCAPES, "");
      if (fg === null && bg === null && !bold) { parent.appendChild(document.createTextNode(chunk)); return; }
      const span = document.createElement("span");
      if (fg !== null) span.classList.add("ansi-" + fg);
      if (bg !== null) span.classList.add("ansi-bg-" + bg);
      if (bold) span.classList.add("ansi-bold");
      span.textContent = chunk;
      parent.appendChild(span);
    };
    SGR.lastIndex = 0;
    while ((match = SGR.exec(text)) !== null) {
      flush(text.slice(last, match.index));
      last = SGR.lastIndex;
      const codes = match[1] === "" ? [0] : match[1].split(";").map(Number);
      for (let i = 0; i < codes.length; i++) {
        const c = codes[i];
        if (c === 0) { fg = bg = null; bold = false; }
        else if (c === 1) bold = true;
        else if (c === 22) bold = false;
        else if (c >= 30 && c <= 37) fg = COLOURS[c - 30];
        else if (c >= 90 && c <= 97) fg = "bright-" + COLOURS[c - 90];
        else if (c === 39) fg = null;
        else if (c >= 40 && c <= 47) bg = COLOURS[c - 40];
        else if (c === 49) bg = null;
        else if (c === 38 || c === 48) i += codes[i + 1] === 5 ? 2 : 4;  // 256/true colour: ignored
      }
    }
    flush(text.slice(last));
  }

  function pre(cls, text) {
    const el = document.createElement("pre");
    el.className = "out " + cls;
    ansi(el, text);
    return el;
  }

  function image(type, data) {
    const img = document.createElement("img");
    img.className = "out out-image";
    img.alt = "plot output";
    const b64 = type === "image/svg+xml" ? btoa(unescape(encodeURIComponent(data))) : String(data).replace(/\s/g, "");
    img.src = "data:" + type + ";base64," + b64;
    return img;
  }

  /* HTML from the kernel (pandas tables...) in a frame that cannot run scripts; same-origin only
     so this page can size the frame to its content (scripts stay off: sandbox has no allow-scripts). */
  function html(markup) {
    const frame = document.createElement("iframe");
    frame.className = "out out-html";
    frame.setAttribute("sandbox", "allow-same-origin");
    frame.setAttribute("title", "HTML output");
    frame.srcdoc = '<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="/static/css/output.css"></head><body>' + markup + "</body></html>";
    frame.addEventListener("load", () => {
      const doc = frame.contentDocument;
      if (doc && doc.documentElement) frame.style.height = Math.min(doc.documentElement.scrollHeight + 4, 600) + "px";
    });
    return frame;
  }

  const PLOTLY = "application/vnd.plotly.v1+json";
  const PLOTLY_JS = "/vendor/plotly.js-dist-min/plotly.min.js";

  /* A plotly figure as data: JSON in a non-executable script element (every "<" escaped, so
     no string in it can close the element), drawn by /static/js/plot_frame.js. */
  function plot(figure) {
    const frame = document.createElement("iframe");
    frame.className = "out out-plot";
    frame.setAttribute("sandbox", "allow-scripts");
    frame.setAttribute("title", "Interactive plot");
    const layout = (figure && figure.layout) || {};
    frame.style.height = (Number(layout.height) > 0 ? Math.min(Number(layout.height), 1200) : 450) + 20 + "px";
    const json = JSON.stringify(figure).replace(/</g, "\\u003c");
    frame.srcdoc = '<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="/static/css/output.css"></head>' +
      '<body class="plot"><div id="plot"></div><script type="application/json" id="figure">' + json + "</" + "script>" +
      '<script src="' + PLOTLY_JS + '"></' + 'script><script src="/static/js/plot_frame.js"></' + "script></body></html>";
    return frame;
  }

  function rich(data) {
    if (data[PLOTLY]) return plot(data[PLOTLY]);
    for (const type of ["image/png", "image/jpeg", "image/svg+xml"]) {
      if (data[type]) return image(type, data[type]);
    }
    if (data["text/html"]) return html(data["text/html"]);
    if (data["text/markdown"]) return pre("out-text", data["text/markdown"]);
    if (data["application/json"]) return pre("out-text", JSON.stringify(data["application/json"], null, 2));
    if (data["text/plain"] !== undefined) return pre("out-text", String(data["text/plain"]));
    return null;
  }

  /* Appends one event to a cell's output box; consecutive stream text of one stream joins. */
  function append(box, event) {
    switch (event.type) {
      case "stream": {
        const cls = event.name === "stderr" ? "out-stderr" : "out-stdout";
        const lastEl = box.lastElementChild;
        if (lastEl && lastEl.classList.contains(cls)) ansi(lastEl, event.text);
        else box.appendChild(pre(cls, event.text));
        return;
      }
      case "display_data": case "execute_result": case "update_display_data": {
        const el = rich(event.data || {});
        if (el) box.appendChild(el);
        return;
      }
      case "error": {
        const tb = (event.traceback && event.traceback.length) ? event.traceback.join("\n")
          : event.ename + ": " + event.evalue;
        box.appendChild(pre("out-error", tb));
        return;
      }
      case "clear_output": box.replaceChildren(); return;
      default: return;  // "result" is the caller's business
    }
  }

  return { append, ansi, rich };
})();
