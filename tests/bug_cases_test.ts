// Failure classes seen in other concurrency libraries, checked against this one. They are async
// context lost across the queue, promises left pending by a cancelling shutdown, accounting after
// queued work is dropped, room signals that wait for an unrelated completion, and a setting
// change that disables another setting.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { AsyncLocalStorage } from "node:async_hooks";
import {
  AsyncExecutor,
  ExecutorShutdownError,
  Pipeline,
  RateLimiter,
  Semaphore,
  Stage,
  type SubmitOptions,
  type TaskContext,
} from "@antflow/antflow";
import {
  deferred,
  flush,
  flushUntil,
  Gauge,
  HeldTasks,
  observe,
  trackUnhandled,
  untilAborted,
  useVirtualClock,
} from "./_helpers.ts";

function sleep(ms: number): Promise<void> {
  return new Promise<void>((resolve) => setTimeout(resolve, ms));
}

describe("async context propagation", () => {
  // Each way a task can reach a worker: at once, queued for a worker, queued for a limiter,
  // with a timeout, with retries, and with a signal of its own.
  const paths: [string, (semaphore: Semaphore) => SubmitOptions | undefined][] = [
    ["no options", () => undefined],
    ["a semaphore", (semaphore) => ({ semaphore })],
    ["a timeout", () => ({ timeoutMs: 60_000 })],
    ["retries", () => ({ retry: { attempts: 2 } })],
    ["a signal", () => ({ signal: new AbortController().signal })],
  ];

  for (const [label, optionsFor] of paths) {
    const test = it;
    test(`AsyncExecutor.submit() keeps the caller's context with ${label}`, async () => {
      const storage = new AsyncLocalStorage<{ id: number }>();
      const executor = new AsyncExecutor({ maxWorkers: 2 });
      const semaphore = new Semaphore(1);
      const seen: [number, number | undefined][] = [];
      const task = async (id: number, { attempt }: TaskContext) => {
        seen.push([id, storage.getStore()?.id]);
        await Promise.resolve();
        if (label === "retries" && attempt === 1) throw new Error("first attempt");
        return id;
      };

      const results = Array.from(
        { length: 100 },
        (_, i) => storage.run({ id: i }, () => executor.submit(task, i, optionsFor(semaphore))),
      );
      await Promise.all(results);

      const mismatched = seen.filter(([id, observed]) => id !== observed);
      assert.deepEqual(mismatched, []);
    });
  }

  it("AsyncExecutor.map() tasks see the context of the consumer", async () => {
    const storage = new AsyncLocalStorage<string>();
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const seen: (string | undefined)[] = [];
    const task = async (n: number) => {
      seen.push(storage.getStore());
      await Promise.resolve();
      return n;
    };

    // The work of a result stream starts when it is awaited or iterated, so the consumer's
    // context is the one around that call.
    const inputs = Array.from({ length: 50 }, (_, i) => i);
    await storage.run("consumer", () => executor.map(task, inputs).toArray());

    assert.equal(seen.length, 50);
    assert.deepEqual(seen.filter((store) => store !== "consumer"), []);
  });

  it("Pipeline stage tasks see the context that called run()", async () => {
    const storage = new AsyncLocalStorage<string>();
    const seen: (string | undefined)[] = [];
    const record = async (n: number) => {
      seen.push(storage.getStore());
      await Promise.resolve();
      return n;
    };
    const limited = new Semaphore(1);
    const pipeline = new Pipeline({
      stages: [
        new Stage({ name: "a", workers: 2, queueCapacity: 0, tasks: [record] }),
        new Stage({
          name: "b",
          workers: 3,
          tasks: [record],
          taskConcurrencyLimits: { record: limited },
        }),
      ],
    });
    const inputs = Array.from({ length: 40 }, (_, i) => i);

    const [first, second] = await Promise.all([
      storage.run("caller", () => pipeline.run(inputs).toArray()),
      Promise.resolve(),
    ]);
    await storage.run("second caller", async () => {
      for await (const _ of pipeline.run(inputs)) { /* drain */ }
    });

    assert.equal(first.length, 40);
    assert.equal(second, undefined);
    assert.equal(seen.length, 160);
    assert.deepEqual(seen.slice(0, 80).filter((store) => store !== "caller"), []);
    assert.deepEqual(seen.slice(80).filter((store) => store !== "second caller"), []);
  });
});

describe("cancelling shutdown settles everything", () => {
  it("AsyncExecutor.shutdown() with cancel settles tasks in every state", async () => {
    using clock = useVirtualClock();
    using unhandled = trackUnhandled();
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const semaphore = new Semaphore(1);
    const rate = new RateLimiter({ limit: 1, intervalMs: 1_000 });
    const ignored = deferred();
    const own = new AbortController();
    const honour = (_: string, { signal }: TaskContext) => untilAborted(signal);
    const ignore = () => ignored.promise;

    const states = {
      // Two running tasks fill both workers: one honours its signal, one ignores it.
      running: executor.submit(honour, "running"),
      ignoring: executor.submit(ignore, "ignoring"),
      queued: executor.submit(honour, "queued"),
      queuedWithSignal: executor.submit(honour, "queued", { signal: own.signal }),
      holdsSemaphore: executor.submit(honour, "holds", { semaphore }),
      waitsForSemaphore: executor.submit(honour, "waits", { semaphore }),
      waitsForRate: executor.submit(honour, "rate", { semaphore: rate }),
      waitsForRateToo: executor.submit(honour, "rate", { semaphore: rate }),
      inBackoff: executor.submit(
        () => Promise.reject(new Error("retry me")),
        "backoff",
        { retry: { attempts: 3, delayMs: 10_000 }, semaphore: new Semaphore(1) },
      ),
    };
    const mapRun = observe(executor.map(honour, ["a", "b", "c"]).toArray());
    const outcomes = Object.fromEntries(
      Object.entries(states).map(([name, promise]) => [name, observe(promise)]),
    );
    const idle = observe(executor.onIdle());
    await clock.tick(1);

    const shutdown = observe(executor.shutdown({ cancel: true }));
    await clock.tick(1);

    for (const [name, outcome] of Object.entries(outcomes)) {
      if (name === "ignoring") continue;
      assert.equal(outcome.state, "rejected", name);
      assert.ok(outcome.reason instanceof ExecutorShutdownError, `${name}: ${outcome.reason}`);
    }
    assert.equal(mapRun.state, "rejected");
    assert.ok(mapRun.reason instanceof ExecutorShutdownError);
    // A task that ignores its signal keeps its worker, and its promise, until it settles.
    assert.equal(outcomes.ignoring?.state, "pending");
    assert.equal(shutdown.state, "pending");

    ignored.resolve();
    await clock.runAll();
    await flush();

    assert.equal(outcomes.ignoring?.state, "fulfilled");
    assert.equal(shutdown.state, "fulfilled");
    assert.equal(idle.state, "fulfilled");
    assert.equal(executor.running, 0);
    assert.equal(executor.queued, 0);
    assert.equal(semaphore.inUse, 0);
    assert.equal(semaphore.waiting, 0);
    assert.equal(rate.waiting, 0);
    assert.equal(clock.timers(), 0);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("Pipeline.shutdown() with cancel settles the run, feeds and joins", async () => {
    using unhandled = trackUnhandled();
    const signals: AbortSignal[] = [];
    const honour = (n: number, { signal }: TaskContext) => {
      signals.push(signal);
      return untilAborted(signal).then(() => n);
    };
    const pipeline = new Pipeline({
      stages: [
        new Stage({ name: "s", workers: 1, queueCapacity: 0, tasks: [honour] }),
        new Stage({ name: "t", workers: 1, tasks: [(n: unknown) => n] }),
      ],
    });

    const results = observe(pipeline.start().toArray());
    const fed = observe(pipeline.feed([1, 2, 3]));
    const join = observe(pipeline.join());
    await flushUntil(() => signals.length === 1);
    const shutdown = observe(pipeline.shutdown({ cancel: true }));
    await flushUntil(() => shutdown.state !== "pending" && results.state !== "pending");
    await flush();

    assert.equal(fed.state, "rejected");
    assert.equal(results.state, "rejected");
    assert.equal(shutdown.state, "fulfilled");
    assert.equal(join.state, "fulfilled");
    assert.equal(signals[0]?.aborted, true);
    assert.equal(signals.length, 1);
    assert.equal(pipeline.stats().inFlight, 0);
    assert.deepEqual(unhandled.reasons, []);
  });
});

describe("dropping queued work", () => {
  it("AsyncExecutor keeps its accounting after queued tasks abort", async () => {
    using unhandled = trackUnhandled();
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const held = new HeldTasks<string>();
    const gauge = new Gauge();
    const task = gauge.wrap(held.task);
    const a = executor.submit(task, "a");
    const b = executor.submit(task, "b");
    const dropAll = new AbortController();
    const dropped = Array.from(
      { length: 50 },
      (_, i) => executor.submit(task, `queued ${i}`, { signal: dropAll.signal }),
    );
    await flush();

    const reason = new Error("dropped");
    dropAll.abort(reason);
    const droppedOutcomes = await Promise.allSettled(dropped);
    const n1 = executor.submit(task, "n1");
    const n2 = executor.submit(task, "n2");
    await flush();

    assert.ok(droppedOutcomes.every((o) => o.status === "rejected" && o.reason === reason));
    assert.equal(executor.running, 2);
    assert.equal(executor.queued, 2);
    assert.deepEqual(held.started, ["a", "b"]);

    held.release("a");
    await flushUntil(() => held.started.length === 3);

    assert.deepEqual(held.started, ["a", "b", "n1"]);
    assert.equal(executor.running, 2);

    held.release("b");
    await flushUntil(() => held.started.length === 4);
    held.release("n1");
    held.release("n2");
    assert.deepEqual(await Promise.all([a, b, n1, n2]), ["a", "b", "n1", "n2"]);
    await executor.onIdle();

    assert.equal(gauge.peak, 2);
    assert.equal(executor.running, 0);
    assert.equal(executor.queued, 0);
    assert.deepEqual(unhandled.reasons, []);
  });
});

describe("room signals", () => {
  // Pipeline.feed() is the API's "wait for room" call: it resolves once the item has entered its
  // stage. Room in a stage appears whenever an item leaves it, and only some of those exits are
  // task completions, so each exit must wake a waiting feed by itself.
  const exits: [string, (gate: ReturnType<typeof deferred<boolean>>) => void][] = [
    ["its task fails", (gate) => gate.reject(new Error("failed"))],
    ["it moves on", (gate) => gate.resolve(false)],
    ["skipIf skips it", (gate) => gate.resolve(true)],
  ];

  for (const [label, leave] of exits) {
    it(`Pipeline.feed() resolves when the first item leaves because ${label}`, async () => {
      const gate = deferred<boolean>();
      let skipChecks = 0;
      const pipeline = new Pipeline({
        stages: [
          new Stage({
            name: "s",
            workers: 1,
            queueCapacity: 0,
            tasks: [async (n: number) => {
              // The first item's task waits for the gate unless skipIf already decided.
              if (n === 1) await gate.promise;
              return n;
            }],
            // The first item's skipIf waits for the gate too, so the item occupies the stage's only
            // place without running a task until the gate opens.
            skipIf: (n: number) =>
              n === 1 && skipChecks++ === 0 && label === "skipIf skips it" ? gate.promise : false,
          }),
        ],
      });
      const results = observe(pipeline.start().toArray());
      const first = observe(pipeline.feed([1]));
      await flushUntil(() => first.state !== "pending");
      const second = observe(pipeline.feed([2]));
      await flush();

      assert.equal(second.state, "pending");

      leave(gate);
      await flush();

      assert.equal(second.state, "fulfilled");
      await pipeline.join();
      await flushUntil(() => results.state !== "pending");
      assert.equal(results.value?.length, 2);
    });
  }

  it("Pipeline.feed() resolves when a timed-out item leaves", async () => {
    using clock = useVirtualClock();
    const pipeline = new Pipeline({
      stages: [
        new Stage({
          name: "s",
          workers: 1,
          queueCapacity: 1,
          timeoutMs: 100,
          tasks: [(n: number, { signal }) => n === 1 ? untilAborted(signal) : n],
        }),
      ],
    });
    const results = observe(pipeline.start().toArray());
    await pipeline.feed([1, 2]);
    const third = observe(pipeline.feed([3]));
    await clock.tick(99);

    assert.equal(third.state, "pending");

    await clock.tick(1);
    await flush();

    assert.equal(third.state, "fulfilled");
    await pipeline.join();
    await flushUntil(() => results.state !== "pending");
    assert.deepEqual(results.value?.map((r) => r.ok), [false, true, true]);
  });

  it("Pipeline.feed() resolves when the next stage takes the item", async () => {
    const downstream = new HeldTasks<number>();
    const pipeline = new Pipeline({
      stages: [
        new Stage({ name: "first", workers: 1, queueCapacity: 0, tasks: [(n: number) => n] }),
        new Stage({ name: "second", workers: 1, queueCapacity: 0, tasks: [downstream.task] }),
      ],
    });
    const results = observe(pipeline.start().toArray());
    // Item 1 runs in the second stage and item 2 waits in the first, done but outbound.
    await pipeline.feed([1, 2]);
    const third = observe(pipeline.feed([3]));
    await flushUntil(() => downstream.started.length === 1);
    await flush();

    assert.equal(third.state, "pending");

    downstream.release(1);
    await flush();

    assert.equal(third.state, "fulfilled");
    await flushUntil(() => downstream.started.length === 2);
    downstream.release(2);
    await flushUntil(() => downstream.started.length === 3);
    downstream.release(3);
    await pipeline.join();
    await flushUntil(() => results.state !== "pending");
    assert.equal(results.value?.length, 3);
  });
});

describe("changing one setting", () => {
  it("AsyncExecutor.maxWorkers change keeps a shared rate limit", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const rate = new RateLimiter({ limit: 1, intervalMs: 1_000 });
    const semaphore = new Semaphore(2);
    const starts: number[] = [];
    const task = async (n: number) => {
      starts.push(clock.now());
      await sleep(10);
      return n;
    };

    const results = Array.from(
      { length: 6 },
      (_, i) => executor.submit(task, i, { semaphore: [semaphore, rate] }),
    );
    await clock.tick(1_500);
    executor.maxWorkers = 4;
    semaphore.resize(3);
    await clock.runAll();
    await Promise.all(results);

    assert.deepEqual(starts, [0, 1_000, 2_000, 3_000, 4_000, 5_000]);
    assert.equal(clock.timers(), 0);
  });
});
