import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  type CallbackErrorDetail,
  type ItemEventDetail,
  Pipeline,
  PipelineItemError,
  type PipelineResult,
  PipelineShutdownError,
  type RunEndDetail,
  Stage,
  type StageTaskContext,
  type TaskEventDetail,
} from "@antflow/antflow";
import {
  countingSource,
  deferred,
  flush,
  flushUntil,
  HeldTasks,
  itemsInStage,
  observe,
  probeSource,
  untilAborted,
  useVirtualClock,
} from "./_helpers.ts";

function range(count: number): number[] {
  return Array.from({ length: count }, (_, i) => i);
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
function abortableStage(
  name: string,
  held: HeldTasks<number>,
  workers = 4,
): Stage<number, number> {
  return new Stage({
    name,
    workers,
    tasks: [
      (n: number, context: StageTaskContext) =>
        Promise.race([held.task(n, context) as Promise<number>, untilAborted(context.signal)]),
    ],
  });
}

function double(n: number): number {
  return n * 2;
}

function single(workers = 2): Pipeline<[Stage<number, number>]> {
  return new Pipeline({ stages: [new Stage({ name: "double", workers, tasks: [double] })] });
}

function assertThrowsExactly(
  fn: () => unknown,
  type: typeof TypeError | typeof RangeError,
  message: string,
): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof type, `expected a ${type.name}, got ${String(error)}`);
    assert.equal(error.message, message);
    return true;
  });
}

function detailsOf<D>(events: Event[]): D[] {
  return events.map((event) => (event as CustomEvent<D>).detail);
}

describe("Pipeline()", () => {
  it("Pipeline() rejects duplicate stage names", () => {
    const a = new Stage({ name: "a", workers: 1, tasks: [double] });
    const b = new Stage({ name: "a", workers: 1, tasks: [double] });

    assertThrowsExactly(
      () => new Pipeline({ stages: [a, b] }),
      RangeError,
      `Cannot create Pipeline as 'stages' must be stages with unique names: received "a"`,
    );
  });

  it("Pipeline() rejects the same stage twice", () => {
    const a = new Stage({ name: "a", workers: 1, tasks: [double] });

    assert.throws(() => new Pipeline({ stages: [a, a] }), RangeError);
  });

  it("Pipeline() rejects a non-Stage entry", () => {
    const a = new Stage({ name: "a", workers: 1, tasks: [double] });
    const fake = { name: "b", workers: 1, tasks: [double] } as unknown as Stage<number, number>;

    assertThrowsExactly(
      () => new Pipeline({ stages: [a, fake] }),
      TypeError,
      "Cannot create Pipeline as 'stages[1]' must be a Stage: received an object",
    );
  });

  it("Pipeline() rejects an empty stage list", () => {
    assertThrowsExactly(
      () => new Pipeline({ stages: [] as unknown as [Stage<number, number>] }),
      RangeError,
      "Cannot create Pipeline as 'stages' must be a non-empty array of Stages: " +
        "received an empty array",
    );
  });

  it("Pipeline() rejects missing stages", () => {
    assertThrowsExactly(
      () => new Pipeline({} as unknown as { stages: [Stage<number, number>] }),
      TypeError,
      "Cannot create Pipeline as 'stages' must be a non-empty array of Stages: received undefined",
    );
  });

  it("Pipeline() rejects an invalid signal", () => {
    const stage = new Stage({ name: "a", workers: 1, tasks: [double] });

    assertThrowsExactly(
      () => new Pipeline({ stages: [stage], signal: {} as AbortSignal }),
      TypeError,
      "Cannot create Pipeline as 'signal' must be an AbortSignal: received an object",
    );
  });

  it("Pipeline.stageNames lists the stages in order", () => {
    const pipeline = new Pipeline({
      stages: [
        new Stage({ name: "parse", workers: 1, tasks: [(s: string) => s.length] }),
        new Stage({ name: "count", workers: 1, tasks: [double] }),
      ],
    });

    assert.deepEqual(pipeline.stageNames, ["parse", "count"]);
  });
});

describe("Pipeline.run() inputs", () => {
  it("Pipeline.run() reads an array", async () => {
    const results = await single().run([1, 2, 3]);

    assert.deepEqual(results.map((r) => r.ok && r.value), [2, 4, 6]);
  });

  it("Pipeline.run() reads an Iterable", async () => {
    const results = await single().run(new Set([1, 2, 3]));

    assert.deepEqual(results.map((r) => r.ok && r.value), [2, 4, 6]);
  });

  it("Pipeline.run() reads a sync generator", async () => {
    function* numbers(): Generator<number> {
      yield* [1, 2, 3];
    }

    const results = await single().run(numbers());

    assert.deepEqual(results.map((r) => r.ok && r.value), [2, 4, 6]);
  });

  it("Pipeline.run() reads an async generator", async () => {
    async function* numbers(): AsyncGenerator<number> {
      for (const n of [1, 2, 3]) {
        await flush(1);
        yield n;
      }
    }

    const results = await single().run(numbers());

    assert.deepEqual(results.map((r) => r.ok && r.value), [2, 4, 6]);
  });

  it("Pipeline.run() finishes an empty input", async () => {
    const pipeline = single();

    const results = await pipeline.run([]);

    assert.deepEqual(results, []);
    assert.equal(pipeline.stats().running, false);
  });

  it("Pipeline.run() records each input with its result", async () => {
    const results = await single().run([5, 6]);

    assert.deepEqual(results, [
      { ok: true, value: 10, index: 0, input: 5 },
      { ok: true, value: 12, index: 1, input: 6 },
    ]);
  });

  it("Pipeline.run() rejects inputs that are not iterable", () => {
    assertThrowsExactly(
      () => single().run(5 as unknown as number[]),
      TypeError,
      "Cannot run the pipeline as 'inputs' must be an Iterable or AsyncIterable: received 5",
    );
  });

  it("Pipeline.run() rejects a bufferSize out of range", () => {
    assertThrowsExactly(
      () => single().run([1], { bufferSize: -1 }),
      RangeError,
      "Cannot run the pipeline as 'bufferSize' must be a non-negative integer: received -1",
    );
  });

  it("Pipeline.run() starts nothing until the stream is read", async () => {
    let calls = 0;
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [(n: number) => calls += n] })],
    });

    const stream = pipeline.run([1]);
    await flush();

    assert.equal(calls, 0);
    assert.equal(pipeline.stats().running, false);

    await stream;

    assert.equal(calls, 1);
  });
});

describe("Pipeline.run() backpressure", () => {
  it("Pipeline.run() pulls input as room frees", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({
      stages: [heldStage("s", held, { workers: 2, queueCapacity: 3 })],
    });
    const probe = probeSource(100);

    const results = observe(pipeline.run(probe.source).toArray());
    await flushUntil(() => held.started.length === 2);
    await flush();

    assert.equal(probe.pulled(), 5);
    assert.equal(pipeline.stats().stages[0]?.queued, 3);
    assert.equal(pipeline.stats().stages[0]?.running, 2);

    held.release(0);
    await flush();

    assert.equal(probe.pulled(), 6);

    for (let i = 1; i < 100; i++) {
      await flushUntil(() => held.started.includes(i));
      held.release(i);
    }
    await flushUntil(() => results.state !== "pending");

    assert.equal(results.value?.length, 100);
  });

  it("Pipeline.run() stops pulling for a slow consumer", async () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, queueCapacity: 0, tasks: [double] })],
    });
    const probe = probeSource(100);

    const iterator = pipeline.run(probe.source, { bufferSize: 2 })[Symbol.asyncIterator]();
    const first = await iterator.next();
    await flush();

    assert.equal(first.value?.index, 0);
    assert.ok(probe.pulled() <= 4, `pulled ${probe.pulled()} inputs`);

    await iterator.return?.();

    assert.equal(probe.closed(), true);
  });

  it("Pipeline.run() holds a fast stage back", async () => {
    const held = new HeldTasks<number>();
    const fast = new Stage({ name: "fast", workers: 2, queueCapacity: 2, tasks: [double] });
    const pipeline = new Pipeline({
      stages: [fast, heldStage("slow", held, { workers: 1, queueCapacity: 0 })],
    });
    const probe = probeSource(50);

    const results = observe(pipeline.run(probe.source).toArray());
    await flushUntil(() => held.started.length === 1);
    await flush();
    const [fastStats, slowStats] = pipeline.stats().stages;

    assert.equal(fastStats?.outbound, 4);
    assert.equal(fastStats?.busy, 0);
    assert.equal(slowStats?.running, 1);
    assert.equal(probe.pulled(), 5);

    for (let i = 0; i < 50; i++) {
      await flushUntil(() => held.started.length > i);
      held.release(held.started[i] as number);
    }
    await flushUntil(() => results.state !== "pending");

    assert.equal(results.value?.length, 50);
  });
});

describe("Pipeline.run() results", () => {
  it("Pipeline.run() yields in completion order by default", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [heldStage("s", held, { workers: 3 })] });
    const seen: number[] = [];

    const loop = (async () => {
      for await (const result of pipeline.run([0, 1, 2])) seen.push(result.index);
    })();
    await flushUntil(() => held.started.length === 3);
    for (const n of [2, 0, 1]) {
      held.release(n);
      await flushUntil(() => seen.includes(n));
    }
    await loop;

    assert.deepEqual(seen, [2, 0, 1]);
  });

  it("Pipeline.run() yields in input order when ordered", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [heldStage("s", held, { workers: 3 })] });
    const seen: number[] = [];

    const loop = (async () => {
      for await (const result of pipeline.run([0, 1, 2], { ordered: true })) {
        seen.push(result.index);
      }
    })();
    await flushUntil(() => held.started.length === 3);
    held.release(2);
    held.release(1);
    await flush();

    assert.deepEqual(seen, []);

    held.release(0);
    await loop;

    assert.deepEqual(seen, [0, 1, 2]);
  });

  it("Pipeline.run() resolves in input order when awaited", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [heldStage("s", held, { workers: 3 })] });

    const results = observe(pipeline.run([0, 1, 2]).toArray());
    await flushUntil(() => held.started.length === 3);
    for (const n of [2, 0, 1]) held.release(n, n * 10);
    await flushUntil(() => results.state !== "pending");

    assert.deepEqual(results.value?.map((r) => r.ok && r.value), [0, 10, 20]);
  });

  it("Pipeline.run() describes a failed item", async () => {
    const error = new Error("bad");
    function check(n: number): number {
      if (n === 14) throw error;
      return n;
    }
    const pipeline = new Pipeline({
      stages: [
        new Stage({ name: "first", workers: 1, tasks: [double] }),
        new Stage({ name: "second", workers: 1, tasks: [check] }),
      ],
    });

    const results = await pipeline.run([0, 7]);

    assert.deepEqual(results[1], {
      ok: false,
      error,
      index: 1,
      input: 7,
      stage: "second",
      task: "check",
      attempts: 1,
    });
  });

  it("Pipeline.run() ends every item exactly once", async () => {
    function check(n: number): number {
      if (n % 7 === 3) throw new Error(`bad ${n}`);
      return n;
    }
    const pipeline = new Pipeline({
      stages: [
        new Stage({ name: "first", workers: 3, queueCapacity: 1, tasks: [double] }),
        new Stage({ name: "second", workers: 2, queueCapacity: 0, tasks: [check] }),
      ],
    });
    const seen: PipelineResult<number>[] = [];

    for await (const result of pipeline.run(range(60))) seen.push(result);

    assert.deepEqual(seen.map((r) => r.index).sort((a, b) => a - b), range(60));
    const failing = range(60).filter((n) => (n * 2) % 7 === 3).length;
    assert.equal(seen.filter((r) => !r.ok).length, failing);
    assert.equal(pipeline.stats().succeeded, 60 - failing);
    assert.equal(pipeline.stats().failed, failing);
    assert.equal(pipeline.stats().fed, 60);
  });
});

describe("Pipeline.run() failFast", () => {
  it("Pipeline.run() throws the first failure", async () => {
    const cause = new Error("bad");
    function check(n: number): number {
      if (n === 2) throw cause;
      return n;
    }
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "check", workers: 1, tasks: [check] })],
    });

    const error = await pipeline.run([0, 1, 2, 3], { failFast: true }).toArray().then(
      () => undefined,
      (caught: unknown) => caught,
    );

    assert.ok(error instanceof PipelineItemError);
    assert.equal(error.cause, cause);
    assert.equal(error.stage, "check");
    assert.equal(error.task, "check");
    assert.equal(error.attempts, 1);
    assert.equal(error.index, 2);
    assert.equal(
      error.message,
      `Item 2 failed in stage "check" at task "check" after 1 attempt(s): bad`,
    );
  });

  it("Pipeline.run() aborts running tasks on a failFast failure", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [abortableStage("s", held, 4)] });

    const loop = (async () => {
      for await (const _ of pipeline.run(range(4), { failFast: true })) {
        // Each result is dropped.
      }
    })();
    const outcome = observe(loop);
    await flushUntil(() => held.started.length === 4);
    held.fail(2, new Error("bad"));
    await flushUntil(() => outcome.state !== "pending");

    assert.equal(outcome.state, "rejected");
    assert.ok(outcome.reason instanceof PipelineItemError);
    for (const n of [0, 1, 3]) {
      assert.equal(held.signal(n).aborted, true);
      assert.equal(held.signal(n).reason, outcome.reason);
    }
    assert.equal(pipeline.stats().inFlight, 0);
  });

  it("Pipeline.run() stops reading input after a failFast failure", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [abortableStage("s", held, 2)] });
    const probe = probeSource(100);

    const results = observe(pipeline.run(probe.source, { failFast: true }).toArray());
    await flushUntil(() => probe.pulled() === 22);
    await flush();
    held.fail(0, new Error("bad"));
    await flushUntil(() => results.state !== "pending");

    assert.equal(results.state, "rejected");
    assert.equal(probe.pulled(), 22);
    assert.equal(probe.closed(), true);
  });

  it("Pipeline.run() starts no item after a failFast failure", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [abortableStage("s", held, 2)] });

    const results = observe(pipeline.run(range(10), { failFast: true }).toArray());
    await flushUntil(() => held.started.length === 2);
    held.fail(0, new Error("bad"));
    await flushUntil(() => results.state !== "pending");

    assert.equal(results.state, "rejected");
    assert.deepEqual(held.started, [0, 1]);
  });
});

describe("Pipeline.run() cancellation", () => {
  it("Pipeline.run() aborts running tasks on break", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [abortableStage("s", held, 4)] });
    const probe = probeSource(100);

    const loop = (async () => {
      for await (const _ of pipeline.run(probe.source)) break;
    })();
    await flushUntil(() => held.started.length === 4);
    held.release(0);
    await loop;

    for (const n of [1, 2, 3]) {
      assert.equal(held.signal(n).aborted, true);
      assert.equal((held.signal(n).reason as DOMException).name, "AbortError");
    }
  });

  it("Pipeline.run() closes the input on break", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [abortableStage("s", held, 4)] });
    const probe = probeSource(100);

    const loop = (async () => {
      for await (const _ of pipeline.run(probe.source)) break;
    })();
    await flushUntil(() => held.started.length === 4);
    held.release(0);
    await loop;

    assert.equal(probe.closed(), true);
    assert.equal(pipeline.stats().inFlight, 0);
    assert.equal(pipeline.stats().running, false);
  });

  it("Pipeline.run() cancels the run when the loop throws", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [abortableStage("s", held, 4)] });
    const probe = probeSource(100);

    const loop = (async () => {
      for await (const _ of pipeline.run(probe.source)) throw new Error("consumer failed");
    })();
    const outcome = observe(loop);
    await flushUntil(() => held.started.length === 4);
    held.release(0);
    await flushUntil(() => outcome.state !== "pending");

    assert.equal((outcome.reason as Error).message, "consumer failed");
    assert.equal(held.signal(1).aborted, true);
    assert.equal(probe.closed(), true);
    assert.equal(pipeline.stats().inFlight, 0);
  });

  it("Pipeline.run() rejects with the reason of its signal", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [abortableStage("s", held, 4)] });
    const probe = probeSource(100);
    const controller = new AbortController();
    const reason = new Error("stop");

    const results = observe(pipeline.run(probe.source, { signal: controller.signal }).toArray());
    await flushUntil(() => held.started.length === 4);
    controller.abort(reason);
    await flushUntil(() => results.state !== "pending");

    assert.equal(results.reason, reason);
    assert.equal(held.signal(0).reason, reason);
    assert.equal(probe.closed(), true);
    assert.equal(pipeline.stats().inFlight, 0);
    assert.equal(pipeline.stats().cancelled, pipeline.stats().fed);
  });

  it("Pipeline.run() rejects at once with an aborted signal", async () => {
    let calls = 0;
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [(n: number) => calls += n] })],
    });
    const reason = new Error("already");

    await assert.rejects(
      pipeline.run([1], { signal: AbortSignal.abort(reason) }).toArray(),
      reason,
    );

    assert.equal(calls, 0);
  });

  it("Pipeline.run() runs again after a break", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [abortableStage("s", held, 2)] });

    const loop = (async () => {
      for await (const _ of pipeline.run(range(10))) break;
    })();
    await flushUntil(() => held.started.length === 2);
    held.release(0);
    await loop;
    const again = observe(pipeline.run([100]).toArray());
    await flushUntil(() => held.started.includes(100));
    held.release(100);
    await flushUntil(() => again.state !== "pending");

    assert.deepEqual(again.value, [{ ok: true, value: 100, index: 0, input: 100 }]);
  });

  it("Pipeline() cancels the run when its signal aborts", async () => {
    const held = new HeldTasks<number>();
    const controller = new AbortController();
    const pipeline = new Pipeline({
      stages: [abortableStage("s", held, 2)],
      signal: controller.signal,
    });
    const probe = probeSource(10);
    const reason = new Error("closing");

    const results = observe(pipeline.run(probe.source).toArray());
    await flushUntil(() => held.started.length === 2);
    controller.abort(reason);
    await flushUntil(() => results.state !== "pending");

    assert.equal(results.reason, reason);
    assert.equal(held.signal(0).reason, reason);
    assert.equal(probe.closed(), true);
    assert.equal(pipeline.closed, true);
    await assert.rejects(pipeline.run([1]).toArray(), PipelineShutdownError);
  });

  it("Pipeline() with an aborted signal rejects every run", async () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [double] })],
      signal: AbortSignal.abort(new Error("gone")),
    });

    assert.equal(pipeline.closed, true);
    await assert.rejects(pipeline.run([1]).toArray(), PipelineShutdownError);
  });

  it("Pipeline.run() closes the input exactly once", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [abortableStage("s", held, 2)] });
    const counting = countingSource(100);

    const loop = (async () => {
      for await (const _ of pipeline.run(counting.source)) break;
    })();
    await flushUntil(() => held.started.length === 2);
    held.release(0);
    await loop;

    assert.equal(counting.returns(), 1);
  });
});

describe("Pipeline queueCapacity", () => {
  it("Pipeline hands items over directly with queueCapacity 0", async () => {
    const first = new Stage({ name: "first", workers: 4, tasks: [double] });
    const second = new Stage({
      name: "second",
      workers: 2,
      queueCapacity: 0,
      tasks: [async (n: number) => {
        await flush(1);
        return n;
      }],
    });
    const pipeline = new Pipeline({ stages: [first, second] });
    let peak = 0;
    const sample = () => {
      peak = Math.max(peak, itemsInStage(pipeline.stats().stages[1]!));
    };
    pipeline.addEventListener("item", sample);
    pipeline.addEventListener("task", sample);

    const results = await pipeline.run(range(40));

    assert.equal(results.filter((r) => r.ok).length, 40);
    assert.equal(peak, 2);
  });

  it("Pipeline takes all input with queueCapacity Infinity", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({
      stages: [heldStage("s", held, { workers: 1, queueCapacity: Infinity })],
    });
    const probe = probeSource(200);

    const results = observe(pipeline.run(probe.source).toArray());
    await flushUntil(() => probe.pulled() === 200);
    await flush();

    assert.equal(pipeline.stats().stages[0]?.queued, 199);
    assert.equal(pipeline.stats().inFlight, 200);

    for (let i = 0; i < 200; i++) {
      await flushUntil(() => held.started.includes(i));
      held.release(i);
    }
    await flushUntil(() => results.state !== "pending");

    assert.equal(results.value?.length, 200);
  });
});

describe("Pipeline.stats()", () => {
  it("Pipeline.stats() reads zeros before any run", () => {
    const stats = single(3).stats();

    assert.equal(stats.running, false);
    assert.equal(stats.fed, 0);
    assert.equal(stats.inFlight, 0);
    assert.equal(stats.throughput, 0);
    assert.equal(stats.errors.total, 0);
    assert.deepEqual(stats.stages, [{
      name: "double",
      workers: 3,
      busy: 0,
      queued: 0,
      parked: 0,
      running: 0,
      outbound: 0,
      completed: 0,
      failed: 0,
      retried: 0,
      skipped: 0,
    }]);
  });

  it("Pipeline.stats() counts a run in progress", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [heldStage("s", held, { workers: 2 })] });

    const results = observe(pipeline.run(range(5)).toArray());
    await flushUntil(() => held.started.length === 2);
    held.release(0);
    await flush();
    const stats = pipeline.stats();

    assert.equal(stats.running, true);
    assert.equal(stats.fed, 5);
    assert.equal(stats.succeeded, 1);
    assert.equal(stats.inFlight, 4);
    assert.equal(stats.stages[0]?.busy, 2);
    assert.equal(stats.stages[0]?.running, 2);
    assert.equal(stats.stages[0]?.queued, 2);
    assert.equal(stats.stages[0]?.completed, 1);

    for (const n of [1, 2, 3, 4]) {
      await flushUntil(() => held.started.includes(n));
      held.release(n);
    }
    await flushUntil(() => results.state !== "pending");

    assert.equal(pipeline.stats().running, false);
    assert.equal(pipeline.stats().inFlight, 0);
    assert.equal(pipeline.stats().succeeded, 5);
  });

  it("Pipeline.stats() counts per-stage outcomes", async () => {
    function check(n: number, { attempt }: StageTaskContext): number {
      if (n === 1 && attempt === 1) throw new Error("transient");
      if (n === 2) throw new Error("permanent");
      return n;
    }
    const pipeline = new Pipeline({
      stages: [
        new Stage({
          name: "check",
          workers: 2,
          tasks: [check],
          retry: { attempts: 2 },
          skipIf: (n: number) => n === 3,
        }),
        new Stage({ name: "after", workers: 1, tasks: [double] }),
      ],
    });

    await pipeline.run([0, 1, 2, 3]);
    const [checkStats, afterStats] = pipeline.stats().stages;

    assert.equal(checkStats?.completed, 2);
    assert.equal(checkStats?.failed, 1);
    assert.equal(checkStats?.retried, 2);
    assert.equal(checkStats?.skipped, 1);
    assert.equal(afterStats?.completed, 3);
    assert.equal(pipeline.stats().succeeded, 3);
    assert.equal(pipeline.stats().failed, 1);
  });

  it("Pipeline.stats() measures throughput", async () => {
    using clock = useVirtualClock();
    async function wait(n: number): Promise<number> {
      await new Promise((resolve) => setTimeout(resolve, 250));
      return n;
    }
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [wait] })],
    });

    const results = observe(pipeline.run(range(4)).toArray());
    await flush();
    await clock.tick(1000);
    await flushUntil(() => results.state !== "pending");
    const stats = pipeline.stats();

    assert.equal(stats.elapsedMs, 1000);
    assert.equal(stats.throughput, 4);
  });

  it("Pipeline.stats() summarises errors by type and stage", async () => {
    function first(n: number): number {
      if (n === 0) throw new TypeError("bad type");
      return n;
    }
    function second(n: number): number {
      if (n === 1) throw new RangeError("bad range");
      if (n === 2) throw new TypeError("bad type");
      if (n === 3) throw "text";
      return n;
    }
    const pipeline = new Pipeline({
      stages: [
        new Stage({ name: "first", workers: 1, tasks: [first] }),
        new Stage({ name: "second", workers: 1, tasks: [second] }),
      ],
    });

    await pipeline.run([0, 1, 2, 3, 4]);
    const errors = pipeline.stats().errors;

    assert.equal(errors.total, 4);
    assert.deepEqual(errors.byType, { TypeError: 2, RangeError: 1, string: 1 });
    assert.deepEqual(errors.byStage, { first: 1, second: 3 });
    assert.deepEqual(errors.recent.map((failure) => failure.index).sort(), [0, 1, 2, 3]);
    assert.deepEqual(errors.recent.find((failure) => failure.index === 1), {
      index: 1,
      stage: "second",
      task: "second",
      attempts: 1,
      error: errors.recent.find((failure) => failure.index === 1)?.error,
    });
  });

  it("Pipeline.stats() keeps the last 50 failures", async () => {
    function fail(n: number): number {
      throw new Error(`bad ${n}`);
    }
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [fail] })],
    });

    await pipeline.run(range(60));
    const errors = pipeline.stats().errors;

    assert.equal(errors.total, 60);
    assert.equal(errors.recent.length, 50);
    assert.deepEqual(errors.recent.map((failure) => failure.index), range(50).map((i) => i + 10));
  });

  it("Pipeline.stats() counts items cancelled by failFast", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [abortableStage("s", held, 4)] });

    const results = observe(pipeline.run(range(4), { failFast: true }).toArray());
    await flushUntil(() => held.started.length === 4);
    held.fail(1, new Error("bad"));
    await flushUntil(() => results.state !== "pending");
    const stats = pipeline.stats();

    assert.equal(stats.failed, 1);
    assert.equal(stats.cancelled, 3);
    assert.equal(stats.errors.total, 1);
  });

  it("Pipeline.stats() counts items cancelled by a break", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [abortableStage("s", held, 3)] });

    const loop = (async () => {
      for await (const _ of pipeline.run(range(10))) break;
    })();
    await flushUntil(() => held.started.length === 3);
    held.release(0);
    await loop;

    assert.equal(pipeline.stats().succeeded, 1);
    assert.equal(pipeline.stats().cancelled, pipeline.stats().fed - 1);
    assert.equal(pipeline.stats().inFlight, 0);
  });
});

describe("Pipeline events", () => {
  it("Pipeline emits item events through every stage", async () => {
    const pipeline = new Pipeline({
      stages: [
        new Stage({ name: "a", workers: 1, tasks: [double] }),
        new Stage({ name: "b", workers: 1, tasks: [double] }),
      ],
    });
    const events: Event[] = [];
    pipeline.addEventListener("item", (event) => events.push(event));

    await pipeline.run([1]);

    assert.deepEqual(
      detailsOf<ItemEventDetail>(events).map(({ status, stage, index, attempt }) => ({
        status,
        stage,
        index,
        attempt,
      })),
      [
        { status: "queued", stage: "a", index: 0, attempt: 1 },
        { status: "completed", stage: "a", index: 0, attempt: 1 },
        { status: "queued", stage: "b", index: 0, attempt: 1 },
        { status: "completed", stage: "b", index: 0, attempt: 1 },
      ],
    );
  });

  it("Pipeline emits failed, retrying and skipped item events", async () => {
    const error = new Error("bad");
    let passes = 0;
    function flaky(n: number): number {
      if (n === 0 && ++passes === 1) throw new Error("transient");
      if (n === 1) throw error;
      return n;
    }
    const pipeline = new Pipeline({
      stages: [
        new Stage({
          name: "s",
          workers: 1,
          tasks: [flaky],
          skipIf: (n: number) => n === 2,
          retry: { attempts: 2, scope: "stage", retryIf: (e) => e !== error },
        }),
      ],
    });
    const events: Event[] = [];
    pipeline.addEventListener("item", (event) => events.push(event));

    await pipeline.run([0, 1, 2]);
    const details = detailsOf<ItemEventDetail>(events);
    const statuses = (index: number) =>
      details.filter((d) => d.index === index).map((d) => `${d.status} ${d.attempt}`);

    assert.deepEqual(statuses(0), ["queued 1", "retrying 1", "completed 2"]);
    assert.deepEqual(statuses(1), ["queued 1", "failed 1"]);
    assert.deepEqual(statuses(2), ["queued 1", "skipped 1"]);
    assert.equal(details.find((d) => d.status === "failed")?.error, error);
  });

  it("Pipeline emits task events with durations", async () => {
    using clock = useVirtualClock();
    async function wait(n: number, { attempt }: StageTaskContext): Promise<number> {
      await new Promise((resolve) => setTimeout(resolve, 30));
      if (attempt === 1) throw new Error("transient");
      return n;
    }
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [wait], retry: { attempts: 2 } })],
    });
    const events: Event[] = [];
    pipeline.addEventListener("task", (event) => events.push(event));

    const results = observe(pipeline.run([1]).toArray());
    await flush();
    await clock.tick(60);
    await flushUntil(() => results.state !== "pending");

    assert.deepEqual(
      detailsOf<TaskEventDetail>(events).map((
        { type, stage, task, index, attempt, durationMs },
      ) => ({
        type,
        stage,
        task,
        index,
        attempt,
        durationMs,
      })),
      [
        { type: "start", stage: "s", task: "wait", index: 0, attempt: 1, durationMs: 0 },
        { type: "retry", stage: "s", task: "wait", index: 0, attempt: 1, durationMs: 30 },
        { type: "start", stage: "s", task: "wait", index: 0, attempt: 2, durationMs: 0 },
        { type: "complete", stage: "s", task: "wait", index: 0, attempt: 2, durationMs: 30 },
      ],
    );
  });

  it("Pipeline emits a fail task event", async () => {
    const error = new Error("bad");
    function send(): never {
      throw error;
    }
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [send] })],
    });
    const events: Event[] = [];
    pipeline.addEventListener("task", (event) => events.push(event));

    await pipeline.run([1]);
    const details = detailsOf<TaskEventDetail>(events);

    assert.deepEqual(details.map((d) => d.type), ["start", "fail"]);
    assert.equal(details[1]?.error, error);
    assert.equal(details[1]?.attempt, 1);
  });

  it("Pipeline times a task from its start event", async () => {
    using clock = useVirtualClock();
    async function wait(ms: number): Promise<number> {
      await new Promise((resolve) => setTimeout(resolve, ms));
      return ms;
    }
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [wait] })],
    });
    const events: Event[] = [];
    pipeline.addEventListener("task", (event) => events.push(event));

    const results = observe(pipeline.run([200, 20]).toArray());
    await flush();
    await clock.tick(220);
    await flushUntil(() => results.state !== "pending");
    const complete = detailsOf<TaskEventDetail>(events).filter((d) => d.type === "complete");

    assert.deepEqual(complete.map((d) => [d.index, d.durationMs]), [[0, 200], [1, 20]]);
  });

  it("Pipeline stops calling a removed listener", async () => {
    const pipeline = single();
    let calls = 0;
    const listener = () => calls++;
    pipeline.addEventListener("item", listener);

    await pipeline.run([1]);
    const first = calls;
    pipeline.removeEventListener("item", listener);
    await pipeline.run([1]);

    assert.equal(first, 2);
    assert.equal(calls, 2);
  });

  it("Pipeline calls a listener object", async () => {
    const pipeline = single();
    const statuses: string[] = [];
    const listener = {
      handleEvent(event: Event): void {
        statuses.push((event as CustomEvent<ItemEventDetail>).detail.status);
      },
    };
    pipeline.addEventListener("item", listener);

    await pipeline.run([1]);

    assert.deepEqual(statuses, ["queued", "completed"]);
  });

  it("Pipeline reports a throwing listener once", async () => {
    const pipeline = single();
    const reports: CallbackErrorDetail[] = [];
    pipeline.addEventListener("item", () => {
      throw new Error("listener failed");
    });
    pipeline.addEventListener("callbackerror", (event) => {
      reports.push((event as CustomEvent<CallbackErrorDetail>).detail);
    });

    const results = await pipeline.run([1]);

    assert.equal(results[0]?.ok, true);
    assert.equal(reports.length, 2);
    assert.equal(reports[0]?.source, "listener:item");
    assert.equal(reports[0]?.stage, undefined);
    assert.equal((reports[0]?.error as Error).message, "listener failed");
  });

  it("Pipeline ignores a throwing callbackerror listener", async () => {
    const pipeline = new Pipeline({
      stages: [
        new Stage({
          name: "s",
          workers: 1,
          tasks: [double],
          onSuccess: () => {
            throw new Error("callback failed");
          },
        }),
      ],
    });
    pipeline.addEventListener("callbackerror", () => {
      throw new Error("listener failed");
    });

    const results = await pipeline.run([1]);

    assert.equal(results[0]?.ok, true);
    assert.equal(pipeline.stats().callbackErrors, 2);
  });
});

describe("Pipeline reuse", () => {
  it("Pipeline runs again with fresh results and stats", async () => {
    function check(n: number): number {
      if (n < 0) throw new Error("negative");
      return n;
    }
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 2, tasks: [check] })],
    });

    await pipeline.run([-1, 1, 2, 3]);
    const second = await pipeline.run([4, 5]);
    const stats = pipeline.stats();

    assert.deepEqual(second.map((r) => [r.index, r.ok]), [[0, true], [1, true]]);
    assert.equal(stats.fed, 2);
    assert.equal(stats.succeeded, 2);
    assert.equal(stats.failed, 0);
    assert.equal(stats.errors.total, 0);
    assert.equal(stats.stages[0]?.completed, 2);
    assert.equal(stats.stages[0]?.failed, 0);
  });

  it("Pipeline resets callbackErrors for a new run", async () => {
    let failing = true;
    const pipeline = new Pipeline({
      stages: [
        new Stage({
          name: "s",
          workers: 1,
          tasks: [double],
          onSuccess: () => {
            if (failing) throw new Error("callback failed");
          },
        }),
      ],
    });

    await pipeline.run([1]);
    failing = false;
    await pipeline.run([1]);

    assert.equal(pipeline.stats().callbackErrors, 0);
  });

  it("Pipeline.run() rejects a second concurrent run", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [heldStage("s", held)] });

    const first = observe(pipeline.run([1]).toArray());
    await flushUntil(() => held.started.length === 1);

    await assert.rejects(pipeline.run([2]).toArray(), {
      name: "TypeError",
      message: "Cannot run the pipeline as a run is already active",
    });

    held.release(1);
    await flushUntil(() => first.state !== "pending");

    assert.equal(first.value?.length, 1);
    assert.deepEqual(held.started, [1]);
  });

  it("Pipeline.run() leaves the active run alone when rejected", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [heldStage("s", held)] });

    const first = observe(pipeline.run([1, 2]).toArray());
    await flushUntil(() => held.started.length === 1);
    await pipeline.run([9]).toArray().catch(() => undefined);

    assert.equal(pipeline.stats().fed, 2);
    assert.equal(pipeline.stats().running, true);

    held.release(1);
    await flushUntil(() => held.started.length === 2);
    held.release(2);
    await flushUntil(() => first.state !== "pending");

    assert.equal(first.value?.length, 2);
  });

  it("Pipeline stream runs once", async () => {
    const pipeline = single();
    const stream = pipeline.run([1]);

    await stream;

    assert.throws(() => stream[Symbol.asyncIterator](), TypeError);
  });

  it("Pipeline.run() waits for the last item", async () => {
    const gate = deferred<number>();
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [() => gate.promise] })],
    });

    const results = observe(pipeline.run([1]).toArray());
    await flush();

    assert.equal(results.state, "pending");
    assert.equal(pipeline.stats().running, true);

    gate.resolve(3);
    await flushUntil(() => results.state !== "pending");

    assert.deepEqual(results.value?.map((r) => r.ok && r.value), [3]);
  });
});

describe("Pipeline runend event", () => {
  it("Pipeline emits runend once per run", async () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "a", workers: 2, tasks: [(n: number) => n] })],
    });
    const ends: RunEndDetail[] = [];
    pipeline.addEventListener("runend", (event) => {
      ends.push((event as CustomEvent<RunEndDetail>).detail);
    });

    await pipeline.run([1, 2, 3]);
    const started = pipeline.start();
    await pipeline.feed([4]);
    await pipeline.join();
    await started;

    assert.equal(ends.length, 2);
    assert.equal(ends[0]?.stats.succeeded, 3);
    assert.equal(ends[0]?.stats.running, false);
    assert.equal(ends[1]?.stats.succeeded, 1);
  });
});
