/**
 * `Stage`, one step of a `Pipeline`: a pool of workers that runs a chain of tasks on every item.
 *
 * @module
 */

import { combineLimiters } from "./combine_limiters.ts";
import type { RetryOptions } from "./retry.ts";
import { type Limiter, Semaphore } from "./semaphore.ts";
import type { Task, TaskContext } from "./task.ts";
import { toRetryPolicy } from "./_retry.ts";
import { registerPlan, type ResolvedTask, type StagePlan } from "./_stage_plan.ts";
import {
  checkFunction,
  checkInteger,
  checkTimeout,
  invalidMessage,
  toLimiter,
} from "./_validate.ts";

/** The context a stage's task receives besides its input. */
export interface StageTaskContext extends TaskContext {
  /** The stage's name. */
  readonly stage: string;
  /** The task's name: the function's `name`, or `task<position>` for an anonymous one. */
  readonly task: string;
  /** The item's position in the order items entered the pipeline, from 0. */
  readonly index: number;
}

/**
 * A task in a stage: a function of the item's current value and a {@linkcode StageTaskContext}.
 *
 * @typeParam I The input.
 * @typeParam O The output.
 */
export type StageTask<I, O> = Task<I, O, StageTaskContext>;

/**
 * The tasks of a stage, run in order on each item: the output of one is the input of the next.
 *
 * @typeParam I The stage's input.
 * @typeParam O The stage's output.
 */
export type TaskChain<I, O> =
  | readonly [StageTask<I, O>]
  // deno-lint-ignore no-explicit-any
  | readonly [StageTask<I, any>, ...StageTask<any, any>[], StageTask<any, O>];

/** A task limit: a permit count (a {@linkcode Semaphore} for this stage) or shared limiters. */
export type TaskLimit = number | Limiter | readonly Limiter[];

/** Retry options of a stage: the executor's options plus where a retry restarts. */
export interface StageRetryOptions extends RetryOptions {
  /**
   * `"task"`: the failing task is retried inline, after a backoff that holds no worker.
   * `"stage"`: the item restarts the whole chain and queues again after the backoff.
   *
   * @default {"task"}
   */
  scope?: "task" | "stage" | undefined;
}

/** Item details passed to stage callbacks. */
export interface ItemInfo {
  /** The item's position in the order items entered the pipeline, from 0. */
  readonly index: number;
  /** The stage's name. */
  readonly stage: string;
  /** The attempt that ended the item's work in this stage, counted from 1. */
  readonly attempts: number;
}

/** Failure details passed to {@linkcode StageOptions.onFailure}. */
export interface ItemFailureInfo extends ItemInfo {
  /** The name of the task that failed, or `"skipIf"` when the predicate threw. */
  readonly task: string;
}

/**
 * Options for {@linkcode Stage}.
 *
 * @typeParam I The stage's input.
 * @typeParam O The stage's output.
 */
export interface StageOptions<I, O> {
  /** The stage's name, unique within a pipeline. */
  name: string;
  /** The maximum number of task calls running in this stage at once, an integer >= 1. */
  workers: number;
  /** The tasks run on each item, in order. */
  tasks: TaskChain<I, O>;
  /**
   * Limits on single tasks, keyed by task name or by the task function itself: a number makes a
   * {@linkcode Semaphore} of that size for this stage, and a `Limiter` (or several) can be shared
   * with other stages, pipelines and executors. An item waiting for a task limit holds no worker.
   */
  taskConcurrencyLimits?:
    | Readonly<Record<string, TaskLimit>>
    // deno-lint-ignore no-explicit-any
    | ReadonlyMap<string | StageTask<any, any>, TaskLimit>
    | undefined;
  /** The retry policy for failed tasks. By default nothing is retried. */
  retry?: StageRetryOptions | undefined;
  /**
   * The time limit of each task attempt in milliseconds, from the moment it starts. When it
   * passes, the task's signal aborts with a `DOMException` named `TimeoutError` and the attempt
   * fails with it; the worker stays occupied until the task settles.
   *
   * @default {Infinity}
   */
  timeoutMs?: number | undefined;
  /**
   * The time limit of one pass of an item through the whole chain, from the moment its first
   * task starts, with the same effects as `timeoutMs`.
   *
   * @default {Infinity}
   */
  stageTimeoutMs?: number | undefined;
  /**
   * How many items wait in this stage beyond those its workers handle: a non-negative integer, or
   * `Infinity` for no bound. The items inside the stage (waiting, parked at a limit or running)
   * never exceed `queueCapacity + workers`. With 0, an item enters only when the stage has room
   * to work on it, so nothing waits unobserved between stages.
   *
   * @default {workers * 10}
   */
  queueCapacity?: number | undefined;
  /**
   * Decides, before any task runs, whether an item skips this stage; a skipped item passes its
   * value on unchanged. It may return a promise. If it throws, the item fails.
   */
  skipIf?: ((value: I, info: ItemInfo) => boolean | PromiseLike<boolean>) | undefined;
  /**
   * Called when an item completes this stage. It is not awaited; an error it throws or rejects
   * with never affects the item and is reported as a `callbackerror` event of the pipeline.
   */
  onSuccess?: ((value: O, info: ItemInfo) => unknown) | undefined;
  /** Called when an item fails in this stage, in the same way as `onSuccess`. */
  onFailure?: ((error: unknown, info: ItemFailureInfo) => unknown) | undefined;
  /** Called when `skipIf` skips an item, in the same way as `onSuccess`. */
  onSkip?: ((value: I, info: ItemInfo) => unknown) | undefined;
}

/**
 * One step of a `Pipeline`: `workers` bounds the task calls running in the stage at once, and
 * each item runs through `tasks` in order.
 *
 * Waiting never holds a worker: an item takes a task's limiter first and a worker last, and gives
 * the worker back as soon as that task settles, so while one item waits for a limited task, other
 * items' tasks use the workers. All options are validated here, so a mistake fails at once.
 *
 * @typeParam I The stage's input.
 * @typeParam O The stage's output.
 *
 * @example A stage with one rate-limited task
 * ```ts
 * import { Pipeline, Stage } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * function prepare(id: number): string {
 *   return `item-${id}`;
 * }
 * async function callApi(key: string): Promise<string> {
 *   return key.toUpperCase();
 * }
 * const enrich = new Stage({
 *   name: "enrich",
 *   workers: 50,
 *   tasks: [prepare, callApi],
 *   taskConcurrencyLimits: { callApi: 5 },
 * });
 * const results = await new Pipeline({ stages: [enrich] }).run([1, 2]);
 * assert.deepEqual(results.map((r) => r.ok && r.value), ["ITEM-1", "ITEM-2"]);
 * ```
 */
export class Stage<I, O> {
  /** The stage's name. */
  readonly name: string;
  /** The maximum number of task calls running in this stage at once. */
  readonly workers: number;
  /** How many items wait in this stage beyond those its workers handle. */
  readonly queueCapacity: number;
  /** The per-attempt task timeout in milliseconds, or `undefined` for none. */
  readonly timeoutMs: number | undefined;
  /** The per-pass stage timeout in milliseconds, or `undefined` for none. */
  readonly stageTimeoutMs: number | undefined;
  readonly #taskNames: readonly string[];
  /** Carries the stage's input and output types; it has no value at run time. */
  declare readonly types?: ((input: I) => O) | undefined;

  /**
   * Creates a stage and validates every option.
   *
   * @param options The stage's name, workers, tasks and optional settings.
   * @throws {TypeError} If an option has the wrong type.
   * @throws {RangeError} If a number is out of range, the name or task list is empty, or a task
   * limit names no task of the stage or a name that several tasks share.
   */
  constructor(options: StageOptions<I, O>) {
    const name = options?.name;
    if (typeof name !== "string") {
      throw new TypeError(invalidMessage("create Stage", "name", "a non-empty string", name));
    }
    if (name.length === 0) {
      throw new RangeError(invalidMessage("create Stage", "name", "a non-empty string", name));
    }
    const action = `create Stage "${name}"`;

    this.name = name;
    this.workers = checkInteger(action, "workers", options.workers, 1);
    this.queueCapacity = options.queueCapacity === undefined
      ? this.workers * 10
      : checkQueueCapacity(action, options.queueCapacity);
    this.timeoutMs = checkTimeout(action, options.timeoutMs);
    this.stageTimeoutMs = checkTimeout(action, options.stageTimeoutMs, "stageTimeoutMs");
    const tasks = resolveTasks(action, options.tasks, options.taskConcurrencyLimits);
    this.#taskNames = tasks.map((task) => task.name);

    const scope = options.retry?.scope ?? "task";
    if (scope !== "task" && scope !== "stage") {
      throw new RangeError(invalidMessage(action, "retry.scope", `"task" or "stage"`, scope));
    }
    const retry = toRetryPolicy(action, options.retry);

    for (const callback of ["skipIf", "onSuccess", "onFailure", "onSkip"] as const) {
      if (options[callback] !== undefined) checkFunction(action, callback, options[callback]);
    }

    registerPlan(this as Stage<unknown, unknown>, {
      name,
      workers: this.workers,
      queueCapacity: this.queueCapacity,
      timeoutMs: this.timeoutMs,
      stageTimeoutMs: this.stageTimeoutMs,
      tasks,
      retry,
      retryScope: scope,
      skipIf: options.skipIf as StagePlan["skipIf"],
      onSuccess: options.onSuccess as StagePlan["onSuccess"],
      onFailure: options.onFailure,
      onSkip: options.onSkip as StagePlan["onSkip"],
    });
  }

  /** The names of the stage's tasks, in order. */
  get taskNames(): readonly string[] {
    return this.#taskNames;
  }
}

function checkQueueCapacity(action: string, value: unknown): number {
  const rule = "a non-negative integer or Infinity";
  if (typeof value !== "number") {
    throw new TypeError(invalidMessage(action, "queueCapacity", rule, value));
  }
  if (value !== Infinity && (!Number.isInteger(value) || value < 0)) {
    throw new RangeError(invalidMessage(action, "queueCapacity", rule, value));
  }
  return value;
}

function resolveTasks(
  action: string,
  tasks: unknown,
  limits: StageOptions<unknown, unknown>["taskConcurrencyLimits"],
): ResolvedTask[] {
  if (!Array.isArray(tasks)) {
    throw new TypeError(invalidMessage(action, "tasks", "a non-empty array of functions", tasks));
  }
  if (tasks.length === 0) {
    throw new RangeError(invalidMessage(action, "tasks", "a non-empty array of functions", tasks));
  }
  tasks.forEach((task, index) => checkFunction(action, `tasks[${index}]`, task));

  const fns = tasks as StageTask<unknown, unknown>[];
  const names = fns.map((fn, index) => fn.name === "" ? `task${index}` : fn.name);
  const byTask = new Map<number, Limiter>();

  if (limits !== undefined) {
    if (typeof limits !== "object" || limits === null) {
      throw new TypeError(
        invalidMessage(action, "taskConcurrencyLimits", "an object or a Map", limits),
      );
    }
    const entries: [unknown, unknown][] = limits instanceof Map
      ? [...limits.entries()]
      : Object.entries(limits);
    for (const [key, limit] of entries) {
      const index = findTask(action, key, fns, names);
      byTask.set(index, toTaskLimiter(action, `taskConcurrencyLimits.${names[index]}`, limit));
    }
  }

  return fns.map((fn, index) => ({
    fn,
    name: names[index] as string,
    limiter: byTask.get(index),
  }));
}

function findTask(
  action: string,
  key: unknown,
  fns: readonly StageTask<unknown, unknown>[],
  names: readonly string[],
): number {
  if (typeof key === "function") {
    const index = fns.indexOf(key as StageTask<unknown, unknown>);
    if (index === -1) {
      throw new RangeError(
        invalidMessage(action, "taskConcurrencyLimits", "keyed by tasks of the stage", key),
      );
    }
    if (fns.indexOf(key as StageTask<unknown, unknown>, index + 1) !== -1) {
      throw new RangeError(
        invalidMessage(
          action,
          "taskConcurrencyLimits",
          "keyed by a task that appears once in the stage",
          key,
        ),
      );
    }
    return index;
  }

  const index = names.indexOf(key as string);
  if (index === -1) {
    throw new RangeError(
      invalidMessage(
        action,
        "taskConcurrencyLimits",
        `keyed by a task name of the stage (${names.join(", ")})`,
        key,
      ),
    );
  }
  if (names.indexOf(key as string, index + 1) !== -1) {
    throw new RangeError(
      invalidMessage(
        action,
        "taskConcurrencyLimits",
        "keyed by a task name that only one task has, or by the task function",
        key,
      ),
    );
  }
  return index;
}

function toTaskLimiter(action: string, option: string, limit: unknown): Limiter {
  if (typeof limit === "number") {
    return new Semaphore(checkInteger(action, option, limit, 1));
  }
  const rule = "an integer >= 1, a Limiter or a non-empty array of Limiters";
  const isLimiter = typeof (limit as Partial<Limiter> | null)?.acquire === "function";
  if (!isLimiter && !(Array.isArray(limit) && limit.length > 0)) {
    throw new TypeError(invalidMessage(action, option, rule, limit));
  }
  return toLimiter(action, option, limit as Limiter | Limiter[], combineLimiters) as Limiter;
}
