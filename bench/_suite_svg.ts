// Plain SVG line and bar charts for the benchmark suite's report, written as text with no
// dependency.

import { NOISY_SPREAD, summarize } from "./_suite_common.ts";

/** One point of a series: the median with its minimum and maximum. */
export interface ChartPoint {
  x: number;
  median: number;
  min: number;
  max: number;
  /** Drawn with a hollow marker: the spread of its samples is above the noise threshold. */
  noisy: boolean;
}

/** One line of a chart. */
export interface Series {
  /** The key into {@linkcode seriesStyle}, such as a library name. */
  key: string;
  points: ChartPoint[];
}

/** A line chart panel. */
export interface LinePanel {
  kind: "line";
  title: string;
  xLabel: string;
  yLabel: string;
  xTicks: readonly number[];
  formatX: (value: number) => string;
  yScale: "log" | "linear";
  formatY: (value: number) => string;
  series: Series[];
  /** A note printed under the plot, such as which values are missing. */
  note?: string;
}

/** A horizontal bar chart panel of ratios, with a reference line at 1. */
export interface BarPanel {
  kind: "bars";
  title: string;
  xLabel: string;
  bars: { key: string; label: string; value: number; min: number; max: number; noisy: boolean }[];
}

export type Panel = LinePanel | BarPanel;

interface Style {
  color: string;
  dash?: string;
  width: number;
  label: string;
}

// One color per package, so a package looks the same in every panel and chart. Variants of a
// package share its color and add a dash pattern.
const styles: Record<string, Style> = {
  "floor": { color: "#222222", dash: "7 4", width: 2, label: "floor (hand-written loop)" },
  "antflow": { color: "#d62728", width: 3, label: "antflow" },
  "antflow unordered": { color: "#d62728", dash: "2 3", width: 2, label: "antflow mapUnordered" },
  "antflow map": {
    color: "#e377c2",
    dash: "8 3",
    width: 2,
    label: "antflow, 3 chained executor.map",
  },
  "antflow submit": { color: "#e377c2", width: 2, label: "antflow executor.submit" },
  "antflow pipeline": { color: "#c49c94", width: 2, label: "antflow Pipeline" },
  "antflow semaphore": { color: "#ff9896", width: 2, label: "antflow Semaphore" },
  "antflow await": { color: "#d62728", dash: "8 3", width: 2, label: "antflow await map" },
  "p-map": { color: "#1f77b4", width: 2, label: "p-map" },
  "p-map unordered": {
    color: "#1f77b4",
    dash: "2 3",
    width: 2,
    label: "p-map, preserveOrder: false",
  },
  "p-map await": { color: "#1f77b4", dash: "8 3", width: 2, label: "p-map await pMap" },
  "promise-pool": { color: "#9467bd", width: 2, label: "promise-pool" },
  "p-limit": { color: "#2ca02c", width: 2, label: "p-limit" },
  "p-queue": { color: "#ff7f0e", width: 2, label: "p-queue" },
  "fastq": { color: "#8c564b", width: 2, label: "fastq" },
  "async-sema": { color: "#17becf", width: 2, label: "async-sema" },
  "bottleneck": { color: "#7f7f7f", width: 2, label: "bottleneck" },
};

/** Returns the color, dash pattern and legend label of a series key, or grey for unknown keys. */
export function seriesStyle(key: string): Style {
  return styles[key] ?? { color: "#999999", width: 2, label: key };
}

/** Escapes text for use inside an SVG element or attribute. */
export function escapeXml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;");
}

/**
 * Builds a chart point from timing or memory samples. A point whose median is below
 * `noiseFloor` in absolute value is never marked noisy, because near zero any change is a large
 * relative spread.
 */
export function toPoint(x: number, samples: readonly number[], noiseFloor = 0): ChartPoint {
  const summary = summarize(samples);
  const noisy = Math.abs(summary.median) >= noiseFloor && summary.spread > NOISY_SPREAD;
  return { x, ...summary, noisy };
}

const PANEL_WIDTH = 400;
const BAR_AXIS_LIMIT = 3;
const PANEL_HEIGHT = 300;
const MARGIN = { left: 64, right: 16, top: 34, bottom: 52 };
const FONT = `font-family="Helvetica, Arial, sans-serif"`;

function round(value: number): string {
  return (Math.round(value * 10) / 10).toString();
}

// Tick values 1, 2 and 5 times each power of ten between `low` and `high`.
function logTicks(low: number, high: number): number[] {
  const ticks: number[] = [];
  for (let power = Math.floor(Math.log10(low)); power <= Math.ceil(Math.log10(high)); power++) {
    for (const step of [1, 2, 5]) {
      const value = step * 10 ** power;
      if (value >= low * 0.999 && value <= high * 1.001) ticks.push(value);
    }
  }
  return ticks;
}

// About five round tick values from 0 to at least `high`.
function linearTicks(high: number): number[] {
  const rough = high / 5;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= rough) ?? rough;
  const ticks: number[] = [];
  for (let value = 0; value <= high + step * 0.001; value += step) ticks.push(value);
  if ((ticks.at(-1) as number) < high) ticks.push((ticks.at(-1) as number) + step);
  return ticks;
}

function linePanel(panel: LinePanel, originX: number, originY: number): string {
  const width = PANEL_WIDTH - MARGIN.left - MARGIN.right;
  const height = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom;
  const left = originX + MARGIN.left;
  const top = originY + MARGIN.top;
  const parts: string[] = [];
  parts.push(
    `<text x="${round(originX + PANEL_WIDTH / 2)}" y="${round(originY + 20)}" ${FONT} ` +
      `font-size="13" font-weight="bold" text-anchor="middle">${escapeXml(panel.title)}</text>`,
  );

  const points = panel.series.flatMap((series) => series.points);
  if (points.length === 0) {
    parts.push(
      `<text x="${round(left + width / 2)}" y="${round(top + height / 2)}" ${FONT} ` +
        `font-size="12" text-anchor="middle">no data</text>`,
    );
    return parts.join("\n");
  }

  // X axis: logarithmic over the tick values.
  const xLow = Math.log2(Math.min(...panel.xTicks));
  const xHigh = Math.log2(Math.max(...panel.xTicks));
  const xSpan = xHigh - xLow || 1;
  const xOf = (value: number) => left + 10 + ((Math.log2(value) - xLow) / xSpan) * (width - 20);

  let yTicks: number[];
  let yOf: (value: number) => number;
  if (panel.yScale === "log") {
    const low = Math.min(...points.map((point) => point.min).filter((value) => value > 0));
    const high = Math.max(...points.map((point) => point.max));
    const yLow = 10 ** Math.floor(Math.log10(low));
    const yHigh = 10 ** Math.ceil(Math.log10(high));
    yTicks = logTicks(yLow, yHigh);
    const span = Math.log10(yHigh) - Math.log10(yLow) || 1;
    yOf = (value) =>
      top + height - ((Math.log10(Math.max(value, yLow)) - Math.log10(yLow)) / span) * height;
  } else {
    const high = Math.max(...points.map((point) => point.max), 1e-9);
    yTicks = linearTicks(high);
    const yHigh = yTicks.at(-1) as number;
    yOf = (value) => top + height - (Math.max(0, value) / yHigh) * height;
  }

  parts.push(
    `<rect x="${left}" y="${top}" width="${width}" height="${height}" fill="#ffffff" ` +
      `stroke="#888888"/>`,
  );
  for (const tick of yTicks) {
    const y = round(yOf(tick));
    parts.push(
      `<line x1="${left}" y1="${y}" x2="${left + width}" y2="${y}" stroke="#e4e4e4"/>`,
      `<text x="${left - 6}" y="${y}" ${FONT} font-size="11" text-anchor="end" ` +
        `dominant-baseline="middle">${escapeXml(panel.formatY(tick))}</text>`,
    );
  }
  for (const tick of panel.xTicks) {
    const x = round(xOf(tick));
    parts.push(
      `<line x1="${x}" y1="${top}" x2="${x}" y2="${top + height}" stroke="#f0f0f0"/>`,
      `<text x="${x}" y="${top + height + 16}" ${FONT} font-size="11" text-anchor="middle">` +
        `${escapeXml(panel.formatX(tick))}</text>`,
    );
  }
  parts.push(
    `<text x="${round(left + width / 2)}" y="${round(top + height + 34)}" ${FONT} ` +
      `font-size="11" text-anchor="middle">${escapeXml(panel.xLabel)}</text>`,
    `<text x="${round(originX + 14)}" y="${round(top + height / 2)}" ${FONT} font-size="11" ` +
      `text-anchor="middle" transform="rotate(-90 ${round(originX + 14)} ${
        round(top + height / 2)
      })">${escapeXml(panel.yLabel)}</text>`,
  );
  if (panel.note !== undefined) {
    parts.push(
      `<text x="${round(left + width / 2)}" y="${round(top + height + 48)}" ${FONT} ` +
        `font-size="10" fill="#555555" text-anchor="middle">${escapeXml(panel.note)}</text>`,
    );
  }

  // antflow's lines and the floor are drawn last, so lines that overlap them do not hide them.
  const onTop = (key: string) => key === "floor" || key.startsWith("antflow") ? 1 : 0;
  const ordered = [...panel.series].sort((a, b) => onTop(a.key) - onTop(b.key));
  for (const series of ordered) {
    const style = seriesStyle(series.key);
    const sorted = [...series.points].sort((a, b) => a.x - b.x);
    const path = sorted.map((point) => `${round(xOf(point.x))},${round(yOf(point.median))}`);
    const dash = style.dash === undefined ? "" : ` stroke-dasharray="${style.dash}"`;
    parts.push(
      `<polyline points="${path.join(" ")}" fill="none" stroke="${style.color}" ` +
        `stroke-width="${style.width}"${dash}/>`,
    );
    for (const point of sorted) {
      const x = round(xOf(point.x));
      parts.push(
        `<line x1="${x}" y1="${round(yOf(point.min))}" x2="${x}" y2="${round(yOf(point.max))}" ` +
          `stroke="${style.color}" stroke-width="1"/>`,
        `<circle cx="${x}" cy="${round(yOf(point.median))}" r="3.5" ` +
          `fill="${point.noisy ? "#ffffff" : style.color}" stroke="${style.color}" ` +
          `stroke-width="1.5"/>`,
      );
    }
  }
  return parts.join("\n");
}

function barPanel(panel: BarPanel, originX: number, originY: number): string {
  const labelWidth = 150;
  const left = originX + labelWidth;
  const top = originY + MARGIN.top;
  const width = PANEL_WIDTH - labelWidth - MARGIN.right;
  const height = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom;
  const parts: string[] = [
    `<text x="${round(originX + PANEL_WIDTH / 2)}" y="${round(originY + 20)}" ${FONT} ` +
    `font-size="13" font-weight="bold" text-anchor="middle">${escapeXml(panel.title)}</text>`,
  ];
  if (panel.bars.length === 0) return parts.join("\n");

  // The axis ends at 3 at most, so one far outlier does not flatten the other bars. A bar past
  // the end is cut there and labelled with its value.
  const high = Math.min(BAR_AXIS_LIMIT, Math.max(2, ...panel.bars.map((bar) => bar.max)));
  const ticks = linearTicks(high);
  const xHigh = ticks.at(-1) as number;
  const xOf = (value: number) => left + (Math.min(value, xHigh) / xHigh) * width;
  const rowHeight = height / panel.bars.length;

  for (const tick of ticks) {
    const x = round(xOf(tick));
    parts.push(
      `<line x1="${x}" y1="${top}" x2="${x}" y2="${top + height}" stroke="#e4e4e4"/>`,
      `<text x="${x}" y="${top + height + 16}" ${FONT} font-size="11" text-anchor="middle">` +
        `${escapeXml(String(tick))}</text>`,
    );
  }
  panel.bars.forEach((bar, index) => {
    const style = seriesStyle(bar.key);
    const y = top + index * rowHeight;
    const barHeight = Math.max(2, rowHeight * 0.6);
    const middle = round(y + rowHeight / 2);
    parts.push(
      `<text x="${left - 6}" y="${middle}" ${FONT} font-size="10" text-anchor="end" ` +
        `dominant-baseline="middle">${escapeXml(bar.label)}</text>`,
      `<rect x="${left}" y="${round(y + (rowHeight - barHeight) / 2)}" ` +
        `width="${round(Math.max(0, xOf(bar.value) - left))}" height="${round(barHeight)}" ` +
        `fill="${bar.noisy ? "#ffffff" : style.color}" stroke="${style.color}"/>`,
      `<line x1="${round(xOf(bar.min))}" y1="${middle}" x2="${round(xOf(bar.max))}" ` +
        `y2="${middle}" stroke="#222222" stroke-width="1"/>`,
    );
    const cut = bar.value > xHigh;
    parts.push(
      `<text x="${round(cut ? left + width - 4 : xOf(Math.max(bar.value, bar.max)) + 4)}" ` +
        `y="${middle}" ${FONT} font-size="10" text-anchor="${cut ? "end" : "start"}" ` +
        `dominant-baseline="middle"${cut ? ` fill="#ffffff"` : ""}>` +
        `${bar.value.toFixed(2)}${cut ? " →" : ""}</text>`,
    );
  });
  const one = round(xOf(1));
  parts.push(
    `<line x1="${one}" y1="${top}" x2="${one}" y2="${top + height}" stroke="#222222" ` +
      `stroke-dasharray="7 4"/>`,
    `<text x="${round(left + width / 2)}" y="${round(top + height + 34)}" ${FONT} ` +
      `font-size="11" text-anchor="middle">${escapeXml(panel.xLabel)}</text>`,
  );
  return parts.join("\n");
}

/** A figure: a title, panels in a grid, and one legend for every series key used. */
export interface Figure {
  title: string;
  subtitle: string;
  columns: number;
  panels: Panel[];
  /** Series keys in legend order; keys not used by any panel are left out. */
  legendOrder: readonly string[];
  /** Legend labels that replace the default label of a series key. */
  legendLabels?: Readonly<Record<string, string>>;
  legendNote: string;
}

/** Renders a figure as a standalone SVG document. */
export function renderFigure(figure: Figure): string {
  const rows = Math.ceil(figure.panels.length / figure.columns);
  const headerHeight = 56;
  const used = new Set<string>();
  for (const panel of figure.panels) {
    if (panel.kind === "line") { for (const series of panel.series) used.add(series.key); }
    else for (const bar of panel.bars) used.add(bar.key);
  }
  const keys = [
    ...figure.legendOrder.filter((key) => used.has(key)),
    ...[...used].filter((key) => !figure.legendOrder.includes(key)),
  ];
  const width = figure.columns * PANEL_WIDTH + 20;
  const legendColumns = Math.max(2, Math.floor(width / 380));
  const legendRowHeight = 20;
  const legendHeight = Math.ceil(keys.length / legendColumns) * legendRowHeight + 50;
  const height = headerHeight + rows * PANEL_HEIGHT + legendHeight;

  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}">`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="24" ${FONT} font-size="16" font-weight="bold" ` +
    `text-anchor="middle">${escapeXml(figure.title)}</text>`,
    `<text x="${width / 2}" y="44" ${FONT} font-size="11" fill="#444444" ` +
    `text-anchor="middle">${escapeXml(figure.subtitle)}</text>`,
  ];
  figure.panels.forEach((panel, index) => {
    const originX = 10 + (index % figure.columns) * PANEL_WIDTH;
    const originY = headerHeight + Math.floor(index / figure.columns) * PANEL_HEIGHT;
    parts.push(
      panel.kind === "line" ? linePanel(panel, originX, originY) : barPanel(
        panel,
        originX,
        originY,
      ),
    );
  });

  const legendTop = headerHeight + rows * PANEL_HEIGHT + 20;
  const columnWidth = (width - 40) / legendColumns;
  keys.forEach((key, index) => {
    const style = seriesStyle(key);
    const x = 20 + (index % legendColumns) * columnWidth;
    const y = legendTop + Math.floor(index / legendColumns) * legendRowHeight;
    const dash = style.dash === undefined ? "" : ` stroke-dasharray="${style.dash}"`;
    parts.push(
      `<line x1="${round(x)}" y1="${y}" x2="${round(x + 30)}" y2="${y}" stroke="${style.color}" ` +
        `stroke-width="${style.width}"${dash}/>`,
      `<text x="${round(x + 38)}" y="${y}" ${FONT} font-size="12" dominant-baseline="middle">` +
        `${escapeXml(figure.legendLabels?.[key] ?? style.label)}</text>`,
    );
  });
  parts.push(
    `<text x="20" y="${
      legendTop + Math.ceil(keys.length / legendColumns) * legendRowHeight + 8
    }" ` +
      `${FONT} font-size="11" fill="#444444">${escapeXml(figure.legendNote)}</text>`,
    `</svg>`,
  );
  return parts.join("\n") + "\n";
}
