import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  type AcquireOptions,
  combineLimiters,
  type Limiter,
  type Permit,
  RateLimiter,
  Semaphore,
} from "@antflow/antflow";
import { drainMicrotasks, Gauge, observe, trackUnhandled, useVirtualClock } from "./_helpers.ts";

// A limiter backed by a Semaphore(1) that logs every grant and release under its name, and that
// rejects every acquisition while `failure` is set.
class LoggingLimiter implements Limiter {
  readonly semaphore = new Semaphore(1);
  failure: Error | undefined;

  readonly name: string;
  readonly log: string[];

  constructor(name: string, log: string[]) {
    this.name = name;
    this.log = log;
  }

  async acquire(options?: AcquireOptions): Promise<Permit> {
    if (this.failure !== undefined) throw this.failure;
    const permit = await this.semaphore.acquire(options);
    this.log.push(`acquire ${this.name}`);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.log.push(`release ${this.name}`);
      permit.release();
    };
    return { release, [Symbol.dispose]: release };
  }
}

// Acquires and releases `group` once and returns the names of its limiters in acquisition order.
async function acquisitionOrder(group: Limiter, log: string[]): Promise<string[]> {
  log.length = 0;
  (await group.acquire()).release();
  const order = log.filter((entry) => entry.startsWith("acquire ")).map((entry) => entry.slice(8));
  log.length = 0;
  return order;
}

describe("combineLimiters()", () => {
  it("returns the limiter itself when given one", () => {
    const semaphore = new Semaphore(1);

    assert.equal(combineLimiters(semaphore), semaphore);
  });

  it("returns the limiter itself when given one limiter twice", () => {
    const semaphore = new Semaphore(1);

    assert.equal(combineLimiters(semaphore, semaphore), semaphore);
  });

  it("acquires a permit from every limiter", async () => {
    using _clock = useVirtualClock();
    const small = new Semaphore(2);
    const large = new Semaphore(3);
    const perSecond = new RateLimiter({ limit: 5, intervalMs: 1000 });

    await combineLimiters(small, large, perSecond).acquire();

    assert.equal(small.available, 1);
    assert.equal(large.available, 2);
    assert.equal(perSecond.remaining, 4);
  });

  it("releases every permit when the combined permit is released", async () => {
    const small = new Semaphore(2);
    const large = new Semaphore(3);
    const permit = await combineLimiters(small, large).acquire();

    permit.release();

    assert.equal(small.available, 2);
    assert.equal(large.available, 3);
  });

  it("releases every permit at the end of a `using` block", async () => {
    const small = new Semaphore(2);
    const large = new Semaphore(3);

    {
      using _permit = await combineLimiters(small, large).acquire();
      assert.equal(small.inUse + large.inUse, 2);
    }

    assert.equal(small.inUse, 0);
    assert.equal(large.inUse, 0);
  });

  it("releases permits in reverse order of acquisition", async () => {
    const log: string[] = [];
    const limiters = ["a", "b", "c"].map((name) => new LoggingLimiter(name, log));
    const permit = await combineLimiters(...limiters).acquire();
    const acquired = log.splice(0);

    permit.release();

    assert.deepEqual(
      log,
      acquired.map((entry) => entry.replace("acquire", "release")).reverse(),
    );
  });

  it("acquires new limiters in the order given", async () => {
    const log: string[] = [];
    const limiters = ["a", "b", "c"].map((name) => new LoggingLimiter(name, log));

    const order = await acquisitionOrder(combineLimiters(...limiters), log);

    assert.deepEqual(order, ["a", "b", "c"]);
  });

  it("keeps one acquisition order for groups that share limiters", async () => {
    const log: string[] = [];
    const a = new LoggingLimiter("a", log);
    const b = new LoggingLimiter("b", log);
    const c = new LoggingLimiter("c", log);

    const first = await acquisitionOrder(combineLimiters(a, b, c), log);
    const second = await acquisitionOrder(combineLimiters(c, b, a), log);
    const third = await acquisitionOrder(combineLimiters(b, a), log);

    assert.deepEqual(second, first);
    assert.deepEqual(third, first.filter((name) => name !== "c"));
  });

  it("takes one permit from a limiter listed twice", async () => {
    const shared = new Semaphore(2);
    const other = new Semaphore(1);

    const permit = await combineLimiters(shared, other, shared).acquire();

    assert.equal(shared.inUse, 1);
    permit.release();
    assert.equal(shared.inUse, 0);
  });

  it("passes the weight to every limiter", async () => {
    const small = new Semaphore(2);
    const large = new Semaphore(3);

    await combineLimiters(small, large).acquire({ weight: 2 });

    assert.equal(small.inUse, 2);
    assert.equal(large.inUse, 2);
  });

  it("rejects an aborted signal without holding any permit", async () => {
    const small = new Semaphore(2);
    const large = new Semaphore(3);
    const reason = new Error("stop");

    const result = combineLimiters(small, large).acquire({ signal: AbortSignal.abort(reason) });

    await assert.rejects(result, (error) => error === reason);
    assert.equal(small.inUse, 0);
    assert.equal(large.inUse, 0);
  });

  it("releases taken permits when a later acquire fails", async () => {
    const log: string[] = [];
    const limiters = ["a", "b", "c"].map((name) => new LoggingLimiter(name, log));
    const group = combineLimiters(...limiters);
    const [firstName, secondName, lastName] = await acquisitionOrder(group, log);
    const last = limiters.find((limiter) => limiter.name === lastName);
    const failure = new Error("unavailable");
    assert.ok(last);
    last.failure = failure;

    const result = group.acquire();

    await assert.rejects(result, (error) => error === failure);
    assert.deepEqual(log, [
      `acquire ${firstName}`,
      `acquire ${secondName}`,
      `release ${secondName}`,
      `release ${firstName}`,
    ]);
    for (const limiter of limiters) assert.equal(limiter.semaphore.inUse, 0);
  });

  it("releases taken permits when a later acquire aborts", async () => {
    using unhandled = trackUnhandled();
    const log: string[] = [];
    const limiters = ["a", "b", "c"].map((name) => new LoggingLimiter(name, log));
    const group = combineLimiters(...limiters);
    const [firstName, secondName, lastName] = await acquisitionOrder(group, log);
    const last = limiters.find((limiter) => limiter.name === lastName);
    assert.ok(last);
    const blocker = await last.semaphore.acquire();
    const controller = new AbortController();
    const reason = new Error("stop");
    const result = observe(group.acquire({ signal: controller.signal }));
    await drainMicrotasks();

    assert.deepEqual(log, [`acquire ${firstName}`, `acquire ${secondName}`]);

    controller.abort(reason);
    await drainMicrotasks();

    assert.equal(result.state, "rejected");
    assert.equal(result.reason, reason);
    assert.deepEqual(log.slice(2), [`release ${secondName}`, `release ${firstName}`]);
    blocker.release();
    for (const limiter of limiters) assert.equal(limiter.semaphore.inUse, 0);
    await drainMicrotasks(2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("ignores a second release of the combined permit", async () => {
    const shared = new Semaphore(1);
    const other = new Semaphore(1);
    const permit = await combineLimiters(shared, other).acquire();

    permit.release();
    const next = await shared.acquire();
    permit.release();

    assert.equal(shared.inUse, 1);
    assert.equal(other.inUse, 0);
    next.release();
  });

  it("never deadlocks when groups list limiters in opposite orders", async () => {
    const left = new Semaphore(1);
    const right = new Semaphore(1);
    const forward = combineLimiters(left, right);
    const backward = combineLimiters(right, left);
    const gauge = new Gauge();
    let completed = 0;

    const tasks = Array.from({ length: 200 }, async (_, id) => {
      const permit = await (id % 2 === 0 ? forward : backward).acquire();
      gauge.enter();
      await Promise.resolve();
      gauge.leave();
      permit.release();
      completed++;
    });
    await drainMicrotasks(2);

    assert.equal(completed, 200);
    assert.equal(gauge.peak, 1);
    assert.equal(left.inUse + right.inUse, 0);
    await Promise.all(tasks);
  });

  it("throws a TypeError for an entry that is not a limiter", () => {
    const valid = new Semaphore(1);
    const invalid: [unknown, string][] = [
      [null, "null"],
      [undefined, "undefined"],
      [3, "3"],
      ["semaphore", '"semaphore"'],
      [{}, "an object"],
      [{ acquire: true }, "an object"],
      [[valid], "an array"],
      [() => {}, "a function"],
    ];

    for (const [entry, shown] of invalid) {
      assert.throws(() => combineLimiters(valid, entry as Limiter), {
        name: "TypeError",
        message: `Cannot combine limiters as 'limiters[1]' must be a Limiter: received ${shown}`,
      });
    }
  });
});
