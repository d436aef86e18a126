// A time-series chart (uPlot on a canvas) with its legend and a text summary for screen readers.
import uPlot from "../vendor/uPlot.esm.js";
import { html, useEffect, useRef } from "../vendor/preact-htm.js";

const COLORS = ["#1f4e79", "#2e8540", "#b5172f", "#c77c02", "#6b4fa0"];

/** x: unix seconds (ascending); series: [{label, values}] of the same length as x. */
export function TimeChart({ title, summary, x, series, format = String }) {
  const box = useRef(null);
  useEffect(() => {
    if (!box.current || x.length === 0) return undefined;
    const options = {
      width: Math.min(box.current.clientWidth || 640, 720),
      height: 220,
      legend: { show: false }, // the legend below is plain text: nothing on the chart needs a mouse
      cursor: { show: false },
      scales: { x: { time: true } },
      axes: [{}, { values: (_, ticks) => ticks.map(format), size: 80 }],
      series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 2, paths: uPlot.paths.stepped({ align: 1 }) }))],
    };
    const plot = new uPlot(options, [x, ...series.map((s) => s.values)], box.current);
    return () => plot.destroy();
  }, [x, series]);
  return html`<figure class="chart">
    <figcaption>${title}</figcaption>
    ${x.length ? html`<div ref=${box} role="img" aria-label=${`${title}: ${summary}`}></div>` : html`<p>Nothing yet.</p>`}
    <ul class="legend">${series.map((s, i) => html`<li><span class=${`swatch swatch-${i}`}></span>${s.label}</li>`)}</ul>
  </figure>`;
}
