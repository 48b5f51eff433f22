/**
 * The retry policy shared by `AsyncExecutor` and pipeline stages.
 *
 * @module
 */

/**
 * How a failed task is retried. Every attempt re-acquires its limiters, and the wait between
 * attempts holds no worker and no permit. An abort during the wait rejects at once with
 * `signal.reason`. Errors caused by the caller's own signal are never retried; a timeout of one
 * attempt is, unless `retryIf` returns false.
 *
 * The delay before attempt `n + 1` is `delayMs` for a `"fixed"` backoff and
 * `delayMs * factor ** (n - 1)` for an `"exponential"` one, capped at `maxDelayMs`, then reduced
 * by a random share of at most `jitter` of itself.
 *
 * @example Three attempts with exponential backoff
 * ```ts
 * import { AsyncExecutor, type RetryOptions } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * const retry: RetryOptions = { attempts: 3, delayMs: 1, backoff: "exponential" };
 * await using executor = new AsyncExecutor({ maxWorkers: 2 });
 * const value = await executor.submit((_: null, { attempt }) => {
 *   if (attempt < 3) throw new Error("flaky");
 *   return attempt;
 * }, null, { retry });
 * assert.equal(value, 3);
 * ```
 */
export interface RetryOptions {
  /**
   * The total number of attempts, the first one included; an integer >= 1.
   *
   * @default {1}
   */
  attempts?: number | undefined;
  /**
   * The wait before the second attempt, in milliseconds.
   *
   * @default {0}
   */
  delayMs?: number | undefined;
  /**
   * Whether the wait stays at `delayMs` or grows by `factor` after each attempt.
   *
   * @default {"fixed"}
   */
  backoff?: "fixed" | "exponential" | undefined;
  /**
   * The growth of an exponential backoff, a finite number >= 1.
   *
   * @default {2}
   */
  factor?: number | undefined;
  /**
   * The maximum wait, in milliseconds.
   *
   * @default {Infinity}
   */
  maxDelayMs?: number | undefined;
  /**
   * The largest share of each wait that is randomly removed, from 0 (none) to 1 ("full jitter").
   *
   * @default {0}
   */
  jitter?: number | undefined;
  /**
   * Decides whether an error is retried; `attempt` is the number of the attempt that failed.
   * It runs only while attempts remain. When it throws, its error becomes the task's error.
   *
   * @default {() => true}
   */
  retryIf?: ((error: unknown, attempt: number) => boolean) | undefined;
}
