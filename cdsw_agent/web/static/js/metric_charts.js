// Charts of a run's metrics over steps, drawn as SVG (no library): one small line chart per
// metric. The data is the JSON block #metric-steps: {name: [[step, value], ...]}.
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var W = 320, H = 160, PAD = {l: 48, r: 10, t: 10, b: 24};

  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function label(v) {
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
    return String(Math.round(v * 1000) / 1000);
  }

  function chart(name, points) {
    var xs = points.map(function (p) { return p[0]; });
    var ys = points.map(function (p) { return p[1]; });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    if (x1 === x0) { x1 = x0 + 1; }
    if (y1 === y0) { y1 = y0 + 1; y0 = y0 - 1; }
    var sx = function (x) { return PAD.l + (x - x0) / (x1 - x0) * (W - PAD.l - PAD.r); };
    var sy = function (y) { return H - PAD.b - (y - y0) / (y1 - y0) * (H - PAD.t - PAD.b); };
    var svg = el("svg", {viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img",
                         "aria-label": name + " over steps", "class": "metric-chart"});
    svg.appendChild(el("line", {x1: PAD.l, y1: H - PAD.b, x2: W - PAD.r, y2: H - PAD.b,
                                stroke: "#999"}));
    svg.appendChild(el("line", {x1: PAD.l, y1: PAD.t, x2: PAD.l, y2: H - PAD.b, stroke: "#999"}));
    svg.appendChild(el("text", {x: PAD.l - 4, y: PAD.t + 8, "text-anchor": "end",
                                "font-size": 10}, label(y1)));
    svg.appendChild(el("text", {x: PAD.l - 4, y: H - PAD.b, "text-anchor": "end",
                                "font-size": 10}, label(y0)));
    svg.appendChild(el("text", {x: PAD.l, y: H - 6, "font-size": 10}, "step " + x0));
    svg.appendChild(el("text", {x: W - PAD.r, y: H - 6, "text-anchor": "end",
                                "font-size": 10}, "step " + x1));
    var line = points.map(function (p) { return sx(p[0]).toFixed(1) + "," + sy(p[1]).toFixed(1); });
    svg.appendChild(el("polyline", {points: line.join(" "), fill: "none", stroke: "#1f6feb",
                                    "stroke-width": 2}));
    points.forEach(function (p) {
      var dot = el("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 2.5, fill: "#1f6feb"});
      dot.appendChild(el("title", {}, "step " + p[0] + ": " + p[1]));
      svg.appendChild(dot);
    });
    var fig = document.createElement("figure");
    var cap = document.createElement("figcaption");
    cap.textContent = name;
    fig.appendChild(cap);
    fig.appendChild(svg);
    return fig;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var data = document.getElementById("metric-steps");
    var host = document.getElementById("metric-charts");
    if (!data || !host) return;
    var series = JSON.parse(data.textContent || "{}");
    Object.keys(series).sort().forEach(function (name) {
      var pts = (series[name] || []).filter(function (p) {
        return typeof p[1] === "number" && isFinite(p[1]);
      });
      if (pts.length) host.appendChild(chart(name, pts));
    });
  });
})();
