/**
 * A terminal progress display for a `Pipeline`: an overall bar with the percentage done, the
 * rate, an ETA and the failures, and one line per stage with its busy workers, queue, items parked
 * at limits, and items done and failed.
 *
 * On a terminal the display redraws in place, at most once per `intervalMs`; elsewhere (a log
 * file, CI) it prints an occasional plain line. It reads the pipeline's `stats()` on a timer that
 * runs only while a run is active, and uses the pipeline's `item` events only to wake that timer,
 * so its cost does not grow with the number of items. It has no runtime dependency: output goes to
 * any object with a `write(text)` method, and {@linkcode stderrOutput} builds one for the current
 * runtime's standard error.
 *
 * ```ts
 * import { Pipeline, Stage } from "@antflow/antflow";
 * import { ProgressDisplay } from "@antflow/antflow/progress";
 * import assert from "node:assert/strict";
 *
 * const square = new Stage({ name: "square", workers: 4, tasks: [(n: number) => n * n] });
 * const pipeline = new Pipeline({ stages: [square] });
 * const written: string[] = [];
 * const output = { write: (text: string) => void written.push(text) };
 *
 * {
 *   using _progress = new ProgressDisplay(pipeline, { total: 3, output, mode: "summary" }).start();
 *   await pipeline.run([1, 2, 3]);
 * }
 * // Leaving the block stopped the display, which wrote its summary line.
 * assert.equal(written.length, 1);
 * assert.match(written[0] ?? "", /^Finished 3 items in /);
 * ```
 *
 * @module
 */

import process from "node:process";
import type { PipelineStats, StageStats } from "./pipeline.ts";
import { checkFinite, checkInteger, invalidMessage } from "./_validate.ts";

export type { ErrorSummary, PipelineStats, StageStats } from "./pipeline.ts";

/**
 * The destination of a {@linkcode ProgressDisplay}: a `write` method that takes text, and what the
 * display needs to know about the terminal behind it.
 *
 * @example Collect the output in memory
 * ```ts
 * import type { ProgressOutput } from "@antflow/antflow/progress";
 * import assert from "node:assert/strict";
 *
 * const chunks: string[] = [];
 * const output: ProgressOutput = { write: (text) => void chunks.push(text), isTTY: false };
 * output.write("hello\n");
 * assert.deepEqual(chunks, ["hello\n"]);
 * ```
 */
export interface ProgressOutput {
  /** Writes text as it is; the display adds its own line breaks and escape sequences. */
  write(text: string): void;
  /**
   * Whether the output is an interactive terminal that understands ANSI cursor movement.
   *
   * @default {false}
   */
  readonly isTTY?: boolean | undefined;
  /**
   * The terminal's width in characters; lines longer than this are cut so they never wrap.
   *
   * @default {80}
   */
  readonly columns?: number | undefined;
}

/**
 * The object a {@linkcode ProgressDisplay} observes: a `Pipeline`, or any object with the same
 * `stats()` method and `item` events.
 *
 * @example A pipeline is a progress source
 * ```ts
 * import { Pipeline, Stage } from "@antflow/antflow";
 * import type { ProgressSource } from "@antflow/antflow/progress";
 * import assert from "node:assert/strict";
 *
 * const source: ProgressSource = new Pipeline({
 *   stages: [new Stage({ name: "echo", workers: 1, tasks: [(s: string) => s] })],
 * });
 * assert.equal(source.stats().running, false);
 * ```
 */
export interface ProgressSource {
  /** Reads a snapshot of the counters. */
  stats(): PipelineStats;
  /** Adds a listener; the display listens to `item` events. */
  addEventListener(type: string, listener: EventListener): void;
  /** Removes a listener added with `addEventListener`. */
  removeEventListener(type: string, listener: EventListener): void;
}

/**
 * The drawing mode of a {@linkcode ProgressDisplay}:
 *
 * - `"tty"`: redraws the bar and the stage lines in place with ANSI escape sequences.
 * - `"plain"`: prints one plain line per interval, for logs and CI.
 * - `"summary"`: prints nothing while the run is active, and one summary line when it stops.
 * - `"auto"`: `"tty"` when the output is a terminal (`isTTY`), `"plain"` otherwise.
 *
 * @example Choose by hand
 * ```ts
 * import type { ProgressMode } from "@antflow/antflow/progress";
 * import assert from "node:assert/strict";
 *
 * const mode: ProgressMode = "summary";
 * assert.equal(mode, "summary");
 * ```
 */
export type ProgressMode = "auto" | "tty" | "plain" | "summary";

/**
 * Options for {@linkcode ProgressDisplay}.
 *
 * @example A display for a CI log
 * ```ts
 * import type { ProgressOptions } from "@antflow/antflow/progress";
 * import assert from "node:assert/strict";
 *
 * const options: ProgressOptions = { total: 1_000, mode: "plain", intervalMs: 10_000 };
 * assert.equal(options.mode, "plain");
 * ```
 */
export interface ProgressOptions {
  /**
   * The number of items the run will finish, a non-negative integer. With it the display shows a
   * bar, a percentage and an ETA; without it, counts only.
   */
  total?: number | undefined;
  /**
   * The destination of the display's text.
   *
   * @default {stderrOutput()}
   */
  output?: ProgressOutput | undefined;
  /**
   * The drawing mode.
   *
   * @default {"auto"}
   */
  mode?: ProgressMode | undefined;
  /**
   * The shortest time between two draws in milliseconds, a finite number >= 1.
   *
   * @default {100 in "tty" mode, 5000 in the other modes}
   */
  intervalMs?: number | undefined;
}

const MODES: readonly ProgressMode[] = ["auto", "tty", "plain", "summary"];

// The maximum wait between two reads of stats(), so the end of a run is noticed soon after it
// happens even when the draw interval is long.
const MAX_CHECK_MS = 250;

const BAR_WIDTH = 20;

/**
 * A terminal progress display driven by a pipeline's `stats()` and `item` events.
 *
 * {@linkcode ProgressDisplay.start} attaches it, and {@linkcode ProgressDisplay.stop} (or `using`)
 * detaches it after a final draw and a summary line. It stops by itself once the run it watched
 * has ended. It keeps at most one timer: while a run is active and until it notices the end, at
 * most 250 ms later. So it never keeps a process alive for longer than that after a run.
 *
 * Limitations: anything else written to the same terminal while a `"tty"` display runs breaks the
 * redraw in place, and characters that take two terminal columns (CJK in stage names) can make a
 * line wrap. The rate is the average since the run started, and the ETA assumes that it holds.
 *
 * @example Watch a run in a CI log
 * ```ts
 * import { Pipeline, Stage } from "@antflow/antflow";
 * import { ProgressDisplay } from "@antflow/antflow/progress";
 * import assert from "node:assert/strict";
 *
 * const double = new Stage({ name: "double", workers: 2, tasks: [(n: number) => n * 2] });
 * const pipeline = new Pipeline({ stages: [double] });
 * let text = "";
 * const progress = new ProgressDisplay(pipeline, {
 *   total: 3,
 *   mode: "plain",
 *   output: { write: (chunk) => void (text += chunk) },
 * }).start();
 *
 * await pipeline.run([1, 2, 3]);
 * progress.stop();
 * assert.match(text, /^Finished 3 items in \S+ \(\S+ items\/s\): 3 ok, 0 failed, 0 retries\n$/);
 * ```
 */
export class ProgressDisplay implements Disposable {
  readonly #source: ProgressSource;
  readonly #output: ProgressOutput;
  readonly #mode: "tty" | "plain" | "summary";
  readonly #total: number | undefined;
  readonly #intervalMs: number;
  readonly #checkMs: number;
  #state: "new" | "active" | "stopped" = "new";
  #timer: ReturnType<typeof setTimeout> | undefined;
  #lastDrawAt = 0;
  #lastFrame = "";
  #frameLines = 0;
  #observedRun = false;
  #writeError: { error: unknown } | undefined;
  readonly #onItem = (): void => {
    this.#observedRun = true;
    if (this.#state === "active" && this.#timer === undefined) this.#schedule();
  };

  /**
   * Creates a display for a pipeline; it draws nothing until {@linkcode ProgressDisplay.start}.
   *
   * @param pipeline The pipeline to watch.
   * @param options The expected total, the output, the mode and the draw interval.
   * @throws {TypeError} If `pipeline` is not a pipeline, `output` has no `write` method, or an
   * option has the wrong type.
   * @throws {RangeError} If `total` or `intervalMs` is out of range or `mode` is unknown.
   */
  constructor(pipeline: ProgressSource, options?: ProgressOptions) {
    const action = "create ProgressDisplay";
    const candidate = pipeline as Partial<ProgressSource> | null | undefined;
    if (
      typeof candidate?.stats !== "function" ||
      typeof candidate.addEventListener !== "function" ||
      typeof candidate.removeEventListener !== "function"
    ) {
      throw new TypeError(invalidMessage(action, "pipeline", "a Pipeline", pipeline));
    }
    if (options?.total !== undefined) checkInteger(action, "total", options.total, 0);
    const output = options?.output ?? stderrOutput();
    if (typeof (output as Partial<ProgressOutput> | null)?.write !== "function") {
      throw new TypeError(
        invalidMessage(action, "output", "an object with a write method", output),
      );
    }
    const mode = options?.mode ?? "auto";
    if (!MODES.includes(mode)) {
      const rule = `"auto", "tty", "plain" or "summary"`;
      if (typeof mode !== "string") throw new TypeError(invalidMessage(action, "mode", rule, mode));
      throw new RangeError(invalidMessage(action, "mode", rule, mode));
    }

    this.#source = pipeline;
    this.#output = output;
    this.#total = options?.total;
    if (mode !== "auto") this.#mode = mode;
    else if (output.isTTY === true) this.#mode = "tty";
    else this.#mode = "plain";
    this.#intervalMs = options?.intervalMs === undefined
      ? (this.#mode === "tty" ? 100 : 5_000)
      : checkFinite(action, "intervalMs", options.intervalMs, 1);
    this.#checkMs = Math.min(this.#intervalMs, MAX_CHECK_MS);
  }

  /** The drawing mode: the mode given, with `"auto"` resolved for the output. */
  get mode(): "tty" | "plain" | "summary" {
    return this.#mode;
  }

  /** Whether the display is started and not yet stopped. */
  get active(): boolean {
    return this.#state === "active";
  }

  /**
   * Attaches the display to the pipeline; in `"tty"` mode it draws the first frame at once.
   * Calling it again while active does nothing.
   *
   * @returns The display, so `using progress = new ProgressDisplay(...).start()` works.
   * @throws {TypeError} If the display was already stopped.
   *
   * @example Start before the run
   * ```ts
   * import { Pipeline, Stage } from "@antflow/antflow";
   * import { ProgressDisplay } from "@antflow/antflow/progress";
   * import assert from "node:assert/strict";
   *
   * const echo = new Stage({ name: "echo", workers: 1, tasks: [(n: number) => n] });
   * const pipeline = new Pipeline({ stages: [echo] });
   * const frames: string[] = [];
   * const output = { write: (text: string) => void frames.push(text), isTTY: true, columns: 100 };
   * using progress = new ProgressDisplay(pipeline, { total: 10, output }).start();
   * assert.equal(progress.mode, "tty");
   * assert.match(frames[0] ?? "", /0% 0\/10/);
   * ```
   */
  start(): this {
    if (this.#state === "stopped") {
      throw new TypeError("Cannot start the progress display as it is already stopped");
    }
    if (this.#state === "active") return this;

    this.#state = "active";
    this.#source.addEventListener("item", this.#onItem);
    const stats = this.#source.stats();
    this.#lastDrawAt = performance.now();
    if (this.#mode === "tty") this.#drawFrame(stats, true);
    if (stats.running) {
      this.#observedRun = true;
      this.#schedule();
    }
    return this;
  }

  /**
   * Detaches the display: clears its timer, draws the final frame (in `"tty"` mode) and writes a
   * summary line with the items finished, the time, the rate, and the ok, failed, cancelled and
   * retried counts. Calling it again, or on a display never started, does nothing.
   *
   * @throws {unknown} The error of a timed draw whose `output.write` threw; that draw detached
   * the display.
   *
   * @example Stop early
   * ```ts
   * import { Pipeline, Stage } from "@antflow/antflow";
   * import { ProgressDisplay } from "@antflow/antflow/progress";
   * import assert from "node:assert/strict";
   *
   * const echo = new Stage({ name: "echo", workers: 1, tasks: [(n: number) => n] });
   * const pipeline = new Pipeline({ stages: [echo] });
   * const lines: string[] = [];
   * const progress = new ProgressDisplay(pipeline, {
   *   mode: "summary",
   *   output: { write: (text) => void lines.push(text) },
   * }).start();
   * progress.stop();
   * progress.stop();
   * assert.equal(progress.active, false);
   * assert.deepEqual(lines, [
   *   "Finished 0 items in 0.0s (0.0 items/s): 0 ok, 0 failed, 0 retries\n",
   * ]);
   * ```
   */
  stop(): void {
    if (this.#state === "new") return;
    if (this.#state === "stopped") {
      this.#throwWriteError();
      return;
    }
    this.#detach();

    const stats = this.#source.stats();
    if (this.#mode === "tty") this.#drawFrame(stats, true);
    this.#output.write(`${summaryLine(stats)}\n`);
  }

  /** Stops the display, as {@linkcode ProgressDisplay.stop} does. */
  [Symbol.dispose](): void {
    this.stop();
  }

  // Wakes at the next draw, or sooner to check whether the run has ended.
  #schedule(): void {
    const untilDraw = this.#lastDrawAt + this.#intervalMs - performance.now();
    const wait = Math.max(0, Math.min(this.#checkMs, untilDraw));
    this.#timer = setTimeout(() => this.#tick(), wait);
  }

  #tick(): void {
    this.#timer = undefined;
    const stats = this.#source.stats();
    if (stats.running) this.#observedRun = true;
    else if (this.#observedRun) {
      this.#stopQuietly();
      return;
    }

    const now = performance.now();
    if (now - this.#lastDrawAt >= this.#intervalMs) {
      this.#lastDrawAt = now;
      try {
        if (this.#mode === "tty") this.#drawFrame(stats, false);
        else if (this.#mode === "plain") this.#output.write(`${plainLine(stats, this.#total)}\n`);
      } catch (error) {
        this.#writeError = { error };
        this.#detach();
        return;
      }
    }
    if (stats.running) this.#schedule();
  }

  // The end of a run was noticed on a timer: there is no caller to receive a write error, so the
  // display keeps it for the next stop().
  #stopQuietly(): void {
    try {
      this.stop();
    } catch (error) {
      this.#writeError ??= { error };
    }
  }

  #detach(): void {
    this.#state = "stopped";
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#source.removeEventListener("item", this.#onItem);
  }

  #throwWriteError(): void {
    const failure = this.#writeError;
    this.#writeError = undefined;
    if (failure !== undefined) throw failure.error;
  }

  #drawFrame(stats: PipelineStats, force: boolean): void {
    const width = Math.max(20, (this.#output.columns ?? 80) - 1);
    const lines = formatProgress(stats, { total: this.#total }).map((line) => cut(line, width));
    const frame = lines.join("\n");
    if (!force && frame === this.#lastFrame) return;

    // Move the cursor to the first line of the previous frame, then overwrite line by line.
    let text = this.#frameLines > 0 ? `\x1b[${this.#frameLines}A` : "";
    for (const line of lines) text += `\r\x1b[2K${line}\n`;
    if (lines.length < this.#frameLines) text += "\x1b[J";
    this.#output.write(text);
    this.#lastFrame = frame;
    this.#frameLines = lines.length;
  }
}

/**
 * Formats a stats snapshot as the lines a {@linkcode ProgressDisplay} draws in `"tty"` mode: the
 * overall line, then one line per stage. The text has no escape sequences, so it also suits logs
 * and dashboards of your own.
 *
 * The overall line shows a bar, the percentage and an ETA when `total` is given, and the count of
 * finished items otherwise, followed by the ok and failed counts, the average rate since the run
 * started and the elapsed time. Each stage line shows the busy workers out of the stage's
 * workers, the items queued, parked at a task limit or in a retry backoff, done and failed, and
 * the retries.
 *
 * @param stats A snapshot from `pipeline.stats()`.
 * @param options The number of items the run will finish, if known.
 * @returns The lines, without line breaks.
 *
 * @example Format a finished run
 * ```ts
 * import { Pipeline, Stage } from "@antflow/antflow";
 * import { formatProgress } from "@antflow/antflow/progress";
 * import assert from "node:assert/strict";
 *
 * const trim = new Stage({ name: "trim", workers: 2, tasks: [(s: string) => s.trim()] });
 * const pipeline = new Pipeline({ stages: [trim] });
 * await pipeline.run([" a ", "b "]);
 * const [overall, stage] = formatProgress(pipeline.stats(), { total: 2 });
 * assert.match(overall ?? "", /100% 2\/2 \| 2 ok \| 0 failed/);
 * assert.match(stage ?? "", /trim +busy 0\/2 +queued 0 +parked 0 +done 2 +failed 0 +retries 0/);
 * ```
 */
export function formatProgress(
  stats: PipelineStats,
  options?: { total?: number | undefined },
): string[] {
  return [overallLine(stats, options?.total), ...stageLines(stats.stages)];
}

/**
 * Builds a {@linkcode ProgressOutput} for the standard error of the current runtime, through
 * `node:process`, which Deno and Bun both provide. It reads `isTTY` and `columns` at each draw, so
 * a resized terminal is followed.
 *
 * @returns The output.
 *
 * @example Check the terminal
 * ```ts
 * import { stderrOutput } from "@antflow/antflow/progress";
 * import assert from "node:assert/strict";
 *
 * const output = stderrOutput();
 * assert.equal(typeof output.write, "function");
 * assert.equal(typeof output.isTTY, "boolean");
 * ```
 */
export function stderrOutput(): ProgressOutput {
  const stderr = process.stderr;
  return {
    write(text: string): void {
      stderr.write(text);
    },
    get isTTY(): boolean {
      return stderr.isTTY === true;
    },
    get columns(): number | undefined {
      const columns: unknown = stderr.columns;
      return typeof columns === "number" && columns > 0 ? columns : undefined;
    },
  };
}

function finishedCount(stats: PipelineStats): number {
  return stats.succeeded + stats.failed;
}

function overallLine(stats: PipelineStats, total: number | undefined): string {
  const finished = finishedCount(stats);
  const parts: string[] = [];
  if (total === undefined) parts.push(`${formatCount(finished)} done`);
  else {
    const fraction = doneFraction(finished, total);
    const filled = Math.floor(fraction * BAR_WIDTH);
    const bar = `[${"█".repeat(filled)}${"░".repeat(BAR_WIDTH - filled)}]`;
    const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
    parts.push(`${bar} ${percent} ${formatCount(finished)}/${formatCount(total)}`);
  }
  parts.push(...totalsParts(stats, total));
  return parts.join(" | ");
}

function plainLine(stats: PipelineStats, total: number | undefined): string {
  const finished = finishedCount(stats);
  let head = `${formatCount(finished)} done`;
  if (total !== undefined) {
    const percent = Math.floor(doneFraction(finished, total) * 100);
    head = `${percent}% ${formatCount(finished)}/${formatCount(total)}`;
  }
  const stages = stats.stages.map((stage) => {
    const { name, busy, workers, queued, parked } = stage;
    return `${name} ${busy}/${workers} busy ${queued} queued ${parked} parked`;
  });
  return [head, ...totalsParts(stats, total), ...stages].join(" | ");
}

function totalsParts(stats: PipelineStats, total: number | undefined): string[] {
  const parts = [`${formatCount(stats.succeeded)} ok`, `${formatCount(stats.failed)} failed`];
  if (stats.cancelled > 0) parts.push(`${formatCount(stats.cancelled)} cancelled`);
  parts.push(`${stats.throughput.toFixed(1)} items/s`);
  if (total !== undefined) parts.push(`ETA ${formatEta(stats, total)}`);
  parts.push(formatDuration(stats.elapsedMs));
  return parts;
}

// The share of `total` finished, from 0 to 1; an empty total counts as done.
function doneFraction(finished: number, total: number): number {
  return total === 0 ? 1 : Math.min(1, finished / total);
}

// The time left at the average rate so far, or "--" before the first item finishes.
function formatEta(stats: PipelineStats, total: number): string {
  const remaining = Math.max(0, total - finishedCount(stats));
  if (remaining === 0) return "0s";
  if (stats.throughput <= 0) return "--";
  return formatDuration((remaining / stats.throughput) * 1000);
}

function stageLines(stages: readonly StageStats[]): string[] {
  const rows = stages.map((stage) => [
    stage.name,
    `${stage.busy}/${stage.workers}`,
    String(stage.queued),
    String(stage.parked),
    String(stage.completed),
    String(stage.failed),
    String(stage.retried),
  ]);
  const widths = rows.reduce(
    (max, row) => max.map((width, i) => Math.max(width, [...(row[i] as string)].length)),
    [0, 0, 0, 0, 0, 0, 0],
  );
  const pad = (row: string[], i: number) => {
    const cell = row[i] as string;
    const padding = " ".repeat((widths[i] as number) - [...cell].length);
    return i === 0 ? cell + padding : padding + cell;
  };
  return rows.map((row, index) => {
    let line = `  ${pad(row, 0)}  busy ${pad(row, 1)}  queued ${pad(row, 2)}  ` +
      `parked ${pad(row, 3)}  done ${pad(row, 4)}  failed ${pad(row, 5)}  retries ${pad(row, 6)}`;
    const skipped = (stages[index] as StageStats).skipped;
    if (skipped > 0) line += `  skipped ${skipped}`;
    return line;
  });
}

function summaryLine(stats: PipelineStats): string {
  const finished = finishedCount(stats);
  const retries = stats.stages.reduce((sum, stage) => sum + stage.retried, 0);
  const verb = stats.running ? "Stopped after" : "Finished";
  let counts = `${formatCount(stats.succeeded)} ok, ${formatCount(stats.failed)} failed`;
  if (stats.cancelled > 0) counts += `, ${formatCount(stats.cancelled)} cancelled`;
  return `${verb} ${plural(finished, "item", "items")} in ${formatDuration(stats.elapsedMs)} ` +
    `(${stats.throughput.toFixed(1)} items/s): ${counts}, ${plural(retries, "retry", "retries")}`;
}

function plural(count: number, one: string, many: string): string {
  return `${formatCount(count)} ${count === 1 ? one : many}`;
}

function formatCount(value: number): string {
  return String(value).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

function formatDuration(ms: number): string {
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(1)}s`;
  const whole = Math.round(seconds);
  if (whole < 3600) return `${Math.floor(whole / 60)}m${String(whole % 60).padStart(2, "0")}s`;
  const minutes = Math.floor(whole / 60);
  return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, "0")}m`;
}

function cut(line: string, width: number): string {
  const chars = [...line];
  return chars.length <= width ? line : chars.slice(0, width).join("");
}
