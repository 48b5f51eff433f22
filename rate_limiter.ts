/**
 * A sliding-window rate limiter that implements {@linkcode Limiter}.
 *
 * @module
 */

import type { AcquireOptions, Limiter, Permit } from "./semaphore.ts";
import { checkInteger, invalidMessage } from "./_validate.ts";

/** Options for {@linkcode RateLimiter}. */
export interface RateLimiterOptions {
  /** The maximum units granted in any window of `intervalMs`, an integer >= 1. */
  limit: number;
  /** The window length in milliseconds, a finite number > 0. */
  intervalMs: number;
}

interface RateWaiter {
  readonly weight: number;
  readonly resolve: (permit: Permit) => void;
  readonly reject: (reason: unknown) => void;
  readonly signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

// A rate budget is spent when granted and never given back, so one shared permit serves all.
const spentPermit: Permit = Object.freeze({
  release(): void {},
  [Symbol.dispose](): void {},
});

/**
 * Grants at most `limit` units in any sliding window of `intervalMs` milliseconds, in FIFO order.
 *
 * The window slides: a grant at time `t` counts against the budget until `t + intervalMs`, so the
 * limit holds for every span of that length, including one that straddles what a fixed window
 * would call a boundary. Releasing a permit does not return budget. A waiter that is aborted
 * spends nothing. One timer runs while requests wait, and none once the queue is empty, so an idle
 * limiter never keeps a process alive.
 *
 * Time is read from `performance.now()` and waits use `setTimeout`, so virtual clocks that fake
 * both (such as `@sinonjs/fake-timers`) drive it in tests.
 *
 * @example At most 2 calls per second
 * ```ts
 * import { RateLimiter } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * const limiter = new RateLimiter({ limit: 2, intervalMs: 1000 });
 * await limiter.acquire();
 * await limiter.acquire();
 * assert.equal(limiter.remaining, 0);
 * ```
 */
export class RateLimiter implements Limiter {
  #limit: number;
  #intervalMs: number;
  // Grants still inside the window, oldest first: parallel arrays read from #start.
  #grantTimes: number[] = [];
  #grantWeights: number[] = [];
  #start = 0;
  #spent = 0;
  #waiters: RateWaiter[] = [];
  #waiterStart = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /**
   * Creates a limiter.
   *
   * @param options The limit and the window length.
   * @throws {TypeError} If `limit` or `intervalMs` is not a number.
   * @throws {RangeError} If `limit` is not an integer >= 1 or `intervalMs` is not finite and > 0.
   */
  constructor(options: RateLimiterOptions) {
    this.#limit = checkInteger("create RateLimiter", "limit", options?.limit, 1);
    const intervalMs: unknown = options.intervalMs;
    const rule = "a finite number > 0";
    if (typeof intervalMs !== "number") {
      throw new TypeError(invalidMessage("create RateLimiter", "intervalMs", rule, intervalMs));
    }
    if (!Number.isFinite(intervalMs) || intervalMs <= 0) {
      throw new RangeError(invalidMessage("create RateLimiter", "intervalMs", rule, intervalMs));
    }
    this.#intervalMs = intervalMs;
  }

  /** The maximum units granted in any window. */
  get limit(): number {
    return this.#limit;
  }

  /** The window length in milliseconds. */
  get intervalMs(): number {
    return this.#intervalMs;
  }

  /** The units that could be granted now without waiting, if nobody waits before them. */
  get remaining(): number {
    this.#expire(performance.now());
    return this.#limit - this.#spent;
  }

  /** The number of `acquire` calls waiting for budget. */
  get waiting(): number {
    return this.#waiters.length - this.#waiterStart;
  }

  /**
   * Waits until `weight` units fit in the window, spends them and resolves with a permit whose
   * release does nothing.
   *
   * @param options The weight and an optional signal that cancels the wait.
   * @returns A promise of the permit.
   * @throws {RangeError} (as a rejection) If the weight is not an integer from 1 to the limit.
   *
   * @example Cancel a wait for budget
   * ```ts
   * import { RateLimiter } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * const limiter = new RateLimiter({ limit: 1, intervalMs: 60_000 });
   * await limiter.acquire();
   * const reason = new Error("stop");
   * await assert.rejects(limiter.acquire({ signal: AbortSignal.abort(reason) }), reason);
   * ```
   */
  acquire(options?: AcquireOptions): Promise<Permit> {
    const weight = options?.weight === undefined ? 1 : options.weight;
    const signal = options?.signal;
    try {
      checkInteger("acquire a permit", "weight", weight, 1);
      if (weight > this.#limit) {
        throw new RangeError(
          invalidMessage("acquire a permit", "weight", `at most the limit ${this.#limit}`, weight),
        );
      }
    } catch (error) {
      return Promise.reject(error);
    }
    if (signal?.aborted) return Promise.reject(signal.reason);

    if (this.waiting === 0) {
      const now = performance.now();
      this.#expire(now);
      if (this.#spent + weight <= this.#limit) {
        this.#spend(now, weight);
        return Promise.resolve(spentPermit);
      }
    }

    return new Promise<Permit>((resolve, reject) => {
      const waiter: RateWaiter = { weight, resolve, reject, signal, onAbort: undefined };
      if (signal !== undefined) {
        waiter.onAbort = () => this.#abortWaiter(waiter);
        signal.addEventListener("abort", waiter.onAbort, { once: true });
      }
      this.#waiters.push(waiter);
      this.#schedule();
    });
  }

  #spend(now: number, weight: number): void {
    this.#grantTimes.push(now);
    this.#grantWeights.push(weight);
    this.#spent += weight;
  }

  #expire(now: number): void {
    const times = this.#grantTimes;
    while (this.#start < times.length && (times[this.#start] as number) + this.#intervalMs <= now) {
      this.#spent -= this.#grantWeights[this.#start] as number;
      this.#start++;
    }
    if (this.#start > 64 && this.#start * 2 > times.length) {
      times.splice(0, this.#start);
      this.#grantWeights.splice(0, this.#start);
      this.#start = 0;
    }
  }

  #grantWaiters(): void {
    const now = performance.now();
    this.#expire(now);
    while (this.#waiterStart < this.#waiters.length) {
      const waiter = this.#waiters[this.#waiterStart] as RateWaiter;
      // A waiter that shares an aborted signal with one just removed may not have run its own
      // abort listener yet; it is rejected here and spends nothing.
      if (waiter.signal?.aborted) {
        this.#shiftWaiter();
        this.#detach(waiter);
        waiter.reject(waiter.signal.reason);
        continue;
      }
      if (this.#spent + waiter.weight > this.#limit) break;
      this.#shiftWaiter();
      this.#detach(waiter);
      this.#spend(now, waiter.weight);
      waiter.resolve(spentPermit);
    }
  }

  #shiftWaiter(): void {
    this.#waiters[this.#waiterStart] = undefined as unknown as RateWaiter;
    this.#waiterStart++;
    if (this.#waiterStart === this.#waiters.length) {
      this.#waiters = [];
      this.#waiterStart = 0;
    } else if (this.#waiterStart > 64 && this.#waiterStart * 2 > this.#waiters.length) {
      this.#waiters.splice(0, this.#waiterStart);
      this.#waiterStart = 0;
    }
  }

  // Arms one timer for the moment enough old grants leave the window to fit the first waiter.
  #schedule(): void {
    if (this.#timer !== undefined) return;
    const head = this.#waiters[this.#waiterStart];
    if (head === undefined) return;

    const now = performance.now();
    this.#expire(now);
    let spent = this.#spent;
    let index = this.#start;
    while (spent + head.weight > this.#limit && index < this.#grantTimes.length) {
      spent -= this.#grantWeights[index] as number;
      index++;
    }
    const freeAt = (this.#grantTimes[index - 1] ?? now) + this.#intervalMs;
    const delay = Math.max(1, Math.ceil(freeAt - now));

    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#grantWaiters();
      this.#schedule();
    }, delay);
  }

  #abortWaiter(waiter: RateWaiter): void {
    waiter.onAbort = undefined;
    const index = this.#waiters.indexOf(waiter, this.#waiterStart);
    const wasHead = index === this.#waiterStart;
    if (wasHead) this.#shiftWaiter();
    else if (index > 0) this.#waiters.splice(index, 1);
    waiter.reject(waiter.signal?.reason);

    if (wasHead) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
      this.#grantWaiters();
      this.#schedule();
    }
  }

  #detach(waiter: RateWaiter): void {
    if (waiter.onAbort !== undefined) {
      waiter.signal?.removeEventListener("abort", waiter.onAbort);
      waiter.onAbort = undefined;
    }
  }
}
