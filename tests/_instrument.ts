// Instrumentation for invariant tests: peak concurrency per limiter and per task gauge, timers,
// abort listeners on caller signals, unhandled rejections and promises handed out. It runs
// unchanged under `deno test`, `bun test` and `node --test`.

import assert from "node:assert/strict";
import process from "node:process";
import type { Limiter, Permit } from "@antflow/antflow";
import { drainMicrotasks } from "./_helpers.ts";

/** How a limiter's grants are checked: against a capacity, or against a sliding window. */
export type GrantRule =
  | { readonly capacity: () => number }
  | { readonly window: { readonly limit: number; readonly intervalMs: number } };

/** Counts calls that run at once and records every start above its capacity. */
export interface TaskGauge {
  /** Calls running now. */
  readonly current: number;
  /** The maximum number of calls that ran at once. */
  readonly peak: number;
  /** Marks the start of a call. */
  enter(): void;
  /** Marks the end of a call. */
  leave(): void;
}

/** Counters of the timers created while the instrumentation was installed. */
export interface TimerCounts {
  readonly created: number;
  readonly fired: number;
  readonly cleared: number;
  /** Timers neither fired nor cleared. */
  readonly live: number;
}

interface LimiterRecord {
  readonly name: string;
  readonly limiter: Limiter;
  readonly rule: GrantRule;
  held: number;
  peak: number;
  grants: number;
  /** Grant times still inside the window, for a window rule. */
  readonly times: number[];
  readonly restore: () => void;
}

class CountingGauge implements TaskGauge {
  current = 0;
  peak = 0;
  readonly name: string;
  readonly #capacity: (() => number) | undefined;
  readonly #violations: string[];

  constructor(name: string, capacity: (() => number) | undefined, violations: string[]) {
    this.name = name;
    this.#capacity = capacity;
    this.#violations = violations;
  }

  enter(): void {
    this.current++;
    if (this.current > this.peak) this.peak = this.current;
    const limit = this.#capacity?.();
    if (limit !== undefined && this.current > limit) {
      this.#violations.push(`${this.name}: ${this.current} calls ran with a limit of ${limit}`);
    }
  }

  leave(): void {
    this.current--;
    if (this.current < 0) this.#violations.push(`${this.name}: left more often than entered`);
  }
}

type TimerFunction = (
  callback: (...args: unknown[]) => void,
  ms?: number,
  ...args: unknown[]
) => unknown;

/**
 * The instrumentation of one test run. Create it with {@linkcode instrument} after installing a
 * virtual clock, so that its timer wrappers wrap the clock's fakes, and dispose of it before the
 * clock.
 */
export class Instrumentation implements Disposable {
  /** Every start or grant above its limit, as a readable message. */
  readonly violations: string[] = [];
  /** Unhandled rejections seen while installed. */
  readonly unhandled: unknown[] = [];

  readonly #limiters: LimiterRecord[] = [];
  readonly #gauges: CountingGauge[] = [];
  readonly #signals = new Map<AbortSignal, { live: Set<unknown>; restore: () => void }>();
  readonly #pending = new Set<PromiseLike<unknown>>();
  #handedOut = 0;
  readonly #liveTimers = new Set<unknown>();
  #timers = { created: 0, fired: 0, cleared: 0 };
  readonly #restores: (() => void)[] = [];
  #disposed = false;

  constructor() {
    this.#installTimers();
    this.#installUnhandled();
  }

  /** The timers created, fired and cleared so far. */
  get timers(): TimerCounts {
    return { ...this.#timers, live: this.#liveTimers.size };
  }

  /** The number of promises passed to {@linkcode Instrumentation.track}. */
  get handedOut(): number {
    return this.#handedOut;
  }

  /** Tracked promises that have not settled. */
  get pending(): number {
    return this.#pending.size;
  }

  /** Returns the peak of every gauge and limiter, keyed by name. */
  peaks(): Record<string, number> {
    const peaks: Record<string, number> = {};
    for (const gauge of this.#gauges) peaks[gauge.name] = gauge.peak;
    for (const record of this.#limiters) peaks[record.name] = record.peak;
    return peaks;
  }

  /** Returns the units of the limiter `name` that granted permits occupy now. */
  held(name: string): number {
    return this.#limiters.find((record) => record.name === name)?.held ?? 0;
  }

  /** Returns the number of permits of the limiter `name` granted so far. */
  grants(name: string): number {
    return this.#limiters.find((record) => record.name === name)?.grants ?? 0;
  }

  /**
   * Creates a gauge of calls that run at once. With `capacity`, every start that brings the count
   * above `capacity()` is a violation. The capacity is read at each start, so after a limit
   * shrinks only the starts made later are checked against it.
   */
  gauge(name: string, capacity?: () => number): TaskGauge {
    const gauge = new CountingGauge(name, capacity, this.violations);
    this.#gauges.push(gauge);
    return gauge;
  }

  /**
   * Wraps the `acquire` and `tryAcquire` methods of `limiter` in place, until disposal, and checks
   * every grant against `rule` at the moment the permit reaches its caller. Returns `limiter`.
   */
  limiter<L extends Limiter>(name: string, limiter: L, rule: GrantRule): L {
    const target = limiter as L & {
      acquire: Limiter["acquire"];
      tryAcquire?: (weight?: number) => Permit | undefined;
    };
    const ownAcquire = Object.getOwnPropertyDescriptor(target, "acquire");
    const ownTryAcquire = Object.getOwnPropertyDescriptor(target, "tryAcquire");
    const acquire = target.acquire;
    const tryAcquire = target.tryAcquire;
    const record: LimiterRecord = {
      name,
      limiter,
      rule,
      held: 0,
      peak: 0,
      grants: 0,
      times: [],
      restore: () => {
        restoreProperty(target, "acquire", ownAcquire);
        restoreProperty(target, "tryAcquire", ownTryAcquire);
      },
    };
    this.#limiters.push(record);

    target.acquire = (options) => {
      const weight = options?.weight ?? 1;
      return acquire.call(target, options).then((permit) => this.#granted(record, weight, permit));
    };
    if (typeof tryAcquire === "function") {
      target.tryAcquire = (weight = 1) => {
        const permit = tryAcquire.call(target, weight);
        return permit === undefined ? undefined : this.#granted(record, weight, permit);
      };
    }
    return limiter;
  }

  /** Counts the abort listeners on `signal` that are attached now, until disposal. */
  signal(signal: AbortSignal): AbortSignal {
    if (this.#signals.has(signal)) return signal;
    const live = new Set<unknown>();
    const ownAdd = Object.getOwnPropertyDescriptor(signal, "addEventListener");
    const ownRemove = Object.getOwnPropertyDescriptor(signal, "removeEventListener");
    const add = signal.addEventListener;
    const remove = signal.removeEventListener;
    const onAbort = () => {
      // Every listener the library adds uses { once: true }, so dispatch removed them all.
      live.clear();
    };
    signal.addEventListener = ((type: string, listener: unknown, options?: unknown) => {
      if (type === "abort" && listener !== null && !signal.aborted) live.add(listener);
      add.call(signal, type, listener as EventListener, options as AddEventListenerOptions);
    }) as typeof signal.addEventListener;
    signal.removeEventListener = ((type: string, listener: unknown, options?: unknown) => {
      if (type === "abort") live.delete(listener);
      remove.call(signal, type, listener as EventListener, options as EventListenerOptions);
    }) as typeof signal.removeEventListener;
    add.call(signal, "abort", onAbort);
    this.#signals.set(signal, {
      live,
      restore: () => {
        remove.call(signal, "abort", onAbort);
        restoreProperty(signal, "addEventListener", ownAdd);
        restoreProperty(signal, "removeEventListener", ownRemove);
      },
    });
    return signal;
  }

  /** The abort listeners attached now to `signal`, which must have been passed to `signal()`. */
  listeners(signal: AbortSignal): number {
    const entry = this.#signals.get(signal);
    if (entry === undefined) {
      throw new Error("Cannot count listeners as the signal was not passed to signal()");
    }
    return entry.live.size;
  }

  /**
   * Records `promise` as handed out and returns it unchanged. The record attaches handlers, so a
   * tracked promise never counts as an unhandled rejection itself.
   */
  track<P extends PromiseLike<unknown>>(promise: P): P {
    this.#handedOut++;
    this.#pending.add(promise);
    const settle = () => {
      this.#pending.delete(promise);
    };
    promise.then(settle, settle);
    return promise;
  }

  /** Runs `turns` real event-loop turns, so rejection reports and promise callbacks arrive. */
  async quiesce(turns = 3): Promise<void> {
    await drainMicrotasks(turns);
  }

  /**
   * Asserts that nothing exceeded its limit and that everything reads zero: no call running, no
   * permit held or waited for, no live timer, no abort listener, no unhandled rejection and no
   * pending tracked promise. Call {@linkcode Instrumentation.quiesce} first.
   */
  assertClean(): void {
    assert.deepEqual(this.violations, [], "a limit was exceeded");
    for (const gauge of this.#gauges) {
      assert.equal(gauge.current, 0, `${gauge.name}: calls still running`);
    }
    for (const record of this.#limiters) {
      assert.equal(record.held, 0, `${record.name}: permits still held`);
      const state = record.limiter as Partial<{ inUse: number; waiting: number }>;
      if (typeof state.inUse === "number") {
        assert.equal(state.inUse, 0, `${record.name}: units still in use`);
      }
      if (typeof state.waiting === "number") {
        assert.equal(state.waiting, 0, `${record.name}: requests still waiting`);
      }
    }
    assert.equal(this.#liveTimers.size, 0, "timers still pending");
    for (const [signal, entry] of this.#signals) {
      assert.equal(
        entry.live.size,
        0,
        `abort listeners left on a signal (aborted ${signal.aborted})`,
      );
    }
    assert.deepEqual(this.unhandled, [], "unhandled rejections");
    assert.equal(this.#pending.size, 0, `${this.#pending.size} returned promises never settled`);
  }

  /** Restores every patched function and hook. */
  [Symbol.dispose](): void {
    if (this.#disposed) return;
    this.#disposed = true;
    for (const record of this.#limiters) record.restore();
    for (const entry of this.#signals.values()) entry.restore();
    for (const restore of this.#restores.reverse()) restore();
  }

  #granted(record: LimiterRecord, weight: number, permit: Permit): Permit {
    record.grants++;
    record.held += weight;
    if (record.held > record.peak) record.peak = record.held;
    const rule = record.rule;
    if ("capacity" in rule) {
      const capacity = rule.capacity();
      if (record.held > capacity) {
        this.violations.push(
          `${record.name}: ${record.held} units held with a limit of ${capacity}`,
        );
      }
    } else {
      const now = performance.now();
      const times = record.times;
      while (times.length > 0 && (times[0] as number) + rule.window.intervalMs <= now) {
        times.shift();
      }
      for (let unit = 0; unit < weight; unit++) times.push(now);
      if (times.length > rule.window.limit) {
        this.violations.push(
          `${record.name}: ${times.length} units within ${rule.window.intervalMs} ms ` +
            `with a limit of ${rule.window.limit}`,
        );
      }
    }

    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      record.held -= weight;
      permit.release();
    };
    return { release, [Symbol.dispose]: release };
  }

  #installTimers(): void {
    const global = globalThis as unknown as Record<string, unknown>;
    const live = this.#liveTimers;
    const counts = this.#timers;
    const wrapCreate = (name: "setTimeout" | "setInterval") => {
      const original = global[name] as TimerFunction;
      const repeats = name === "setInterval";
      global[name] = (callback: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => {
        counts.created++;
        // Timers never call back synchronously, so `handle` is set before `wrapped` runs.
        const wrapped = (...callArgs: unknown[]) => {
          if (!repeats && live.delete(handle)) counts.fired++;
          if (typeof callback === "function") callback(...callArgs);
        };
        const handle = original(wrapped, ms, ...args);
        live.add(handle);
        return handle;
      };
      this.#restores.push(() => global[name] = original);
    };
    const wrapClear = (name: "clearTimeout" | "clearInterval") => {
      const original = global[name] as (handle: unknown) => void;
      global[name] = (handle: unknown) => {
        if (live.delete(handle)) counts.cleared++;
        original(handle);
      };
      this.#restores.push(() => global[name] = original);
    };
    wrapCreate("setTimeout");
    wrapCreate("setInterval");
    wrapClear("clearTimeout");
    wrapClear("clearInterval");
  }

  // Deno reports unhandled rejections as a cancellable global event, which keeps them from
  // failing the test; Bun and Node.js report them through the process, where a listener does.
  #installUnhandled(): void {
    const unhandled = this.unhandled;
    if ("Deno" in globalThis) {
      const onEvent = (event: Event) => {
        event.preventDefault();
        unhandled.push((event as PromiseRejectionEvent).reason);
      };
      globalThis.addEventListener("unhandledrejection", onEvent);
      this.#restores.push(() => globalThis.removeEventListener("unhandledrejection", onEvent));
      return;
    }
    const onRejection = (reason: unknown) => {
      unhandled.push(reason);
    };
    process.on("unhandledRejection", onRejection);
    this.#restores.push(() => process.off("unhandledRejection", onRejection));
  }
}

/** Installs an {@linkcode Instrumentation}; use it with `using`, after any virtual clock. */
export function instrument(): Instrumentation {
  return new Instrumentation();
}

function restoreProperty(
  target: object,
  key: string,
  descriptor: PropertyDescriptor | undefined,
): void {
  if (descriptor === undefined) delete (target as Record<string, unknown>)[key];
  else Object.defineProperty(target, key, descriptor);
}
