/**
 * Concurrency control for async TypeScript: a worker pool ({@linkcode AsyncExecutor}), shared
 * limiters ({@linkcode Semaphore}, {@linkcode RateLimiter}, {@linkcode combineLimiters}), and
 * result streams that are both `for await`-able and awaitable. Everything is built on
 * `AbortSignal`, async iterators and one {@linkcode Semaphore} primitive, with no dependencies.
 *
 * ```ts
 * import { AsyncExecutor, RateLimiter } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * await using executor = new AsyncExecutor({ maxWorkers: 8 });
 * const perSecond = new RateLimiter({ limit: 100, intervalMs: 1000 });
 * const lengths = await executor.map((word: string) => word.length, ["ant", "flow"], {
 *   semaphore: perSecond,
 * });
 * assert.deepEqual(lengths, [3, 4]);
 * ```
 *
 * @module
 */

export * from "./combine_limiters.ts";
export * from "./errors.ts";
export * from "./executor.ts";
export * from "./rate_limiter.ts";
export * from "./result_stream.ts";
export * from "./retry.ts";
export * from "./semaphore.ts";
export * from "./task.ts";
export * from "./pipeline.ts";
export * from "./stage.ts";
