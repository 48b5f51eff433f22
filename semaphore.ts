/**
 * The counting semaphore that every limit in antflow is built on, and the {@linkcode Limiter}
 * interface that the executor and pipeline stages accept.
 *
 * @module
 */

import { checkInteger, invalidMessage } from "./_validate.ts";

/**
 * A permit handed out by a {@linkcode Limiter}. Releasing it gives its capacity back; a second
 * release does nothing. Permits are `Disposable`, so `using` releases them at the end of a block.
 *
 * @example Release with `using`
 * ```ts
 * import { Semaphore } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * const semaphore = new Semaphore(1);
 * {
 *   using _permit = await semaphore.acquire();
 *   assert.equal(semaphore.available, 0);
 * }
 * assert.equal(semaphore.available, 1);
 * ```
 */
export interface Permit extends Disposable {
  /** Returns the permit's capacity to its limiter. Calling it again has no effect. */
  release(): void;
}

/** Options for {@linkcode Limiter.acquire}. */
export interface AcquireOptions {
  /**
   * Cancels the wait. An already-aborted signal rejects at once with `signal.reason` without
   * queueing; an abort while waiting removes the request from the queue and rejects with
   * `signal.reason`. A permit that was already granted is not affected.
   */
  signal?: AbortSignal | undefined;
  /**
   * How many units of capacity the permit takes.
   *
   * @default {1}
   */
  weight?: number | undefined;
  /**
   * The request's place in the queue: lower values are served first, equal values in arrival
   * order. Limiters that keep a plain FIFO queue ignore it.
   *
   * @default {0}
   */
  priority?: number | undefined;
}

/**
 * Anything that hands out permits: a {@linkcode Semaphore}, a `RateLimiter`, a group made by
 * `combineLimiters`, or a limiter of your own (one shared through Redis, for example).
 *
 * @example A limiter of your own
 * ```ts
 * import type { Limiter, Permit } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * let granted = 0;
 * const counting: Limiter = {
 *   acquire(): Promise<Permit> {
 *     granted++;
 *     const release = () => {};
 *     return Promise.resolve({ release, [Symbol.dispose]: release });
 *   },
 * };
 * (await counting.acquire()).release();
 * assert.equal(granted, 1);
 * ```
 */
export interface Limiter {
  /** Waits for a permit and resolves with it. Rejects with `signal.reason` when aborted. */
  acquire(options?: AcquireOptions): Promise<Permit>;
}

interface Waiter {
  readonly weight: number;
  readonly priority: number;
  readonly resolve: (permit: Permit) => void;
  readonly reject: (reason: unknown) => void;
  readonly signal: AbortSignal | undefined;
  previous: Waiter | undefined;
  next: Waiter | undefined;
}

// Set in a static block of Semaphore, so permits can reach its private state without a closure.
let releaseWeight: (semaphore: Semaphore, weight: number) => void;

class SemaphorePermit implements Permit {
  #semaphore: Semaphore | undefined;
  readonly #weight: number;

  constructor(semaphore: Semaphore, weight: number) {
    this.#semaphore = semaphore;
    this.#weight = weight;
  }

  release(): void {
    const semaphore = this.#semaphore;
    if (semaphore === undefined) return;
    this.#semaphore = undefined;
    releaseWeight(semaphore, this.#weight);
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

/**
 * A counting semaphore with FIFO waiters, weights, abortable waits and run-time resizing.
 *
 * Waiters are served in order of `priority` (lower first), then strictly in arrival order: a
 * waiter that asks for more than is free blocks the ones behind it, so a heavy request is never
 * starved by light ones. The fast path (a permit
 * is free and nobody waits) starts no timer and allocates one promise and one permit object.
 *
 * @example Limit how many calls run at once
 * ```ts
 * import { Semaphore } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * const semaphore = new Semaphore(2);
 * let running = 0;
 * let peak = 0;
 * await Promise.all([1, 2, 3, 4, 5].map((n) =>
 *   semaphore.run(async () => {
 *     running++;
 *     peak = Math.max(peak, running);
 *     await Promise.resolve();
 *     running--;
 *     return n;
 *   })
 * ));
 * assert.equal(peak, 2);
 * ```
 */
export class Semaphore implements Limiter {
  #capacity: number;
  #inUse = 0;
  #waiting = 0;
  #head: Waiter | undefined;
  #tail: Waiter | undefined;
  readonly #signalGroups = new Map<
    AbortSignal,
    { waiters: Set<Waiter>; onAbort: () => void }
  >();

  static {
    releaseWeight = (semaphore, weight) => {
      semaphore.#inUse -= weight;
      semaphore.#grantWaiters();
    };
  }

  /**
   * Creates a semaphore with `permits` units of capacity.
   *
   * @param permits The capacity, an integer >= 1.
   * @throws {TypeError} If `permits` is not a number.
   * @throws {RangeError} If `permits` is not an integer >= 1.
   */
  constructor(permits: number) {
    this.#capacity = checkInteger("create Semaphore", "permits", permits, 1);
  }

  /** The number of units of capacity, as last set by the constructor or {@linkcode resize}. */
  get capacity(): number {
    return this.#capacity;
  }

  /** The units free now; 0 while more are held than the capacity allows after a shrink. */
  get available(): number {
    return Math.max(0, this.#capacity - this.#inUse);
  }

  /** The units held by permits that are not yet released. */
  get inUse(): number {
    return this.#inUse;
  }

  /** The number of `acquire` calls waiting for a permit. */
  get waiting(): number {
    return this.#waiting;
  }

  /**
   * Waits for a permit of `weight` units and resolves with it, in FIFO order.
   *
   * @param options The weight and an optional signal that cancels the wait.
   * @returns A promise of the permit.
   * @throws {RangeError} (as a rejection) If the weight is not an integer from 1 to the capacity.
   *
   * @example Give up waiting
   * ```ts
   * import { Semaphore } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * const semaphore = new Semaphore(1);
   * const held = await semaphore.acquire();
   * const controller = new AbortController();
   * const waiting = semaphore.acquire({ signal: controller.signal });
   * controller.abort(new Error("no longer needed"));
   * await assert.rejects(waiting, { message: "no longer needed" });
   * held.release();
   * assert.equal(semaphore.available, 1);
   * ```
   */
  acquire(options?: AcquireOptions): Promise<Permit> {
    if (options === undefined && this.#head === undefined && this.#inUse < this.#capacity) {
      this.#inUse++;
      return Promise.resolve(new SemaphorePermit(this, 1));
    }

    const weight = options?.weight === undefined ? 1 : options.weight;
    const priority = options?.priority === undefined ? 0 : options.priority;
    const signal = options?.signal;
    try {
      if (weight !== 1) this.#checkWeight("acquire a permit", weight);
      if (typeof priority !== "number" || Number.isNaN(priority)) {
        throw new TypeError(invalidMessage("acquire a permit", "priority", "a number", priority));
      }
    } catch (error) {
      return Promise.reject(error);
    }
    if (signal?.aborted) return Promise.reject(signal.reason);

    if (this.#head === undefined && this.#inUse + weight <= this.#capacity) {
      this.#inUse += weight;
      return Promise.resolve(new SemaphorePermit(this, weight));
    }

    return new Promise<Permit>((resolve, reject) => {
      const waiter: Waiter = {
        weight,
        priority,
        resolve,
        reject,
        signal,
        previous: undefined,
        next: undefined,
      };
      if (signal !== undefined) {
        this.#watch(waiter, signal);
      }
      this.#insert(waiter);
    });
  }

  /**
   * Takes a permit of `weight` units if one is free now and nobody waits before it.
   *
   * @param weight The units to take.
   * @returns The permit, or `undefined` without waiting.
   * @throws {RangeError} If the weight is not an integer from 1 to the capacity.
   *
   * @example Skip work when busy
   * ```ts
   * import { Semaphore } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * const semaphore = new Semaphore(1);
   * const first = semaphore.tryAcquire();
   * assert.notEqual(first, undefined);
   * assert.equal(semaphore.tryAcquire(), undefined);
   * first?.release();
   * ```
   */
  tryAcquire(weight = 1): Permit | undefined {
    if (weight !== 1) this.#checkWeight("acquire a permit", weight);
    if (this.#head !== undefined || this.#inUse + weight > this.#capacity) return undefined;
    this.#inUse += weight;
    return new SemaphorePermit(this, weight);
  }

  /**
   * Runs `fn` while holding one permit, and releases the permit when `fn` settles or throws.
   *
   * @typeParam T The result of `fn`.
   * @param fn The function to run.
   * @param options The weight and an optional signal that cancels the wait for the permit.
   * @returns A promise of `fn`'s result.
   *
   * @example Guard a call
   * ```ts
   * import { Semaphore } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * const semaphore = new Semaphore(3);
   * const value = await semaphore.run(() => semaphore.available);
   * assert.equal(value, 2);
   * assert.equal(semaphore.available, 3);
   * ```
   */
  async run<T>(fn: () => T | PromiseLike<T>, options?: AcquireOptions): Promise<T> {
    const permit = await this.acquire(options);
    try {
      return await fn();
    } finally {
      permit.release();
    }
  }

  /**
   * Changes the capacity. A larger capacity grants waiting requests at once; a smaller one grants
   * nothing new until the units in use fall below it, and permits already held stay valid. Waiters
   * whose weight exceeds the new capacity could never be served, so they reject with a
   * `RangeError`.
   *
   * @param permits The new capacity, an integer >= 1.
   * @throws {TypeError} If `permits` is not a number.
   * @throws {RangeError} If `permits` is not an integer >= 1.
   *
   * @example Grow at run time
   * ```ts
   * import { Semaphore } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * const semaphore = new Semaphore(1);
   * await semaphore.acquire();
   * const second = semaphore.acquire();
   * semaphore.resize(2);
   * (await second).release();
   * assert.equal(semaphore.capacity, 2);
   * ```
   */
  resize(permits: number): void {
    this.#capacity = checkInteger("resize Semaphore", "permits", permits, 1);

    let waiter = this.#head;
    while (waiter !== undefined) {
      const next = waiter.next;
      if (waiter.weight > permits) {
        this.#unlink(waiter);
        waiter.reject(new RangeError(this.#weightMessage("acquire a permit", waiter.weight)));
      }
      waiter = next;
    }

    this.#grantWaiters();
  }

  /**
   * Rejects every waiting `acquire` call with `reason`, as an abort would. Permits already granted
   * stay valid.
   *
   * @param reason The rejection reason.
   * @returns The number of waiters rejected.
   *
   * @example Turn away everyone in the queue
   * ```ts
   * import { Semaphore } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * const semaphore = new Semaphore(1);
   * const held = await semaphore.acquire();
   * const waiting = semaphore.acquire();
   * assert.equal(semaphore.rejectWaiting(new Error("closing")), 1);
   * await assert.rejects(waiting, { message: "closing" });
   * held.release();
   * ```
   */
  rejectWaiting(reason: unknown): number {
    let rejected = 0;
    for (let waiter = this.#head; waiter !== undefined; waiter = this.#head) {
      this.#unlink(waiter);
      waiter.reject(reason);
      rejected++;
    }
    return rejected;
  }

  #checkWeight(action: string, weight: number): void {
    checkInteger(action, "weight", weight, 1);
    if (weight > this.#capacity) throw new RangeError(this.#weightMessage(action, weight));
  }

  #weightMessage(action: string, weight: number): string {
    return invalidMessage(action, "weight", `at most the capacity ${this.#capacity}`, weight);
  }

  #grantWaiters(): void {
    let waiter = this.#head;
    while (waiter !== undefined && this.#inUse + waiter.weight <= this.#capacity) {
      this.#unlink(waiter);
      // One abort can reach several waiters that share a signal; a later one may not have run
      // its own abort listener yet, and must not get a permit.
      if (waiter.signal?.aborted) {
        waiter.reject(waiter.signal.reason);
        waiter = this.#head;
        continue;
      }
      this.#inUse += waiter.weight;
      waiter.resolve(new SemaphorePermit(this, waiter.weight));
      waiter = this.#head;
    }
  }

  // Places the waiter after every waiter whose priority is lower or equal, searching from the tail
  // because most requests share one priority.
  #insert(waiter: Waiter): void {
    let before = this.#tail;
    while (before !== undefined && before.priority > waiter.priority) before = before.previous;
    waiter.previous = before;
    waiter.next = before === undefined ? this.#head : before.next;
    if (waiter.next === undefined) this.#tail = waiter;
    else waiter.next.previous = waiter;
    if (before === undefined) this.#head = waiter;
    else before.next = waiter;
    this.#waiting++;
  }

  // Waiters that share a signal share one abort listener: runtimes dispatch an abort to many
  // listeners of one signal in quadratic time, and each waiter would otherwise add one.
  #watch(waiter: Waiter, signal: AbortSignal): void {
    let group = this.#signalGroups.get(signal);
    if (group === undefined) {
      const waiters = new Set<Waiter>();
      const onAbort = () => {
        this.#signalGroups.delete(signal);
        this.#abortWaiters(waiters);
      };
      group = { waiters, onAbort };
      this.#signalGroups.set(signal, group);
      signal.addEventListener("abort", onAbort, { once: true });
    }
    group.waiters.add(waiter);
  }

  #unwatch(waiter: Waiter): void {
    const signal = waiter.signal;
    if (signal === undefined) return;
    const group = this.#signalGroups.get(signal);
    if (group === undefined || !group.waiters.delete(waiter) || group.waiters.size > 0) return;
    this.#signalGroups.delete(signal);
    signal.removeEventListener("abort", group.onAbort);
  }

  #abortWaiters(waiters: Set<Waiter>): void {
    for (const waiter of waiters) {
      this.#unlink(waiter);
      waiter.reject(waiter.signal?.reason);
    }
    waiters.clear();

    // An aborted waiter may have blocked smaller requests behind it that fit now.
    this.#grantWaiters();
  }

  #unlink(waiter: Waiter): void {
    if (waiter.previous === undefined) this.#head = waiter.next;
    else waiter.previous.next = waiter.next;
    if (waiter.next === undefined) this.#tail = waiter.previous;
    else waiter.next.previous = waiter.previous;
    waiter.previous = undefined;
    waiter.next = undefined;
    this.#waiting--;
    this.#unwatch(waiter);
  }
}
