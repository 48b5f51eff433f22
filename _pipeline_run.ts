// One run of a pipeline: the per-stage worker and admission semaphores, the journey of each item
// through the stages, and the counters that stats and events read.

import { PipelineItemError } from "./errors.ts";
import { type Permit, Semaphore } from "./semaphore.ts";
import type { ItemInfo, StageTaskContext } from "./stage.ts";
import { acquireWorker, callSafely, runGuarded } from "./_attempt.ts";
import { retryDelayMs, type RetryPolicy, shouldRetry, sleep } from "./_retry.ts";
import { linkSignal, noop, timeoutReason } from "./_signals.ts";
import type { ResolvedTask, StagePlan } from "./_stage_plan.ts";

// Semaphore capacities must be integers; an unbounded queue uses the largest safe one.
const UNBOUNDED = Number.MAX_SAFE_INTEGER;

/** The state of an item inside a stage. */
export type ItemState = typeof QUEUED | typeof PARKED | typeof RUNNING | typeof OUTBOUND;

// Item states index StageRuntime.counts; numbers keep the hot path free of keyed lookups.
/** Waiting for a worker. */
export const QUEUED = 0;
/** Waiting at a task limit or in a retry backoff. */
export const PARKED = 1;
/** Running a task. */
export const RUNNING = 2;
/** Done in this stage and waiting for room in the next. */
export const OUTBOUND = 3;

/** A pipeline item on its way through the stages. */
export interface Item {
  readonly index: number;
  readonly priority: number;
  readonly input: unknown;
  value: unknown;
  state: ItemState | undefined;
  /** Set when the item failed on its own, as opposed to being cancelled with its run. */
  failed?: boolean;
}

/** The event and callback sink of a run, implemented by the pipeline. */
export interface RunObserver {
  /** Whether anyone listens, so events are built only when needed. */
  listening(): boolean;
  emit(type: "item" | "task", detail: object): void;
  callbackFailed(source: string, stage: string, index: number, error: unknown): void;
  /**
   * Ends the run at once with `error` when the run is fail-fast; called before the failed task's
   * worker is handed to another item, so no item starts after the failure.
   */
  failFast: ((error: unknown) => void) | undefined;
}

/** The live counters of one stage in one run. */
export class StageRuntime {
  readonly plan: StagePlan;
  readonly workers: Semaphore;
  readonly admission: Semaphore;
  /** Items per state, indexed by {@linkcode ItemState}. */
  readonly counts: [number, number, number, number] = [0, 0, 0, 0];
  completed = 0;
  failed = 0;
  retried = 0;
  skipped = 0;

  /** No limits, retries, timeouts or skip predicate: items take the direct path. */
  readonly simple: boolean;

  constructor(plan: StagePlan) {
    this.plan = plan;
    this.workers = new Semaphore(plan.workers);
    this.admission = new Semaphore(Math.min(UNBOUNDED, plan.queueCapacity + plan.workers));
    this.simple = plan.retry === undefined && plan.timeoutMs === undefined &&
      plan.stageTimeoutMs === undefined && plan.skipIf === undefined &&
      plan.tasks.every((task) => task.limiter === undefined);
  }
}

/** A task's failure together with the task and attempt that produced it. */
class TaskFailure {
  readonly error: unknown;
  readonly task: string;
  readonly attempts: number;

  constructor(error: unknown, task: string, attempts: number) {
    this.error = error;
    this.task = task;
    this.attempts = attempts;
  }
}

/** A failure already counted and reported by the task that failed; `error` is what to throw. */
class ReportedFailure {
  readonly error: unknown;

  constructor(error: unknown) {
    this.error = error;
  }
}

/**
 * One task attempt's timing and worker. In a fail-fast run the worker of a failed attempt is
 * held until the failure has ended the run, so it cannot start another item first.
 */
class TaskCall {
  readonly #holdOnFailure: boolean;
  #startedAt: number | undefined;
  #worker: Permit | undefined;
  #holding = false;
  #releaseRequested = false;

  constructor(holdOnFailure: boolean) {
    this.#holdOnFailure = holdOnFailure;
  }

  started(timed: boolean): void {
    if (timed) this.#startedAt = performance.now();
  }

  durationMs(): number {
    return this.#startedAt === undefined ? 0 : performance.now() - this.#startedAt;
  }

  hold(worker: Permit): Permit {
    if (!this.#holdOnFailure) return worker;
    this.#worker = worker;
    this.#holding = true;
    const release = () => {
      if (this.#holding) this.#releaseRequested = true;
      else worker.release();
    };
    return { release, [Symbol.dispose]: release };
  }

  letGo(): void {
    if (!this.#holding) return;
    this.#holding = false;
    if (this.#releaseRequested) this.#worker?.release();
  }
}

/** A bounded record of failures by error type and by stage, plus the most recent ones. */
export class FailureLog {
  static readonly RECENT = 50;
  total = 0;
  readonly byType: Map<string, number> = new Map();
  readonly byStage: Map<string, number> = new Map();
  readonly recent: {
    index: number;
    stage: string;
    task: string;
    attempts: number;
    error: unknown;
  }[] = [];

  add(error: unknown, stage: string, task: string, attempts: number, index: number): void {
    this.total++;
    const type = error instanceof Error ? error.name : typeof error;
    this.byType.set(type, (this.byType.get(type) ?? 0) + 1);
    this.byStage.set(stage, (this.byStage.get(stage) ?? 0) + 1);
    this.recent.push({ index, stage, task, attempts, error });
    if (this.recent.length > FailureLog.RECENT) this.recent.shift();
  }
}

/** The state of one run: its stages, its counters, and the journey of every item. */
export class PipelineRun {
  readonly stages: readonly StageRuntime[];
  readonly failures: FailureLog = new FailureLog();
  readonly startedAt: number = performance.now();
  endedAt: number | undefined;
  fed = 0;
  succeeded = 0;
  failed = 0;
  cancelled = 0;
  callbackErrors = 0;
  /** Set once the pipeline has finished its bookkeeping for this run. */
  ended = false;
  #active = 0;
  #closed = false;
  #idleWaiters: (() => void)[] = [];
  #signal: AbortSignal = new AbortController().signal;
  readonly #observer: RunObserver;

  constructor(plans: readonly StagePlan[], observer: RunObserver) {
    this.stages = plans.map((plan) => new StageRuntime(plan));
    this.#observer = observer;
  }

  /** Ties the run to its signal: an abort rejects every wait on the run's own semaphores. */
  attach(signal: AbortSignal): void {
    this.#signal = signal;
    const onAbort = () => {
      for (const stage of this.stages) {
        stage.workers.rejectWaiting(signal.reason);
        stage.admission.rejectWaiting(signal.reason);
      }
    };
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  }

  /** Returns the sum of every stage's capacity, the maximum number of items inside the pipeline. */
  capacity(): number {
    let total = 0;
    for (const stage of this.stages) total += stage.admission.capacity;
    return Math.min(UNBOUNDED, total);
  }

  /** The number of items inside the pipeline now. */
  get active(): number {
    return this.#active;
  }

  /** Marks that no more items will be fed. */
  close(): void {
    this.#closed = true;
    this.#checkIdle();
  }

  /** Resolves once the run is closed and every item has left the pipeline. */
  whenDrained(): Promise<void> {
    if (this.#closed && this.#active === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Waits for room in stage `stageIndex` and returns the admission permit. */
  async admit(stageIndex: number, priority: number): Promise<Permit> {
    const admission = (this.stages[stageIndex] as StageRuntime).admission;
    this.#signal.throwIfAborted();
    return admission.tryAcquire() ?? await admission.acquire({ priority });
  }

  /**
   * Carries one item from stage `stageIndex` to the end of the pipeline, holding `admission`
   * (a permit of that stage). Resolves with the last stage's output; rejects with a
   * {@linkcode PipelineItemError} when the item fails, or with the abort reason.
   */
  async journey(item: Item, stageIndex: number, admission: Permit): Promise<unknown> {
    this.fed++;
    this.#active++;
    let permit = admission;
    let stage = this.stages[stageIndex] as StageRuntime;

    try {
      for (let k = stageIndex;; k++) {
        stage = this.stages[k] as StageRuntime;
        item.value = stage.simple
          ? await this.#processSimple(stage, item)
          : await this.#process(stage, item);
        if (k + 1 === this.stages.length) {
          this.#setState(stage, item, undefined);
          this.succeeded++;
          return item.value;
        }

        this.#setState(stage, item, OUTBOUND);
        const nextStage = this.stages[k + 1] as StageRuntime;
        const next = nextStage.admission.tryAcquire() ?? await this.admit(k + 1, item.priority);
        this.#setState(stage, item, undefined);
        permit.release();
        permit = next;
      }
    } catch (error) {
      this.#setState(stage, item, undefined);
      if (item.failed === true) this.failed++;
      else this.cancelled++;
      throw error;
    } finally {
      permit.release();
      this.#active--;
      this.#checkIdle();
    }
  }

  #checkIdle(): void {
    if (!this.#closed || this.#active > 0) return;
    this.endedAt ??= performance.now();
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiters) resolve();
  }

  #setState(stage: StageRuntime, item: Item, state: ItemState | undefined): void {
    if (item.state !== undefined) stage.counts[item.state]--;
    item.state = state;
    if (state !== undefined) stage.counts[state]++;
  }

  // Runs one stage's chain on the item; resolves with the stage's output.
  async #process(stage: StageRuntime, item: Item): Promise<unknown> {
    const plan = stage.plan;
    const input = item.value;
    this.#setState(stage, item, QUEUED);
    this.#itemEvent("queued", stage, item, 1);

    if (plan.skipIf !== undefined) {
      let skip: boolean;
      try {
        skip = await plan.skipIf(input, this.#info(stage, item, 1));
      } catch (error) {
        throw this.#fail(stage, item, new TaskFailure(error, "skipIf", 1));
      }
      if (skip === true) {
        stage.skipped++;
        this.#itemEvent("skipped", stage, item, 1);
        this.#callback("onSkip", plan.onSkip, stage, item, input, this.#info(stage, item, 1));
        return input;
      }
    }

    for (let pass = 1;; pass++) {
      const timed = new StageTimer(this.#signal, plan.stageTimeoutMs);
      let value = input;
      try {
        for (const task of plan.tasks) value = await this.#runTask(stage, task, value, item, timed);
        timed.dispose();
      } catch (caught) {
        timed.dispose();
        if (caught instanceof ReportedFailure) throw caught.error;
        let failure = caught instanceof TaskFailure ? caught : new TaskFailure(caught, "", pass);
        let retryStage = false;
        if (plan.retryScope === "stage") {
          try {
            retryStage = shouldRetry(plan.retry, failure.error, pass, this.#signal);
          } catch (error) {
            // A throwing retryIf ends the retries, and its error becomes the item's error.
            failure = new TaskFailure(error, failure.task, failure.attempts);
          }
        }
        if (!retryStage) {
          if (plan.retryScope === "stage") {
            throw this.#fail(stage, item, new TaskFailure(failure.error, failure.task, pass));
          }
          throw this.#fail(stage, item, failure);
        }

        stage.retried++;
        this.#itemEvent("retrying", stage, item, pass, failure.error);
        this.#setState(stage, item, PARKED);
        await sleep(retryDelayMs(plan.retry as RetryPolicy, pass), this.#signal);
        this.#setState(stage, item, QUEUED);
        continue;
      }

      stage.completed++;
      this.#itemEvent("completed", stage, item, pass);
      this.#callback(
        "onSuccess",
        plan.onSuccess,
        stage,
        item,
        value,
        this.#info(stage, item, pass),
      );
      return value;
    }
  }

  // Runs one task of the chain, with task-scope retries; throws a TaskFailure.
  async #runTask(
    stage: StageRuntime,
    task: ResolvedTask,
    input: unknown,
    item: Item,
    timed: StageTimer,
  ): Promise<unknown> {
    const plan = stage.plan;
    for (let attempt = 1;; attempt++) {
      const call = new TaskCall(this.#observer.failFast !== undefined);
      try {
        const value = await this.#attempt(stage, task, input, item, timed, attempt, call);
        call.letGo();
        return value;
      } catch (caught) {
        let error = caught;
        if (this.#signal.aborted) {
          call.letGo();
          throw error;
        }
        let retryTask = false;
        try {
          retryTask = plan.retryScope === "task" &&
            shouldRetry(plan.retry, error, attempt, timed.signal);
        } catch (retryIfError) {
          error = retryIfError;
        }
        const durationMs = call.durationMs();
        if (!retryTask) {
          this.#taskEvent("fail", stage, task, item, attempt, durationMs, error);
          const failure = new TaskFailure(error, task.name, attempt);
          if (plan.retryScope === "task" || plan.retry === undefined) {
            // Reported here, before the worker goes back, so a fail-fast run ends first.
            const reported = this.#fail(stage, item, failure);
            call.letGo();
            throw new ReportedFailure(reported);
          }
          call.letGo();
          throw failure;
        }

        call.letGo();
        stage.retried++;
        this.#taskEvent("retry", stage, task, item, attempt, durationMs, error);
        this.#itemEvent("retrying", stage, item, attempt, error);
        this.#setState(stage, item, PARKED);
        try {
          await sleep(retryDelayMs(plan.retry as RetryPolicy, attempt), timed.signal);
        } catch (reason) {
          throw this.#reportFailure(stage, item, new TaskFailure(reason, task.name, attempt));
        }
      }
    }
  }

  #reportFailure(stage: StageRuntime, item: Item, failure: TaskFailure): ReportedFailure {
    return new ReportedFailure(this.#fail(stage, item, failure));
  }

  async #attempt(
    stage: StageRuntime,
    task: ResolvedTask,
    input: unknown,
    item: Item,
    timed: StageTimer,
    attempt: number,
    call: TaskCall,
  ): Promise<unknown> {
    const signal = timed.signal;
    // Waits on the run's own semaphores need no signal: an abort of the run rejects them all.
    // A stage timeout is per item, so those waits take the item's signal.
    const waitSignal = timed.timed ? signal : undefined;

    let limiterPermit: Permit | undefined;
    if (task.limiter !== undefined) {
      this.#setState(stage, item, PARKED);
      limiterPermit = await task.limiter.acquire({ signal, priority: item.priority });
    }

    this.#setState(stage, item, QUEUED);
    const worker = await acquireWorker(
      stage.workers,
      signal,
      waitSignal,
      item.priority,
      limiterPermit,
    );

    this.#setState(stage, item, RUNNING);
    timed.start();
    call.started(this.#observer.listening());
    this.#taskEvent("start", stage, task, item, attempt, 0, undefined);
    const fn = task.fn;
    const start = (taskSignal: AbortSignal) => {
      const context: StageTaskContext = {
        signal: taskSignal,
        attempt,
        stage: stage.plan.name,
        task: task.name,
        index: item.index,
      };
      return callSafely(() => fn(input, context));
    };
    const value = await runGuarded(
      start,
      timed.signal,
      stage.plan.timeoutMs,
      timed.timed,
      call.hold(worker),
      limiterPermit,
    );
    this.#taskEvent("complete", stage, task, item, attempt, call.durationMs(), undefined);
    return value;
  }

  // The direct path of a stage without limits, retries, timeouts or skip predicate.
  async #processSimple(stage: StageRuntime, item: Item): Promise<unknown> {
    const plan = stage.plan;
    const signal = this.#signal;
    let value = item.value;
    this.#setState(stage, item, QUEUED);
    this.#itemEvent("queued", stage, item, 1);

    for (const task of plan.tasks) {
      this.#setState(stage, item, QUEUED);
      let worker = stage.workers.tryAcquire();
      if (worker === undefined) {
        signal.throwIfAborted();
        worker = await stage.workers.acquire({ priority: item.priority });
      }
      if (signal.aborted) {
        worker.release();
        throw signal.reason;
      }

      this.#setState(stage, item, RUNNING);
      const listening = this.#observer.listening();
      const startedAt = listening ? performance.now() : 0;
      if (listening) this.#taskEvent("start", stage, task, item, 1, 0, undefined);
      const context: StageTaskContext = {
        signal,
        attempt: 1,
        stage: plan.name,
        task: task.name,
        index: item.index,
      };
      try {
        value = await task.fn(value, context);
      } catch (error) {
        if (signal.aborted) {
          worker.release();
          throw error;
        }
        const durationMs = listening ? performance.now() - startedAt : 0;
        this.#taskEvent("fail", stage, task, item, 1, durationMs, error);
        // Reported before the worker goes back, so a fail-fast run ends first.
        const reported = this.#fail(stage, item, new TaskFailure(error, task.name, 1));
        worker.release();
        throw reported;
      }
      worker.release();
      if (listening) {
        this.#taskEvent("complete", stage, task, item, 1, performance.now() - startedAt, undefined);
      }
    }

    stage.completed++;
    this.#itemEvent("completed", stage, item, 1);
    if (plan.onSuccess !== undefined) {
      this.#callback("onSuccess", plan.onSuccess, stage, item, value, this.#info(stage, item, 1));
    }
    return value;
  }

  #fail(stage: StageRuntime, item: Item, failure: TaskFailure): unknown {
    if (this.#signal.aborted) return this.#signal.reason;
    item.failed = true;
    stage.failed++;
    this.failures.add(failure.error, stage.plan.name, failure.task, failure.attempts, item.index);
    this.#itemEvent("failed", stage, item, failure.attempts, failure.error);
    const info = { ...this.#info(stage, item, failure.attempts), task: failure.task };
    this.#callback("onFailure", stage.plan.onFailure, stage, item, failure.error, info);
    const error = new PipelineItemError(failure.error, {
      index: item.index,
      stage: stage.plan.name,
      task: failure.task,
      attempts: failure.attempts,
    });
    this.#observer.failFast?.(error);
    return error;
  }

  #info(stage: StageRuntime, item: Item, attempts: number): ItemInfo {
    return { index: item.index, stage: stage.plan.name, attempts };
  }

  #callback<A>(
    source: string,
    callback: ((value: A, info: never) => unknown) | undefined,
    stage: StageRuntime,
    item: Item,
    value: A,
    info: ItemInfo,
  ): void {
    if (callback === undefined) return;
    const report = (error: unknown) => {
      this.callbackErrors++;
      this.#observer.callbackFailed(source, stage.plan.name, item.index, error);
    };
    try {
      const result = (callback as (value: A, info: ItemInfo) => unknown)(value, info);
      if (typeof (result as PromiseLike<unknown> | undefined)?.then === "function") {
        (result as PromiseLike<unknown>).then(undefined, report);
      }
    } catch (error) {
      report(error);
    }
  }

  #itemEvent(
    status: string,
    stage: StageRuntime,
    item: Item,
    attempt: number,
    error?: unknown,
  ): void {
    if (!this.#observer.listening()) return;
    const detail = { status, stage: stage.plan.name, index: item.index, attempt, error };
    this.#observer.emit("item", detail);
  }

  #taskEvent(
    type: string,
    stage: StageRuntime,
    task: ResolvedTask,
    item: Item,
    attempt: number,
    durationMs: number,
    error: unknown,
  ): void {
    if (!this.#observer.listening()) return;
    const detail = {
      type,
      stage: stage.plan.name,
      task: task.name,
      index: item.index,
      attempt,
      durationMs,
      error,
    };
    this.#observer.emit("task", detail);
  }
}

// The signal of one pass of an item through a stage: the run's signal, or with a stage timeout a
// signal of its own whose timer starts when the pass's first task starts.
class StageTimer {
  readonly signal: AbortSignal;
  readonly timed: boolean;
  #controller: AbortController | undefined;
  #timeoutMs: number | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #unlink = noop;

  constructor(runSignal: AbortSignal, timeoutMs: number | undefined) {
    if (timeoutMs === undefined) {
      this.signal = runSignal;
      this.timed = false;
      return;
    }
    this.#controller = new AbortController();
    this.#unlink = linkSignal(this.#controller, runSignal);
    this.#timeoutMs = timeoutMs;
    this.signal = this.#controller.signal;
    this.timed = true;
  }

  start(): void {
    const controller = this.#controller;
    const timeoutMs = this.#timeoutMs;
    if (controller === undefined || timeoutMs === undefined || this.#timer !== undefined) return;
    this.#timer = setTimeout(() => controller.abort(timeoutReason(timeoutMs)), timeoutMs);
  }

  dispose(): void {
    clearTimeout(this.#timer);
    this.#unlink();
    this.#unlink = noop;
  }
}
