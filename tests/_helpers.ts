// Shared test helpers: deferred promises, a concurrency gauge, listener counting, a virtual clock
// and an unhandled-rejection tracker. They run unchanged under `deno test` and `bun test`.

import process from "node:process";
import FakeTimers from "@sinonjs/fake-timers";

/** A promise with its resolve and reject functions. */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (reason: unknown) => void;
}

/** Creates a {@linkcode Deferred}. */
export function deferred<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets every queued microtask and promise callback run (a few macrotask turns). */
export async function flush(turns = 5): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => setImmediateLike(resolve));
}

function setImmediateLike(callback: () => void): void {
  // A MessageChannel turn is a macrotask that virtual clocks do not fake.
  const channel = new MessageChannel();
  channel.port1.onmessage = () => {
    channel.port1.close();
    callback();
  };
  channel.port2.postMessage(null);
}

/** Counts how many calls run at once through {@linkcode Gauge.wrap}. */
export class Gauge {
  current = 0;
  peak = 0;

  /** Marks the start of a call. */
  enter(): void {
    this.current++;
    if (this.current > this.peak) this.peak = this.current;
  }

  /** Marks the end of a call. */
  leave(): void {
    this.current--;
  }

  /** Wraps an async function so every call is counted while it runs. */
  wrap<A extends unknown[], R>(fn: (...args: A) => Promise<R> | R): (...args: A) => Promise<R> {
    return async (...args: A) => {
      this.enter();
      try {
        return await fn(...args);
      } finally {
        this.leave();
      }
    };
  }
}

/** Wraps a signal's add/removeEventListener to count "abort" listeners currently attached. */
export function countListeners(signal: AbortSignal): () => number {
  let count = 0;
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  const live = new Set<unknown>();
  signal.addEventListener = ((type: string, listener: unknown, options?: unknown) => {
    if (type === "abort" && !live.has(listener)) {
      live.add(listener);
      count++;
    }
    add(type, listener as EventListener, options as AddEventListenerOptions);
  }) as typeof signal.addEventListener;
  signal.removeEventListener = ((type: string, listener: unknown, options?: unknown) => {
    if (type === "abort" && live.delete(listener)) count--;
    remove(type, listener as EventListener, options as EventListenerOptions);
  }) as typeof signal.removeEventListener;
  // Listeners added with { once: true } leave when the signal fires.
  add("abort", () => {
    count = 0;
    live.clear();
  });
  return () => count;
}

/** A virtual clock that fakes timers, `Date` and `performance.now()` until disposed. */
export interface VirtualClock extends Disposable {
  /** Advances time by `ms`, running due timers and the promise callbacks they cause. */
  tick(ms: number): Promise<void>;
  /** Runs every pending timer, including ones that timers create, up to a safety limit. */
  runAll(): Promise<void>;
  /** The number of timers pending now. */
  timers(): number;
  /** The virtual time in milliseconds. */
  now(): number;
}

/** Installs a {@linkcode VirtualClock}; use it with `using`. */
export function useVirtualClock(): VirtualClock {
  const clock = FakeTimers.withGlobal(globalThis).install({
    toFake: ["setTimeout", "clearTimeout", "setInterval", "clearInterval", "Date", "performance"],
    shouldClearNativeTimers: true,
  });
  return {
    async tick(ms: number): Promise<void> {
      await clock.tickAsync(ms);
    },
    async runAll(): Promise<void> {
      await clock.runAllAsync();
    },
    timers(): number {
      return clock.countTimers();
    },
    now(): number {
      return clock.now;
    },
    [Symbol.dispose](): void {
      clock.uninstall();
    },
  };
}

/** Records unhandled promise rejections until disposed; use it with `using`. */
export interface UnhandledTracker extends Disposable {
  /** The rejections seen so far. */
  readonly reasons: unknown[];
}

/** Starts recording unhandled rejections, in the way both Deno and Bun report them. */
export function trackUnhandled(): UnhandledTracker {
  const reasons: unknown[] = [];
  const onRejection = (reason: unknown) => {
    reasons.push(reason);
  };
  process.on("unhandledRejection", onRejection);
  return {
    reasons,
    [Symbol.dispose](): void {
      process.off("unhandledRejection", onRejection);
    },
  };
}

/** An async generator over `count` numbers that records how the consumer closed it. */
export function probeSource(count: number): {
  source: AsyncGenerator<number, void, undefined>;
  pulled: () => number;
  closed: () => boolean;
} {
  let pulled = 0;
  let closed = false;
  async function* generate(): AsyncGenerator<number, void, undefined> {
    try {
      for (let i = 0; i < count; i++) {
        pulled++;
        yield i;
      }
    } finally {
      closed = true;
    }
  }
  return { source: generate(), pulled: () => pulled, closed: () => closed };
}

/** The state of a promise as seen by {@linkcode observe}. */
export interface Observed<T> {
  state: "pending" | "fulfilled" | "rejected";
  value: T | undefined;
  reason: unknown;
}

/** Records how `promise` settles, so a test can read its state without awaiting it. */
export function observe<T>(promise: PromiseLike<T>): Observed<T> {
  const observed: Observed<T> = { state: "pending", value: undefined, reason: undefined };
  promise.then(
    (value) => {
      observed.state = "fulfilled";
      observed.value = value;
    },
    (reason) => {
      observed.state = "rejected";
      observed.reason = reason;
    },
  );
  return observed;
}

/** Tasks that record their start and settle only when the test settles them, keyed by input. */
export class HeldTasks<I> {
  /** The inputs whose tasks have started, in start order. */
  readonly started: I[] = [];
  readonly #signals = new Map<I, AbortSignal>();
  readonly #gates = new Map<I, Deferred<unknown>>();

  /** The task function to submit or map; it settles when the test calls release or fail. */
  readonly task = (input: I, context: { readonly signal: AbortSignal }): Promise<unknown> => {
    this.started.push(input);
    this.#signals.set(input, context.signal);
    const gate = deferred<unknown>();
    this.#gates.set(input, gate);
    return gate.promise;
  };

  /** Resolves the task of `input` with `value`. */
  release(input: I, value: unknown = input): void {
    this.#gate(input).resolve(value);
  }

  /** Rejects the task of `input` with `error`. */
  fail(input: I, error: unknown): void {
    this.#gate(input).reject(error);
  }

  /** Returns the signal that the task of `input` received. */
  signal(input: I): AbortSignal {
    const signal = this.#signals.get(input);
    if (signal === undefined) throw new Error(`Task ${String(input)} has not started`);
    return signal;
  }

  #gate(input: I): Deferred<unknown> {
    const gate = this.#gates.get(input);
    if (gate === undefined) throw new Error(`Task ${String(input)} has not started`);
    return gate;
  }
}

/** Returns a promise that rejects with `signal.reason` once `signal` aborts, as a good task does. */
export function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise<never>((_resolve, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}

/**
 * Creates an async iterator over `count` numbers that counts `next` and `return` calls, so a test
 * can check that a consumer closed it exactly once.
 */
export function countingSource(count: number): {
  source: AsyncIterableIterator<number>;
  pulled: () => number;
  returns: () => number;
} {
  let pulled = 0;
  let returns = 0;
  const source: AsyncIterableIterator<number> = {
    next(): Promise<IteratorResult<number>> {
      if (returns > 0 || pulled >= count) return Promise.resolve({ done: true, value: undefined });
      return Promise.resolve({ done: false, value: pulled++ });
    },
    return(): Promise<IteratorResult<number>> {
      returns++;
      return Promise.resolve({ done: true, value: undefined });
    },
    [Symbol.asyncIterator](): AsyncIterableIterator<number> {
      return source;
    },
  };
  return { source, pulled: () => pulled, returns: () => returns };
}

/**
 * Flushes macrotask turns until `condition` holds; throws when it still fails after `maxTurns`,
 * so a test that waits for a state fails instead of hanging.
 */
export async function flushUntil(condition: () => boolean, maxTurns = 1000): Promise<void> {
  for (let turn = 0; turn < maxTurns; turn++) {
    if (condition()) return;
    await flush(1);
  }
  if (!condition()) throw new Error(`Condition still false after ${maxTurns} turns`);
}

/** The items inside a pipeline stage: waiting, parked at a limit, running or outbound. */
export function itemsInStage(
  stage: { queued: number; parked: number; running: number; outbound: number },
): number {
  return stage.queued + stage.parked + stage.running + stage.outbound;
}

/**
 * Waits `turns` event-loop turns through `setImmediate`, which the virtual clock leaves real, so
 * every microtask queued before the call has run. Use it for long promise chains: under Deno a
 * {@linkcode flush} turn arrives after about five microtasks.
 */
export async function drainMicrotasks(turns = 1): Promise<void> {
  for (let turn = 0; turn < turns; turn++) {
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
}
