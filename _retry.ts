// The normalised retry policy and the abortable wait between attempts.

import type { RetryOptions } from "./retry.ts";
import { checkFinite, checkFunction, checkInteger, invalidMessage } from "./_validate.ts";

/** A validated {@linkcode RetryOptions} with every default filled in. */
export interface RetryPolicy {
  readonly attempts: number;
  readonly delayMs: number;
  readonly exponential: boolean;
  readonly factor: number;
  readonly maxDelayMs: number;
  readonly jitter: number;
  readonly retryIf: ((error: unknown, attempt: number) => boolean) | undefined;
}

/** Validates retry options; returns `undefined` when they allow a single attempt only. */
export function toRetryPolicy(
  action: string,
  options: RetryOptions | undefined,
): RetryPolicy | undefined {
  if (options === undefined) return undefined;
  if (typeof options !== "object" || options === null) {
    throw new TypeError(invalidMessage(action, "retry", "an object", options));
  }

  const attempts = checkInteger(action, "retry.attempts", options.attempts ?? 1, 1);
  const delayMs = checkFinite(action, "retry.delayMs", options.delayMs ?? 0, 0);
  const backoff = options.backoff ?? "fixed";
  if (backoff !== "fixed" && backoff !== "exponential") {
    throw new RangeError(
      invalidMessage(action, "retry.backoff", `"fixed" or "exponential"`, backoff),
    );
  }
  const factor = checkFinite(action, "retry.factor", options.factor ?? 2, 1);
  const maxDelayMs = options.maxDelayMs ?? Infinity;
  if (maxDelayMs !== Infinity) checkFinite(action, "retry.maxDelayMs", maxDelayMs, 0);
  const jitter = options.jitter ?? 0;
  if (typeof jitter !== "number") {
    throw new TypeError(invalidMessage(action, "retry.jitter", "a number from 0 to 1", jitter));
  }
  if (!(jitter >= 0 && jitter <= 1)) {
    throw new RangeError(invalidMessage(action, "retry.jitter", "a number from 0 to 1", jitter));
  }
  if (options.retryIf !== undefined) checkFunction(action, "retry.retryIf", options.retryIf);

  if (attempts === 1) return undefined;
  return {
    attempts,
    delayMs,
    exponential: backoff === "exponential",
    factor,
    maxDelayMs,
    jitter,
    retryIf: options.retryIf,
  };
}

/**
 * Decides whether the failed attempt `attempt` is retried. An abort of `signal` (the caller's, not
 * a per-attempt timeout) is never retried.
 */
export function shouldRetry(
  policy: RetryPolicy | undefined,
  error: unknown,
  attempt: number,
  signal: AbortSignal | undefined,
): boolean {
  if (policy === undefined || attempt >= policy.attempts) return false;
  if (signal?.aborted) return false;
  return policy.retryIf === undefined || policy.retryIf(error, attempt) === true;
}

/** Computes the wait in milliseconds after the failed attempt `attempt` (counted from 1). */
export function retryDelayMs(policy: RetryPolicy, attempt: number): number {
  let delay = policy.exponential ? policy.delayMs * policy.factor ** (attempt - 1) : policy.delayMs;
  delay = Math.min(delay, policy.maxDelayMs);
  if (policy.jitter > 0) delay -= delay * policy.jitter * Math.random();
  return delay;
}

/** Waits `ms` milliseconds; rejects with `signal.reason` at once when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  if (ms <= 0) return Promise.resolve();

  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
