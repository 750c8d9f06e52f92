/* The session's terminal tab: xterm.js connected, through the router, to a jupyter_server
   terminal's WebSocket (terminado's protocol: JSON arrays ["stdin", text], ["stdout", text],
   ["set_size", rows, cols]). Opened the first time the tab is shown. */
"use strict";
(() => {
  const holder = document.getElementById("terminal");
  if (!holder) return;
  let term = null;
  let socket = null;
  let fit = null;

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function resize() {
    if (!term || !fit || holder.offsetParent === null) return;
    fit.fit();
    send(["set_size", term.rows, term.cols]);
  }

  async function open() {
    if (!window.Terminal) {
      CDSW.showError(holder.parentElement, new CDSW.ApiFailure(0, "xterm.js is not installed on this server; run `npm ci` in cdsw_agent/web"), holder);
      return;
    }
    term = new window.Terminal({ cursorBlink: true, fontSize: 13, scrollback: 5000,
      fontFamily: 'ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace' });
    if (window.FitAddon) { fit = new window.FitAddon.FitAddon(); term.loadAddon(fit); }
    term.open(holder);
    resize();
    let created;
    try {
      created = await CDSW.api("POST", holder.dataset.url);
    } catch (err) {
      term.writeln("\x1b[31m" + err.message + "\x1b[0m");
      return;
    }
    const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + created.websocket);
    holder.dataset.terminal = created.name;
    socket.addEventListener("open", () => { resize(); holder.dataset.connected = "yes"; term.focus(); });
    socket.addEventListener("message", (e) => {
      let message;
      try { message = JSON.parse(e.data); } catch (err) { return; }
      if (message[0] === "stdout") term.write(message[1]);
      else if (message[0] === "disconnect") term.writeln("\r\n[the terminal ended]");
    });
    socket.addEventListener("close", (e) => {
      holder.dataset.connected = "";
      term.writeln("\r\n[disconnected" + (e.reason ? ": " + e.reason : "") + "]");
    });
    term.onData((data) => send(["stdin", data]));
  }

  document.addEventListener("cdsw:terminal-shown", () => {
    if (!term) open(); else { resize(); term.focus(); }
  });
  document.addEventListener("cdsw:session-ended", () => { if (socket) socket.close(); });
  window.addEventListener("resize", resize);
})();
