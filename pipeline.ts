/**
 * `Pipeline`: stages of workers joined by bounded queues, with result streams, stats and events.
 *
 * @module
 */

import { PipelineItemError, PipelineShutdownError } from "./errors.ts";
import { ResultStream } from "./result_stream.ts";
import type { Stage } from "./stage.ts";
import { type MapEntry, MapRun, type MapRunHost, openSource } from "./_map_run.ts";
import {
  FailureLog,
  type Item,
  OUTBOUND,
  PARKED,
  PipelineRun,
  QUEUED,
  RUNNING,
  type StageRuntime,
} from "./_pipeline_run.ts";
import { planOf, type StagePlan } from "./_stage_plan.ts";
import { noop, whenAborted } from "./_signals.ts";
import { checkInteger, checkSignal, invalidMessage } from "./_validate.ts";

/** A stage of any input and output type. */
// deno-lint-ignore no-explicit-any
export type AnyStage = Stage<any, any>;

/** The input type of a stage. */
export type StageInput<S> = S extends Stage<infer I, infer _> ? I : never;

/** The output type of a stage. */
export type StageOutput<S> = S extends Stage<infer _, infer O> ? O : never;

/** The input type of a pipeline's first stage. */
export type PipelineInput<S extends readonly AnyStage[]> = S extends
  readonly [infer First, ...AnyStage[]] ? StageInput<First> : never;

/** The output type of a pipeline's last stage. */
export type PipelineOutput<S extends readonly AnyStage[]> = S extends
  readonly [...AnyStage[], infer Last] ? StageOutput<Last> : never;

/**
 * The stages re-typed so that each stage's input is the previous stage's output; a tuple of
 * stages that does not match it is a compile-time error.
 */
export type ConnectedStages<S extends readonly AnyStage[]> = S extends
  readonly [infer A extends AnyStage, infer B extends AnyStage, ...infer Rest extends AnyStage[]]
  ? readonly [A, ...ConnectedStages<readonly [Stage<StageOutput<A>, StageOutput<B>>, ...Rest]>]
  : S;

/**
 * Options for {@linkcode Pipeline}.
 *
 * @typeParam S The tuple of stages.
 */
export interface PipelineOptions<S extends readonly AnyStage[]> {
  /** The stages in order; names must be unique, and each stage's input is the previous output. */
  stages: S & ConnectedStages<S>;
  /**
   * Shuts the pipeline down with cancellation when it aborts: the current run's running tasks see
   * their signals abort with `signal.reason`, items not yet finished are dropped, the result
   * stream rejects with `signal.reason`, and later runs reject with
   * {@linkcode PipelineShutdownError}.
   */
  signal?: AbortSignal | undefined;
}

/** Options for {@linkcode Pipeline.run} and {@linkcode Pipeline.start}. */
export interface RunOptions {
  /**
   * Cancels the run: no more input is read and the input iterator is closed, running tasks see
   * their signals abort, and once they have settled the result stream rejects with
   * `signal.reason`.
   */
  signal?: AbortSignal | undefined;
  /**
   * `true`: `for await` yields results in input order. `false`: in completion order. Awaiting the
   * stream always gives input order.
   *
   * @default {false}
   */
  ordered?: boolean | undefined;
  /**
   * `true`: the first failed item ends the run: running tasks are aborted and the stream throws a
   * {@linkcode PipelineItemError}. `false`: failed items are results with `ok: false`.
   *
   * @default {false}
   */
  failFast?: boolean | undefined;
  /**
   * The most finished results held for a `for await` consumer before the pipeline stops taking
   * input. Awaiting the stream, and streams from {@linkcode Pipeline.start}, hold every result.
   *
   * @default {the last stage's workers}
   */
  bufferSize?: number | undefined;
}

/** Options for {@linkcode Pipeline.feed}. */
export interface FeedOptions {
  /**
   * The name of the stage the items enter; later stages follow as usual.
   *
   * @default {the first stage}
   */
  stage?: string | undefined;
  /**
   * The items' priority in every stage's queues: lower values go first, equal values in arrival
   * order.
   *
   * @default {0}
   */
  priority?: number | undefined;
}

/**
 * The outcome of one pipeline item.
 *
 * @typeParam O The last stage's output.
 */
export type PipelineResult<O> =
  | {
    /** The item passed every stage. */
    readonly ok: true;
    /** The last stage's output. */
    readonly value: O;
    /** The item's position in the order items entered the pipeline, from 0. */
    readonly index: number;
    /** The value that was fed. */
    readonly input: unknown;
  }
  | {
    /** The item failed. */
    readonly ok: false;
    /** The failing task's error. */
    readonly error: unknown;
    /** The item's position in the order items entered the pipeline, from 0. */
    readonly index: number;
    /** The value that was fed. */
    readonly input: unknown;
    /** The stage where it failed. */
    readonly stage: string;
    /** The task that failed, or `"skipIf"`. */
    readonly task: string;
    /** The attempts made. */
    readonly attempts: number;
  };

/** Counters of one stage, from {@linkcode Pipeline.stats}. */
export interface StageStats {
  /** The stage's name. */
  readonly name: string;
  /** The stage's worker count. */
  readonly workers: number;
  /** Workers running a task now. */
  readonly busy: number;
  /** Items waiting for a worker. */
  readonly queued: number;
  /** Items waiting at a task limit or in a retry backoff. */
  readonly parked: number;
  /** Items running a task. */
  readonly running: number;
  /** Items done here and waiting for room in the next stage. */
  readonly outbound: number;
  /** Items that completed this stage. */
  readonly completed: number;
  /** Items that failed in this stage. */
  readonly failed: number;
  /** Retries of tasks or passes. */
  readonly retried: number;
  /** Items that skipped this stage. */
  readonly skipped: number;
}

/** A bounded summary of failed items, from {@linkcode Pipeline.stats}. */
export interface ErrorSummary {
  /** All failures of the run. */
  readonly total: number;
  /** Failures per error name (`error.name`, or the type of a non-error). */
  readonly byType: Readonly<Record<string, number>>;
  /** Failures per stage. */
  readonly byStage: Readonly<Record<string, number>>;
  /** The most recent failures, at most 50. */
  readonly recent: readonly {
    readonly index: number;
    readonly stage: string;
    readonly task: string;
    readonly attempts: number;
    readonly error: unknown;
  }[];
}

/** A snapshot of a pipeline's current or last run. */
export interface PipelineStats {
  /** Whether a run is in progress. */
  readonly running: boolean;
  /** Items that entered the pipeline. */
  readonly fed: number;
  /** Items that passed every stage. */
  readonly succeeded: number;
  /** Items that failed. */
  readonly failed: number;
  /** Items dropped because the run was cancelled. */
  readonly cancelled: number;
  /** Items inside the pipeline now. */
  readonly inFlight: number;
  /** Milliseconds since the run started, up to its end. */
  readonly elapsedMs: number;
  /** Items finished (succeeded or failed) per second. */
  readonly throughput: number;
  /** Callbacks and event listeners that threw. */
  readonly callbackErrors: number;
  /** Per-stage counters, in stage order. */
  readonly stages: readonly StageStats[];
  /** Failures by type and stage. */
  readonly errors: ErrorSummary;
}

/** The detail of an `item` event. */
export interface ItemEventDetail {
  /** The item's new status in the stage. */
  readonly status: "queued" | "completed" | "failed" | "retrying" | "skipped";
  /** The stage. */
  readonly stage: string;
  /** The item's position in the order items entered the pipeline. */
  readonly index: number;
  /** The attempt, counted from 1. */
  readonly attempt: number;
  /** The error, for `failed` and `retrying`. */
  readonly error: unknown;
}

/** The detail of a `task` event. */
export interface TaskEventDetail {
  /** The kind of task event. */
  readonly type: "start" | "complete" | "retry" | "fail";
  /** The stage. */
  readonly stage: string;
  /** The task's name. */
  readonly task: string;
  /** The item's position in the order items entered the pipeline. */
  readonly index: number;
  /** The attempt, counted from 1. */
  readonly attempt: number;
  /** Milliseconds from the attempt's start to this event; 0 for `start`. */
  readonly durationMs: number;
  /** The error, for `retry` and `fail`. */
  readonly error: unknown;
}

/** The detail of a `runend` event. */
export interface RunEndDetail {
  /** The run's final counters. */
  readonly stats: PipelineStats;
}

/** The detail of a `callbackerror` event. */
export interface CallbackErrorDetail {
  /** The callback that threw: `onSuccess`, `onFailure`, `onSkip` or `listener:<event type>`. */
  readonly source: string;
  /** The stage, when a stage callback threw. */
  readonly stage: string | undefined;
  /** The item, when a stage callback threw. */
  readonly index: number | undefined;
  /** The thrown value. */
  readonly error: unknown;
}

interface FeedEntry {
  readonly value: unknown;
  readonly stage: number;
  readonly priority: number;
  readonly admitted: { resolve: () => void; reject: (reason: unknown) => void };
}

/**
 * A multi-stage pipeline: each {@linkcode Stage} runs its workers over a chain of tasks, and
 * bounded queues between stages carry items on, so a slow stage holds back the ones before it and
 * finally the input.
 *
 * {@linkcode Pipeline.run} reads an array, `Iterable` or `AsyncIterable` only as the first stage
 * has room, and returns a {@linkcode ResultStream} of {@linkcode PipelineResult}s: every item ends
 * exactly once, as a success with its value or a failure with its error, stage, task and attempt
 * count. {@linkcode Pipeline.start}, {@linkcode Pipeline.feed} and {@linkcode Pipeline.close} let
 * a producer push items instead, into any stage and with priorities.
 *
 * The pipeline is an `EventTarget`: `item` events report each item's status in each stage,
 * `task` events each task call, `callbackerror` events any stage callback or listener that
 * threw, and one `runend` event the end of each run with its final stats. Listener errors never
 * reach the pipeline's items.
 *
 * @typeParam S The tuple of stages; each stage's input type must match the previous output type.
 *
 * @example Two stages
 * ```ts
 * import { Pipeline, Stage } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * const parse = new Stage({ name: "parse", workers: 2, tasks: [(line: string) => line.split(",")] });
 * const count = new Stage({ name: "count", workers: 2, tasks: [(fields: string[]) => fields.length] });
 * const pipeline = new Pipeline({ stages: [parse, count] });
 *
 * const results = await pipeline.run(["a,b", "c"]);
 * assert.deepEqual(results.map((r) => r.ok ? r.value : r.error), [2, 1]);
 * ```
 */
export class Pipeline<const S extends readonly [AnyStage, ...AnyStage[]]> extends EventTarget
  implements AsyncDisposable {
  readonly #plans: readonly StagePlan[];
  readonly #controller = new AbortController();
  #unlinkSignal = noop;
  #closed = false;
  #run: PipelineRun | undefined;
  #running: Promise<void> | undefined;
  #feed: FeedChannel | undefined;
  #manual: MapRun<FeedEntry, unknown> | undefined;
  #listeners = 0;
  #feeds = new Set<Promise<void>>();
  readonly #wrapped = new WeakMap<object, Map<string, EventListener>>();

  /**
   * Creates a pipeline.
   *
   * @param options The stages and an optional signal.
   * @throws {TypeError} If `stages` is not a non-empty array of stages or `signal` is not an
   * `AbortSignal`.
   * @throws {RangeError} If two stages share a name.
   */
  constructor(options: PipelineOptions<S>) {
    super();
    const stages: unknown = options?.stages;
    if (!Array.isArray(stages)) {
      throw new TypeError(
        invalidMessage("create Pipeline", "stages", "a non-empty array of Stages", stages),
      );
    }
    if (stages.length === 0) {
      throw new RangeError(
        invalidMessage("create Pipeline", "stages", "a non-empty array of Stages", stages),
      );
    }
    this.#plans = stages.map((stage, index) =>
      planOf(
        stage,
        () => invalidMessage("create Pipeline", `stages[${index}]`, "a Stage", stage),
      )
    );
    const names = new Set<string>();
    for (const plan of this.#plans) {
      if (names.has(plan.name)) {
        throw new RangeError(
          invalidMessage("create Pipeline", "stages", "stages with unique names", plan.name),
        );
      }
      names.add(plan.name);
    }
    checkSignal("create Pipeline", options.signal);

    this.#unlinkSignal = whenAborted(options.signal, (reason) => this.#cancel(reason));
  }

  /** The stages' names, in order. */
  get stageNames(): readonly string[] {
    return this.#plans.map((plan) => plan.name);
  }

  /** Whether {@linkcode Pipeline.shutdown} was called or the pipeline's signal aborted. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Runs every input through the stages and streams the results.
   *
   * Nothing starts until the stream is iterated or awaited. Only one run, from `run` or `start`,
   * may be active at a time. Leaving a `for await` loop early, or aborting `signal`, aborts the
   * running tasks and closes the input iterator.
   *
   * @param inputs An array, an `Iterable` or an `AsyncIterable` of first-stage inputs.
   * @param options Ordering, the error policy, the result buffer and a signal.
   * @returns A result stream: `for await` yields results in completion order (or input order with
   * `ordered`), and `await` gives every result in input order.
   * @throws {TypeError} If `inputs` is not iterable or an option has the wrong type.
   * @throws {RangeError} If `bufferSize` is out of range.
   *
   * @example Stream results as they finish
   * ```ts
   * import { Pipeline, Stage } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * const square = new Stage({ name: "square", workers: 4, tasks: [(n: number) => n * n] });
   * const pipeline = new Pipeline({ stages: [square] });
   * let sum = 0;
   * for await (const result of pipeline.run([1, 2, 3])) {
   *   if (result.ok) sum += result.value;
   * }
   * assert.equal(sum, 14);
   * ```
   */
  run(
    inputs: Iterable<PipelineInput<S>> | AsyncIterable<PipelineInput<S>>,
    options?: RunOptions,
  ): ResultStream<PipelineResult<PipelineOutput<S>>> {
    const action = "run the pipeline";
    checkInputs(action, inputs);
    const settings = this.#runSettings(action, options);
    let run: PipelineRun | undefined;

    const host: MapRunHost<unknown> = {
      execute: (input, _signal, index, admission, settle) => {
        const item: Item = { index, priority: 0, input, value: input, state: undefined };
        (run as PipelineRun).journey(item, 0, admission as never).then(
          (value) => settle(index, input, true, value),
          (error) => settle(index, input, false, error),
        );
      },
      workers: () => run?.capacity() ?? 1,
      executorSignal: this.#controller.signal,
      admission: {
        tryAcquire: () => run?.stages[0]?.admission.tryAcquire(),
        // An abort of the run rejects every admission wait, so the wait needs no signal.
        acquire: () => (run as PipelineRun).stages[0]?.admission.acquire() as Promise<never>,
      },
      runStarted: (signal) => {
        const failFast = settings.settled ? undefined : (error: unknown) => mapRun?.abort(error);
        run = this.#beginRun(action, signal, failFast);
      },
      runEnded: () => this.#endRun(run),
    };

    const format = (entry: MapEntry<unknown>) => toResult(entry, entry.input);
    let mapRun: MapRun<unknown, unknown> | undefined;
    return new ResultStream({
      iterate: () => mapRun = new MapRun(host, inputs, { ...settings, format }, false),
      collect: () => (mapRun = new MapRun(host, inputs, { ...settings, format }, true)).collect(),
    }) as ResultStream<PipelineResult<PipelineOutput<S>>>;
  }

  /**
   * Starts a run fed by {@linkcode Pipeline.feed} and returns its result stream. The run begins at
   * once; its stream holds every result until read, and ends after {@linkcode Pipeline.close}
   * once every item has finished.
   *
   * @param options As for {@linkcode Pipeline.run}.
   * @returns The result stream of the run.
   * @throws {TypeError} If a run is already active, or an option has the wrong type.
   * @throws {PipelineShutdownError} If the pipeline is shut down.
   *
   * @example Produce and consume separately
   * ```ts
   * import { Pipeline, Stage } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * const upper = new Stage({ name: "upper", workers: 2, tasks: [(s: string) => s.toUpperCase()] });
   * const pipeline = new Pipeline({ stages: [upper] });
   * const results = pipeline.start();
   * await pipeline.feed(["a", "b"]);
   * await pipeline.feed(["c"], { priority: -1 });
   * pipeline.close();
   * assert.deepEqual((await results).map((r) => r.ok && r.value), ["A", "B", "C"]);
   * ```
   */
  start(options?: RunOptions): ResultStream<PipelineResult<PipelineOutput<S>>> {
    const action = "start the pipeline";
    const settings = this.#runSettings(action, options);
    if (this.#closed) throw new PipelineShutdownError();
    if (this.#running !== undefined) {
      throw new TypeError("Cannot start the pipeline as a run is already active");
    }

    const channel = new FeedChannel();
    let run: PipelineRun | undefined;
    const host: MapRunHost<FeedEntry> = {
      execute: (entry, _signal, index, _admission, settle) => {
        const item: Item = {
          index,
          priority: entry.priority,
          input: entry.value,
          value: entry.value,
          state: undefined,
        };
        const enter = async () => {
          let admission;
          try {
            admission = await (run as PipelineRun).admit(entry.stage, entry.priority);
          } catch (error) {
            entry.admitted.reject(error);
            throw error;
          }
          entry.admitted.resolve();
          return (run as PipelineRun).journey(item, entry.stage, admission);
        };
        enter().then(
          (value) => settle(index, entry, true, value),
          (error) => settle(index, entry, false, error),
        );
      },
      workers: () => run?.capacity() ?? 1,
      executorSignal: this.#controller.signal,
      runStarted: (signal) => {
        const failFast = settings.settled ? undefined : (error: unknown) => mapRun.abort(error);
        const started = this.#beginRun(action, signal, failFast);
        run = started;
        signal.addEventListener("abort", () => channel.fail(signal.reason), { once: true });
        // A started run ends when its input is closed and every item has left, whether or not
        // anyone reads its results.
        channel.onEnd = () => started.close();
        started.whenDrained().then(() => this.#endRun(started));
      },
      runEnded: () => this.#endRun(run),
    };

    const format = (entry: MapEntry<FeedEntry>) => toResult(entry, entry.input.value);
    const mapRun = new MapRun<FeedEntry, unknown>(host, channel, {
      ...settings,
      bufferSize: Infinity,
      format,
    }, false);
    this.#feed = channel;
    this.#manual = mapRun;
    mapRun.begin();
    return new ResultStream({
      iterate: () => mapRun,
      collect: () => mapRun.collect(),
    }) as ResultStream<PipelineResult<PipelineOutput<S>>>;
  }

  /**
   * Feeds items into the run that {@linkcode Pipeline.start} began, and resolves once every one of
   * them has entered its stage, so a producer waits while the pipeline is full.
   *
   * @param items An array, an `Iterable` or an `AsyncIterable`.
   * @param options The stage to enter and the items' priority.
   * @returns A promise that resolves when all items have entered.
   * @throws {TypeError} (as a rejection) If no run is active or the run was closed.
   * @throws {RangeError} (as a rejection) If `stage` names no stage.
   *
   * @example Inject into a later stage
   * ```ts
   * import { Pipeline, Stage } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * const fetchPage = new Stage({ name: "fetch", workers: 2, tasks: [(url: string) => `<p>${url}</p>`] });
   * const measure = new Stage({ name: "measure", workers: 2, tasks: [(html: string) => html.length] });
   * const pipeline = new Pipeline({ stages: [fetchPage, measure] });
   * const results = pipeline.start();
   * await pipeline.feed(["<p>cached</p>"], { stage: "measure" });
   * pipeline.close();
   * assert.deepEqual((await results).map((r) => r.ok && r.value), [13]);
   * ```
   */
  feed(items: Iterable<unknown> | AsyncIterable<unknown>, options?: FeedOptions): Promise<void> {
    const feeding = this.#feedItems(items, options);
    this.#feeds.add(feeding);
    const forget = () => this.#feeds.delete(feeding);
    feeding.then(forget, forget);
    return feeding;
  }

  async #feedItems(
    items: Iterable<unknown> | AsyncIterable<unknown>,
    options: FeedOptions | undefined,
  ): Promise<void> {
    const action = "feed the pipeline";
    checkInputs(action, items);
    const stage = options?.stage === undefined ? 0 : this.stageNames.indexOf(options.stage);
    if (stage === -1) {
      throw new RangeError(
        invalidMessage(
          action,
          "stage",
          `a stage name of the pipeline (${this.stageNames.join(", ")})`,
          options?.stage,
        ),
      );
    }
    const priority = options?.priority ?? 0;
    if (typeof priority !== "number" || Number.isNaN(priority)) {
      throw new TypeError(invalidMessage(action, "priority", "a number", priority));
    }
    const channel = this.#feed;
    if (channel === undefined || channel.closed) {
      throw new TypeError("Cannot feed the pipeline as no run started by start() is open");
    }

    const source = openSource(items);
    if (source.kind === "array") {
      for (let i = 0; i < source.array.length; i++) {
        await channel.send(source.array[i], stage, priority);
      }
      return;
    }
    try {
      while (true) {
        const step = await source.iterator.next();
        if (step.done) return;
        await channel.send(step.value, stage, priority);
      }
    } catch (error) {
      await source.iterator.return?.();
      throw error;
    }
  }

  /** Ends the input of the run that {@linkcode Pipeline.start} began; feeding after it fails. */
  close(): void {
    this.#feed?.close();
  }

  /**
   * Waits for `feed` calls in progress, closes the input of a started run, and resolves once
   * every item has left the pipeline, whether or not anyone reads the results. It resolves at
   * once when no run is active.
   *
   * @returns A promise that resolves when the run has drained.
   */
  async join(): Promise<void> {
    await Promise.allSettled(this.#feeds);
    this.close();
    await this.#running;
  }

  /**
   * Stops accepting runs and feeds, and resolves once the active run has ended.
   *
   * @param options `cancel: true` aborts the active run: running tasks see their signals abort
   * with a {@linkcode PipelineShutdownError}, unfinished items are dropped, and the run's stream
   * rejects with that error. Otherwise the active run finishes its input.
   * @returns A promise that resolves when the pipeline is idle.
   */
  async shutdown(options?: { cancel?: boolean | undefined }): Promise<void> {
    this.#closed = true;
    this.close();
    if (options?.cancel === true) {
      this.#cancel(
        new PipelineShutdownError(
          "Cannot finish the run as the pipeline was shut down with cancel",
        ),
      );
    }
    await this.#running;
    this.#unlinkSignal();
    this.#unlinkSignal = noop;
  }

  /**
   * Shuts down gracefully, so `await using` waits for the active run at the end of a scope.
   *
   * @returns A promise that resolves when the pipeline is idle.
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }

  /**
   * Reads the counters of the active run, or of the last one when none is active.
   *
   * @returns A snapshot of the counters.
   *
   * @example Inspect a finished run
   * ```ts
   * import { Pipeline, Stage } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * const pipeline = new Pipeline({ stages: [new Stage({ name: "id", workers: 1, tasks: [(x: number) => x] })] });
   * await pipeline.run([1, 2, 3]);
   * const stats = pipeline.stats();
   * assert.equal(stats.succeeded, 3);
   * assert.equal(stats.stages[0]?.completed, 3);
   * ```
   */
  stats(): PipelineStats {
    const run = this.#run;
    const stages = this.#plans.map((plan, index) => stageStats(plan, run?.stages[index]));
    if (run === undefined) {
      return {
        running: false,
        fed: 0,
        succeeded: 0,
        failed: 0,
        cancelled: 0,
        inFlight: 0,
        elapsedMs: 0,
        throughput: 0,
        callbackErrors: 0,
        stages,
        errors: summarize(new FailureLog()),
      };
    }
    const elapsedMs = (run.endedAt ?? performance.now()) - run.startedAt;
    const finished = run.succeeded + run.failed;
    return {
      running: this.#running !== undefined,
      fed: run.fed,
      succeeded: run.succeeded,
      failed: run.failed,
      cancelled: run.cancelled,
      inFlight: run.active,
      elapsedMs,
      throughput: elapsedMs > 0 ? finished / (elapsedMs / 1000) : 0,
      callbackErrors: run.callbackErrors,
      stages,
      errors: summarize(run.failures),
    };
  }

  /**
   * Adds an event listener, guarded so that an error it throws (or an async listener's rejection)
   * never reaches the pipeline's items; such an error is reported as a `callbackerror` event.
   *
   * @param type The event type: `item`, `task` or `callbackerror`.
   * @param listener The listener.
   * @param options As for `EventTarget.addEventListener`.
   */
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: AddEventListenerOptions | boolean,
  ): void {
    if (listener === null) return;
    let byType = this.#wrapped.get(listener);
    if (byType === undefined) {
      byType = new Map();
      this.#wrapped.set(listener, byType);
    }
    let wrapped = byType.get(type);
    if (wrapped === undefined) {
      wrapped = (event: Event) => this.#callListener(type, listener, event);
      byType.set(type, wrapped);
      this.#listeners++;
    }
    super.addEventListener(type, wrapped, options);
  }

  /**
   * Removes a listener added with {@linkcode Pipeline.addEventListener}.
   *
   * @param type The event type.
   * @param listener The listener.
   * @param options As for `EventTarget.removeEventListener`.
   */
  override removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: EventListenerOptions | boolean,
  ): void {
    if (listener === null) return;
    const byType = this.#wrapped.get(listener);
    const wrapped = byType?.get(type);
    if (wrapped === undefined) return;
    byType?.delete(type);
    this.#listeners--;
    super.removeEventListener(type, wrapped, options);
  }

  #callListener(type: string, listener: EventListenerOrEventListenerObject, event: Event): void {
    const report = (error: unknown) => {
      if (this.#run !== undefined) this.#run.callbackErrors++;
      if (type === "callbackerror") return;
      this.#dispatch(
        "callbackerror",
        {
          source: `listener:${type}`,
          stage: undefined,
          index: undefined,
          error,
        } satisfies CallbackErrorDetail,
      );
    };
    try {
      const result = typeof listener === "function"
        ? listener.call(this, event)
        : listener.handleEvent(event);
      if (typeof (result as PromiseLike<unknown> | undefined)?.then === "function") {
        (result as unknown as PromiseLike<unknown>).then(undefined, report);
      }
    } catch (error) {
      report(error);
    }
  }

  #dispatch(type: string, detail: object): void {
    if (this.#listeners > 0) this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #runSettings(action: string, options: RunOptions | undefined) {
    checkSignal(action, options?.signal);
    const bufferSize = options?.bufferSize === undefined
      ? (this.#plans[this.#plans.length - 1] as StagePlan).workers
      : checkInteger(action, "bufferSize", options.bufferSize, 0);
    return {
      ordered: options?.ordered === true,
      settled: options?.failFast !== true,
      bufferSize,
      signal: options?.signal,
    };
  }

  #beginRun(
    action: string,
    signal: AbortSignal,
    failFast: ((error: unknown) => void) | undefined,
  ): PipelineRun {
    if (this.#closed) throw new PipelineShutdownError();
    if (this.#running !== undefined) {
      throw new TypeError(`Cannot ${action} as a run is already active`);
    }
    const run = new PipelineRun(this.#plans, {
      listening: () => this.#listeners > 0,
      emit: (type, detail) => this.#dispatch(type, detail),
      callbackFailed: (source, stage, index, error) => {
        this.#dispatch("callbackerror", { source, stage, index, error });
      },
      failFast,
    });
    run.attach(signal);
    this.#run = run;
    let finish = noop;
    this.#running = new Promise<void>((resolve) => finish = resolve);
    this.#finishRun = finish;
    return run;
  }

  #finishRun = noop;

  #endRun(run: PipelineRun | undefined): void {
    if (run === undefined || run.ended) return;
    run.ended = true;
    run.close();
    if (this.#run !== run) return;
    this.#feed?.close();
    this.#feed = undefined;
    this.#manual = undefined;
    this.#running = undefined;
    this.#finishRun();
    this.#finishRun = noop;
    this.#dispatch("runend", { stats: this.stats() } satisfies RunEndDetail);
  }

  #cancel(reason: unknown): void {
    this.#closed = true;
    if (!this.#controller.signal.aborted) this.#controller.abort(reason);
  }
}

function checkInputs(action: string, inputs: unknown): void {
  const iterable = inputs !== null && (typeof inputs === "object" || typeof inputs === "string") &&
    (typeof (inputs as Iterable<unknown>)[Symbol.iterator] === "function" ||
      typeof (inputs as AsyncIterable<unknown>)[Symbol.asyncIterator] === "function");
  if (!iterable) {
    throw new TypeError(invalidMessage(action, "inputs", "an Iterable or AsyncIterable", inputs));
  }
}

function toResult(entry: MapEntry<unknown>, input: unknown): PipelineResult<unknown> {
  if (entry.ok) return { ok: true, value: entry.value, index: entry.index, input };
  const error = entry.value;
  if (error instanceof PipelineItemError) {
    return {
      ok: false,
      error: error.cause,
      index: entry.index,
      input,
      stage: error.stage,
      task: error.task,
      attempts: error.attempts,
    };
  }
  return { ok: false, error, index: entry.index, input, stage: "", task: "", attempts: 0 };
}

function stageStats(plan: StagePlan, runtime: StageRuntime | undefined): StageStats {
  return {
    name: plan.name,
    workers: plan.workers,
    busy: runtime?.workers.inUse ?? 0,
    queued: runtime?.counts[QUEUED] ?? 0,
    parked: runtime?.counts[PARKED] ?? 0,
    running: runtime?.counts[RUNNING] ?? 0,
    outbound: runtime?.counts[OUTBOUND] ?? 0,
    completed: runtime?.completed ?? 0,
    failed: runtime?.failed ?? 0,
    retried: runtime?.retried ?? 0,
    skipped: runtime?.skipped ?? 0,
  };
}

function summarize(log: FailureLog): ErrorSummary {
  return {
    total: log.total,
    byType: Object.fromEntries(log.byType),
    byStage: Object.fromEntries(log.byStage),
    recent: [...log.recent],
  };
}

// The input of a started run: feed() sends entries one at a time and waits until each has
// entered its stage; the run pulls them as an async iterator.
class FeedChannel implements AsyncIterableIterator<FeedEntry> {
  /** Called once, when the channel reports its end to the run. */
  onEnd: () => void = noop;
  #entries: FeedEntry[] = [];
  #waiter: ((result: IteratorResult<FeedEntry, undefined>) => void) | undefined;
  #closed = false;
  #failure: { reason: unknown } | undefined;

  get closed(): boolean {
    return this.#closed;
  }

  send(value: unknown, stage: number, priority: number): Promise<void> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure.reason);
    if (this.#closed) {
      return Promise.reject(new TypeError("Cannot feed the pipeline as its input is closed"));
    }
    return new Promise<void>((resolve, reject) => {
      const entry: FeedEntry = { value, stage, priority, admitted: { resolve, reject } };
      const waiter = this.#waiter;
      if (waiter !== undefined) {
        this.#waiter = undefined;
        waiter({ done: false, value: entry });
      } else this.#entries.push(entry);
    });
  }

  close(): void {
    this.#closed = true;
    const waiter = this.#waiter;
    this.#waiter = undefined;
    if (waiter !== undefined) {
      waiter({ done: true, value: undefined });
      this.#ended();
    }
  }

  #ended(): void {
    const onEnd = this.onEnd;
    this.onEnd = noop;
    onEnd();
  }

  // Rejects every entry not yet taken, when the run is cancelled.
  fail(reason: unknown): void {
    this.#failure = { reason };
    for (const entry of this.#entries) entry.admitted.reject(reason);
    this.#entries = [];
    this.close();
  }

  next(): Promise<IteratorResult<FeedEntry, undefined>> {
    const entry = this.#entries.shift();
    if (entry !== undefined) return Promise.resolve({ done: false, value: entry });
    if (this.#closed) {
      this.#ended();
      return Promise.resolve({ done: true, value: undefined });
    }
    return new Promise((resolve) => this.#waiter = resolve);
  }

  return(): Promise<IteratorResult<FeedEntry, undefined>> {
    this.fail(new TypeError("Cannot feed the pipeline as its run has ended"));
    return Promise.resolve({ done: true, value: undefined });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
