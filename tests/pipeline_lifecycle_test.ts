import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Pipeline, PipelineShutdownError, Stage, type StageTaskContext } from "@antflow/antflow";
import { flush, flushUntil, HeldTasks, observe, untilAborted } from "./_helpers.ts";

function double(n: number): number {
  return n * 2;
}

/** Builds a stage whose task waits until the test releases it (see {@linkcode HeldTasks}). */
function heldStage(
  name: string,
  held: HeldTasks<number>,
  options: { workers?: number; queueCapacity?: number } = {},
): Stage<number, number> {
  return new Stage({
    name,
    workers: options.workers ?? 1,
    queueCapacity: options.queueCapacity,
    tasks: [(n: number, context: StageTaskContext) => held.task(n, context) as Promise<number>],
  });
}

/** Builds a stage whose task waits for the test, or rejects with `signal.reason` on abort. */
function abortableStage(name: string, held: HeldTasks<number>, workers = 2): Stage<number, number> {
  return new Stage({
    name,
    workers,
    tasks: [
      (n: number, context: StageTaskContext) =>
        Promise.race([held.task(n, context) as Promise<number>, untilAborted(context.signal)]),
    ],
  });
}

/** Releases every held task, in start order, until `count` have been released. */
async function releaseAll(held: HeldTasks<number>, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    await flushUntil(() => held.started.length > i);
    held.release(held.started[i] as number);
  }
}

describe("Pipeline.start() and feed()", () => {
  it("Pipeline.start() runs the items fed to it", async () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "double", workers: 2, tasks: [double] })],
    });

    const results = pipeline.start();
    await pipeline.feed([1, 2]);
    await pipeline.feed([3]);
    pipeline.close();

    assert.deepEqual((await results).map((r) => r.ok && r.value), [2, 4, 6]);
  });

  it("Pipeline.feed() reads an async iterable", async () => {
    async function* numbers(): AsyncGenerator<number> {
      yield 1;
      await flush(1);
      yield 2;
    }
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "double", workers: 2, tasks: [double] })],
    });

    const results = pipeline.start();
    await pipeline.feed(numbers());
    pipeline.close();

    assert.deepEqual((await results).map((r) => r.ok && r.value), [2, 4]);
  });

  it("Pipeline.feed() waits while the first stage is full", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({
      stages: [heldStage("s", held, { workers: 1, queueCapacity: 0 })],
    });

    const results = observe(pipeline.start().toArray());
    const fed = observe(pipeline.feed([1, 2]));
    await flushUntil(() => held.started.length === 1);
    await flush();

    assert.equal(fed.state, "pending");

    held.release(1);
    await flushUntil(() => fed.state !== "pending");

    assert.equal(fed.state, "fulfilled");

    await flushUntil(() => held.started.length === 2);
    held.release(2);
    await pipeline.join();
    await flushUntil(() => results.state !== "pending");

    assert.equal(results.value?.length, 2);
  });

  it("Pipeline.feed() runs lower priorities first", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [heldStage("s", held, { workers: 1 })] });

    const results = observe(pipeline.start().toArray());
    await pipeline.feed([0]);
    await flushUntil(() => held.started.length === 1);
    await pipeline.feed([1], { priority: 5 });
    await pipeline.feed([2], { priority: 1 });
    await pipeline.feed([3], { priority: 3 });
    await pipeline.feed([4], { priority: 1 });
    await pipeline.feed([5], { priority: -2 });
    await flush();
    await releaseAll(held, 6);
    await pipeline.join();
    await flushUntil(() => results.state !== "pending");

    assert.deepEqual(held.started, [0, 5, 2, 4, 3, 1]);
  });

  it("Pipeline.feed() keeps the priority in later stages", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({
      stages: [
        new Stage({ name: "first", workers: 4, tasks: [(n: number) => n] }),
        heldStage("second", held, { workers: 1 }),
      ],
    });

    const results = observe(pipeline.start().toArray());
    await pipeline.feed([0]);
    await flushUntil(() => held.started.length === 1);
    await pipeline.feed([1], { priority: 9 });
    await pipeline.feed([2], { priority: 4 });
    await pipeline.feed([3], { priority: 7 });
    await pipeline.feed([4], { priority: 1 });
    await flushUntil(() => pipeline.stats().stages[1]?.queued === 4);
    await releaseAll(held, 5);
    await pipeline.join();
    await flushUntil(() => results.state !== "pending");

    assert.deepEqual(held.started, [0, 4, 2, 3, 1]);
  });

  it("Pipeline.feed() enters a later stage", async () => {
    let fetched = 0;
    const fetchPage = new Stage({
      name: "fetch",
      workers: 1,
      tasks: [(url: string) => {
        fetched++;
        return `<p>${url}</p>`;
      }],
    });
    const measure = new Stage({
      name: "measure",
      workers: 1,
      tasks: [(html: string) => html.length],
    });
    const pipeline = new Pipeline({ stages: [fetchPage, measure] });

    const results = pipeline.start();
    await pipeline.feed(["<p>cached</p>"], { stage: "measure" });
    await pipeline.feed(["a"]);
    pipeline.close();

    assert.deepEqual((await results).map((r) => r.ok && r.value), [13, 8]);
    assert.equal(fetched, 1);
  });

  it("Pipeline.feed() rejects without a started run", async () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [double] })],
    });

    await assert.rejects(pipeline.feed([1]), {
      name: "TypeError",
      message: "Cannot feed the pipeline as no run started by start() is open",
    });
  });

  it("Pipeline.feed() rejects after close", async () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [double] })],
    });

    const results = pipeline.start();
    pipeline.close();

    await assert.rejects(pipeline.feed([1]), {
      name: "TypeError",
      message: "Cannot feed the pipeline as no run started by start() is open",
    });
    assert.deepEqual(await results, []);
  });

  it("Pipeline.feed() rejects an unknown stage", async () => {
    const pipeline = new Pipeline({
      stages: [
        new Stage({ name: "a", workers: 1, tasks: [double] }),
        new Stage({ name: "b", workers: 1, tasks: [double] }),
      ],
    });

    await assert.rejects(pipeline.feed([1], { stage: "zzz" }), {
      name: "RangeError",
      message:
        `Cannot feed the pipeline as 'stage' must be a stage name of the pipeline (a, b): received "zzz"`,
    });
  });

  it("Pipeline.feed() rejects a non-numeric priority", async () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [double] })],
    });

    await assert.rejects(pipeline.feed([1], { priority: "high" as unknown as number }), {
      name: "TypeError",
      message: `Cannot feed the pipeline as 'priority' must be a number: received "high"`,
    });
  });

  it("Pipeline.feed() rejects inputs that are not iterable", async () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [double] })],
    });

    await assert.rejects(pipeline.feed(5 as unknown as number[]), {
      name: "TypeError",
      message:
        "Cannot feed the pipeline as 'inputs' must be an Iterable or AsyncIterable: received 5",
    });
  });

  it("Pipeline.start() rejects a second active run", () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [double] })],
    });

    const results = pipeline.start();

    assert.throws(() => pipeline.start(), {
      name: "TypeError",
      message: "Cannot start the pipeline as a run is already active",
    });
    pipeline.close();
    return results.then(() => undefined);
  });

  it("Pipeline.run() rejects while a started run is active", async () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [double] })],
    });

    const results = pipeline.start();
    await pipeline.feed([1]);

    await assert.rejects(pipeline.run([5]).toArray(), {
      name: "TypeError",
      message: "Cannot run the pipeline as a run is already active",
    });
    pipeline.close();
    assert.equal((await results).length, 1);
  });
});

describe("Pipeline.join()", () => {
  it("Pipeline.join() waits for every fed item", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [heldStage("s", held, { workers: 2 })] });

    const results = observe(pipeline.start().toArray());
    await pipeline.feed([1, 2, 3]);
    const joined = observe(pipeline.join());
    await flushUntil(() => held.started.length === 2);

    assert.equal(joined.state, "pending");

    await releaseAll(held, 3);
    await flushUntil(() => joined.state !== "pending");
    await flushUntil(() => results.state !== "pending");

    assert.equal(joined.state, "fulfilled");
    assert.equal(results.value?.length, 3);
  });

  it("Pipeline.join() waits for same-turn feeds", async () => {
    let completed = 0;
    const pipeline = new Pipeline({
      stages: [
        new Stage({
          name: "s",
          workers: 2,
          tasks: [async (n: number) => {
            await flush(1);
            completed++;
            return n;
          }],
        }),
      ],
    });

    const results = observe(pipeline.start().toArray());
    const feeds = [pipeline.feed([1]), pipeline.feed([2]), pipeline.feed([3])];
    await pipeline.join();

    assert.equal(completed, 3);
    await Promise.all(feeds);
    await flushUntil(() => results.state !== "pending");
    assert.equal(results.value?.length, 3);
  });

  it("Pipeline.join() waits for a feed call in progress", async () => {
    let completed = 0;
    const pipeline = new Pipeline({
      stages: [
        new Stage({
          name: "s",
          workers: 2,
          tasks: [(n: number) => {
            completed++;
            return n;
          }],
        }),
      ],
    });

    const results = observe(pipeline.start().toArray());
    const fed = pipeline.feed([1, 2, 3]);
    await pipeline.join();

    assert.equal(completed, 3);
    await fed;
    await flushUntil(() => results.state !== "pending");
    assert.equal(results.value?.length, 3);
  });

  it("Pipeline.join() resolves without a reader of the results", async () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 2, tasks: [double] })],
    });

    pipeline.start();
    await pipeline.feed([1, 2, 3]);
    const joined = observe(pipeline.join());
    await flush(20);

    assert.equal(joined.state, "fulfilled");
    assert.equal(pipeline.stats().succeeded, 3);
  });

  it("Pipeline.join() resolves at once without a run", async () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [double] })],
    });

    const joined = observe(pipeline.join());
    await flush(1);

    assert.equal(joined.state, "fulfilled");
  });
});

describe("Pipeline.shutdown()", () => {
  it("Pipeline.shutdown() with cancel aborts running tasks", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [abortableStage("s", held, 2)] });

    const results = observe(pipeline.run([1, 2, 3, 4]).toArray());
    await flushUntil(() => held.started.length === 2);
    await pipeline.shutdown({ cancel: true });
    await flushUntil(() => results.state !== "pending");
    const reason = held.signal(1).reason;

    assert.ok(reason instanceof PipelineShutdownError);
    assert.equal(reason.message, "Cannot finish the run as the pipeline was shut down with cancel");
    assert.equal(held.signal(2).reason, reason);
    assert.equal(results.reason, reason);
    assert.deepEqual(held.started, [1, 2]);
    assert.equal(pipeline.stats().inFlight, 0);
    assert.equal(pipeline.closed, true);
  });

  it("Pipeline.shutdown() with cancel rejects a waiting feed", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({
      stages: [heldStage("s", held, { workers: 1, queueCapacity: 0 })],
    });

    const results = observe(pipeline.start().toArray());
    const fed = observe(pipeline.feed([1, 2]));
    await flushUntil(() => held.started.length === 1);
    const down = pipeline.shutdown({ cancel: true });
    held.release(1);
    await down;
    await flushUntil(() => fed.state !== "pending" && results.state !== "pending");

    assert.ok(fed.reason instanceof PipelineShutdownError);
    assert.ok(results.reason instanceof PipelineShutdownError);
    assert.deepEqual(held.started, [1]);
  });

  it("Pipeline.shutdown() lets the active run finish", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [heldStage("s", held, { workers: 2 })] });

    const results = observe(pipeline.run([1, 2, 3]).toArray());
    await flushUntil(() => held.started.length === 2);
    const down = observe(pipeline.shutdown());
    await flush();

    assert.equal(down.state, "pending");
    assert.equal(held.signal(1).aborted, false);

    await releaseAll(held, 3);
    await flushUntil(() => down.state !== "pending");
    await flushUntil(() => results.state !== "pending");

    assert.equal(down.state, "fulfilled");
    assert.deepEqual(results.value?.map((r) => r.ok && r.value), [1, 2, 3]);
  });

  it("Pipeline.shutdown() closes the input of a started run", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [heldStage("s", held, { workers: 2 })] });

    const results = observe(pipeline.start().toArray());
    await pipeline.feed([1, 2]);
    const down = observe(pipeline.shutdown());
    await releaseAll(held, 2);
    await flushUntil(() => down.state !== "pending" && results.state !== "pending");

    assert.equal(down.state, "fulfilled");
    assert.equal(results.value?.length, 2);
    await assert.rejects(pipeline.feed([3]), TypeError);
  });

  it("Pipeline.shutdown() rejects later runs", async () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [double] })],
    });

    await pipeline.shutdown();

    assert.equal(pipeline.closed, true);
    await assert.rejects(pipeline.run([1]).toArray(), {
      name: "PipelineShutdownError",
      message: "Cannot run the pipeline as it is shut down",
    });
    assert.throws(() => pipeline.start(), PipelineShutdownError);
  });

  it("Pipeline.shutdown() resolves at once when idle", async () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [double] })],
    });

    const down = observe(pipeline.shutdown());
    await flush(1);

    assert.equal(down.state, "fulfilled");
  });

  it("Pipeline waits for its run on dispose", async () => {
    let completed = 0;
    let results: Promise<unknown[]> | undefined;

    {
      await using pipeline = new Pipeline({
        stages: [
          new Stage({
            name: "s",
            workers: 2,
            tasks: [async (n: number) => {
              await flush(1);
              completed++;
              return n;
            }],
          }),
        ],
      });
      results = pipeline.run([1, 2, 3, 4]).toArray();
      await flush(1);
    }

    assert.equal(completed, 4);
    assert.equal((await results).length, 4);
  });
});
