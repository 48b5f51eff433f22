/**
 * The error classes that antflow throws for conditions callers are expected to catch.
 *
 * @module
 */

/**
 * The rejection of work handed to an executor that is shutting down: a `submit` or `map` after
 * `shutdown()`, or queued work dropped by `shutdown({ cancel: true })`. Running tasks of a
 * cancelled executor see it as their `signal.reason`.
 *
 * @example Submit after shutdown
 * ```ts
 * import { AsyncExecutor, ExecutorShutdownError } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * const executor = new AsyncExecutor({ maxWorkers: 1 });
 * await executor.shutdown();
 * await assert.rejects(executor.submit((x: number) => x, 1), ExecutorShutdownError);
 * ```
 */
export class ExecutorShutdownError extends Error {
  /**
   * Creates the error.
   *
   * @param message What was rejected.
   */
  constructor(message = "Cannot run the task as the executor is shut down") {
    super(message);
    this.name = "ExecutorShutdownError";
  }
}
