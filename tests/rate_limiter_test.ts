import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type AcquireOptions, RateLimiter } from "@antflow/antflow";
import {
  countListeners,
  drainMicrotasks,
  observe,
  trackUnhandled,
  useVirtualClock,
  type VirtualClock,
} from "./_helpers.ts";

// Out-of-range numbers and the text that error messages show for them.
const outOfRange: [number, string][] = [
  [0, "0"],
  [-1, "-1"],
  [1.5, "1.5"],
  [NaN, "NaN"],
  [Infinity, "Infinity"],
];

// Values of the wrong type and the text that error messages show for them.
const notNumbers: [unknown, string][] = [
  ["3", '"3"'],
  [null, "null"],
  [undefined, "undefined"],
  [{}, "an object"],
  [[1, 2], "an array"],
];

// Resolves with whatever `promise` rejects with, and fails the test if it fulfils.
async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  return await promise.then(
    (value) => assert.fail(`Expected a rejection, got ${String(value)}`),
    (reason: unknown) => reason,
  );
}

// Starts an acquisition that records the virtual time of its grant under `id` in `times`.
function timedAcquire(
  limiter: RateLimiter,
  clock: VirtualClock,
  times: Map<number, number>,
  id: number,
  options?: AcquireOptions,
): Promise<void> {
  return limiter.acquire(options).then(() => {
    times.set(id, clock.now());
  });
}

describe("RateLimiter()", () => {
  it("starts with the whole limit remaining", () => {
    const limiter = new RateLimiter({ limit: 3, intervalMs: 1000 });

    assert.equal(limiter.limit, 3);
    assert.equal(limiter.intervalMs, 1000);
    assert.equal(limiter.remaining, 3);
    assert.equal(limiter.waiting, 0);
  });

  it("accepts a fractional intervalMs", () => {
    const limiter = new RateLimiter({ limit: 1, intervalMs: 0.5 });

    assert.equal(limiter.intervalMs, 0.5);
  });

  it("throws a RangeError for a limit out of range", () => {
    for (const [limit, shown] of outOfRange) {
      assert.throws(() => new RateLimiter({ limit, intervalMs: 1000 }), {
        name: "RangeError",
        message: `Cannot create RateLimiter as 'limit' must be an integer >= 1: received ${shown}`,
      });
    }
  });

  it("throws a TypeError for a limit that is not a number", () => {
    for (const [limit, shown] of notNumbers) {
      assert.throws(() => new RateLimiter({ limit: limit as number, intervalMs: 1000 }), {
        name: "TypeError",
        message: `Cannot create RateLimiter as 'limit' must be an integer >= 1: received ${shown}`,
      });
    }
  });

  it("throws a RangeError for an intervalMs out of range", () => {
    const invalid: [number, string][] = [
      [0, "0"],
      [-1, "-1"],
      [NaN, "NaN"],
      [Infinity, "Infinity"],
      [-Infinity, "-Infinity"],
    ];

    for (const [intervalMs, shown] of invalid) {
      assert.throws(() => new RateLimiter({ limit: 1, intervalMs }), {
        name: "RangeError",
        message:
          `Cannot create RateLimiter as 'intervalMs' must be a finite number > 0: received ${shown}`,
      });
    }
  });

  it("throws a TypeError for an intervalMs that is not a number", () => {
    for (const [intervalMs, shown] of notNumbers) {
      assert.throws(() => new RateLimiter({ limit: 1, intervalMs: intervalMs as number }), {
        name: "TypeError",
        message:
          `Cannot create RateLimiter as 'intervalMs' must be a finite number > 0: received ${shown}`,
      });
    }
  });
});

describe("RateLimiter.acquire()", () => {
  it("grants up to the limit at once", async () => {
    using clock = useVirtualClock();
    const limiter = new RateLimiter({ limit: 3, intervalMs: 1000 });

    await Promise.all([limiter.acquire(), limiter.acquire(), limiter.acquire()]);

    assert.equal(limiter.remaining, 0);
    assert.equal(limiter.waiting, 0);
    assert.equal(clock.timers(), 0);
  });

  it("returns a promise and no timer when free", async () => {
    using clock = useVirtualClock();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1000 });

    const result = limiter.acquire();

    assert.ok(result instanceof Promise);
    assert.equal(clock.timers(), 0);
    await result;
    assert.equal(clock.timers(), 0);
  });

  it("spends weight units", async () => {
    using _clock = useVirtualClock();
    const limiter = new RateLimiter({ limit: 5, intervalMs: 1000 });

    await limiter.acquire({ weight: 3 });

    assert.equal(limiter.remaining, 2);
  });

  it("returns no budget when the permit is released", async () => {
    using _clock = useVirtualClock();
    const limiter = new RateLimiter({ limit: 2, intervalMs: 1000 });
    const permit = await limiter.acquire();

    permit.release();
    permit.release();

    assert.equal(limiter.remaining, 1);
  });

  it("waits until the first grant leaves the window", async () => {
    using clock = useVirtualClock();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1000 });
    const times = new Map<number, number>();
    await limiter.acquire();
    const waiter = observe(timedAcquire(limiter, clock, times, 0));

    await clock.tick(999);

    assert.equal(waiter.state, "pending");
    assert.equal(limiter.waiting, 1);

    await clock.tick(1);

    assert.equal(waiter.state, "fulfilled");
    assert.equal(times.get(0), 1000);
  });

  it("grants waiters in FIFO order", async () => {
    using clock = useVirtualClock();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1000 });
    const times = new Map<number, number>();
    await limiter.acquire();

    const waiters = [0, 1, 2, 3].map((id) => timedAcquire(limiter, clock, times, id));
    await clock.tick(4000);
    await Promise.all(waiters);

    assert.deepEqual([...times.keys()], [0, 1, 2, 3]);
    assert.deepEqual([...times.values()], [1000, 2000, 3000, 4000]);
  });

  it("keeps light waiters behind a heavy head", async () => {
    using clock = useVirtualClock();
    const limiter = new RateLimiter({ limit: 3, intervalMs: 1000 });
    const times = new Map<number, number>();
    await limiter.acquire({ weight: 2 });
    const heavy = observe(timedAcquire(limiter, clock, times, 0, { weight: 2 }));
    const light = observe(timedAcquire(limiter, clock, times, 1, { weight: 1 }));
    await drainMicrotasks();

    assert.equal(limiter.remaining, 1);
    assert.equal(heavy.state, "pending");
    assert.equal(light.state, "pending");

    await clock.tick(1000);

    assert.deepEqual([...times.entries()], [[0, 1000], [1, 1000]]);
  });

  it("rejects a weight above the limit at once", async () => {
    const limiter = new RateLimiter({ limit: 2, intervalMs: 1000 });

    const result = limiter.acquire({ weight: 3 });

    assert.equal(limiter.waiting, 0);
    await assert.rejects(result, {
      name: "RangeError",
      message: "Cannot acquire a permit as 'weight' must be at most the limit 2: received 3",
    });
    assert.equal(limiter.remaining, 2);
  });

  it("rejects a weight out of range", async () => {
    const limiter = new RateLimiter({ limit: 2, intervalMs: 1000 });

    for (const [weight, shown] of outOfRange) {
      await assert.rejects(limiter.acquire({ weight }), {
        name: "RangeError",
        message: `Cannot acquire a permit as 'weight' must be an integer >= 1: received ${shown}`,
      });
    }
    assert.equal(limiter.remaining, 2);
  });

  it("rejects a weight that is not a number", async () => {
    const limiter = new RateLimiter({ limit: 2, intervalMs: 1000 });
    const wrongTypes = notNumbers.filter(([value]) => value !== undefined && value !== null);

    for (const [weight, shown] of wrongTypes) {
      await assert.rejects(limiter.acquire({ weight: weight as number }), {
        name: "TypeError",
        message: `Cannot acquire a permit as 'weight' must be an integer >= 1: received ${shown}`,
      });
    }
    assert.equal(limiter.remaining, 2);
  });

  it("rejects a null weight", async () => {
    const limiter = new RateLimiter({ limit: 2, intervalMs: 1000 });

    const result = limiter.acquire({ weight: null as unknown as number });

    await assert.rejects(result, {
      name: "TypeError",
      message: "Cannot acquire a permit as 'weight' must be an integer >= 1: received null",
    });
    assert.equal(limiter.remaining, 2);
  });

  it("rejects an aborted signal at once", async () => {
    using clock = useVirtualClock();
    using unhandled = trackUnhandled();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1000 });
    const reason = new Error("stop");
    const signal = AbortSignal.abort(reason);
    const listeners = countListeners(signal);

    const result = observe(limiter.acquire({ signal }));

    assert.equal(limiter.waiting, 0);
    assert.equal(limiter.remaining, 1);
    assert.equal(listeners(), 0);
    assert.equal(clock.timers(), 0);
    await Promise.resolve();
    assert.equal(result.state, "rejected");
    assert.equal(result.reason, reason);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("rejects an aborted signal when the budget is spent", async () => {
    using clock = useVirtualClock();
    using unhandled = trackUnhandled();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1000 });
    await limiter.acquire();
    const reason = new Error("stop");
    const signal = AbortSignal.abort(reason);
    const listeners = countListeners(signal);

    const result = limiter.acquire({ signal });

    assert.equal(limiter.waiting, 0);
    assert.equal(listeners(), 0);
    assert.equal(clock.timers(), 0);
    assert.equal(await rejectionOf(result), reason);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("removes an aborted waiter at once", async () => {
    using clock = useVirtualClock();
    using unhandled = trackUnhandled();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1000 });
    await limiter.acquire();
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);
    const reason = new Error("stop");
    const waiter = observe(limiter.acquire({ signal: controller.signal }));

    assert.equal(limiter.waiting, 1);
    assert.equal(listeners(), 1);

    controller.abort(reason);

    assert.equal(limiter.waiting, 0);
    assert.equal(listeners(), 0);
    assert.equal(clock.timers(), 0);
    await drainMicrotasks();
    assert.equal(waiter.state, "rejected");
    assert.equal(waiter.reason, reason);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("spends no budget on an aborted waiter", async () => {
    using clock = useVirtualClock();
    using unhandled = trackUnhandled();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1000 });
    await limiter.acquire();
    const controller = new AbortController();
    const waiter = observe(limiter.acquire({ signal: controller.signal }));

    await clock.tick(500);
    controller.abort(new Error("stop"));
    await clock.tick(500);

    assert.equal(waiter.state, "rejected");
    assert.equal(limiter.remaining, 1);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("grants waiters that fit once the head aborts", async () => {
    using clock = useVirtualClock();
    using unhandled = trackUnhandled();
    const limiter = new RateLimiter({ limit: 2, intervalMs: 1000 });
    const times = new Map<number, number>();
    await limiter.acquire();
    const controller = new AbortController();
    const head = observe(limiter.acquire({ weight: 2, signal: controller.signal }));
    const behind = observe(timedAcquire(limiter, clock, times, 0));

    controller.abort(new Error("stop"));
    await drainMicrotasks();

    assert.equal(head.state, "rejected");
    assert.equal(behind.state, "fulfilled");
    assert.equal(times.get(0), 0);
    assert.equal(limiter.waiting, 0);
    assert.equal(clock.timers(), 0);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("rejects every waiter that shares an aborted signal", async () => {
    using clock = useVirtualClock();
    using unhandled = trackUnhandled();
    const limiter = new RateLimiter({ limit: 2, intervalMs: 1000 });
    await limiter.acquire();
    const controller = new AbortController();
    const reason = new Error("stop");
    const head = observe(limiter.acquire({ weight: 2, signal: controller.signal }));
    const behind = observe(limiter.acquire({ weight: 1, signal: controller.signal }));

    controller.abort(reason);
    await drainMicrotasks();

    assert.equal(head.state, "rejected");
    assert.equal(behind.state, "rejected");
    assert.equal(behind.reason, reason);
    assert.equal(limiter.remaining, 1);
    assert.equal(clock.timers(), 0);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("grants within one interval after many aborts", async () => {
    using clock = useVirtualClock();
    using unhandled = trackUnhandled();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1000 });
    const times = new Map<number, number>();
    await limiter.acquire();
    const controller = new AbortController();
    const aborted = Array.from(
      { length: 10 },
      () => observe(limiter.acquire({ signal: controller.signal })),
    );
    const healthy = observe(timedAcquire(limiter, clock, times, 0));

    await clock.tick(500);
    controller.abort(new Error("stop"));
    await drainMicrotasks();

    assert.ok(aborted.every((waiter) => waiter.state === "rejected"));
    assert.equal(limiter.waiting, 1);

    await clock.tick(500);

    assert.equal(healthy.state, "fulfilled");
    assert.equal(times.get(0), 1000);
    assert.equal(limiter.remaining, 0);
    assert.equal(clock.timers(), 0);

    await clock.tick(1000);

    assert.equal(limiter.remaining, 1);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("removes the abort listener on grant", async () => {
    using clock = useVirtualClock();
    const limiter = new RateLimiter({ limit: 1000, intervalMs: 10 });
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);

    const grants = Array.from(
      { length: 10_000 },
      () => limiter.acquire({ signal: controller.signal }),
    );

    assert.equal(limiter.waiting, 9_000);
    assert.equal(listeners(), 9_000);

    await clock.tick(90);
    await Promise.all(grants);

    assert.equal(listeners(), 0);
    assert.equal(limiter.waiting, 0);
    assert.equal(clock.timers(), 0);
  });

  it("keeps one timer while requests wait", async () => {
    using clock = useVirtualClock();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1000 });
    await limiter.acquire();

    const waiters = [0, 1, 2].map(() => limiter.acquire());

    assert.equal(clock.timers(), 1);
    await clock.tick(3000);
    await Promise.all(waiters);
    assert.equal(clock.timers(), 0);
  });

  it("leaves no timer after the last waiter aborts", async () => {
    using clock = useVirtualClock();
    using unhandled = trackUnhandled();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1000 });
    await limiter.acquire();
    const controllers = [new AbortController(), new AbortController()];
    const waiters = controllers.map((controller) =>
      observe(limiter.acquire({ signal: controller.signal }))
    );

    controllers[1]?.abort(new Error("second"));

    assert.equal(clock.timers(), 1);

    controllers[0]?.abort(new Error("first"));

    assert.equal(clock.timers(), 0);
    await drainMicrotasks();
    assert.deepEqual(waiters.map((waiter) => waiter.state), ["rejected", "rejected"]);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("never grants more than the limit in any window", async () => {
    using clock = useVirtualClock();
    const limiter = new RateLimiter({ limit: 2, intervalMs: 1000 });
    const times = new Map<number, number>();

    await clock.tick(999);
    const grants = Array.from({ length: 10 }, (_, id) => timedAcquire(limiter, clock, times, id));
    await clock.tick(10_000);
    await Promise.all(grants);

    const sorted = [...times.values()].sort((a, b) => a - b);
    assert.equal(sorted.length, 10);
    for (const start of sorted) {
      const inWindow = sorted.filter((time) => time >= start && time < start + 1000);
      assert.ok(inWindow.length <= 2, `${inWindow.length} grants in [${start}, ${start + 1000})`);
    }
  });

  it("grants each pair as soon as the window allows", async () => {
    using clock = useVirtualClock();
    const limiter = new RateLimiter({ limit: 2, intervalMs: 1000 });
    const times = new Map<number, number>();

    await clock.tick(999);
    const grants = Array.from({ length: 10 }, (_, id) => timedAcquire(limiter, clock, times, id));
    await clock.tick(10_000);
    await Promise.all(grants);

    assert.deepEqual(
      [...times.values()],
      [999, 999, 1999, 1999, 2999, 2999, 3999, 3999, 4999, 4999],
    );
    assert.equal(clock.timers(), 0);
  });

  it("grants at once after older grants expire", async () => {
    using clock = useVirtualClock();
    const limiter = new RateLimiter({ limit: 2, intervalMs: 1000 });
    const times = new Map<number, number>();

    await timedAcquire(limiter, clock, times, 0);
    await clock.tick(600);
    await timedAcquire(limiter, clock, times, 1);
    await clock.tick(500);

    assert.equal(limiter.remaining, 1);

    const late = observe(timedAcquire(limiter, clock, times, 2));
    await drainMicrotasks();

    assert.equal(late.state, "fulfilled");
    assert.deepEqual([...times.values()], [0, 600, 1100]);
    assert.equal(clock.timers(), 0);
  });

  it("keeps its rate after heavy use and aborts", async () => {
    using clock = useVirtualClock();
    using unhandled = trackUnhandled();
    const limiter = new RateLimiter({ limit: 2, intervalMs: 1000 });
    const times = new Map<number, number>();
    const controllers = Array.from({ length: 20 }, () => new AbortController());
    const waiters = controllers.map((controller, id) =>
      observe(timedAcquire(limiter, clock, times, id, { signal: controller.signal }))
    );

    await clock.tick(1500);
    for (let id = 4; id < 20; id += 2) controllers[id]?.abort(new Error(`abort ${id}`));
    await clock.tick(3500);

    assert.deepEqual([...times.entries()], [
      [0, 0],
      [1, 0],
      [2, 1000],
      [3, 1000],
      [5, 2000],
      [7, 2000],
      [9, 3000],
      [11, 3000],
      [13, 4000],
      [15, 4000],
      [17, 5000],
      [19, 5000],
    ]);
    assert.equal(waiters.filter((waiter) => waiter.state === "rejected").length, 8);
    assert.equal(limiter.waiting, 0);
    assert.equal(clock.timers(), 0);

    await clock.tick(2000);
    const later = [20, 21, 22, 23].map((id) => timedAcquire(limiter, clock, times, id));
    await clock.tick(1000);
    await Promise.all(later);

    assert.deepEqual([20, 21, 22, 23].map((id) => times.get(id)), [7000, 7000, 8000, 8000]);
    assert.equal(clock.timers(), 0);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });
});
