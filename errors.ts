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

/**
 * The rejection of work handed to a pipeline that is shutting down, and the reason that running
 * tasks see when the pipeline shuts down with cancellation.
 *
 * @example Feed after shutdown
 * ```ts
 * import { Pipeline, PipelineShutdownError, Stage } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * const pipeline = new Pipeline({ stages: [new Stage({ name: "echo", workers: 1, tasks: [(x: number) => x] })] });
 * await pipeline.shutdown();
 * await assert.rejects(pipeline.run([1]).toArray(), PipelineShutdownError);
 * ```
 */
export class PipelineShutdownError extends Error {
  /**
   * Creates the error.
   *
   * @param message What was rejected.
   */
  constructor(message = "Cannot run the pipeline as it is shut down") {
    super(message);
    this.name = "PipelineShutdownError";
  }
}

/** The location and attempt count of a failed pipeline item. */
export interface ItemFailureDetails {
  /** The item's position in the order items entered the pipeline, from 0. */
  readonly index: number;
  /** The stage where it failed. */
  readonly stage: string;
  /** The task that failed, or `"skipIf"` when the stage's predicate threw. */
  readonly task: string;
  /** The attempts made: of the task for task-scope retries, of the stage for stage-scope ones. */
  readonly attempts: number;
}

/**
 * A pipeline item's failure, thrown by a fail-fast run. The task's own error is its `cause`.
 *
 * @example Catch a fail-fast failure
 * ```ts
 * import { Pipeline, PipelineItemError, Stage } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * function check(n: number): number {
 *   if (n < 0) throw new RangeError("negative");
 *   return n;
 * }
 * const pipeline = new Pipeline({ stages: [new Stage({ name: "check", workers: 2, tasks: [check] })] });
 * const error = await pipeline.run([1, -1], { failFast: true }).toArray().catch((e) => e);
 * assert.ok(error instanceof PipelineItemError);
 * assert.equal(error.task, "check");
 * assert.equal((error.cause as Error).message, "negative");
 * ```
 */
export class PipelineItemError extends Error implements ItemFailureDetails {
  /** The item's position in the order items entered the pipeline, from 0. */
  readonly index: number;
  /** The stage where it failed. */
  readonly stage: string;
  /** The task that failed, or `"skipIf"` when the stage's predicate threw. */
  readonly task: string;
  /** The attempts made. */
  readonly attempts: number;

  /**
   * Creates the error.
   *
   * @param cause The task's error.
   * @param details Where and after how many attempts the item failed.
   */
  constructor(cause: unknown, details: ItemFailureDetails) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    super(
      `Item ${details.index} failed in stage "${details.stage}" at task "${details.task}" ` +
        `after ${details.attempts} attempt(s): ${reason}`,
      { cause },
    );
    this.name = "PipelineItemError";
    this.index = details.index;
    this.stage = details.stage;
    this.task = details.task;
    this.attempts = details.attempts;
  }
}
