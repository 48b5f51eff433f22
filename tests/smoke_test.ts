import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { AsyncExecutor, RateLimiter, Semaphore } from "@antflow/antflow";
import { deferred, flush, Gauge, trackUnhandled, useVirtualClock } from "./_helpers.ts";

describe("smoke", () => {
  it("map keeps input order", async () => {
    await using executor = new AsyncExecutor({ maxWorkers: 3 });
    const gauge = new Gauge();
    const results = await executor.map(
      gauge.wrap(async (n: number) => {
        await flush(1);
        return n * 2;
      }),
      [1, 2, 3, 4, 5, 6],
    );
    assert.deepEqual(results, [2, 4, 6, 8, 10, 12]);
    assert.equal(gauge.peak, 3);
  });

  it("semaphore hand-off", async () => {
    const semaphore = new Semaphore(1);
    const first = await semaphore.acquire();
    const second = semaphore.acquire();
    const gate = deferred();
    first.release();
    (await second).release();
    gate.resolve();
    assert.equal(semaphore.available, 1);
  });

  it("rate limiter waits on virtual time", async () => {
    using clock = useVirtualClock();
    using unhandled = trackUnhandled();
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1000 });
    await limiter.acquire();
    let granted = false;
    limiter.acquire().then(() => granted = true);
    await clock.tick(999);
    assert.equal(granted, false);
    await clock.tick(1);
    assert.equal(granted, true);
    assert.equal(clock.timers(), 0);
    assert.deepEqual(unhandled.reasons, []);
  });
});
