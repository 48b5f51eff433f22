/**
 * Limiters whose state lives in Redis, so that many processes share one limit: a
 * {@linkcode RedisSemaphore} (at most N permits held at once, across every process that uses the
 * same key) and a {@linkcode RedisRateLimiter} (at most N grants in any sliding window). Both
 * implement `Limiter`, so the executor, pipeline stages and `combineLimiters` accept them like the
 * in-memory ones.
 *
 * This module imports no Redis client. Pass a connected client of your own as `client`: anything
 * with `eval` and `evalsha` methods shaped like those of the npm package `ioredis`
 * ({@linkcode RedisScriptClient}). Every change to the shared state is one Lua script that runs
 * atomically in Redis, and every timestamp comes from the Redis server's `TIME`, so the clocks of
 * the processes do not need to agree. The scripts call `TIME` before writing, which Redis allows
 * from version 5 on.
 *
 * ```ts ignore
 * import { AsyncExecutor } from "@antflow/antflow";
 * import { RedisSemaphore } from "@antflow/antflow/redis";
 * import { Redis } from "ioredis";
 *
 * declare function callApi(id: number, signal: AbortSignal): Promise<string>;
 *
 * const client = new Redis({ host: "127.0.0.1", port: 6379 });
 * // Every worker process builds the same limiter: 3 calls at once across all of them.
 * const api = new RedisSemaphore({ client, key: "quota:api", permits: 3, leaseMs: 10_000 });
 *
 * await using executor = new AsyncExecutor({ maxWorkers: 16 });
 * const replies = await executor.map((id: number, { signal }) => callApi(id, signal), [1, 2, 3], {
 *   semaphore: api,
 * });
 * console.log(replies.length);
 * await client.quit();
 * ```
 *
 * @module
 */

import type { AcquireOptions, Limiter, Permit } from "./semaphore.ts";
import { checkFunction, checkInteger, checkSignal, invalidMessage } from "./_validate.ts";
import {
  rateAcquire,
  readPair,
  removeMember,
  runScript,
  semaphoreAcquire,
  semaphoreRenew,
} from "./_redis_scripts.ts";

export type { AcquireOptions, Limiter, Permit } from "./semaphore.ts";

/**
 * The part of a Redis client that the limiters use: `EVAL` and `EVALSHA`, with the arguments in
 * the order Redis takes them (script or SHA-1 digest, the number of keys, the keys, then the other
 * arguments). An `ioredis` client fits as it is. A client with another API fits through a small
 * object that forwards these two calls.
 *
 * A rejection from either method counts as a failed Redis call, except one whose message starts
 * with `NOSCRIPT`, which makes the limiter send the script itself with `eval`.
 *
 * @example Wrap a client that only sends raw commands
 * ```ts ignore
 * import type { RedisScriptClient } from "@antflow/antflow/redis";
 *
 * declare const raw: { sendCommand(args: string[]): Promise<unknown> };
 * const client: RedisScriptClient = {
 *   eval: (script, numKeys, ...args) => raw.sendCommand(["EVAL", script, `${numKeys}`, ...args]),
 *   evalsha: (sha1, numKeys, ...args) => raw.sendCommand(["EVALSHA", sha1, `${numKeys}`, ...args]),
 * };
 * ```
 */
export interface RedisScriptClient {
  /** Runs `script` with `EVAL` and resolves with its reply. */
  eval(script: string, numKeys: number, ...args: string[]): Promise<unknown>;
  /** Runs the cached script with digest `sha1` with `EVALSHA` and resolves with its reply. */
  evalsha(sha1: string, numKeys: number, ...args: string[]): Promise<unknown>;
}

/**
 * The error of a Redis-backed limiter that cannot do its job because of Redis. It reports a Redis
 * call that failed while a request waited (the `cause` is the client's error), a waiting request
 * whose place in the queue is gone (Redis lost its data, for example in a restart), or a lost
 * lease.
 *
 * Waiting requests reject with it, and permits that lose their lease abort their `signal` with it.
 * Work that already holds a permit is never aborted by the limiter. Retrying the acquisition is
 * safe, because a failed request removes what it left in Redis. Only when that removal fails as
 * well does something stay behind: a queue entry or semaphore lease that expires within
 * `leaseMs`, or a rate-limiter grant that counts against the budget for `intervalMs`.
 *
 * @example Retry tasks whose permit could not be acquired
 * ```ts
 * import type { RetryOptions } from "@antflow/antflow";
 * import { RedisLimiterError } from "@antflow/antflow/redis";
 * import assert from "node:assert/strict";
 *
 * const retry: RetryOptions = {
 *   attempts: 5,
 *   delayMs: 200,
 *   retryIf: (error) => error instanceof RedisLimiterError,
 * };
 * const error = new RedisLimiterError("Redis is restarting", "quota:api");
 * assert.equal(retry.retryIf?.(error, 1), true);
 * assert.equal(error.key, "quota:api");
 * ```
 */
export class RedisLimiterError extends Error {
  /** The limiter's key. */
  readonly key: string;

  /**
   * Creates the error.
   *
   * @param message What failed.
   * @param key The limiter's key.
   * @param options The `cause`, when a Redis call failed.
   */
  constructor(message: string, key: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RedisLimiterError";
    this.key = key;
  }
}

/**
 * A permit of a {@linkcode RedisSemaphore}: a lease in Redis that the permit renews while it is
 * held. Releasing it deletes the lease and stops the renewals; a second release does nothing.
 *
 * @example Stop work whose lease was lost
 * ```ts ignore
 * import { RedisSemaphore } from "@antflow/antflow/redis";
 * import { Redis } from "ioredis";
 *
 * declare function runExport(signal: AbortSignal): Promise<void>;
 *
 * const client = new Redis({ host: "127.0.0.1", port: 6379 });
 * const exportSlots = new RedisSemaphore({ client, key: "quota:export", permits: 1 });
 * using permit = await exportSlots.acquire();
 * // Here running over the limit is worse than stopping, so a lost lease aborts the export.
 * await runExport(permit.signal);
 * ```
 */
export interface RedisPermit extends Permit {
  /**
   * Aborts with a {@linkcode RedisLimiterError} when the lease is lost: Redis no longer lists it
   * (Redis lost its data, or no renewal reached Redis within `leaseMs`), or every renewal failed
   * until the lease ran out. From then on other processes may be granted its units. Releasing the
   * permit does not abort it.
   */
  readonly signal: AbortSignal;
}

/**
 * A permit of a {@linkcode RedisRateLimiter}. The budget it took is spent, so releasing it does
 * nothing.
 *
 * @example Log when each grant happened
 * ```ts ignore
 * import { RedisRateLimiter } from "@antflow/antflow/redis";
 * import { Redis } from "ioredis";
 *
 * const client = new Redis({ host: "127.0.0.1", port: 6379 });
 * const limiter = new RedisRateLimiter({ client, key: "rate:api", limit: 10, intervalMs: 1000 });
 * const permit = await limiter.acquire();
 * console.log(new Date(permit.grantedAt).toISOString());
 * ```
 */
export interface RedisRatePermit extends Permit {
  /** The Redis server's time of the grant, in milliseconds since the Unix epoch. */
  readonly grantedAt: number;
}

/** Options for {@linkcode RedisSemaphore}. */
export interface RedisSemaphoreOptions {
  /** The connected Redis client that every call goes through. */
  client: RedisScriptClient;
  /**
   * The name that every process sharing this limit uses. The state lives in the Redis keys
   * `<key>:holders`, `<key>:queue`, `<key>:deadlines` and `<key>:tickets`. On a Redis Cluster,
   * put a hash tag in `key` (such as `{api}`) so that they share one slot.
   */
  key: string;
  /**
   * The units that may be held at once across every process, an integer >= 1. Every process that
   * uses `key` must pass the same value, because each acquisition checks against its own.
   */
  permits: number;
  /**
   * How long a lease lasts without renewal, in milliseconds, an integer >= 1. A holder renews its
   * lease every `leaseMs / 3`, so the units of a process that died come back at most `leaseMs`
   * after its last renewal. A waiting request that has not polled for `leaseMs` loses its place
   * in the queue.
   *
   * @default {10_000}
   */
  leaseMs?: number | undefined;
  /**
   * The maximum pause between two polls of a waiting request, in milliseconds, an integer >= 1.
   * The first pause is an eighth of it, and each pause doubles while the request waits, but no
   * pause exceeds `leaseMs / 3`. A release in the same process polls its oldest local waiters at
   * once.
   *
   * @default {50}
   */
  pollMs?: number | undefined;
  /**
   * Called with the error when a held permit loses its lease, just after its `signal` aborts. The
   * limiter itself aborts no work, so this is where an application that runs tasks through an
   * executor learns of it.
   */
  onLeaseLost?: ((error: RedisLimiterError) => void) | undefined;
}

/** Options for {@linkcode RedisRateLimiter}. */
export interface RedisRateLimiterOptions {
  /** The connected Redis client that every call goes through. */
  client: RedisScriptClient;
  /**
   * The name that every process sharing this limit uses. The state lives in the Redis keys
   * `<key>:grants`, `<key>:queue`, `<key>:deadlines` and `<key>:tickets`. On a Redis Cluster,
   * put a hash tag in `key` (such as `{api}`) so that they share one slot.
   */
  key: string;
  /**
   * The maximum units granted in any window of `intervalMs`, an integer >= 1. Every process that
   * uses `key` must pass the same `limit` and `intervalMs`.
   */
  limit: number;
  /** The window length in milliseconds, a finite number > 0. */
  intervalMs: number;
  /**
   * How long a waiting request keeps its place in the queue without polling, in milliseconds, an
   * integer >= 1. A process that dies while it waits stops holding up the queue after this long.
   *
   * @default {10_000}
   */
  leaseMs?: number | undefined;
  /**
   * The maximum pause between two polls of a waiting request, in milliseconds, an integer >= 1.
   * A waiting request sleeps until Redis expects enough budget for it, but never longer than this
   * or `leaseMs / 3`.
   *
   * @default {50}
   */
  pollMs?: number | undefined;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

// Renewal timers are unreferenced, because a referenced timer would keep a process that forgot to
// release a permit from exiting.
function unrefTimer(timer: unknown): void {
  if (typeof timer === "object" && timer !== null && "unref" in timer) {
    (timer as { unref(): void }).unref();
  } else if (typeof timer === "number") {
    (globalThis as { Deno?: { unrefTimer?(id: number): void } }).Deno?.unrefTimer?.(timer);
  }
}

function checkClient(action: string, client: unknown): RedisScriptClient {
  const candidate = client as Partial<RedisScriptClient> | null | undefined;
  if (typeof candidate?.eval !== "function" || typeof candidate.evalsha !== "function") {
    throw new TypeError(
      invalidMessage(action, "client", "an object with eval and evalsha methods", client),
    );
  }
  return client as RedisScriptClient;
}

function checkKey(action: string, key: unknown): string {
  const rule = "a non-empty string";
  if (typeof key !== "string") throw new TypeError(invalidMessage(action, "key", rule, key));
  if (key === "") throw new RangeError(invalidMessage(action, "key", rule, key));
  return key;
}

function checkPositive(action: string, option: string, value: unknown): number {
  const rule = "a finite number > 0";
  if (typeof value !== "number") throw new TypeError(invalidMessage(action, option, rule, value));
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(invalidMessage(action, option, rule, value));
  }
  return value;
}

function checkWeight(weight: unknown, max: number, maxName: string): number {
  checkInteger("acquire a permit", "weight", weight, 1);
  if ((weight as number) > max) {
    throw new RangeError(
      invalidMessage("acquire a permit", "weight", `at most the ${maxName} ${max}`, weight),
    );
  }
  return weight as number;
}

function redisKeys(key: string, granted: string): string[] {
  return [`${key}:${granted}`, `${key}:queue`, `${key}:deadlines`, `${key}:tickets`];
}

// Waiting: the queue lives in Redis, and each waiting request polls it until it is granted.

/** One poll's outcome: granted (with the script's value), still queued, or no longer queued. */
type PollReply =
  | { readonly state: "granted"; readonly value: number }
  | { readonly state: "queued"; readonly waitMs: number | undefined }
  | { readonly state: "dropped" };

/** The Redis calls and permits of one limiter kind, as the queue uses them. */
interface QueueDriver<P> {
  readonly key: string;
  readonly leaseMs: number;
  readonly maxPollMs: number;
  poll(member: string, weight: number, first: boolean): Promise<PollReply>;
  /** Removes a member from the queue and the grants; failures are ignored. */
  remove(member: string): void;
  toPermit(member: string, weight: number, value: number, sentAt: number): P;
}

class RemoteWaiter<P> {
  readonly weight: number;
  readonly #queue: RemoteQueue<P>;
  readonly #member: string;
  readonly #signal: AbortSignal | undefined;
  readonly #resolve: (permit: P) => void;
  readonly #reject: (reason: unknown) => void;
  #onAbort: (() => void) | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #delayMs: number;
  #settled = false;
  // Set by a wake during a poll: the poll may have reached Redis before the release that caused
  // the wake, so a "queued" reply is followed by another poll at once.
  #pollAgain = false;

  constructor(
    queue: RemoteQueue<P>,
    weight: number,
    signal: AbortSignal | undefined,
    resolve: (permit: P) => void,
    reject: (reason: unknown) => void,
  ) {
    this.#queue = queue;
    this.weight = weight;
    this.#member = `${crypto.randomUUID()}:${weight}`;
    this.#signal = signal;
    this.#resolve = resolve;
    this.#reject = reject;
    this.#delayMs = queue.firstDelayMs;
    if (signal !== undefined) {
      this.#onAbort = () => this.#abort();
      signal.addEventListener("abort", this.#onAbort, { once: true });
    }
  }

  start(): void {
    void this.#poll(true);
  }

  /** Polls now, or right after the poll that is running, and restarts the backoff. */
  wake(): void {
    if (this.#settled) return;
    this.#delayMs = this.#queue.firstDelayMs;
    if (this.#timer === undefined) {
      this.#pollAgain = true;
      return;
    }
    clearTimeout(this.#timer);
    this.#timer = undefined;
    void this.#poll(false);
  }

  async #poll(first: boolean): Promise<void> {
    const driver = this.#queue.driver;
    const sentAt = performance.now();
    let reply: PollReply;
    try {
      reply = await driver.poll(this.#member, this.weight, first);
    } catch (error) {
      if (this.#settled) return;
      // The call may have reached Redis before it failed, so whatever it left there goes.
      driver.remove(this.#member);
      this.#fail(
        new RedisLimiterError(
          `Failed to acquire a permit for Redis key "${driver.key}" as a Redis call failed: ${
            messageOf(error)
          }`,
          driver.key,
          { cause: error },
        ),
      );
      return;
    }

    if (this.#settled) {
      // Aborted while this poll ran: give back what it may have obtained.
      if (reply.state !== "dropped") driver.remove(this.#member);
      return;
    }
    if (reply.state === "granted") {
      this.#finish();
      this.#resolve(driver.toPermit(this.#member, this.weight, reply.value, sentAt));
      return;
    }
    if (reply.state === "dropped") {
      this.#fail(
        new RedisLimiterError(
          `Failed to acquire a permit for Redis key "${driver.key}" as its place in the Redis ` +
            `queue is gone, because Redis lost its data (in a restart, for example) or this ` +
            `process did not poll within leaseMs (${driver.leaseMs} ms)`,
          driver.key,
        ),
      );
      return;
    }

    if (this.#pollAgain) {
      this.#pollAgain = false;
      void this.#poll(false);
      return;
    }

    let delayMs: number;
    if (reply.waitMs === undefined) {
      // Exponential backoff with jitter, so waiters in many processes spread their polls.
      delayMs = this.#delayMs * (0.5 + Math.random() / 2);
      this.#delayMs = Math.min(this.#delayMs * 2, driver.maxPollMs);
    } else {
      delayMs = Math.min(Math.max(reply.waitMs, 1), driver.maxPollMs);
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.#poll(false);
    }, delayMs);
  }

  #abort(): void {
    this.#onAbort = undefined;
    this.#finish();
    this.#queue.driver.remove(this.#member);
    this.#reject(this.#signal?.reason);
    // The aborted request may have been blocking local waiters behind it.
    this.#queue.wake(this.weight);
  }

  #fail(error: RedisLimiterError): void {
    this.#finish();
    this.#reject(error);
  }

  #finish(): void {
    this.#settled = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#queue.waiters.delete(this);
    if (this.#onAbort !== undefined) {
      this.#signal?.removeEventListener("abort", this.#onAbort);
      this.#onAbort = undefined;
    }
  }
}

class RemoteQueue<P> {
  readonly driver: QueueDriver<P>;
  readonly firstDelayMs: number;
  /** The waiting requests of this process, oldest first. */
  readonly waiters: Set<RemoteWaiter<P>> = new Set();

  constructor(driver: QueueDriver<P>) {
    this.driver = driver;
    this.firstDelayMs = Math.max(1, driver.maxPollMs / 8);
  }

  wait(weight: number, signal: AbortSignal | undefined): Promise<P> {
    return new Promise<P>((resolve, reject) => {
      const waiter = new RemoteWaiter(this, weight, signal, resolve, reject);
      this.waiters.add(waiter);
      waiter.start();
    });
  }

  /** Polls the oldest local waiters at once, until they ask for `weight` units together. */
  wake(weight: number): void {
    let woken = 0;
    for (const waiter of this.waiters) {
      if (woken >= weight) break;
      waiter.wake();
      woken += waiter.weight;
    }
  }
}

class LeasedPermit implements RedisPermit {
  readonly #driver: SemaphoreDriver;
  readonly #member: string;
  readonly #weight: number;
  readonly #controller = new AbortController();
  readonly #timer: ReturnType<typeof setInterval>;
  #leaseEndsAt: number;
  #released = false;
  #renewing = false;

  constructor(driver: SemaphoreDriver, member: string, weight: number, sentAt: number) {
    this.#driver = driver;
    this.#member = member;
    this.#weight = weight;
    // The lease started no earlier than the request was sent, so this end is never too late.
    this.#leaseEndsAt = sentAt + driver.leaseMs;
    this.#timer = setInterval(() => void this.#renew(), driver.leaseMs / 3);
    unrefTimer(this.#timer);
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    clearInterval(this.#timer);
    this.#driver.remove(this.#member);
    this.#driver.queue.wake(this.#weight);
  }

  [Symbol.dispose](): void {
    this.release();
  }

  async #renew(): Promise<void> {
    if (this.#renewing || this.#released || this.#controller.signal.aborted) return;
    this.#renewing = true;
    const sentAt = performance.now();
    try {
      const held = await this.#driver.renew(this.#member);
      if (this.#released) return;
      if (held) {
        this.#leaseEndsAt = sentAt + this.#driver.leaseMs;
      } else {
        this.#lose(
          new RedisLimiterError(
            `Lost the lease of a permit for Redis key "${this.#driver.key}" as Redis no longer ` +
              `lists it, because Redis lost its data (in a restart, for example) or no renewal ` +
              `reached Redis within leaseMs (${this.#driver.leaseMs} ms)`,
            this.#driver.key,
          ),
        );
      }
    } catch (error) {
      // A failed renewal is tried again at the next interval while the lease may still be valid.
      if (this.#released || performance.now() < this.#leaseEndsAt) return;
      this.#lose(
        new RedisLimiterError(
          `Lost the lease of a permit for Redis key "${this.#driver.key}" as renewing it failed ` +
            `until the lease ran out: ${messageOf(error)}`,
          this.#driver.key,
          { cause: error },
        ),
      );
    } finally {
      this.#renewing = false;
    }
  }

  #lose(error: RedisLimiterError): void {
    clearInterval(this.#timer);
    this.#controller.abort(error);
    this.#driver.onLeaseLost?.(error);
  }
}

class SemaphoreDriver implements QueueDriver<LeasedPermit> {
  readonly key: string;
  readonly leaseMs: number;
  readonly maxPollMs: number;
  readonly onLeaseLost: ((error: RedisLimiterError) => void) | undefined;
  readonly queue: RemoteQueue<LeasedPermit>;
  readonly #client: RedisScriptClient;
  readonly #keys: string[];
  readonly #permits: string;
  readonly #leaseUs: string;

  constructor(
    client: RedisScriptClient,
    key: string,
    permits: number,
    leaseMs: number,
    pollMs: number,
    onLeaseLost: ((error: RedisLimiterError) => void) | undefined,
  ) {
    this.#client = client;
    this.key = key;
    this.#keys = redisKeys(key, "holders");
    this.#permits = String(permits);
    this.leaseMs = leaseMs;
    this.#leaseUs = String(leaseMs * 1000);
    this.maxPollMs = Math.min(pollMs, leaseMs / 3);
    this.onLeaseLost = onLeaseLost;
    this.queue = new RemoteQueue(this);
  }

  async poll(member: string, weight: number, first: boolean): Promise<PollReply> {
    const args = [member, String(weight), this.#permits, this.#leaseUs, first ? "1" : "0"];
    const [status, value] = readPair(
      await runScript(this.#client, semaphoreAcquire, this.#keys, args),
    );
    if (status === 1) return { state: "granted", value };
    if (status === 0) return { state: "queued", waitMs: undefined };
    return { state: "dropped" };
  }

  async renew(member: string): Promise<boolean> {
    const reply = await runScript(this.#client, semaphoreRenew, this.#keys, [
      member,
      this.#leaseUs,
    ]);
    return Number(reply) > 0;
  }

  remove(member: string): void {
    // A removal that fails leaves an entry that expires within leaseMs, because no renewal
    // extends it.
    runScript(this.#client, removeMember, this.#keys, [member]).catch(() => {});
  }

  toPermit(member: string, weight: number, _value: number, sentAt: number): LeasedPermit {
    return new LeasedPermit(this, member, weight, sentAt);
  }
}

/**
 * A counting semaphore shared by every process that uses the same Redis `key`: at most `permits`
 * units are held at once across all of them.
 *
 * A permit is a lease in Redis with an expiry. The holder renews it every `leaseMs / 3` until it
 * releases the permit, so the units of a process that crashed or hung come back at most `leaseMs`
 * after its last renewal. Each acquisition, renewal and release is one atomic Lua script.
 *
 * Fairness: a request that cannot be granted at once joins a queue in Redis, in the order in which
 * its first call reached Redis. Calls that one process makes in a row through one connection
 * reach Redis in that order. A request is granted only when the units held, the weights of every
 * request queued before it and its own weight fit in `permits` together, so no later request
 * overtakes it while it is queued, whatever their weights. A request leaves the queue when it is
 * granted or aborted, when a Redis call for it fails, when its process has not polled for
 * `leaseMs`, or when Redis loses its data; the last three reject it with a
 * {@linkcode RedisLimiterError}, and a retry joins the back of the queue. The `priority` option is
 * ignored.
 *
 * Waiting is polling: a waiting request calls Redis at growing intervals up to `pollMs`, and a
 * release in the same process polls the local waiters at once. So a unit released by another
 * process stays unused until the first waiter's next poll, up to `pollMs` later.
 *
 * Failures: a held permit is never revoked by the limiter. When its lease is lost, its `signal`
 * aborts, `onLeaseLost` is called, renewals stop and the work goes on. Until that work ends,
 * other processes may be granted the same units. This is the one way the limit can be exceeded
 * when every process passes the same `permits`: after Redis lost its data, or after a holder did
 * not renew for `leaseMs` because its process was paused or could not reach Redis. A release
 * that fails leaves the lease to expire within `leaseMs`.
 *
 * @example Share a limit of 3 between worker processes
 * ```ts ignore
 * import { AsyncExecutor } from "@antflow/antflow";
 * import { RedisLimiterError, RedisSemaphore } from "@antflow/antflow/redis";
 * import { Redis } from "ioredis";
 *
 * const client = new Redis({ host: "127.0.0.1", port: 6379 });
 * const api = new RedisSemaphore({ client, key: "quota:api", permits: 3, leaseMs: 10_000 });
 * await using executor = new AsyncExecutor({ maxWorkers: 8 });
 * const lengths = await executor.map((word: string) => word.length, ["ant", "flow"], {
 *   semaphore: api,
 *   retry: { attempts: 3, delayMs: 500, retryIf: (error) => error instanceof RedisLimiterError },
 * });
 * console.log(lengths);
 * await client.quit();
 * ```
 */
export class RedisSemaphore implements Limiter {
  readonly #driver: SemaphoreDriver;
  readonly #permits: number;

  /**
   * Creates a limiter. Nothing is sent to Redis until the first acquisition.
   *
   * @param options The client, the key, the permits and the lease length.
   * @throws {TypeError} If `client` lacks `eval` or `evalsha`, `key` is not a string, a number
   * option is not a number, or `onLeaseLost` is not a function.
   * @throws {RangeError} If `key` is empty or a number option is out of range.
   */
  constructor(options: RedisSemaphoreOptions) {
    const action = "create RedisSemaphore";
    const client = checkClient(action, options?.client);
    const key = checkKey(action, options.key);
    this.#permits = checkInteger(action, "permits", options.permits, 1);
    const leaseMs = checkInteger(action, "leaseMs", options.leaseMs ?? 10_000, 1);
    const pollMs = checkInteger(action, "pollMs", options.pollMs ?? 50, 1);
    if (options.onLeaseLost !== undefined) {
      checkFunction(action, "onLeaseLost", options.onLeaseLost);
    }
    this.#driver = new SemaphoreDriver(
      client,
      key,
      this.#permits,
      leaseMs,
      pollMs,
      options.onLeaseLost,
    );
  }

  /** The name shared by every process that uses this limit. */
  get key(): string {
    return this.#driver.key;
  }

  /** The units that may be held at once across every process. */
  get permits(): number {
    return this.#permits;
  }

  /** How long a lease lasts without renewal, in milliseconds. */
  get leaseMs(): number {
    return this.#driver.leaseMs;
  }

  /**
   * Waits for a permit of `weight` units and resolves with it, in the queue order described on
   * {@linkcode RedisSemaphore}.
   *
   * @param options The weight and an optional signal that cancels the wait. An already-aborted
   * signal rejects with `signal.reason` without calling Redis. An abort while waiting rejects at
   * once with `signal.reason` and removes the request from the queue in Redis.
   * @returns A promise of the permit.
   * @throws {RangeError} (as a rejection) If the weight is not an integer from 1 to `permits`.
   * @throws {RedisLimiterError} (as a rejection) If a Redis call fails while the request waits,
   * or its place in the queue is gone.
   *
   * @example Hold a permit for one block
   * ```ts ignore
   * import { RedisSemaphore } from "@antflow/antflow/redis";
   * import { Redis } from "ioredis";
   *
   * const client = new Redis({ host: "127.0.0.1", port: 6379 });
   * const exportSlots = new RedisSemaphore({ client, key: "quota:export", permits: 2 });
   * {
   *   using _permit = await exportSlots.acquire({ weight: 2, signal: AbortSignal.timeout(60_000) });
   *   // Both units are held here, in every process; leaving the block releases them.
   * }
   * await client.quit();
   * ```
   */
  acquire(options?: AcquireOptions): Promise<RedisPermit> {
    const weight = options?.weight === undefined ? 1 : options.weight;
    const signal = options?.signal;
    try {
      checkSignal("acquire a permit", signal);
      checkWeight(weight, this.#permits, "capacity");
    } catch (error) {
      return Promise.reject(error);
    }
    if (signal?.aborted) return Promise.reject(signal.reason);

    return this.#driver.queue.wait(weight, signal);
  }
}

class RateDriver implements QueueDriver<RedisRatePermit> {
  readonly key: string;
  readonly leaseMs: number;
  readonly maxPollMs: number;
  readonly queue: RemoteQueue<RedisRatePermit>;
  readonly #client: RedisScriptClient;
  readonly #keys: string[];
  readonly #limit: string;
  readonly #intervalUs: string;
  readonly #leaseUs: string;

  constructor(
    client: RedisScriptClient,
    key: string,
    limit: number,
    intervalMs: number,
    leaseMs: number,
    pollMs: number,
  ) {
    this.#client = client;
    this.key = key;
    this.#keys = redisKeys(key, "grants");
    this.#limit = String(limit);
    this.#intervalUs = String(Math.max(1, Math.round(intervalMs * 1000)));
    this.leaseMs = leaseMs;
    this.#leaseUs = String(leaseMs * 1000);
    this.maxPollMs = Math.min(pollMs, leaseMs / 3);
    this.queue = new RemoteQueue(this);
  }

  async poll(member: string, weight: number, first: boolean): Promise<PollReply> {
    const args = [
      member,
      String(weight),
      this.#limit,
      this.#intervalUs,
      this.#leaseUs,
      first ? "1" : "0",
    ];
    const [status, value] = readPair(await runScript(this.#client, rateAcquire, this.#keys, args));
    if (status === 1) return { state: "granted", value };
    if (status === 0) return { state: "queued", waitMs: value / 1000 };
    return { state: "dropped" };
  }

  remove(member: string): void {
    // A removal that fails leaves a queue entry that expires within leaseMs.
    runScript(this.#client, removeMember, this.#keys, [member]).catch(() => {});
  }

  toPermit(_member: string, _weight: number, value: number): RedisRatePermit {
    const release = (): void => {};
    return Object.freeze({ grantedAt: value / 1000, release, [Symbol.dispose]: release });
  }
}

/**
 * Grants at most `limit` units in any sliding window of `intervalMs`, counted across every process
 * that uses the same Redis `key`.
 *
 * Each grant is recorded in Redis with the Redis server's time and counts against the budget until
 * `intervalMs` later, so the limit holds for every span of that length, whichever processes asked.
 * Releasing a permit does not return budget. A request that is aborted spends nothing once its
 * removal reaches Redis. Checking the budget and recording the grant is one atomic Lua script,
 * whose cost grows with the number of grants inside the window.
 *
 * Waiting requests queue in Redis as those of {@linkcode RedisSemaphore} do: in the order in which
 * their first call reached Redis, and a request is granted only when the budget left covers it and
 * every request queued before it, so no later request overtakes it while it is queued. A waiting
 * request sleeps until Redis expects budget for it, but at most `pollMs`, then polls again. When a
 * Redis call fails while a request waits, or its place in the queue is gone, the request rejects
 * with a {@linkcode RedisLimiterError}. When Redis loses its data, the grants it recorded are
 * forgotten, so the window starts empty and up to `limit` more units may be granted inside one
 * window. The `priority` option is ignored.
 *
 * @example At most 10 calls per second across all workers
 * ```ts ignore
 * import { AsyncExecutor } from "@antflow/antflow";
 * import { RedisRateLimiter } from "@antflow/antflow/redis";
 * import { Redis } from "ioredis";
 *
 * const client = new Redis({ host: "127.0.0.1", port: 6379 });
 * const perSecond = new RedisRateLimiter({ client, key: "rate:api", limit: 10, intervalMs: 1000 });
 * await using executor = new AsyncExecutor({ maxWorkers: 4 });
 * const ids = await executor.map((id: number) => id, [1, 2, 3], { semaphore: perSecond });
 * console.log(ids);
 * await client.quit();
 * ```
 */
export class RedisRateLimiter implements Limiter {
  readonly #driver: RateDriver;
  readonly #limit: number;
  readonly #intervalMs: number;

  /**
   * Creates a limiter. Nothing is sent to Redis until the first acquisition.
   *
   * @param options The client, the key, the limit and the window length.
   * @throws {TypeError} If `client` lacks `eval` or `evalsha`, `key` is not a string, or a number
   * option is not a number.
   * @throws {RangeError} If `key` is empty or a number option is out of range.
   */
  constructor(options: RedisRateLimiterOptions) {
    const action = "create RedisRateLimiter";
    const client = checkClient(action, options?.client);
    const key = checkKey(action, options.key);
    this.#limit = checkInteger(action, "limit", options.limit, 1);
    this.#intervalMs = checkPositive(action, "intervalMs", options.intervalMs);
    const leaseMs = checkInteger(action, "leaseMs", options.leaseMs ?? 10_000, 1);
    const pollMs = checkInteger(action, "pollMs", options.pollMs ?? 50, 1);
    this.#driver = new RateDriver(client, key, this.#limit, this.#intervalMs, leaseMs, pollMs);
  }

  /** The name shared by every process that uses this limit. */
  get key(): string {
    return this.#driver.key;
  }

  /** The maximum units granted in any window. */
  get limit(): number {
    return this.#limit;
  }

  /** The window length in milliseconds. */
  get intervalMs(): number {
    return this.#intervalMs;
  }

  /**
   * Waits until `weight` units fit in the window, spends them and resolves with a permit whose
   * release does nothing.
   *
   * @param options The weight and an optional signal that cancels the wait. An already-aborted
   * signal rejects with `signal.reason` without calling Redis. An abort while waiting rejects at
   * once with `signal.reason`, removes the request from the queue and spends nothing.
   * @returns A promise of the permit, which carries the Redis time of the grant.
   * @throws {RangeError} (as a rejection) If the weight is not an integer from 1 to the limit.
   * @throws {RedisLimiterError} (as a rejection) If a Redis call fails while the request waits,
   * or its place in the queue is gone.
   *
   * @example Spend several units at once
   * ```ts ignore
   * import { RedisRateLimiter } from "@antflow/antflow/redis";
   * import { Redis } from "ioredis";
   *
   * const client = new Redis({ host: "127.0.0.1", port: 6379 });
   * const tokens = new RedisRateLimiter({ client, key: "rate:tokens", limit: 1000, intervalMs: 60_000 });
   * await tokens.acquire({ weight: 250 });
   * await client.quit();
   * ```
   */
  acquire(options?: AcquireOptions): Promise<RedisRatePermit> {
    const weight = options?.weight === undefined ? 1 : options.weight;
    const signal = options?.signal;
    try {
      checkSignal("acquire a permit", signal);
      checkWeight(weight, this.#limit, "limit");
    } catch (error) {
      return Promise.reject(error);
    }
    if (signal?.aborted) return Promise.reject(signal.reason);

    return this.#driver.queue.wait(weight, signal);
  }
}
