import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  Pipeline,
  PipelineItemError,
  type PipelineResult,
  PipelineShutdownError,
  Stage,
  type StageTaskContext,
} from "@antflow/antflow";
import {
  countingSource,
  countListeners,
  flush,
  flushUntil,
  Gauge,
  HeldTasks,
  observe,
  probeSource,
  trackUnhandled,
  untilAborted,
} from "./_helpers.ts";

function range(count: number): number[] {
  return Array.from({ length: count }, (_, i) => i);
}

function double(n: number): number {
  return n * 2;
}

/** Builds a stage whose task waits for the test, or rejects with `signal.reason` on abort. */
function abortableStage(
  name: string,
  held: HeldTasks<number>,
  options: { workers?: number; queueCapacity?: number } = {},
): Stage<number, number> {
  return new Stage({
    name,
    workers: options.workers ?? 2,
    queueCapacity: options.queueCapacity,
    tasks: [
      (n: number, context: StageTaskContext) =>
        Promise.race([held.task(n, context) as Promise<number>, untilAborted(context.signal)]),
    ],
  });
}

describe("Pipeline input errors", () => {
  it("Pipeline.run() delivers results before a source error", async () => {
    using unhandled = trackUnhandled();
    const failure = new Error("source broke");
    async function* source(): AsyncGenerator<number> {
      yield 1;
      yield 2;
      throw failure;
    }
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 2, tasks: [double] })],
    });
    const seen: number[] = [];

    const error = await (async () => {
      for await (const result of pipeline.run(source())) seen.push(result.ok ? result.value : -1);
    })().then(() => undefined, (caught: unknown) => caught);
    await flush();

    assert.deepEqual(seen.sort(), [2, 4]);
    assert.equal(error, failure);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("Pipeline.run() rejects with a sync source error", async () => {
    const failure = new Error("source broke");
    function* source(): Generator<number> {
      yield 1;
      yield 2;
      throw failure;
    }
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 2, tasks: [double] })],
    });

    await assert.rejects(pipeline.run(source()).toArray(), failure);

    assert.equal(pipeline.stats().succeeded, 2);
    assert.equal(pipeline.stats().inFlight, 0);
  });

  it("Pipeline.run() rejects when the source next() rejects", async () => {
    const failure = new Error("next failed");
    let calls = 0;
    const source: AsyncIterable<number> = {
      [Symbol.asyncIterator]: () => ({
        next: () =>
          ++calls <= 2 ? Promise.resolve({ done: false, value: calls }) : Promise.reject(failure),
      }),
    };
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 2, tasks: [double] })],
    });
    const seen: number[] = [];

    const error = await (async () => {
      for await (const result of pipeline.run(source)) seen.push(result.ok ? result.value : -1);
    })().then(() => undefined, (caught: unknown) => caught);

    assert.deepEqual(seen.sort(), [2, 4]);
    assert.equal(error, failure);
  });
});

describe("Pipeline source rejections after the run", () => {
  it("Pipeline.run() ignores a source rejection after break", async () => {
    using unhandled = trackUnhandled();
    let rejectNext: (reason: unknown) => void = () => {};
    let pulls = 0;
    const source: AsyncIterable<number> = {
      [Symbol.asyncIterator]: () => ({
        next: () =>
          pulls++ === 0
            ? Promise.resolve({ done: false, value: 1 })
            : new Promise<IteratorResult<number>>((_, reject) => rejectNext = reject),
        return: () => Promise.resolve({ done: true, value: undefined }),
      }),
    };
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [double] })],
    });

    for await (const _ of pipeline.run(source)) break;
    rejectNext(new Error("late"));
    await flush();

    assert.deepEqual(unhandled.reasons, []);
    assert.equal(pipeline.stats().inFlight, 0);
  });
});

describe("Pipeline aborts around the input", () => {
  it("Pipeline.run() honours an abort after the input ends", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({ stages: [abortableStage("s", held, { workers: 4 })] });
    const probe = probeSource(3);
    const controller = new AbortController();
    const reason = new Error("late abort");

    const results = observe(pipeline.run(probe.source, { signal: controller.signal }).toArray());
    await flushUntil(() => held.started.length === 3 && probe.closed());
    controller.abort(reason);
    await flushUntil(() => results.state !== "pending");

    assert.equal(results.state, "rejected");
    assert.equal(results.reason, reason);
    assert.equal(pipeline.stats().inFlight, 0);
  });

  it("Pipeline.run() drops an async input after abort", async () => {
    const controller = new AbortController();
    const called: number[] = [];
    async function* source(): AsyncGenerator<number> {
      yield 0;
      controller.abort(new Error("stop"));
      yield 1;
      yield 2;
    }
    const pipeline = new Pipeline({
      stages: [
        new Stage({
          name: "s",
          workers: 4,
          tasks: [(n: number) => {
            called.push(n);
            return n;
          }],
        }),
      ],
    });

    await assert.rejects(pipeline.run(source(), { signal: controller.signal }).toArray(), {
      message: "stop",
    });

    assert.deepEqual(called, [0]);
    assert.equal(pipeline.stats().inFlight, 0);
  });

  it("Pipeline.run() drops a sync input after abort", async () => {
    const controller = new AbortController();
    const called: number[] = [];
    function* source(): Generator<number> {
      yield 0;
      controller.abort(new Error("stop"));
      yield 1;
      yield 2;
    }
    const pipeline = new Pipeline({
      stages: [
        new Stage({
          name: "s",
          workers: 4,
          tasks: [(n: number) => {
            called.push(n);
            return n;
          }],
        }),
      ],
    });

    await assert.rejects(pipeline.run(source(), { signal: controller.signal }).toArray(), {
      message: "stop",
    });

    assert.deepEqual(called, [0]);
  });

  it("Pipeline.run() settles after a yielding abort", async () => {
    const controller = new AbortController();
    let closed = 0;
    function* source(): Generator<number> {
      try {
        yield 0;
        controller.abort(new Error("stop"));
        yield 1;
        yield 2;
      } finally {
        closed++;
      }
    }
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 4, tasks: [double] })],
    });

    await assert.rejects(pipeline.run(source(), { signal: controller.signal }).toArray(), {
      message: "stop",
    });

    assert.equal(pipeline.stats().inFlight, 0);
    assert.equal(pipeline.stats().cancelled + pipeline.stats().succeeded, pipeline.stats().fed);
    assert.equal(closed, 1);
  });
});

describe("Pipeline closes its input exactly once", () => {
  const cases: [
    string,
    (
      pipeline: Pipeline<[Stage<number, number>]>,
      held: HeldTasks<number>,
      source: AsyncIterable<number>,
    ) => Promise<unknown>,
  ][] = [
    ["on break", async (pipeline, held, source) => {
      const loop = (async () => {
        for await (const _ of pipeline.run(source)) break;
      })();
      await flushUntil(() => held.started.length === 2);
      held.release(held.started[0] as number);
      return loop;
    }],
    ["on abort", async (pipeline, held, source) => {
      const controller = new AbortController();
      const results = pipeline.run(source, { signal: controller.signal }).toArray();
      await flushUntil(() => held.started.length === 2);
      controller.abort(new Error("stop"));
      return results.catch(() => undefined);
    }],
    ["on a failFast failure", async (pipeline, held, source) => {
      const results = pipeline.run(source, { failFast: true }).toArray();
      await flushUntil(() => held.started.length === 2);
      held.fail(held.started[0] as number, new Error("bad"));
      return results.catch(() => undefined);
    }],
    ["on shutdown with cancel", async (pipeline, held, source) => {
      const results = pipeline.run(source).toArray();
      await flushUntil(() => held.started.length === 2);
      await pipeline.shutdown({ cancel: true });
      return results.catch(() => undefined);
    }],
  ];

  for (const [name, act] of cases) {
    it(`Pipeline.run() closes the input once ${name}`, async () => {
      using unhandled = trackUnhandled();
      const held = new HeldTasks<number>();
      const pipeline = new Pipeline({
        stages: [abortableStage("s", held, { workers: 2, queueCapacity: 1 })],
      });
      const counting = countingSource(100);

      await act(pipeline, held, counting.source);
      await flush();

      assert.equal(counting.returns(), 1);
      assert.equal(pipeline.stats().inFlight, 0);
      assert.deepEqual(unhandled.reasons, []);
    });
  }
});

describe("Pipeline failFast under load", () => {
  it("Pipeline.run() fails fast without waiting for running tasks", async () => {
    using unhandled = trackUnhandled();
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({
      stages: [abortableStage("s", held, { workers: 100, queueCapacity: 0 })],
    });
    const probe = probeSource(10_000);

    const results = observe(pipeline.run(probe.source, { failFast: true }).toArray());
    await flushUntil(() => held.started.length === 100);
    held.fail(1, new Error("bad"));
    await flushUntil(() => results.state !== "pending");

    assert.ok(results.reason instanceof PipelineItemError);
    assert.equal(results.reason.index, 1);
    for (const n of held.started.filter((n) => n !== 1)) {
      assert.equal(held.signal(n).reason, results.reason);
    }
    assert.ok(probe.pulled() <= 101, `pulled ${probe.pulled()} inputs`);
    assert.equal(probe.closed(), true);
    assert.equal(pipeline.stats().inFlight, 0);
    assert.deepEqual(unhandled.reasons, []);
  });
});

describe("Pipeline order behind a slow item", () => {
  it("Pipeline.run() holds ordered results behind a slow item", async () => {
    const held = new HeldTasks<number>();
    const pipeline = new Pipeline({
      stages: [
        new Stage({
          name: "s",
          workers: 4,
          queueCapacity: 0,
          tasks: [
            (n: number, context: StageTaskContext) =>
              n === 0 ? held.task(n, context) as Promise<number> : n,
          ],
        }),
      ],
    });
    const probe = probeSource(20);
    const seen: number[] = [];

    const loop = observe((async () => {
      for await (const result of pipeline.run(probe.source, { ordered: true })) {
        seen.push(result.index);
      }
    })());
    await flushUntil(() => held.started.length === 1);
    await flush(10);

    assert.deepEqual(seen, []);
    assert.equal(probe.pulled(), 8);

    held.release(0);
    await flushUntil(() => loop.state !== "pending");

    assert.deepEqual(seen, range(20));
  });

  it("Pipeline.run() yields around a slow item when unordered", async () => {
    const held = new HeldTasks<number>();
    const gauge = new Gauge();
    const pipeline = new Pipeline({
      stages: [
        new Stage({
          name: "s",
          workers: 4,
          queueCapacity: 0,
          tasks: [gauge.wrap(async (n: number, context: StageTaskContext) => {
            if (n === 0) return await held.task(n, context) as number;
            await flush(1);
            return n;
          })],
        }),
      ],
    });
    const seen: number[] = [];
    const busy: number[] = [];

    const loop = observe((async () => {
      for await (const result of pipeline.run(range(20))) {
        seen.push(result.index);
        if (seen.length < 16) busy.push(gauge.current);
      }
    })());
    await flushUntil(() => seen.length === 19);
    held.release(0);
    await flushUntil(() => loop.state !== "pending");

    assert.deepEqual(seen.slice(0, 19).sort((a, b) => a - b), range(20).slice(1));
    assert.equal(seen[19], 0);
    assert.equal(gauge.peak, 4);
    assert.ok(busy.every((running) => running >= 3), `running counts ${busy}`);
  });
});

describe("Pipeline cancellation with slow cleanup", () => {
  for (const ordered of [true, false]) {
    it(`Pipeline.run() awaits slow cleanup, ordered ${ordered}`, async () => {
      let cleaned = 0;
      async function work(n: number, { signal }: StageTaskContext): Promise<number> {
        if (n === 0) return n;
        try {
          return await untilAborted(signal);
        } finally {
          await flush(2);
          cleaned++;
        }
      }
      const pipeline = new Pipeline({
        stages: [new Stage({ name: "s", workers: 8, tasks: [work] })],
      });

      const loop = observe((async () => {
        for await (const _ of pipeline.run([0, 1, 2], { ordered })) break;
      })());
      await flushUntil(() => loop.state !== "pending");

      assert.equal(loop.state, "fulfilled");
      assert.equal(cleaned, 2);
      assert.equal(pipeline.stats().inFlight, 0);
    });
  }
});

describe("Pipeline soak", () => {
  it("Pipeline runs 2,000 times without growing", { timeout: 60_000 }, async () => {
    const runSignal = new AbortController().signal;
    const pipelineSignal = new AbortController().signal;
    const runListeners = countListeners(runSignal);
    const pipelineListeners = countListeners(pipelineSignal);
    function check(n: number): number {
      if (n === 2) throw new Error("bad");
      return n;
    }
    const pipeline = new Pipeline({
      stages: [
        new Stage({ name: "a", workers: 2, tasks: [double] }),
        new Stage({ name: "b", workers: 2, tasks: [check], retry: { attempts: 2 } }),
      ],
      signal: pipelineSignal,
    });
    let events = 0;
    pipeline.addEventListener("item", () => events++);
    const baseline = pipelineListeners();

    let last: PipelineResult<number>[] = [];
    for (let run = 0; run < 2_000; run++) {
      last = await pipeline.run([0, 1, 2], { signal: runSignal });
      assert.equal(runListeners(), 0);
    }
    const stats = pipeline.stats();

    assert.deepEqual(last.map((r) => r.ok), [true, false, true]);
    assert.equal(stats.fed, 3);
    assert.equal(stats.errors.total, 1);
    assert.equal(stats.errors.recent.length, 1);
    assert.equal(stats.stages[1]?.retried, 1);
    assert.equal(pipelineListeners(), baseline);
    assert.equal(events, 2_000 * 13);
  });

  it("Pipeline.shutdown() removes its signal listener", async () => {
    const pipelineSignal = new AbortController().signal;
    const listeners = countListeners(pipelineSignal);
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "a", workers: 2, tasks: [double] })],
      signal: pipelineSignal,
    });

    await pipeline.run([1]);
    await pipeline.shutdown();

    assert.equal(listeners(), 0);
    await assert.rejects(pipeline.run([1]).toArray(), PipelineShutdownError);
  });
});
