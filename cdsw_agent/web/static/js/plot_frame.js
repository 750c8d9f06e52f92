/* Inside an interactive-plot frame of the console or a run page (outputs.js): draws the figure
   the frame carries as JSON with the workbench's plotly.js. The frame has an opaque origin, so
   nothing here can reach the workbench as the viewer. */
"use strict";
(() => {
  const target = document.getElementById("plot");
  try {
    const figure = JSON.parse(document.getElementById("figure").textContent);
    const layout = Object.assign({}, figure.layout || {}, { autosize: true });
    // no link to the plotly cloud, no MathJax or map tiles from the internet
    const config = Object.assign({}, figure.config || {}, { responsive: true, showLink: false, displaylogo: false,
                                                            typesetMath: false });
    window.Plotly.newPlot(target, figure.data || [], layout, config);
  } catch (err) {
    target.textContent = "This plot cannot be drawn: " + err;
  }
})();
