// Turns the benchmark suite's collected results into Markdown tables and SVG figures.

import { NOISY_SPREAD, summarize, type Summary } from "./_suite_common.ts";
import { type Figure, type Panel, renderFigure, toPoint } from "./_suite_svg.ts";
import type { OverheadCaseResult, OverheadRow } from "./suite_overhead.ts";
import type { InputKind, MemoryRecord } from "./suite_memory.ts";

/** The inputs of one memory measurement and the implementations run on it. */
export interface MemoryInput {
  input: InputKind;
  length: number;
  /** Implementation ids, as `suite_memory.ts --implementations` takes them. */
  implementations: readonly string[];
}

/** The settings of a suite run. */
export interface SuiteSettings {
  quick: boolean;
  tasks: number;
  runs: number;
  warmups: number;
  concurrencies: readonly number[];
  timerTasks: number;
  timerConcurrency: number;
  memoryConcurrency: number;
  memoryInputs: readonly MemoryInput[];
}

/** Everything measured on one runtime. */
export interface RuntimeReport {
  id: string;
  /** Name and version, as the case files report them, such as `Deno 2.9.6`. */
  name: string;
  forcedGc: boolean;
  overhead: OverheadCaseResult[];
  timer: OverheadCaseResult | undefined;
  memory: MemoryRecord[];
}

/** A complete run of the suite. */
export interface SuiteReport {
  startedAt: string;
  elapsedSeconds: number;
  command: string;
  machine: {
    cpu: string;
    cores: number;
    memoryGiB: number;
    os: string;
    loadBefore: readonly number[];
    loadAfter: readonly number[];
  };
  antflow: { version: string; commit: string };
  peers: { name: string; version: string }[];
  settings: SuiteSettings;
  runtimes: RuntimeReport[];
  /** Subprocesses that failed, with their error output; empty when everything ran. */
  failures: string[];
}

/** The mark after a noisy figure, explained under every table that uses it. */
const NOISY_MARK = "†";
const NOISY_NOTE = `${NOISY_MARK} spread (max − min) / median above ${
  NOISY_SPREAD * 100
}%: this row was disturbed, for example by other work on the machine.`;

function formatNs(ns: number): string {
  if (ns < 10) return ns.toFixed(1);
  return Math.round(ns).toLocaleString("en-US");
}

function formatRatio(ratio: number): string {
  return ratio < 10 ? ratio.toFixed(2) : ratio.toFixed(1);
}

function formatMb(bytes: number): string {
  const mb = bytes / 1e6;
  if (Math.abs(mb) < 0.05) return "0.0";
  return Math.abs(mb) < 100 ? mb.toFixed(1) : Math.round(mb).toLocaleString("en-US");
}

function formatLength(length: number): string {
  if (length >= 1e6 && length % 1e6 === 0) return `${length / 1e6}M`;
  if (length >= 1e3 && length % 1e3 === 0) return `${length / 1e3}k`;
  return String(length);
}

/** Formats an ns-per-task figure in charts: `500 ns`, `2 µs`, `1 ms`. */
function formatDuration(ns: number): string {
  if (ns >= 1e6) return `${ns / 1e6} ms`;
  if (ns >= 1e3) return `${ns / 1e3} µs`;
  return `${ns} ns`;
}

function noisy(summary: Summary): boolean {
  return summary.spread > NOISY_SPREAD;
}

function mark(summary: Summary): string {
  return noisy(summary) ? ` ${NOISY_MARK}` : "";
}

// A Markdown table. The first column and the columns listed in `leftColumns` are left-aligned,
// the others right-aligned; `leftColumns` of "all" aligns every column left.
function table(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  leftColumns: readonly number[] | "all" = [],
): string {
  const align = header.map((_, column) =>
    column === 0 || leftColumns === "all" || leftColumns.includes(column) ? "---" : "---:"
  );
  return [header, align, ...rows].map((cells) => `| ${cells.join(" | ")} |`).join("\n");
}

function rowsAt(result: OverheadCaseResult, c: number): OverheadRow[] {
  return result.rows.filter((row) => row.concurrency === c);
}

function implementationNames(result: OverheadCaseResult): string[] {
  return [...new Set(result.rows.map((row) => row.implementation))];
}

/** Counts the timing and memory rows, and those flagged noisy. */
export function countNoisy(report: SuiteReport): { noisy: number; total: number } {
  let total = 0;
  let flagged = 0;
  for (const runtime of report.runtimes) {
    const timings = [...runtime.overhead, ...(runtime.timer === undefined ? [] : [runtime.timer])]
      .flatMap((result) => result.rows.map((row) => row.samples));
    const memory = runtime.memory.map((record) => record.samples.map((s) => s.heapBytes));
    for (const samples of timings) {
      total++;
      if (noisy(summarize(samples))) flagged++;
    }
    // Near-zero heap figures have no meaningful relative spread; only rows above 1 MB count.
    for (const samples of memory) {
      const summary = summarize(samples);
      if (Math.abs(summary.median) < 1e6) continue;
      total++;
      if (noisy(summary)) flagged++;
    }
  }
  return { noisy: flagged, total };
}

function overheadTable(result: OverheadCaseResult, concurrencies: readonly number[]): string {
  const header = ["implementation", ...concurrencies.map((c) => `C = ${c}`)];
  const rows = implementationNames(result).map((name) => [
    name,
    ...concurrencies.map((c) => {
      const rowsOfC = rowsAt(result, c);
      const row = rowsOfC.find((candidate) => candidate.implementation === name);
      const floor = rowsOfC.find((candidate) => candidate.floor);
      if (row === undefined || floor === undefined) return "";
      const summary = summarize(row.samples);
      const ratio = row.floor
        ? ""
        : ` ×${formatRatio(summary.median / summarize(floor.samples).median)}`;
      return `${formatNs(summary.median)} (${formatNs(summary.min)}–${
        formatNs(summary.max)
      })${ratio}${mark(summary)}`;
    }),
  ]);
  return table(header, rows);
}

// antflow's main row of a case at one concurrency, with its ratio to the floor and to each peer.
function headlineRows(result: OverheadCaseResult, concurrencies: readonly number[]): string[][] {
  return concurrencies.flatMap((c) => {
    const rows = rowsAt(result, c);
    const floor = rows.find((row) => row.floor);
    const antflow = rows.find((row) => row.library === "antflow");
    if (floor === undefined || antflow === undefined) return [];
    const ours = summarize(antflow.samples);
    const peers = rows.filter((row) => !row.floor && !row.library.startsWith("antflow"));
    const versus = peers.map((peer) => {
      const theirs = summarize(peer.samples);
      return `${peer.library} ${formatRatio(ours.median / theirs.median)}${mark(theirs)}`;
    });
    return [[
      result.case,
      String(c),
      `${formatNs(ours.median)}${mark(ours)}`,
      formatRatio(ours.median / summarize(floor.samples).median),
      versus.join(", "),
    ]];
  });
}

/** Lists every case and concurrency where an antflow row is slower than a peer's. */
function losses(runtime: RuntimeReport, concurrencies: readonly number[]): string[] {
  const lines: string[] = [];
  for (const result of runtime.overhead) {
    for (const c of concurrencies) {
      const rows = rowsAt(result, c);
      const ours = rows.find((row) => row.library === "antflow");
      if (ours === undefined) continue;
      const oursSummary = summarize(ours.samples);
      for (const peer of rows) {
        if (peer.floor || peer.library.startsWith("antflow")) continue;
        const theirs = summarize(peer.samples);
        const ratio = oursSummary.median / theirs.median;
        if (ratio <= 1) continue;
        const within = theirs.max >= oursSummary.min ? ", within the min–max ranges" : "";
        lines.push(
          `- ${result.case}, C = ${c}: ${ours.implementation} ${formatNs(oursSummary.median)} ns${
            mark(oursSummary)
          } against ${peer.implementation} ${formatNs(theirs.median)} ns${mark(theirs)} (×${
            formatRatio(ratio)
          }${within})`,
        );
      }
    }
  }
  return lines;
}

function timerTable(result: OverheadCaseResult): string {
  const floor = result.rows.find((row) => row.floor);
  const floorMedian = floor === undefined ? NaN : summarize(floor.samples).median;
  return table(
    ["implementation", "median ns/task", "min", "max", "× floor"],
    result.rows.map((row) => {
      const summary = summarize(row.samples);
      return [
        row.implementation,
        `${formatNs(summary.median)}${mark(summary)}`,
        formatNs(summary.min),
        formatNs(summary.max),
        row.floor ? "" : formatRatio(summary.median / floorMedian),
      ];
    }),
  );
}

function inputLabel(input: MemoryInput | MemoryRecord): string {
  return `${input.input} ${formatLength(input.length)}`;
}

function memoryTables(runtime: RuntimeReport, inputs: readonly MemoryInput[]): string {
  const names = [...new Set(runtime.memory.map((record) => record.implementation))];
  const find = (name: string, input: MemoryInput) =>
    runtime.memory.find((record) =>
      record.implementation === name && record.input === input.input &&
      record.length === input.length
    );
  const header = ["implementation", "holds", ...inputs.map(inputLabel)];
  const heapRows = names.map((name) => {
    const model = runtime.memory.find((record) => record.implementation === name)?.model ?? "";
    return [
      name,
      model,
      ...inputs.map((input) => {
        const record = find(name, input);
        if (record === undefined) return "not run";
        const summary = summarize(record.samples.map((sample) => sample.heapBytes));
        const flag = Math.abs(summary.median) >= 1e6 ? mark(summary) : "";
        return `${formatMb(summary.median)} (${formatMb(summary.min)}–${
          formatMb(summary.max)
        })${flag}`;
      }),
    ];
  });
  const rssRows = names.map((name) => [
    name,
    runtime.memory.find((record) => record.implementation === name)?.model ?? "",
    ...inputs.map((input) => {
      const first = find(name, input)?.samples[0];
      if (first === undefined) return "not run";
      return `${formatMb(first.peakRssBytes)} (start ${formatMb(first.startRssBytes)})`;
    }),
  ]);
  return [
    `Live heap at the midpoint after a forced GC, in MB above the lowest starting heap of the ` +
    `runs (median, min–max). At 1M inputs, MB are also bytes per input.`,
    "",
    table(header, heapRows),
    "",
    `Peak RSS in MB, sampled during the first measured run of a fresh process.`,
    "",
    table(header, rssRows),
  ].join("\n");
}

function machineLines(report: SuiteReport): string[] {
  const { machine, settings } = report;
  const load = (values: readonly number[]) => values.map((value) => value.toFixed(2)).join(", ");
  const memoryInputs = settings.memoryInputs.map(inputLabel).join(", ");
  return [
    table(["", ""], [
      ["CPU", `${machine.cpu}, ${machine.cores} cores`],
      ["memory", `${machine.memoryGiB.toFixed(1)} GiB`],
      ["OS", machine.os],
      [
        "load average (1, 5, 15 min)",
        `${load(machine.loadBefore)} at the start; ${load(machine.loadAfter)} at the end`,
      ],
      [
        "runtimes",
        report.runtimes.map((runtime) =>
          `${runtime.name} (forced GC ${runtime.forcedGc ? "on" : "off"})`
        ).join(", "),
      ],
      ["antflow", `${report.antflow.version}, ${report.antflow.commit}`],
      ["peers", report.peers.map((peer) => `${peer.name} ${peer.version}`).join(", ")],
      [
        "overhead cases",
        `${settings.tasks.toLocaleString("en-US")} tasks per run, ${settings.warmups} warm-up ` +
        `and ${settings.runs} timed runs per implementation, C = ${
          settings.concurrencies.join(", ")
        }`,
      ],
      [
        "timer-bound case",
        `${
          settings.timerTasks.toLocaleString("en-US")
        } tasks per run at C = ${settings.timerConcurrency}`,
      ],
      [
        "memory cases",
        `C = ${settings.memoryConcurrency}, ${settings.runs} measured runs after a warm-up; ` +
        `inputs: ${memoryInputs}`,
      ],
    ], "all"),
  ];
}

function noiseParagraph(report: SuiteReport): string {
  const { noisy: flagged, total } = countNoisy(report);
  const busy =
    Math.max(...report.machine.loadBefore.slice(0, 1), ...report.machine.loadAfter.slice(0, 1)) >
      report.machine.cores * 0.5;
  const sentences: string[] = [];
  if (flagged > 0) {
    sentences.push(
      `**This run was noisy:** ${flagged} of ${total} rows have a spread above ${
        NOISY_SPREAD * 100
      }% and are marked ${NOISY_MARK}. Compare their medians with care, and rerun for firmer numbers.`,
    );
  } else {
    sentences.push(`No row has a spread above ${NOISY_SPREAD * 100}% (${total} rows).`);
  }
  if (busy) {
    sentences.push(
      `The 1-minute load average was above half the core count, so other processes competed ` +
        `for the CPU during the run.`,
    );
  }
  return sentences.join(" ");
}

/** Renders the generated part of the benchmark page. `chartPrefix` is prepended to SVG paths. */
export function renderMarkdown(report: SuiteReport, chartPrefix = ""): string {
  const { settings } = report;
  const parts: string[] = [
    `Generated by \`${report.command}\` on ${report.startedAt.slice(0, 10)} in ${
      (report.elapsedSeconds / 60).toFixed(1)
    } minutes${settings.quick ? " (quick mode: a smoke test, not a measurement)" : ""}. ` +
    `Every sample is in [bench-results.json](${chartPrefix}bench-results.json).`,
    "",
    ...machineLines(report),
    "",
    noiseParagraph(report),
  ];
  if (report.failures.length > 0) {
    parts.push("", "**Failed subprocesses:**", "", ...report.failures.map((line) => `- ${line}`));
  }

  parts.push(
    "",
    "### Charts",
    "",
    ...report.runtimes.map((runtime) =>
      `![${runtime.name}: nanoseconds per task against concurrency](${chartPrefix}bench-${runtime.id}.svg)`
    ),
    "",
    `![Memory against input length](${chartPrefix}bench-memory.svg)`,
    "",
    "### antflow against the floor and each peer",
    "",
    `antflow's time per task, its ratio to the hand-written floor, and its ratio to each peer ` +
      `(antflow's median divided by the peer's: below 1 means antflow is faster).`,
  );
  for (const runtime of report.runtimes) {
    parts.push(
      "",
      `#### ${runtime.name}`,
      "",
      table(
        ["case", "C", "antflow ns/task", "× floor", "antflow ÷ peer"],
        runtime.overhead.flatMap((result) => headlineRows(result, settings.concurrencies)),
        [4],
      ),
      "",
      NOISY_NOTE,
    );
  }

  parts.push("", "### Rows where antflow is slower than a peer", "");
  for (const runtime of report.runtimes) {
    const lines = losses(runtime, settings.concurrencies);
    parts.push(
      `#### ${runtime.name}`,
      "",
      ...(lines.length === 0 ? ["None."] : lines),
      "",
    );
  }

  parts.push(
    "### Overhead per case",
    "",
    `Nanoseconds per task (per item for the pipeline): median (min–max) of ${settings.runs} ` +
      `timed runs, and × the floor's median.`,
  );
  for (const runtime of report.runtimes) {
    for (const result of runtime.overhead) {
      parts.push(
        "",
        `#### ${runtime.name}: ${result.title}`,
        "",
        overheadTable(result, settings.concurrencies),
      );
    }
    parts.push("", NOISY_NOTE);
  }

  parts.push("", "### Timer-bound tasks", "");
  for (const runtime of report.runtimes) {
    if (runtime.timer === undefined) continue;
    parts.push(
      `#### ${runtime.name}: ${runtime.timer.title}, C = ${settings.timerConcurrency}`,
      "",
      timerTable(runtime.timer),
      "",
    );
  }

  parts.push("### Memory", "");
  for (const runtime of report.runtimes) {
    parts.push(`#### ${runtime.name}`, "", memoryTables(runtime, settings.memoryInputs), "");
  }
  parts.push(NOISY_NOTE);
  return parts.join("\n") + "\n";
}

const LEGEND_ORDER = [
  "floor",
  "antflow",
  "antflow unordered",
  "antflow map",
  "antflow await",
  "antflow submit",
  "antflow pipeline",
  "antflow semaphore",
  "p-map",
  "p-map unordered",
  "p-map await",
  "promise-pool",
  "p-limit",
  "p-queue",
  "fastq",
  "async-sema",
  "bottleneck",
];

const SHORT_TITLES: Record<string, string> = {
  "map-await": "await executor.map",
  "map-for-await": "for await over executor.map",
  "submit": "executor.submit",
  "pipeline": "3-stage pipeline (ns per item)",
  "semaphore": "semaphore acquire/release",
};

/** Renders one runtime's overhead chart: a panel per case, plus the timer-bound ratios. */
export function overheadFigure(report: SuiteReport, runtime: RuntimeReport): string {
  const panels: Panel[] = runtime.overhead.map((result) => ({
    kind: "line",
    title: SHORT_TITLES[result.case] ?? result.case,
    xLabel: "concurrency C (log scale)",
    yLabel: "time per task (log scale)",
    xTicks: report.settings.concurrencies,
    formatX: String,
    yScale: "log",
    formatY: formatDuration,
    series: [...new Set(result.rows.map((row) => row.library))].map((library) => ({
      key: library,
      points: result.rows.filter((row) => row.library === library).map((row) =>
        toPoint(row.concurrency, row.samples)
      ),
    })),
  }));
  if (runtime.timer !== undefined) {
    const floor = runtime.timer.rows.find((row) => row.floor);
    const floorMedian = floor === undefined ? NaN : summarize(floor.samples).median;
    panels.push({
      kind: "bars",
      title: `timer-bound tasks, C = ${report.settings.timerConcurrency}`,
      xLabel: "time per task ÷ floor (1 = as fast as the floor)",
      bars: runtime.timer.rows.map((row) => {
        const summary = summarize(row.samples);
        return {
          key: row.library,
          label: row.implementation.replace(" (floor)", ""),
          value: summary.median / floorMedian,
          min: summary.min / floorMedian,
          max: summary.max / floorMedian,
          noisy: noisy(summary),
        };
      }),
    });
  }
  const figure: Figure = {
    title: `${runtime.name}: time per task against concurrency`,
    subtitle:
      `${report.machine.cpu}, ${report.machine.cores} cores; median of ${report.settings.runs} ` +
      `runs, whiskers from min to max; ${report.startedAt.slice(0, 10)}`,
    columns: 3,
    panels,
    legendOrder: LEGEND_ORDER,
    legendNote: `Hollow markers and bars: spread (max − min) / median above ${
      NOISY_SPREAD * 100
    }%. Lower is better.`,
  };
  return renderFigure(figure);
}

/** Renders the memory figure: live heap and peak RSS against the generator's length. */
export function memoryFigure(report: SuiteReport): string {
  const lengths = [
    ...new Set(
      report.settings.memoryInputs.filter((input) => input.input === "generator").map((input) =>
        input.length
      ),
    ),
  ].sort((a, b) => a - b);
  const panels: Panel[] = [];
  for (const measure of ["heap", "rss"] as const) {
    for (const runtime of report.runtimes) {
      const records = runtime.memory.filter((record) => record.input === "generator");
      const libraries = [...new Set(records.map((record) => record.library))];
      panels.push({
        kind: "line",
        title: `${runtime.name}: ${measure === "heap" ? "live heap at the midpoint" : "peak RSS"}`,
        xLabel: "generator length (log scale)",
        yLabel: measure === "heap" ? "MB above the starting heap" : "MB, first measured run",
        xTicks: lengths,
        formatX: formatLength,
        yScale: "linear",
        formatY: (value) => String(Math.round(value / 1e6)),
        series: libraries.map((library) => ({
          key: library,
          points: records.filter((record) => record.library === library).map((record) =>
            measure === "heap"
              ? toPoint(record.length, record.samples.map((sample) => sample.heapBytes), 1e6)
              : toPoint(record.length, [record.samples[0]?.peakRssBytes ?? 0])
          ),
        })),
        note: "Lines that stop early were not run at larger lengths; see the tables.",
      });
    }
  }
  const figure: Figure = {
    title: `Memory against input length, concurrency ${report.settings.memoryConcurrency}`,
    subtitle:
      `${report.machine.cpu}, ${report.machine.cores} cores; heap: median of ${report.settings.runs} ` +
      `runs after a forced GC; ${report.startedAt.slice(0, 10)}`,
    columns: report.runtimes.length,
    panels,
    legendOrder: LEGEND_ORDER,
    legendLabels: Object.fromEntries(
      report.runtimes.flatMap((runtime) =>
        runtime.memory.map((record) => [record.library, record.implementation])
      ),
    ),
    legendNote:
      "Flat lines hold memory bounded by the concurrency; rising lines grow with the input.",
  };
  return renderFigure(figure);
}
