/**
 * The shape of a task: the function that the executor and pipeline stages call for each input.
 *
 * @module
 */

/**
 * The context a task receives besides its input.
 *
 * @example Honour the signal
 * ```ts
 * import { AsyncExecutor, type TaskContext } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * async function fetchPage(url: string, { signal, attempt }: TaskContext): Promise<string> {
 *   signal.throwIfAborted();
 *   return `${url} on attempt ${attempt}`;
 * }
 * await using executor = new AsyncExecutor({ maxWorkers: 4 });
 * assert.equal(await executor.submit(fetchPage, "/a"), "/a on attempt 1");
 * ```
 */
export interface TaskContext {
  /**
   * Aborts when the task should stop: the caller's signal aborted, the attempt's timeout passed,
   * or the executor or pipeline shut down with cancellation. Pass it to `fetch` and other
   * cancellable calls. A task that ignores it keeps its worker until it settles.
   */
  readonly signal: AbortSignal;
  /** The attempt number, counted from 1. */
  readonly attempt: number;
}

/**
 * A task: a function of an input and a {@linkcode TaskContext} that returns a value or a promise.
 * A synchronous throw is treated as a rejection.
 *
 * @typeParam I The input.
 * @typeParam O The output.
 * @typeParam C The context, a {@linkcode TaskContext} or an extension of it.
 *
 * @example A typed task
 * ```ts
 * import type { Task } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * const double: Task<number, number> = (n) => n * 2;
 * assert.equal(await double(21, { signal: new AbortController().signal, attempt: 1 }), 42);
 * ```
 */
export type Task<I, O, C extends TaskContext = TaskContext> = (
  input: I,
  context: C,
) => O | PromiseLike<O>;
