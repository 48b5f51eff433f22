/**
 * Groups several limiters into one {@linkcode Limiter}.
 *
 * @module
 */

import type { AcquireOptions, Limiter, Permit } from "./semaphore.ts";
import { invalidMessage } from "./_validate.ts";

// Every limiter gets a rank the first time a group sees it. Groups acquire in rank order, so two
// groups that share limiters never wait for each other in a cycle, whatever order callers list
// them in.
const ranks = new WeakMap<Limiter, number>();
let nextRank = 0;

function rankOf(limiter: Limiter): number {
  let rank = ranks.get(limiter);
  if (rank === undefined) {
    rank = nextRank++;
    ranks.set(limiter, rank);
  }
  return rank;
}

class GroupPermit implements Permit {
  #permits: Permit[] | undefined;

  constructor(permits: Permit[]) {
    this.#permits = permits;
  }

  release(): void {
    const permits = this.#permits;
    if (permits === undefined) return;
    this.#permits = undefined;
    for (let i = permits.length - 1; i >= 0; i--) (permits[i] as Permit).release();
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

class LimiterGroup implements Limiter {
  readonly #limiters: readonly Limiter[];

  constructor(limiters: readonly Limiter[]) {
    this.#limiters = limiters;
  }

  async acquire(options?: AcquireOptions): Promise<Permit> {
    const permits: Permit[] = [];
    try {
      for (const limiter of this.#limiters) permits.push(await limiter.acquire(options));
    } catch (error) {
      for (let i = permits.length - 1; i >= 0; i--) (permits[i] as Permit).release();
      throw error;
    }
    return new GroupPermit(permits);
  }
}

/**
 * Combines limiters into one that grants a permit only when every one of them has granted one,
 * for example 5 concurrent calls and 10 calls per second for the same API.
 *
 * The limiters are acquired one after another, always in the same global order (the order in which
 * any group first saw them), so groups that share limiters cannot deadlock. The `signal` and
 * `weight` options pass to each limiter. If one acquisition fails or is aborted, the permits
 * already taken are released and the error is rethrown. The combined permit releases every
 * permit, in reverse order.
 *
 * @param limiters The limiters to require together. Duplicates are used once.
 * @returns One limiter; the single limiter itself when only one is given.
 * @throws {TypeError} If an entry has no `acquire` method.
 *
 * @example Concurrency and rate together
 * ```ts
 * import { combineLimiters, RateLimiter, Semaphore } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * const concurrent = new Semaphore(5);
 * const perSecond = new RateLimiter({ limit: 10, intervalMs: 1000 });
 * const api = combineLimiters(concurrent, perSecond);
 * {
 *   using _permit = await api.acquire();
 *   assert.equal(concurrent.available, 4);
 *   assert.equal(perSecond.remaining, 9);
 * }
 * assert.equal(concurrent.available, 5);
 * ```
 */
export function combineLimiters(...limiters: Limiter[]): Limiter {
  for (const [index, limiter] of limiters.entries()) {
    if (typeof (limiter as Partial<Limiter> | undefined)?.acquire !== "function") {
      throw new TypeError(
        invalidMessage("combine limiters", `limiters[${index}]`, "a Limiter", limiter),
      );
    }
  }

  const unique = [...new Set(limiters)];
  const rank = new Map(unique.map((limiter) => [limiter, rankOf(limiter)]));
  unique.sort((a, b) => (rank.get(a) as number) - (rank.get(b) as number));
  if (unique.length === 1) return unique[0] as Limiter;
  return new LimiterGroup(unique);
}
