// Hand-drawn SVG line charts: the overview's four charts and the node detail's usage chart.
import { el, svg, $ } from "./dom.js";
import { state, nodeName } from "./state.js";

export const COLORS = ["#2f6fde", "#1f9d55", "#d98b00", "#c0392b", "#8e44ad", "#16a085", "#e67e22", "#7f8c8d"];

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
function fmtTick(v) { return v >= 1000 ? `${(v / 1000).toFixed(1)}k` : v >= 10 ? String(Math.round(v)) : String(+v.toFixed(2)); }
function clock(t) { return new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }); }

// series: [{name, color, points: [[timeMs, value|null], ...]}]
export function lineChart(target, series, { xMin, xMax, yMax, unit = "" }) {
  // Draw at the element's own width so text stays at its CSS size on any screen.
  const W = Math.max(240, Math.round(target.parentElement ? target.parentElement.clientWidth - 2 : 600) || 600);
  const H = W < 500 ? 140 : 170, L = 44, R = 8, T = 10, B = 22;
  target.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const parts = [];
  let top = yMax ?? 0;
  if (yMax === undefined) for (const s of series) for (const [, v] of s.points) if (v !== null && v > top) top = v;
  top = yMax ?? niceMax(top);
  const x = (t) => L + ((t - xMin) / Math.max(1, xMax - xMin)) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  for (const frac of [0, 0.5, 1]) {
    parts.push(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(top * frac), y2: y(top * frac) }));
    const label = svg("text", { class: "axis-label", x: L - 6, y: y(top * frac) + 4, "text-anchor": "end" });
    label.textContent = fmtTick(top * frac) + unit;
    parts.push(label);
  }
  for (const [t, anchor] of [[xMin, "start"], [(xMin + xMax) / 2, "middle"], [xMax, "end"]]) {
    const label = svg("text", { class: "axis-label", x: x(t), y: H - 5, "text-anchor": anchor });
    label.textContent = clock(t);
    parts.push(label);
  }
  let drawn = 0;
  for (const s of series) {
    let d = "";
    let run = [];
    const flush = () => {
      if (run.length === 1) {  // a lone point draws no line: mark it with a dot
        parts.push(svg("circle", { cx: run[0][0].toFixed(1), cy: run[0][1].toFixed(1), r: 2.5, fill: s.color }));
      }
      run = [];
    };
    let pen = false;
    for (const [t, v] of s.points) {
      if (v === null || v === undefined) { pen = false; flush(); continue; }
      d += `${pen ? "L" : "M"}${x(t).toFixed(1)},${y(v).toFixed(1)}`;
      run.push([x(t), y(v)]);
      pen = true;
      drawn++;
    }
    flush();
    if (d) {
      const path = svg("path", { class: "line", d, stroke: s.color });
      const title = svg("title", {});
      title.textContent = s.name;
      path.append(title);
      parts.push(path);
    }
  }
  if (!drawn) {
    const empty = svg("text", { class: "empty", x: (L + W) / 2, y: H / 2, "text-anchor": "middle" });
    empty.textContent = "no data yet";
    parts.push(empty);
  }
  target.replaceChildren(...parts);
}

export function renderLegend(box, entries) {
  box.replaceChildren(...entries.map((e) => {
    const span = el("span", { text: e.name });
    span.style.color = e.color;
    return span;
  }));
}

let chartSig = "";
export function renderCharts(series) {
  if (!series) return;
  const sig = JSON.stringify(series) + [...state.nodesById.values()].map((n) => n.display_name).join() + window.innerWidth;
  if (sig === chartSig) return;  // same data, same names, same width: nothing to redraw
  chartSig = sig;
  const step = series.step_s * 1000;
  const start = series.start_ms;
  const xMax = start + step * series.requests.length;
  const at = (values, f) => values.map((v, i) => [start + i * step + step / 2, f(v)]);
  const rate = (c) => c / series.step_s;
  lineChart($("chart-rps"), [{ name: "all nodes", color: COLORS[0], points: at(series.requests, rate) }], { xMin: start, xMax });
  lineChart($("chart-latency"), [{ name: "all nodes", color: COLORS[2], points: at(series.latency_ms, (v) => v) }], { xMin: start, xMax, unit: "" });
  const ids = Object.keys(series.nodes);
  const colored = ids.map((id, i) => ({ id, name: nodeName(id), color: COLORS[i % COLORS.length] }));
  lineChart($("chart-node-rps"), colored.map((c) => ({ ...c, points: at(series.nodes[c.id].requests, rate) })), { xMin: start, xMax });
  lineChart($("chart-node-latency"), colored.map((c) => ({ ...c, points: at(series.nodes[c.id].latency_ms, (v) => v) })), { xMin: start, xMax });
  renderLegend($("legend-node-rps"), colored);
  renderLegend($("legend-node-latency"), colored);
}
