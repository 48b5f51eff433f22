import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import { type Permit, Semaphore } from "@antflow/antflow";
import {
  countListeners,
  deferred,
  drainMicrotasks,
  Gauge,
  observe,
  trackUnhandled,
  useVirtualClock,
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

// Acquires one permit and releases it, so chained waiters in order tests run one after another.
function recordGrant(semaphore: Semaphore, order: number[], id: number, weight = 1): Promise<void> {
  return semaphore.acquire({ weight }).then((permit) => {
    order.push(id);
    permit.release();
  });
}

describe("Semaphore()", () => {
  it("starts with every permit free", () => {
    const semaphore = new Semaphore(3);

    assert.equal(semaphore.capacity, 3);
    assert.equal(semaphore.available, 3);
    assert.equal(semaphore.inUse, 0);
    assert.equal(semaphore.waiting, 0);
  });

  it("throws a RangeError for permits out of range", () => {
    for (const [permits, shown] of outOfRange) {
      assert.throws(() => new Semaphore(permits), {
        name: "RangeError",
        message: `Cannot create Semaphore as 'permits' must be an integer >= 1: received ${shown}`,
      });
    }
  });

  it("throws a TypeError for permits that are not a number", () => {
    for (const [permits, shown] of notNumbers) {
      assert.throws(() => new Semaphore(permits as number), {
        name: "TypeError",
        message: `Cannot create Semaphore as 'permits' must be an integer >= 1: received ${shown}`,
      });
    }
  });
});

describe("Semaphore.acquire()", () => {
  it("grants a free permit", async () => {
    const semaphore = new Semaphore(2);

    await semaphore.acquire();

    assert.equal(semaphore.inUse, 1);
    assert.equal(semaphore.available, 1);
    assert.equal(semaphore.waiting, 0);
  });

  it("returns a promise and no timer when free", async () => {
    using clock = useVirtualClock();
    const semaphore = new Semaphore(1);

    const result = semaphore.acquire();

    assert.ok(result instanceof Promise);
    assert.equal(clock.timers(), 0);
    (await result).release();
    assert.equal(clock.timers(), 0);
  });

  it("adds no abort listener when a permit is free", async () => {
    const semaphore = new Semaphore(1);
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);

    const permit = await semaphore.acquire({ signal: controller.signal });

    assert.equal(listeners(), 0);
    permit.release();
  });

  it("holds weight units for one permit", async () => {
    const semaphore = new Semaphore(5);

    const permit = await semaphore.acquire({ weight: 3 });

    assert.equal(semaphore.inUse, 3);
    assert.equal(semaphore.available, 2);
    permit.release();
    assert.equal(semaphore.inUse, 0);
  });

  it("grants waiters in FIFO order", async () => {
    const semaphore = new Semaphore(1);
    const held = await semaphore.acquire();
    const order: number[] = [];
    const waiters = [0, 1, 2, 3, 4].map((id) => recordGrant(semaphore, order, id));

    held.release();
    await Promise.all(waiters);

    assert.deepEqual(order, [0, 1, 2, 3, 4]);
  });

  it("keeps light waiters behind a heavy head", async () => {
    const semaphore = new Semaphore(3);
    const held = await semaphore.acquire({ weight: 2 });
    const order: number[] = [];
    const heavy = observe(recordGrant(semaphore, order, 0, 2));
    const light = observe(recordGrant(semaphore, order, 1, 1));
    await drainMicrotasks();

    assert.equal(semaphore.available, 1);
    assert.equal(heavy.state, "pending");
    assert.equal(light.state, "pending");

    held.release();
    await drainMicrotasks();

    assert.deepEqual(order, [0, 1]);
    assert.equal(semaphore.available, 3);
  });

  it("rejects a weight above the capacity at once", async () => {
    const semaphore = new Semaphore(2);

    const result = semaphore.acquire({ weight: 3 });

    assert.equal(semaphore.waiting, 0);
    await assert.rejects(result, {
      name: "RangeError",
      message: "Cannot acquire a permit as 'weight' must be at most the capacity 2: received 3",
    });
  });

  it("rejects a weight out of range", async () => {
    const semaphore = new Semaphore(2);

    for (const [weight, shown] of outOfRange) {
      await assert.rejects(semaphore.acquire({ weight }), {
        name: "RangeError",
        message: `Cannot acquire a permit as 'weight' must be an integer >= 1: received ${shown}`,
      });
    }
    assert.equal(semaphore.inUse, 0);
  });

  it("rejects a weight that is not a number", async () => {
    const semaphore = new Semaphore(2);
    const wrongTypes = notNumbers.filter(([value]) => value !== undefined && value !== null);

    for (const [weight, shown] of wrongTypes) {
      await assert.rejects(semaphore.acquire({ weight: weight as number }), {
        name: "TypeError",
        message: `Cannot acquire a permit as 'weight' must be an integer >= 1: received ${shown}`,
      });
    }
    assert.equal(semaphore.inUse, 0);
  });

  it("rejects a null weight", async () => {
    const semaphore = new Semaphore(2);

    const result = semaphore.acquire({ weight: null as unknown as number });

    await assert.rejects(result, {
      name: "TypeError",
      message: "Cannot acquire a permit as 'weight' must be an integer >= 1: received null",
    });
    assert.equal(semaphore.inUse, 0);
  });

  it("rejects an aborted signal at once", async () => {
    using unhandled = trackUnhandled();
    const semaphore = new Semaphore(1);
    const reason = new Error("stop");
    const signal = AbortSignal.abort(reason);
    const listeners = countListeners(signal);

    const result = observe(semaphore.acquire({ signal }));

    assert.equal(semaphore.waiting, 0);
    assert.equal(semaphore.available, 1);
    assert.equal(listeners(), 0);
    await Promise.resolve();
    assert.equal(result.state, "rejected");
    assert.equal(result.reason, reason);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("rejects an aborted signal without queueing when busy", async () => {
    using unhandled = trackUnhandled();
    const semaphore = new Semaphore(1);
    const held = await semaphore.acquire();
    const reason = new Error("stop");
    const signal = AbortSignal.abort(reason);
    const listeners = countListeners(signal);

    const result = semaphore.acquire({ signal });

    assert.equal(semaphore.waiting, 0);
    assert.equal(semaphore.available, 0);
    assert.equal(listeners(), 0);
    assert.equal(await rejectionOf(result), reason);
    held.release();
    assert.equal(semaphore.available, 1);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("removes an aborted waiter at once", async () => {
    using unhandled = trackUnhandled();
    const semaphore = new Semaphore(1);
    const held = await semaphore.acquire();
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);
    const waiter = observe(semaphore.acquire({ signal: controller.signal }));
    const reason = new Error("stop");

    assert.equal(semaphore.waiting, 1);
    assert.equal(listeners(), 1);

    controller.abort(reason);

    assert.equal(semaphore.waiting, 0);
    assert.equal(listeners(), 0);
    await drainMicrotasks();
    assert.equal(waiter.state, "rejected");
    assert.equal(waiter.reason, reason);

    held.release();

    assert.equal(semaphore.available, 1);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("grants waiters that fit once the head aborts", async () => {
    using unhandled = trackUnhandled();
    const semaphore = new Semaphore(2);
    const held = await semaphore.acquire();
    const controller = new AbortController();
    const head = observe(semaphore.acquire({ weight: 2, signal: controller.signal }));
    const behind = observe(semaphore.acquire({ weight: 1 }));

    controller.abort(new Error("stop"));
    await drainMicrotasks();

    assert.equal(head.state, "rejected");
    assert.equal(behind.state, "fulfilled");
    assert.equal(semaphore.inUse, 2);
    assert.equal(semaphore.waiting, 0);

    held.release();
    behind.value?.release();

    assert.equal(semaphore.available, 2);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("rejects every waiter that shares an aborted signal", async () => {
    using unhandled = trackUnhandled();
    const semaphore = new Semaphore(2);
    const held = await semaphore.acquire();
    const controller = new AbortController();
    const reason = new Error("stop");
    const head = observe(semaphore.acquire({ weight: 2, signal: controller.signal }));
    const behind = observe(semaphore.acquire({ weight: 1, signal: controller.signal }));

    controller.abort(reason);
    await drainMicrotasks();

    assert.equal(head.state, "rejected");
    assert.equal(behind.state, "rejected");
    assert.equal(behind.reason, reason);
    assert.equal(semaphore.inUse, 1);

    behind.value?.release();
    held.release();
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("removes the abort listener on grant", async () => {
    const semaphore = new Semaphore(4);
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);

    const tasks = Array.from(
      { length: 10_000 },
      () => semaphore.run(() => Promise.resolve(), { signal: controller.signal }),
    );

    assert.equal(semaphore.waiting, 9_996);
    // Waiters that share a signal share one listener.
    assert.equal(listeners(), 1);

    await Promise.all(tasks);

    assert.equal(listeners(), 0);
    assert.equal(semaphore.available, 4);
  });

  it("keeps a grant made before a same-turn abort", async () => {
    using unhandled = trackUnhandled();
    const semaphore = new Semaphore(1);
    const held = await semaphore.acquire();
    const controller = new AbortController();
    const waiter = observe(semaphore.acquire({ signal: controller.signal }));

    held.release();
    controller.abort(new Error("stop"));
    await drainMicrotasks();

    assert.equal(waiter.state, "fulfilled");
    assert.equal(semaphore.available, 0);

    waiter.value?.release();

    assert.equal(semaphore.available, 1);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("loses no permit to an abort before a grant", async () => {
    using unhandled = trackUnhandled();
    const semaphore = new Semaphore(1);
    const held = await semaphore.acquire();
    const controller = new AbortController();
    const reason = new Error("stop");
    const waiter = observe(semaphore.acquire({ signal: controller.signal }));

    controller.abort(reason);
    held.release();
    await drainMicrotasks();

    assert.equal(waiter.state, "rejected");
    assert.equal(waiter.reason, reason);
    assert.equal(semaphore.available, 1);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("keeps granting after a release and two aborts in one turn", async () => {
    using unhandled = trackUnhandled();
    type Step = "release" | "abortFirst" | "abortSecond";
    const orders: Step[][] = [
      ["release", "abortFirst", "abortSecond"],
      ["release", "abortSecond", "abortFirst"],
      ["abortFirst", "release", "abortSecond"],
      ["abortFirst", "abortSecond", "release"],
      ["abortSecond", "release", "abortFirst"],
      ["abortSecond", "abortFirst", "release"],
    ];

    for (const steps of orders) {
      const semaphore = new Semaphore(1);
      const held = await semaphore.acquire();
      const first = new AbortController();
      const second = new AbortController();
      const firstWaiter = observe(semaphore.acquire({ signal: first.signal }));
      const secondWaiter = observe(semaphore.acquire({ signal: second.signal }));

      for (const step of steps) {
        if (step === "release") held.release();
        else if (step === "abortFirst") first.abort(new Error("first"));
        else second.abort(new Error("second"));
      }
      await drainMicrotasks();
      firstWaiter.value?.release();
      secondWaiter.value?.release();

      assert.equal(semaphore.available, 1, steps.join(", "));
      assert.equal(semaphore.waiting, 0, steps.join(", "));
      const next = await semaphore.acquire();
      assert.equal(semaphore.inUse, 1, steps.join(", "));
      next.release();
    }
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("keeps granting after two waiters abort in one turn", async () => {
    using unhandled = trackUnhandled();

    for (const abortFirstWaiterFirst of [true, false]) {
      const semaphore = new Semaphore(1);
      const held = await semaphore.acquire();
      const first = new AbortController();
      const second = new AbortController();
      const firstWaiter = observe(semaphore.acquire({ signal: first.signal }));
      const secondWaiter = observe(semaphore.acquire({ signal: second.signal }));

      if (abortFirstWaiterFirst) {
        first.abort(new Error("first"));
        second.abort(new Error("second"));
      } else {
        second.abort(new Error("second"));
        first.abort(new Error("first"));
      }
      const later = observe(semaphore.acquire());
      held.release();
      await drainMicrotasks();

      assert.equal(firstWaiter.state, "rejected");
      assert.equal(secondWaiter.state, "rejected");
      assert.equal(later.state, "fulfilled");
      assert.equal(semaphore.waiting, 0);
      later.value?.release();
      assert.equal(semaphore.available, 1);
    }
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });
});

describe("Semaphore.tryAcquire()", () => {
  it("returns a permit when one is free", () => {
    const semaphore = new Semaphore(2);

    const permit = semaphore.tryAcquire();

    assert.notEqual(permit, undefined);
    assert.equal(semaphore.inUse, 1);
  });

  it("returns undefined when no permit is free", () => {
    const semaphore = new Semaphore(1);
    semaphore.tryAcquire();

    const permit = semaphore.tryAcquire();

    assert.equal(permit, undefined);
    assert.equal(semaphore.inUse, 1);
    assert.equal(semaphore.waiting, 0);
  });

  it("does not overtake a waiting request", async () => {
    const semaphore = new Semaphore(2);
    const held = await semaphore.acquire();
    const waiter = observe(semaphore.acquire({ weight: 2 }));

    const permit = semaphore.tryAcquire();

    assert.equal(permit, undefined);
    assert.equal(semaphore.available, 1);
    held.release();
    await drainMicrotasks();
    assert.equal(waiter.state, "fulfilled");
  });

  it("takes weight units", () => {
    const semaphore = new Semaphore(3);

    semaphore.tryAcquire(2);

    assert.equal(semaphore.inUse, 2);
    assert.equal(semaphore.tryAcquire(2), undefined);
  });

  it("starts no timer", () => {
    using clock = useVirtualClock();
    const semaphore = new Semaphore(1);

    semaphore.tryAcquire();
    semaphore.tryAcquire();

    assert.equal(clock.timers(), 0);
  });

  it("throws a RangeError for a weight above the capacity", () => {
    const semaphore = new Semaphore(2);

    assert.throws(() => semaphore.tryAcquire(3), {
      name: "RangeError",
      message: "Cannot acquire a permit as 'weight' must be at most the capacity 2: received 3",
    });
  });

  it("throws a RangeError for a weight out of range", () => {
    const semaphore = new Semaphore(2);

    for (const [weight, shown] of outOfRange) {
      assert.throws(() => semaphore.tryAcquire(weight), {
        name: "RangeError",
        message: `Cannot acquire a permit as 'weight' must be an integer >= 1: received ${shown}`,
      });
    }
  });

  it("throws a TypeError for a weight that is not a number", () => {
    const semaphore = new Semaphore(2);
    const wrongTypes = notNumbers.filter(([value]) => value !== undefined);

    for (const [weight, shown] of wrongTypes) {
      assert.throws(() => semaphore.tryAcquire(weight as number), {
        name: "TypeError",
        message: `Cannot acquire a permit as 'weight' must be an integer >= 1: received ${shown}`,
      });
    }
  });
});

describe("Semaphore.run()", () => {
  it("returns the result and releases the permit", async () => {
    const semaphore = new Semaphore(2);

    const result = await semaphore.run(() => semaphore.inUse);

    assert.equal(result, 1);
    assert.equal(semaphore.inUse, 0);
  });

  it("releases the permit when fn rejects", async () => {
    const semaphore = new Semaphore(1);
    const error = new Error("failed");

    const result = semaphore.run(() => Promise.reject(error));

    assert.equal(await rejectionOf(result), error);
    assert.equal(semaphore.available, 1);
  });

  it("releases the permit when fn throws synchronously", async () => {
    const semaphore = new Semaphore(1);
    const error = new Error("failed");

    const result = semaphore.run(() => {
      throw error;
    });

    assert.equal(await rejectionOf(result), error);
    assert.equal(semaphore.available, 1);
  });

  it("holds weight units while fn runs", async () => {
    const semaphore = new Semaphore(3);
    const gate = deferred();
    const result = semaphore.run(() => gate.promise, { weight: 2 });
    await drainMicrotasks();

    assert.equal(semaphore.inUse, 2);

    gate.resolve();
    await result;

    assert.equal(semaphore.inUse, 0);
  });

  it("does not call fn when the signal is already aborted", async () => {
    const semaphore = new Semaphore(1);
    const reason = new Error("stop");
    let calls = 0;

    const result = semaphore.run(() => calls++, { signal: AbortSignal.abort(reason) });

    assert.equal(await rejectionOf(result), reason);
    assert.equal(calls, 0);
    assert.equal(semaphore.available, 1);
  });

  it("releases every permit when tasks fail", async () => {
    const semaphore = new Semaphore(5);
    const gauge = new Gauge();
    const asyncError = new Error("async");
    const syncError = new Error("sync");
    const work = gauge.wrap(async (id: number) => {
      for (let turn = 0; turn < id % 4; turn++) await Promise.resolve();
      if (id % 7 === 0) throw asyncError;
      return id;
    });

    const results = await Promise.allSettled(
      Array.from({ length: 200 }, (_, id) =>
        semaphore.run(() => {
          if (id % 11 === 0) throw syncError;
          return work(id);
        })),
    );

    const reasons = results.flatMap((result) =>
      result.status === "rejected" ? [result.reason] : []
    );
    assert.equal(reasons.filter((reason) => reason === syncError).length, 19);
    assert.equal(reasons.filter((reason) => reason === asyncError).length, 26);
    assert.equal(gauge.peak, 5);
    assert.equal(semaphore.inUse, 0);
    assert.equal(semaphore.waiting, 0);
  });
});

describe("Semaphore.resize()", () => {
  it("grants waiters at once when capacity grows", async () => {
    const semaphore = new Semaphore(1);
    await semaphore.acquire();
    const waiters = [0, 1, 2].map(() => observe(semaphore.acquire()));

    semaphore.resize(3);

    assert.equal(semaphore.capacity, 3);
    assert.equal(semaphore.inUse, 3);
    assert.equal(semaphore.waiting, 1);
    await drainMicrotasks();
    assert.deepEqual(waiters.map((waiter) => waiter.state), ["fulfilled", "fulfilled", "pending"]);
  });

  it("grants nothing new until a smaller capacity has room", async () => {
    const semaphore = new Semaphore(3);
    const held = [await semaphore.acquire(), await semaphore.acquire(), await semaphore.acquire()];
    const waiter = observe(semaphore.acquire());

    semaphore.resize(1);

    assert.equal(semaphore.available, 0);

    held[0]?.release();
    held[1]?.release();
    await drainMicrotasks();

    assert.equal(semaphore.inUse, 1);
    assert.equal(waiter.state, "pending");

    held[2]?.release();
    await drainMicrotasks();

    assert.equal(waiter.state, "fulfilled");
    assert.equal(semaphore.inUse, 1);
  });

  it("rejects waiters heavier than the new capacity", async () => {
    const semaphore = new Semaphore(3);
    await semaphore.acquire({ weight: 3 });
    const heavy = observe(semaphore.acquire({ weight: 3 }));
    const light = observe(semaphore.acquire({ weight: 1 }));

    semaphore.resize(2);
    await drainMicrotasks();

    assert.equal(heavy.state, "rejected");
    assert.ok(heavy.reason instanceof RangeError);
    assert.equal(
      heavy.reason.message,
      "Cannot acquire a permit as 'weight' must be at most the capacity 2: received 3",
    );
    assert.equal(light.state, "pending");
    assert.equal(semaphore.waiting, 1);
  });

  it("keeps permits granted before a shrink valid", async () => {
    const semaphore = new Semaphore(4);
    const permits = [await semaphore.acquire({ weight: 3 }), await semaphore.acquire()];

    semaphore.resize(2);

    assert.equal(semaphore.inUse, 4);

    for (const permit of permits) {
      permit.release();
      permit.release();
    }

    assert.equal(semaphore.inUse, 0);
    assert.equal(semaphore.available, 2);
  });

  it("never runs more tasks than the capacity while it changes", async () => {
    const semaphore = new Semaphore(1);
    const gauge = new Gauge();
    const gates = Array.from({ length: 20 }, () => deferred());
    let overCapacityStarts = 0;
    let started = 0;
    const tasks = gates.map((gate) =>
      semaphore.run(gauge.wrap(() => {
        started++;
        if (gauge.current > semaphore.capacity) overCapacityStarts++;
        return gate.promise;
      }))
    );
    await drainMicrotasks();

    assert.equal(gauge.current, 1);

    semaphore.resize(5);
    await drainMicrotasks();

    assert.equal(gauge.current, 5);

    semaphore.resize(2);
    for (const gate of gates.slice(0, 3)) gate.resolve();
    await drainMicrotasks();

    assert.equal(gauge.current, 2);
    assert.equal(started, 5);

    for (const gate of gates.slice(3)) {
      gate.resolve();
      await drainMicrotasks();
      assert.ok(gauge.current <= 2);
    }
    await Promise.all(tasks);

    assert.equal(started, 20);
    assert.equal(overCapacityStarts, 0);
    assert.equal(gauge.peak, 5);
    assert.equal(semaphore.inUse, 0);
  });

  it("throws a RangeError for permits out of range", () => {
    const semaphore = new Semaphore(2);

    for (const [permits, shown] of outOfRange) {
      assert.throws(() => semaphore.resize(permits), {
        name: "RangeError",
        message: `Cannot resize Semaphore as 'permits' must be an integer >= 1: received ${shown}`,
      });
    }
    assert.equal(semaphore.capacity, 2);
  });

  it("throws a TypeError for permits that are not a number", () => {
    const semaphore = new Semaphore(2);

    for (const [permits, shown] of notNumbers) {
      assert.throws(() => semaphore.resize(permits as number), {
        name: "TypeError",
        message: `Cannot resize Semaphore as 'permits' must be an integer >= 1: received ${shown}`,
      });
    }
    assert.equal(semaphore.capacity, 2);
  });
});

describe("Semaphore.rejectWaiting()", () => {
  it("rejects every waiter with the reason", async () => {
    using unhandled = trackUnhandled();
    const semaphore = new Semaphore(1);
    await semaphore.acquire();
    const waiters = [1, 2, 3].map(() => observe(semaphore.acquire()));
    const reason = new Error("closing");

    semaphore.rejectWaiting(reason);
    await drainMicrotasks();

    assert.deepEqual(waiters.map((waiter) => waiter.state), ["rejected", "rejected", "rejected"]);
    assert.deepEqual(waiters.map((waiter) => waiter.reason), [reason, reason, reason]);
    assert.equal(semaphore.waiting, 0);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("returns the number of waiters rejected", async () => {
    const semaphore = new Semaphore(1);
    await semaphore.acquire();
    const waiters = [1, 2, 3].map(() => semaphore.acquire().catch(() => {}));

    const rejected = semaphore.rejectWaiting(new Error("closing"));

    assert.equal(rejected, 3);
    assert.equal(semaphore.rejectWaiting(new Error("closing")), 0);
    await Promise.all(waiters);
  });

  it("removes the abort listeners of rejected waiters", async () => {
    const semaphore = new Semaphore(1);
    await semaphore.acquire();
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);
    const waiters = [1, 2].map(() =>
      semaphore.acquire({ signal: controller.signal }).catch(() => {})
    );

    semaphore.rejectWaiting(new Error("closing"));

    assert.equal(listeners(), 0);
    await Promise.all(waiters);
  });

  it("keeps granted permits valid", async () => {
    const semaphore = new Semaphore(1);
    const held = await semaphore.acquire();
    const waiter = semaphore.acquire().catch(() => {});

    semaphore.rejectWaiting(new Error("closing"));
    await waiter;

    assert.equal(semaphore.inUse, 1);
    held.release();
    assert.equal(semaphore.available, 1);
    (await semaphore.acquire()).release();
  });
});

describe("Permit.release()", () => {
  it("does nothing the second time", async () => {
    const semaphore = new Semaphore(2);
    const permit = await semaphore.acquire();

    permit.release();
    permit.release();

    assert.equal(semaphore.inUse, 0);
    assert.equal(semaphore.available, 2);
  });

  it("does nothing after `using` has released it", async () => {
    const semaphore = new Semaphore(2);

    {
      using permit = await semaphore.acquire();
      permit.release();
      assert.equal(semaphore.inUse, 0);
    }

    assert.equal(semaphore.inUse, 0);
    assert.equal(semaphore.available, 2);
  });

  it("does not free units that went on to a waiter", async () => {
    const semaphore = new Semaphore(1);
    const first = await semaphore.acquire();
    const second = observe(semaphore.acquire());
    const third = observe(semaphore.acquire());

    first.release();
    first.release();
    await drainMicrotasks();

    assert.equal(second.state, "fulfilled");
    assert.equal(third.state, "pending");
    assert.equal(semaphore.inUse, 1);
  });

  it("lets only one of two acquires through after a double release", async () => {
    const semaphore = new Semaphore(1);
    const permit = await semaphore.acquire();
    permit.release();
    permit.release();

    const first = observe(semaphore.acquire());
    const second = observe(semaphore.acquire());
    await drainMicrotasks();

    assert.equal(first.state, "fulfilled");
    assert.equal(second.state, "pending");

    first.value?.release();
    await drainMicrotasks();

    assert.equal(second.state, "fulfilled");
  });
});

describe("Semaphore properties", () => {
  type Operation =
    | { kind: "acquire"; weight: number; withSignal: boolean }
    | { kind: "abort"; pick: number }
    | { kind: "release"; pick: number; twice: boolean }
    | { kind: "tryAcquire"; weight: number }
    | { kind: "resize"; permits: number };

  interface Request {
    readonly id: number;
    readonly weight: number;
    readonly controller: AbortController | undefined;
    state: "waiting" | "granted" | "rejected";
    reason: unknown;
  }

  // Acquisitions and aborts are drawn most often, so queues with aborted heads are common.
  const operation: fc.Arbitrary<Operation> = fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant("acquire" as const),
        weight: fc.integer({ min: 1, max: 5 }),
        withSignal: fc.boolean(),
      }),
    },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant("abort" as const), pick: fc.nat() }) },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant("release" as const),
        pick: fc.nat(),
        twice: fc.boolean(),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("tryAcquire" as const),
        weight: fc.integer({ min: 1, max: 5 }),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("resize" as const),
        permits: fc.integer({ min: 1, max: 5 }),
      }),
    },
  );

  // Replays the operations one at a time, letting promise callbacks run after each, and checks
  // every grant against the units held at that moment.
  async function check(permits: number, operations: Operation[]): Promise<void> {
    const semaphore = new Semaphore(permits);
    const requests: Request[] = [];
    const held: { weight: number; permit: Permit }[] = [];
    const grantOrder: Request[] = [];
    const overCapacityGrants: string[] = [];
    let heldWeight = 0;

    const takeUnits = (weight: number, label: string) => {
      if (heldWeight + weight > semaphore.capacity) {
        overCapacityGrants.push(`${label}: ${heldWeight} + ${weight} > ${semaphore.capacity}`);
      }
      heldWeight += weight;
    };
    const waitingRequests = () => requests.filter((request) => request.state === "waiting");
    // Maps a generated weight into 1..capacity, so acquisitions are valid at the time they are made.
    const fit = (weight: number) => 1 + ((weight - 1) % semaphore.capacity);

    for (const op of operations) {
      if (op.kind === "acquire") {
        const weight = fit(op.weight);
        const controller = op.withSignal ? new AbortController() : undefined;
        const request: Request = {
          id: requests.length,
          weight,
          controller,
          state: "waiting",
          reason: undefined,
        };
        requests.push(request);
        semaphore.acquire({ weight, signal: controller?.signal }).then(
          (permit) => {
            takeUnits(weight, `acquire #${request.id}`);
            request.state = "granted";
            grantOrder.push(request);
            held.push({ weight, permit });
          },
          (reason: unknown) => {
            request.state = "rejected";
            request.reason = reason;
          },
        );
      } else if (op.kind === "abort") {
        const candidates = waitingRequests().filter((request) => request.controller);
        const target = candidates[op.pick % Math.max(1, candidates.length)];
        if (target !== undefined) {
          const reason = new Error(`abort #${target.id}`);
          target.controller?.abort(reason);
          await drainMicrotasks();
          assert.equal(target.state, "rejected");
          assert.equal(target.reason, reason);
        }
      } else if (op.kind === "release") {
        const [entry] = held.splice(op.pick % Math.max(1, held.length), 1);
        if (entry !== undefined) {
          heldWeight -= entry.weight;
          entry.permit.release();
          if (op.twice) entry.permit.release();
        }
      } else if (op.kind === "tryAcquire") {
        const weight = fit(op.weight);
        const free = waitingRequests().length === 0 &&
          heldWeight + weight <= semaphore.capacity;
        const permit = semaphore.tryAcquire(weight);
        assert.equal(permit !== undefined, free);
        if (permit !== undefined) {
          takeUnits(weight, "tryAcquire");
          held.push({ weight, permit });
        }
      } else {
        const tooHeavy = waitingRequests().filter((request) => request.weight > op.permits);
        semaphore.resize(op.permits);
        await drainMicrotasks();
        for (const request of tooHeavy) {
          assert.equal(request.state, "rejected");
          assert.ok(request.reason instanceof RangeError);
        }
      }

      await drainMicrotasks();
      const waiting = waitingRequests();
      assert.equal(semaphore.inUse, heldWeight);
      assert.equal(semaphore.waiting, waiting.length);
      // No request waits while it would fit at the head of the queue.
      const head = waiting[0];
      if (head !== undefined) assert.ok(heldWeight + head.weight > semaphore.capacity);
    }

    for (let round = 0; round <= requests.length && waitingRequests().length > 0; round++) {
      for (const entry of held.splice(0)) entry.permit.release();
      heldWeight = 0;
      await drainMicrotasks();
    }

    assert.deepEqual(overCapacityGrants, []);
    assert.deepEqual(waitingRequests(), []);
    for (const entry of held.splice(0)) entry.permit.release();
    assert.equal(semaphore.inUse, 0);
    assert.equal(semaphore.waiting, 0);
    assert.equal(semaphore.available, semaphore.capacity);
    // A request is never overtaken by a later one that asks for the same or a smaller weight.
    for (const [index, later] of grantOrder.entries()) {
      for (const earlier of grantOrder.slice(index + 1)) {
        const overtaken = earlier.id < later.id && later.weight <= earlier.weight;
        assert.ok(!overtaken, `#${later.id} was granted before #${earlier.id}`);
      }
    }
  }

  it("grants within capacity, in FIFO order, and settles every acquire", async () => {
    using unhandled = trackUnhandled();

    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 5 }),
        fc.array(operation, { maxLength: 40, size: "max" }),
        check,
      ),
      { numRuns: 200 },
    );

    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });
});
