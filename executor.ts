/**
 * `AsyncExecutor`, a worker pool that runs at most `maxWorkers` tasks at once.
 *
 * @module
 */

import { combineLimiters } from "./combine_limiters.ts";
import { ExecutorShutdownError } from "./errors.ts";
import { ResultStream } from "./result_stream.ts";
import type { RetryOptions } from "./retry.ts";
import { type Limiter, type Permit, Semaphore } from "./semaphore.ts";
import type { Task, TaskContext } from "./task.ts";
import { acquireWorker, runGuarded } from "./_attempt.ts";
import { type MapEntry, mapSource, type SettleCallback } from "./_map_run.ts";
import { retryDelayMs, type RetryPolicy, shouldRetry, sleep, toRetryPolicy } from "./_retry.ts";
import { noop, SignalFanout, timeoutReason, whenAborted } from "./_signals.ts";
import {
  checkFunction,
  checkInteger,
  checkSignal,
  checkTimeout,
  invalidMessage,
  toLimiter,
} from "./_validate.ts";

/** Options for {@linkcode AsyncExecutor}. */
export interface AsyncExecutorOptions {
  /** The maximum number of tasks running at once, an integer >= 1. It can be changed later. */
  maxWorkers: number;
  /**
   * Shuts the executor down with cancellation when it aborts: queued tasks reject with
   * `signal.reason`, running tasks see their `context.signal` abort with that reason, and later
   * submits reject with {@linkcode ExecutorShutdownError}.
   */
  signal?: AbortSignal | undefined;
}

/** Options for {@linkcode AsyncExecutor.submit}. */
export interface SubmitOptions {
  /**
   * One or more limiters to hold while the task runs, such as a {@linkcode Semaphore} shared with
   * other work. They are acquired before the worker, so a task waiting for them occupies no
   * worker, and they are acquired again for each attempt.
   */
  semaphore?: Limiter | readonly Limiter[] | undefined;
  /**
   * Cancels this task. While it is queued or waiting between attempts, the promise rejects at once
   * with `signal.reason` and the task never starts again. While it runs, its `context.signal`
   * aborts and the promise rejects at once with `signal.reason`; the worker stays occupied until
   * the task function settles.
   */
  signal?: AbortSignal | undefined;
  /**
   * The time limit of each attempt in milliseconds, counted from the moment the attempt starts
   * (not while it is queued). When it passes, `context.signal` aborts and the attempt rejects
   * with a `DOMException` named `TimeoutError`; the worker stays occupied until the task function
   * settles. `Infinity` means no limit.
   *
   * @default {Infinity}
   */
  timeoutMs?: number | undefined;
  /** The retry policy for failed attempts. By default a task runs once. */
  retry?: RetryOptions | undefined;
}

/** Options for {@linkcode AsyncExecutor.map} and {@linkcode AsyncExecutor.mapUnordered}. */
export interface MapOptions extends SubmitOptions {
  /**
   * Cancels the whole run: no input is pulled any more, the input iterator is closed, running
   * tasks see their `context.signal` abort, and once they have settled the stream rejects with
   * `signal.reason`.
   */
  signal?: AbortSignal | undefined;
  /**
   * `false` (fail-fast): the first failure stops pulling input, aborts the running tasks'
   * signals with that error, and is thrown once they have settled. `true`: every input yields a
   * {@linkcode SettledResult} and failures never end the run.
   *
   * @default {false}
   */
  settled?: boolean | undefined;
  /**
   * The most finished results held for the consumer (in ordered mode, including results that wait
   * for an earlier slow one) before the run stops pulling input. A result handed to the loop body
   * no longer counts. Awaiting the stream collects every result anyway, so this bound applies to
   * `for await` only.
   *
   * @default {maxWorkers}
   */
  bufferSize?: number | undefined;
}

/** The outcome of one input of a map run with `settled: true`. */
export type SettledResult<I, O> =
  | { readonly ok: true; readonly value: O; readonly index: number; readonly input: I }
  | { readonly ok: false; readonly error: unknown; readonly index: number; readonly input: I };

/** Options for {@linkcode AsyncExecutor.shutdown}. */
export interface ShutdownOptions {
  /**
   * `true`: queued tasks reject with {@linkcode ExecutorShutdownError} and running tasks' signals
   * abort with it. `false`: queued and running work finishes.
   *
   * @default {false}
   */
  cancel?: boolean | undefined;
}

/** Options for {@linkcode AsyncExecutor.wait}. */
export interface WaitOptions {
  /**
   * When to return: after the first promise settles, after the first rejection (or when all have
   * settled), or when all have settled.
   *
   * @default {"all-completed"}
   */
  returnWhen?: "first-completed" | "first-error" | "all-completed" | undefined;
  /** Returns what has settled so far after this many milliseconds, without throwing. */
  timeoutMs?: number | undefined;
}

/** The result of {@linkcode AsyncExecutor.wait}: the promises split by whether they settled. */
export interface WaitResult<T> {
  /** The promises that have settled. */
  readonly done: Set<PromiseLike<T>>;
  /** The promises still pending. */
  readonly pending: Set<PromiseLike<T>>;
}

/** Options for {@linkcode AsyncExecutor.asCompleted}. */
export interface AsCompletedOptions {
  /**
   * A deadline for the whole iteration in milliseconds; when it passes, iteration throws a
   * `DOMException` named `TimeoutError`.
   */
  timeoutMs?: number | undefined;
  /** Ends the iteration with `signal.reason` when it aborts. */
  signal?: AbortSignal | undefined;
}

interface Job<I, O> {
  readonly task: Task<I, O>;
  /** No limiter, timeout or retry: the task runs on the callback-based fast path. */
  readonly simple: boolean;
  readonly limiter: Limiter | undefined;
  readonly timeoutMs: number | undefined;
  readonly retry: RetryPolicy | undefined;
}

/**
 * A worker pool: at most `maxWorkers` tasks run at once, whether they come from
 * {@linkcode AsyncExecutor.submit}, {@linkcode AsyncExecutor.map} or both.
 *
 * Workers are permits of one {@linkcode Semaphore}. A task that also needs other limiters takes
 * them first and the worker last, so waiting for a shared limit never idles a worker. A worker is
 * held until the task function settles, even after a timeout or an abort has rejected the task's
 * promise, so the limit holds for tasks that ignore their signal too.
 *
 * A task may start before `submit` returns when a worker is free.
 *
 * @example Run tasks on four workers
 * ```ts
 * import { AsyncExecutor } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * await using executor = new AsyncExecutor({ maxWorkers: 4 });
 * const squares = await executor.map(async (n: number) => n * n, [1, 2, 3, 4, 5]);
 * assert.deepEqual(squares, [1, 4, 9, 16, 25]);
 * ```
 */
export class AsyncExecutor implements AsyncDisposable {
  readonly #workers: Semaphore;
  readonly #controller = new AbortController();
  #unlinkSignal = noop;
  #closed = false;
  #pending = 0;
  #waitingForLimiters = 0;
  #idleWaiters: (() => void)[] = [];
  readonly #fanout = new SignalFanout();
  // A task whose promise was rejected by an abort or timeout still counts until it settles.
  readonly #abandoned = { begin: () => this.#pending++, end: () => this.#settled() };
  readonly #context: TaskContext = Object.freeze({ signal: this.#controller.signal, attempt: 1 });

  /**
   * Creates an executor.
   *
   * @param options The worker count and an optional signal.
   * @throws {TypeError} If `maxWorkers` is not a number or `signal` is not an `AbortSignal`.
   * @throws {RangeError} If `maxWorkers` is not an integer >= 1.
   */
  constructor(options: AsyncExecutorOptions) {
    const maxWorkers = checkInteger("create AsyncExecutor", "maxWorkers", options?.maxWorkers, 1);
    checkSignal("create AsyncExecutor", options.signal);
    this.#workers = new Semaphore(maxWorkers);

    this.#unlinkSignal = whenAborted(options.signal, (reason) => this.#cancel(reason));
  }

  /**
   * The maximum number of tasks running at once. Raising it starts queued tasks at once; lowering it starts
   * nothing new until fewer than the new value run. Running tasks are never interrupted.
   *
   * @example Resize at run time
   * ```ts
   * import { AsyncExecutor } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * await using executor = new AsyncExecutor({ maxWorkers: 2 });
   * executor.maxWorkers = 8;
   * assert.equal(executor.maxWorkers, 8);
   * ```
   */
  get maxWorkers(): number {
    return this.#workers.capacity;
  }

  set maxWorkers(value: number) {
    this.#workers.resize(checkInteger("set maxWorkers", "maxWorkers", value, 1));
  }

  /** The number of tasks running now. */
  get running(): number {
    return this.#workers.inUse;
  }

  /** The number of tasks waiting for a worker or for their limiters. */
  get queued(): number {
    return this.#workers.waiting + this.#waitingForLimiters;
  }

  /** Whether {@linkcode AsyncExecutor.shutdown} was called or the executor's signal aborted. */
  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Runs `task` on `input` on a free worker and resolves with its result.
   *
   * @typeParam I The input.
   * @typeParam O The output.
   * @param task The function to run.
   * @param input Its input.
   * @param options Limiters, a signal, a timeout and retries for this task.
   * @returns A promise of the task's result; it rejects with the task's last error, with
   * `signal.reason` when aborted, or with {@linkcode ExecutorShutdownError} after shutdown.
   * @throws {TypeError} (as a rejection) If `task` is not a function or an option has the wrong type.
   * @throws {RangeError} (as a rejection) If a number option is out of range.
   *
   * @example Share one limit between tasks
   * ```ts
   * import { AsyncExecutor, Semaphore } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * await using executor = new AsyncExecutor({ maxWorkers: 10 });
   * const database = new Semaphore(2);
   * const rows = await Promise.all(
   *   ["a", "b", "c"].map((key) => executor.submit((k: string) => k.toUpperCase(), key, { semaphore: database })),
   * );
   * assert.deepEqual(rows, ["A", "B", "C"]);
   * ```
   */
  submit<I, O>(task: Task<I, O>, input: I, options?: SubmitOptions): Promise<O> {
    let job: Job<I, O>;
    try {
      job = this.#toJob("submit the task", task, options);
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#closed) return Promise.reject(new ExecutorShutdownError());
    const callerSignal = options?.signal;
    if (callerSignal?.aborted) return Promise.reject(callerSignal.reason);

    this.#pending++;
    if (callerSignal === undefined && job.simple) {
      return new Promise<O>((resolve, reject) => {
        this.#runSimple(job.task, input, this.#context, 0, (_index, _input, ok, value) => {
          if (ok) resolve(value as O);
          else reject(value);
          this.#settled();
        });
      });
    }
    if (callerSignal === undefined) {
      const running = this.#execute(job, input, this.#controller.signal, undefined, false);
      return this.#deliver(running, noop);
    }

    // A task with a signal of its own gets a controller that follows both signals.
    const controller = new AbortController();
    const unlinkCaller = this.#fanout.link(controller, callerSignal);
    const unlinkExecutor = this.#fanout.link(controller, this.#controller.signal);
    const running = this.#execute(job, input, controller.signal, controller.signal, true);
    return this.#deliver(running, () => {
      unlinkCaller();
      unlinkExecutor();
    });
  }

  // Settles the caller's promise before idle waiters wake, so work awaited after onIdle() sees
  // every result already delivered.
  #deliver<O>(running: Promise<O>, cleanup: () => void): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      running.then(
        (value) => {
          cleanup();
          resolve(value);
          this.#settled();
        },
        (error) => {
          cleanup();
          reject(error);
          this.#settled();
        },
      );
    });
  }

  /**
   * Runs `task` on every input and streams the results in input order.
   *
   * Inputs are pulled lazily, only while fewer than `maxWorkers` tasks of this run are in flight
   * and fewer than `bufferSize` finished results wait for the consumer, so a generator of any
   * length runs in memory bounded by those two numbers. Nothing starts until the stream is
   * iterated or awaited. A graceful shutdown lets a started run finish its input.
   *
   * @typeParam I The input.
   * @typeParam O The output.
   * @param task The function to run on each input.
   * @param inputs An array, an `Iterable` or an `AsyncIterable`.
   * @param options The error policy, buffer size, and the options of
   * {@linkcode AsyncExecutor.submit} for every task.
   * @returns A result stream: `for await` yields results in input order; `await` gives the array.
   * @throws {TypeError} If `task` is not a function, `inputs` is not iterable, or an option has
   * the wrong type.
   * @throws {RangeError} If a number option is out of range.
   *
   * @example Collect failures instead of stopping
   * ```ts
   * import { AsyncExecutor } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * await using executor = new AsyncExecutor({ maxWorkers: 2 });
   * const results = await executor.map((n: number) => {
   *   if (n === 2) throw new Error("two");
   *   return n;
   * }, [1, 2, 3], { settled: true });
   * assert.deepEqual(results.map((r) => r.ok), [true, false, true]);
   * ```
   */
  map<I, O>(
    task: Task<I, O>,
    inputs: Iterable<I> | AsyncIterable<I>,
    options: MapOptions & { settled: true },
  ): ResultStream<SettledResult<I, O>>;
  /**
   * Runs `task` on every input and streams the values in input order; the first failure ends the run.
   *
   * @typeParam I The input.
   * @typeParam O The output.
   * @param task The function to run on each input.
   * @param inputs An array, an `Iterable` or an `AsyncIterable`.
   * @param options As for the `settled: true` form, with `settled` false or absent.
   * @returns A result stream of the task's values.
   *
   * @example Fail fast
   * ```ts
   * import { AsyncExecutor } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * await using executor = new AsyncExecutor({ maxWorkers: 2 });
   * const stream = executor.map((n: number) => {
   *   if (n === 2) throw new Error("two");
   *   return n;
   * }, [1, 2, 3]);
   * await assert.rejects(stream.toArray(), { message: "two" });
   * ```
   */
  map<I, O>(
    task: Task<I, O>,
    inputs: Iterable<I> | AsyncIterable<I>,
    options?: MapOptions & { settled?: false | undefined },
  ): ResultStream<O>;
  map<I, O>(
    task: Task<I, O>,
    inputs: Iterable<I> | AsyncIterable<I>,
    options?: MapOptions,
  ): ResultStream<O | SettledResult<I, O>> {
    return this.#map(task, inputs, options, true, "map the inputs");
  }

  /**
   * Like {@linkcode AsyncExecutor.map}, but `for await` yields results in completion order, so one
   * slow input never holds back the others. Awaiting the stream still gives input order.
   *
   * @typeParam I The input.
   * @typeParam O The output.
   * @param task The function to run on each input.
   * @param inputs An array, an `Iterable` or an `AsyncIterable`.
   * @param options As for {@linkcode AsyncExecutor.map}.
   * @returns A result stream in completion order.
   * @throws {TypeError} If `task` is not a function, `inputs` is not iterable, or an option has
   * the wrong type.
   * @throws {RangeError} If a number option is out of range.
   *
   * @example First come, first served
   * ```ts
   * import { AsyncExecutor } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * await using executor = new AsyncExecutor({ maxWorkers: 3 });
   * const slowFirst = async (ms: number) => {
   *   await new Promise((resolve) => setTimeout(resolve, ms));
   *   return ms;
   * };
   * const order: number[] = [];
   * for await (const ms of executor.mapUnordered(slowFirst, [30, 1])) order.push(ms);
   * assert.deepEqual(order, [1, 30]);
   * ```
   */
  mapUnordered<I, O>(
    task: Task<I, O>,
    inputs: Iterable<I> | AsyncIterable<I>,
    options: MapOptions & { settled: true },
  ): ResultStream<SettledResult<I, O>>;
  /**
   * Runs `task` on every input and streams the values in completion order; the first failure ends the run.
   *
   * @typeParam I The input.
   * @typeParam O The output.
   * @param task The function to run on each input.
   * @param inputs An array, an `Iterable` or an `AsyncIterable`.
   * @param options As for the `settled: true` form, with `settled` false or absent.
   * @returns A result stream of the task's values.
   *
   * @example Fail fast
   * ```ts
   * import { AsyncExecutor } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * await using executor = new AsyncExecutor({ maxWorkers: 2 });
   * const stream = executor.mapUnordered((n: number) => {
   *   if (n === 2) throw new Error("two");
   *   return n;
   * }, [1, 2, 3]);
   * await assert.rejects(stream.toArray(), { message: "two" });
   * ```
   */
  mapUnordered<I, O>(
    task: Task<I, O>,
    inputs: Iterable<I> | AsyncIterable<I>,
    options?: MapOptions & { settled?: false | undefined },
  ): ResultStream<O>;
  mapUnordered<I, O>(
    task: Task<I, O>,
    inputs: Iterable<I> | AsyncIterable<I>,
    options?: MapOptions,
  ): ResultStream<O | SettledResult<I, O>> {
    return this.#map(task, inputs, options, false, "map the inputs");
  }

  /**
   * Yields the values of `promises` in the order they settle. A rejection is thrown from the
   * iteration; the other promises' rejections are handled, so leaving the loop early never causes
   * an unhandled rejection.
   *
   * @typeParam T The value type.
   * @param promises The promises, for example from {@linkcode AsyncExecutor.submit}.
   * @param options A deadline for the whole iteration and a signal.
   * @returns An async generator of the values.
   *
   * @example Handle results as they arrive
   * ```ts
   * import { AsyncExecutor } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * await using executor = new AsyncExecutor({ maxWorkers: 2 });
   * const never = new Promise<string>(() => {});
   * for await (const value of executor.asCompleted([never, Promise.resolve("fast")])) {
   *   assert.equal(value, "fast");
   *   break;
   * }
   * ```
   */
  asCompleted<T>(
    promises: Iterable<PromiseLike<T>>,
    options?: AsCompletedOptions,
  ): AsyncGenerator<T, void, undefined> {
    const timeoutMs = checkTimeout("iterate as completed", options?.timeoutMs);
    checkSignal("iterate as completed", options?.signal);
    return asCompleted([...promises], timeoutMs, options?.signal);
  }

  /**
   * Waits until `promises` reach the `returnWhen` condition or the timeout passes, and splits
   * them into settled and pending ones. It never rejects, on timeout or otherwise, and never
   * cancels anything.
   *
   * @typeParam T The value type.
   * @param promises The promises to watch.
   * @param options The condition and a timeout.
   * @returns The promises that settled and those still pending.
   *
   * @example Wait for the first one
   * ```ts
   * import { AsyncExecutor } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * await using executor = new AsyncExecutor({ maxWorkers: 2 });
   * const fast = Promise.resolve(1);
   * const slow = new Promise<number>(() => {});
   * const { done, pending } = await executor.wait([fast, slow], { returnWhen: "first-completed" });
   * assert.ok(done.has(fast));
   * assert.ok(pending.has(slow));
   * ```
   */
  wait<T>(promises: Iterable<PromiseLike<T>>, options?: WaitOptions): Promise<WaitResult<T>> {
    const returnWhen = options?.returnWhen ?? "all-completed";
    if (!["first-completed", "first-error", "all-completed"].includes(returnWhen)) {
      return Promise.reject(
        new RangeError(
          invalidMessage(
            "wait for the promises",
            "returnWhen",
            `"first-completed", "first-error" or "all-completed"`,
            returnWhen,
          ),
        ),
      );
    }
    let timeoutMs: number | undefined;
    try {
      timeoutMs = checkTimeout("wait for the promises", options?.timeoutMs);
    } catch (error) {
      return Promise.reject(error);
    }
    return waitFor([...promises], returnWhen, timeoutMs);
  }

  /**
   * Resolves once no task is queued or running and no map run is active. It resolves at once when
   * the executor is already idle, and does not wait for work submitted after that moment.
   *
   * @returns A promise that resolves when idle.
   *
   * @example Wait for fire-and-forget work
   * ```ts
   * import { AsyncExecutor } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * await using executor = new AsyncExecutor({ maxWorkers: 2 });
   * let done = 0;
   * for (let i = 0; i < 3; i++) executor.submit(async () => { done++; }, i);
   * await executor.onIdle();
   * assert.equal(done, 3);
   * ```
   */
  onIdle(): Promise<void> {
    if (this.#pending === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * Stops accepting work and resolves once every accepted task has settled. Calling it again is
   * safe and waits for the same moment.
   *
   * @param options `cancel: true` rejects queued tasks with {@linkcode ExecutorShutdownError} and
   * aborts the signals of running tasks with it.
   * @returns A promise that resolves when the executor is idle.
   *
   * @example Cancel what is left
   * ```ts
   * import { AsyncExecutor, ExecutorShutdownError } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * const executor = new AsyncExecutor({ maxWorkers: 1 });
   * const running = executor.submit((_: null, { signal }) =>
   *   new Promise((_resolve, reject) => signal.addEventListener("abort", () => reject(signal.reason)))
   * , null);
   * const queued = executor.submit(() => "never runs", null);
   * await executor.shutdown({ cancel: true });
   * await assert.rejects(running, ExecutorShutdownError);
   * await assert.rejects(queued, ExecutorShutdownError);
   * ```
   */
  async shutdown(options?: ShutdownOptions): Promise<void> {
    this.#closed = true;
    if (options?.cancel === true) {
      this.#cancel(
        new ExecutorShutdownError("Cannot run the task as the executor was shut down with cancel"),
      );
    }
    await this.onIdle();
    this.#unlinkSignal();
    this.#unlinkSignal = noop;
  }

  /**
   * Shuts down gracefully, so `await using` waits for the executor's work at the end of a scope.
   *
   * @returns A promise that resolves when the executor is idle.
   */
  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }

  #cancel(reason: unknown): void {
    this.#closed = true;
    if (!this.#controller.signal.aborted) this.#controller.abort(reason);
    this.#workers.rejectWaiting(reason);
  }

  // Runs a task that has no limiter, timeout or retry, with callbacks instead of async frames,
  // because a queued task then costs one semaphore waiter and nothing more.
  #runSimple<I, O>(
    task: Task<I, O>,
    input: I,
    context: TaskContext,
    index: number,
    done: SettleCallback<I>,
  ): void {
    const worker = this.#workers.tryAcquire();
    if (worker !== undefined) {
      callWithWorker(task, input, context, worker, index, done);
      return;
    }
    // The grant arrives through a promise reaction registered now, so the task starts on a fresh
    // microtask in the submitter's async context, not nested inside the release that freed the
    // worker. Waiters that follow only the executor's signal are rejected by a cancelling
    // shutdown directly; a map run's waiters take the run's signal.
    const onGrant = (permit: Permit) => {
      // A grant in the same turn as an abort goes back instead of running the task.
      if (context.signal.aborted) {
        permit.release();
        done(index, input, false, context.signal.reason);
      } else callWithWorker(task, input, context, permit, index, done);
    };
    const onReject = (error: unknown) => done(index, input, false, error);
    const options = context.signal === this.#controller.signal
      ? undefined
      : { signal: context.signal };
    this.#workers.acquire(options).then(onGrant, onReject);
  }

  #settled(): void {
    this.#pending--;
    if (this.#pending === 0 && this.#idleWaiters.length > 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  }

  #toJob<I, O>(action: string, task: Task<I, O>, options: SubmitOptions | undefined): Job<I, O> {
    checkFunction(action, "task", task);
    if (options === undefined) {
      return { task, simple: true, limiter: undefined, timeoutMs: undefined, retry: undefined };
    }
    checkSignal(action, options.signal);
    const limiter = toLimiter(action, "semaphore", options.semaphore, combineLimiters);
    const timeoutMs = checkTimeout(action, options.timeoutMs);
    const retry = toRetryPolicy(action, options.retry);
    const simple = limiter === undefined && timeoutMs === undefined && retry === undefined;
    return { task, simple, limiter, timeoutMs, retry };
  }

  #map<I, O>(
    task: Task<I, O>,
    inputs: Iterable<I> | AsyncIterable<I>,
    options: MapOptions | undefined,
    ordered: boolean,
    action: string,
  ): ResultStream<O | SettledResult<I, O>> {
    const job = this.#toJob(action, task, options);
    if (
      inputs === null || typeof inputs !== "object" && typeof inputs !== "string" ||
      typeof (inputs as Iterable<I>)[Symbol.iterator] !== "function" &&
        typeof (inputs as AsyncIterable<I>)[Symbol.asyncIterator] !== "function"
    ) {
      throw new TypeError(invalidMessage(action, "inputs", "an Iterable or AsyncIterable", inputs));
    }
    const bufferSize = options?.bufferSize === undefined
      ? undefined
      : checkInteger(action, "bufferSize", options.bufferSize, 0);
    const settled = options?.settled === true;

    // Every task of one run shares one frozen context while it has no timeout and no retry.
    let context: TaskContext | undefined;
    return new ResultStream(mapSource<I, O | SettledResult<I, O>>(
      {
        execute: (input, signal, index, _admission, settle) => {
          if (job.simple) {
            context ??= Object.freeze({ signal, attempt: 1 });
            this.#runSimple(job.task, input, context, index, settle);
            return;
          }
          this.#execute(job, input, signal, signal, false).then(
            (value) => settle(index, input, true, value),
            (error) => settle(index, input, false, error),
          );
        },
        workers: () => this.#workers.capacity,
        executorSignal: this.#controller.signal,
        runStarted: () => {
          if (this.#closed) throw new ExecutorShutdownError();
          this.#pending++;
        },
        runEnded: () => this.#settled(),
      },
      inputs,
      {
        ordered,
        settled,
        bufferSize,
        signal: options?.signal,
        format: settled ? toSettledResult<I, O> : toValue<I, O>,
        plainValues: !settled,
      },
    ));
  }

  // Runs every attempt of one task. `signal` is the task's signal. `waitSignal` cancels the waits
  // for permits; it is undefined for tasks that follow only the executor's own signal, because a
  // cancelling shutdown rejects those waiters directly. `race` rejects as soon as `signal` aborts
  // instead of when the task settles.
  async #execute<I, O>(
    job: Job<I, O>,
    input: I,
    signal: AbortSignal,
    waitSignal: AbortSignal | undefined,
    race: boolean,
  ): Promise<O> {
    for (let attempt = 1;; attempt++) {
      try {
        return await this.#attempt(job, input, signal, waitSignal, race, attempt);
      } catch (error) {
        if (!shouldRetry(job.retry, error, attempt, signal)) throw error;
      }
      await sleep(retryDelayMs(job.retry as RetryPolicy, attempt), signal);
    }
  }

  async #attempt<I, O>(
    job: Job<I, O>,
    input: I,
    signal: AbortSignal,
    waitSignal: AbortSignal | undefined,
    race: boolean,
    attempt: number,
  ): Promise<O> {
    let limiterPermit: Permit | undefined;
    if (job.limiter !== undefined) {
      this.#waitingForLimiters++;
      try {
        // Shared limiters are not the executor's own, so a cancelling shutdown reaches their
        // waiters only through the signal.
        limiterPermit = await job.limiter.acquire({ signal });
      } finally {
        this.#waitingForLimiters--;
      }
    }

    const worker = await acquireWorker(this.#workers, signal, waitSignal, 0, limiterPermit);

    const task = job.task;
    const start = (taskSignal: AbortSignal): Promise<O> => {
      const context: TaskContext = { signal: taskSignal, attempt };
      try {
        return Promise.resolve(task(input, context));
      } catch (error) {
        return Promise.reject(error);
      }
    };
    return await runGuarded(
      start,
      signal,
      job.timeoutMs,
      race,
      worker,
      limiterPermit,
      this.#abandoned,
    );
  }
}

function callWithWorker<I, O>(
  task: Task<I, O>,
  input: I,
  context: TaskContext,
  worker: Permit,
  index: number,
  done: SettleCallback<I>,
): void {
  let result: O | PromiseLike<O>;
  try {
    result = task(input, context);
  } catch (error) {
    worker.release();
    done(index, input, false, error);
    return;
  }
  if (typeof (result as PromiseLike<O> | null)?.then !== "function") {
    worker.release();
    done(index, input, true, result);
    return;
  }
  try {
    (result as PromiseLike<O>).then(
      (value) => {
        worker.release();
        done(index, input, true, value);
      },
      (error) => {
        worker.release();
        done(index, input, false, error);
      },
    );
  } catch (error) {
    // A thenable whose then() throws has failed, and nothing else would give the worker back.
    worker.release();
    done(index, input, false, error);
  }
}

function toValue<I, O>(entry: MapEntry<I>): O {
  return entry.value as O;
}

function toSettledResult<I, O>(entry: MapEntry<I>): SettledResult<I, O> {
  return entry.ok
    ? { ok: true, value: entry.value as O, index: entry.index, input: entry.input }
    : { ok: false, error: entry.value, index: entry.index, input: entry.input };
}

async function* asCompleted<T>(
  promises: PromiseLike<T>[],
  timeoutMs: number | undefined,
  signal: AbortSignal | undefined,
): AsyncGenerator<T, void, undefined> {
  signal?.throwIfAborted();
  const outcomes: { ok: boolean; value: unknown }[] = [];
  let wake: (() => void) | undefined;
  let stopped: { reason: unknown } | undefined;
  const notify = () => {
    const resolve = wake;
    wake = undefined;
    resolve?.();
  };

  for (const promise of promises) {
    Promise.resolve(promise).then(
      (value) => {
        outcomes.push({ ok: true, value });
        notify();
      },
      (error) => {
        outcomes.push({ ok: false, value: error });
        notify();
      },
    );
  }

  const stop = (reason: unknown) => {
    stopped ??= { reason };
    notify();
  };
  const onAbort = () => stop(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  const timer = timeoutMs === undefined
    ? undefined
    : setTimeout(() => stop(timeoutReason(timeoutMs)), timeoutMs);

  try {
    for (let yielded = 0; yielded < promises.length;) {
      if (stopped !== undefined) throw stopped.reason;
      const outcome = outcomes.shift();
      if (outcome === undefined) {
        await new Promise<void>((resolve) => wake = resolve);
        continue;
      }
      yielded++;
      if (!outcome.ok) throw outcome.value;
      yield outcome.value as T;
    }
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

function waitFor<T>(
  promises: PromiseLike<T>[],
  returnWhen: "first-completed" | "first-error" | "all-completed",
  timeoutMs: number | undefined,
): Promise<WaitResult<T>> {
  const done = new Set<PromiseLike<T>>();
  const pending = new Set(promises);

  return new Promise<WaitResult<T>>((resolve) => {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = () => {
      clearTimeout(timer);
      resolve({ done: new Set(done), pending: new Set(pending) });
    };
    if (pending.size === 0) {
      finish();
      return;
    }

    let finished = false;
    const onSettled = (promise: PromiseLike<T>, failed: boolean) => {
      if (finished) return;
      pending.delete(promise);
      done.add(promise);
      const reached = returnWhen === "first-completed" ||
        returnWhen === "first-error" && failed || pending.size === 0;
      if (reached) {
        finished = true;
        finish();
      }
    };
    for (const promise of new Set(promises)) {
      Promise.resolve(promise).then(
        () => onSettled(promise, false),
        () => onSettled(promise, true),
      );
    }
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        finished = true;
        finish();
      }, timeoutMs);
    }
  });
}
