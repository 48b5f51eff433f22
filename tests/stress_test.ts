// Large workloads: memory stays bounded, stacks do not grow and nothing is left behind. CI runs a
// reduced size of each case; ANTFLOW_STRESS=1 runs the full size.
//
// Heap is measured after a forced collection when the runtime offers one (`globalThis.gc` under
// `--expose-gc`, or `Bun.gc`). Without one, the tests assert structural bounds instead: inputs
// pulled ahead of the consumer, items in flight and tasks running.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import { AsyncExecutor, Pipeline, type PipelineResult, Semaphore, Stage } from "@antflow/antflow";
import { countListeners, itemsInStage } from "./_helpers.ts";

const STRESS = process.env.ANTFLOW_STRESS === "1";

/** Returns the full size under ANTFLOW_STRESS=1 and the reduced size otherwise. */
function size(full: number, reduced: number): number {
  return STRESS ? full : reduced;
}

const TIMEOUT = { timeout: STRESS ? 1_800_000 : 120_000 };

// The largest heap growth accepted across a run, measured after forced collections. The work
// keeps O(workers + buffers) items at a time, so growth with the input size would exceed it.
const HEAP_BOUND_BYTES = 32 * 1024 * 1024;

/** Forces a full collection when the runtime allows it, and reports whether it did. */
function collectGarbage(): boolean {
  const global = globalThis as { gc?: () => void; Bun?: { gc(force: boolean): void } };
  if (typeof global.gc === "function") {
    global.gc();
    return true;
  }
  if (global.Bun !== undefined) {
    global.Bun.gc(true);
    return true;
  }
  return false;
}

/** Samples `heapUsed` after forced collections; without a collection hook it records nothing. */
class HeapSampler {
  readonly measurable = collectGarbage();
  readonly baseline: number = this.measurable ? process.memoryUsage().heapUsed : 0;
  peak = this.baseline;

  sample(): void {
    if (!this.measurable) return;
    collectGarbage();
    this.peak = Math.max(this.peak, process.memoryUsage().heapUsed);
  }

  /** The largest growth over the baseline, in bytes. */
  get growth(): number {
    return this.peak - this.baseline;
  }

  assertBounded(label: string): void {
    if (!this.measurable) return;
    const mb = (bytes: number) => (bytes / 1024 / 1024).toFixed(1);
    if (STRESS) {
      console.log(`${label}: heap baseline ${mb(this.baseline)} MB, growth ${mb(this.growth)} MB`);
    }
    assert.ok(
      this.growth <= HEAP_BOUND_BYTES,
      `${label}: heap grew by ${mb(this.growth)} MB, more than ${mb(HEAP_BOUND_BYTES)} MB`,
    );
  }
}

function* range(count: number, onPull?: (index: number) => void): Generator<number> {
  for (let i = 0; i < count; i++) {
    onPull?.(i);
    yield i;
  }
}

/** Returns the current synchronous stack depth, counted in frames. */
function stackDepth(): number {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = Infinity;
  try {
    return (new Error().stack ?? "").split("\n").length;
  } finally {
    Error.stackTraceLimit = limit;
  }
}

describe("stress: large inputs", () => {
  it("AsyncExecutor.map() runs a million tasks in bounded memory", TIMEOUT, async () => {
    const count = size(1_000_000, 100_000);
    const maxWorkers = 8;
    const executor = new AsyncExecutor({ maxWorkers });
    const heap = new HeapSampler();
    const sampleEvery = count / 10;
    let consumed = 0;
    let ahead = 0;
    let peakRunning = 0;
    const inputs = range(count, (index) => ahead = Math.max(ahead, index + 1 - consumed));

    let sum = 0;
    const task = async (n: number) => {
      peakRunning = Math.max(peakRunning, executor.running);
      await null;
      return n;
    };
    for await (const value of executor.map(task, inputs)) {
      consumed++;
      sum += value;
      if (consumed % sampleEvery === 0) heap.sample();
    }

    assert.equal(consumed, count);
    assert.equal(sum, (count * (count - 1)) / 2);
    assert.ok(peakRunning <= maxWorkers, `${peakRunning} tasks ran at once`);
    // Workers plus the default buffer, plus the result the loop body holds.
    assert.ok(ahead <= maxWorkers * 2 + 1, `${ahead} inputs pulled ahead of the loop`);
    assert.equal(executor.running, 0);
    assert.equal(executor.queued, 0);
    heap.assertBounded("map");
  });

  it("Pipeline runs a million items through three stages", TIMEOUT, async () => {
    const count = size(1_000_000, 100_000);
    const heap = new HeapSampler();
    const sampleEvery = count / 10;
    let peakInFlight = 0;
    const peakInStage = [0, 0, 0];
    let calls = 0;
    const observeStats = () => {
      if (++calls % 1_000 !== 0) return;
      const stats = pipeline.stats();
      peakInFlight = Math.max(peakInFlight, stats.inFlight);
      stats.stages.forEach((stage, s) => {
        peakInStage[s] = Math.max(peakInStage[s] as number, itemsInStage(stage));
      });
    };
    const stage = (name: string, workers: number, queueCapacity: number) =>
      new Stage({
        name,
        workers,
        queueCapacity,
        tasks: [async (n: number) => {
          observeStats();
          await null;
          return n + 1;
        }],
      });
    const pipeline = new Pipeline({
      stages: [stage("parse", 4, 4), stage("enrich", 8, 0), stage("store", 2, 2)],
    });

    let succeeded = 0;
    let sum = 0;
    for await (const result of pipeline.run(range(count))) {
      if (result.ok) {
        succeeded++;
        sum += result.value;
      }
      if ((succeeded + 1) % sampleEvery === 0) heap.sample();
    }
    const stats = pipeline.stats();

    assert.equal(succeeded, count);
    assert.equal(sum, (count * (count - 1)) / 2 + 3 * count);
    assert.equal(stats.fed, count);
    assert.equal(stats.succeeded, count);
    assert.equal(stats.inFlight, 0);
    assert.ok(peakInFlight <= 8 + 8 + 4, `peak inFlight ${peakInFlight}`);
    assert.ok((peakInStage[0] as number) <= 8, `peak in parse ${peakInStage[0]}`);
    assert.ok((peakInStage[1] as number) <= 8, `peak in enrich ${peakInStage[1]}`);
    assert.ok((peakInStage[2] as number) <= 4, `peak in store ${peakInStage[2]}`);
    heap.assertBounded("pipeline");
  });
});

describe("stress: waiters and failures", () => {
  // Waiters that share a signal share one abort listener, so one abort reaches them all in linear
  // time; the runtimes take quadratic time to dispatch to many { once: true } listeners.
  it("Semaphore rejects 100,000 waiters aborted at once", TIMEOUT, async () => {
    const count = size(100_000, 10_000);
    const semaphore = new Semaphore(1);
    const held = await semaphore.acquire();
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);
    const reason = new Error("all aborted");

    const waits = Array.from(
      { length: count },
      () => semaphore.acquire({ signal: controller.signal }),
    );
    assert.equal(semaphore.waiting, count);
    // Waiters that share a signal share one listener.
    assert.equal(listeners(), 1);

    // Handlers go on before the abort, so no runtime tracks 100,000 unhandled rejections.
    const settled = Promise.allSettled(waits);
    controller.abort(reason);
    const outcomes = await settled;

    assert.equal(semaphore.waiting, 0);
    assert.equal(listeners(), 0);
    assert.ok(
      outcomes.every((outcome) => outcome.status === "rejected" && outcome.reason === reason),
    );
    held.release();
    assert.equal(semaphore.available, 1);
    assert.equal(semaphore.inUse, 0);
  });

  it("Semaphore rejects 100,000 waiters aborted one by one", TIMEOUT, async () => {
    const count = 100_000;
    const semaphore = new Semaphore(1);
    const held = await semaphore.acquire();
    const controllers = Array.from({ length: count }, () => new AbortController());
    const waits = controllers.map((controller) => semaphore.acquire({ signal: controller.signal }));

    // Aborting from the tail keeps each abort away from the head, the costliest order for a list.
    const settled = Promise.allSettled(waits);
    for (let i = count - 1; i >= 0; i--) controllers[i]?.abort(i);
    const outcomes = await settled;

    assert.equal(semaphore.waiting, 0);
    outcomes.forEach((outcome, i) => {
      assert.equal(outcome.status, "rejected");
      assert.equal((outcome as PromiseRejectedResult).reason, i);
    });
    held.release();
    assert.equal(semaphore.available, 1);
  });

  it("AsyncExecutor.map() settles 100,000 synchronous throws", TIMEOUT, async () => {
    const count = size(1_000_000, 100_000);
    const executor = new AsyncExecutor({ maxWorkers: 4 });
    let firstDepth = 0;
    let maxDepth = 0;
    let calls = 0;
    const task = (n: number): number => {
      if (calls++ % 1_000 === 0) {
        const depth = stackDepth();
        if (firstDepth === 0) firstDepth = depth;
        maxDepth = Math.max(maxDepth, depth);
      }
      throw new Error(`input ${n}`);
    };

    let failed = 0;
    for await (const result of executor.map(task, range(count), { settled: true })) {
      if (!result.ok) failed++;
    }

    assert.equal(failed, count);
    assert.ok(maxDepth <= firstDepth + 10, `stack grew from ${firstDepth} to ${maxDepth} frames`);
    assert.equal(executor.running, 0);
  });

  it("AsyncExecutor.submit() settles 100,000 synchronous throws", TIMEOUT, async () => {
    const count = 100_000;
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    let firstDepth = 0;
    let maxDepth = 0;
    let calls = 0;
    const task = (n: number): number => {
      if (calls++ % 1_000 === 0) {
        const depth = stackDepth();
        if (firstDepth === 0) firstDepth = depth;
        maxDepth = Math.max(maxDepth, depth);
      }
      throw new Error(`input ${n}`);
    };
    // A blocking task holds the only worker, so the throwing tasks queue and then run back to
    // back, each started by the release of the one before.
    let unblock = () => {};
    const blocker = executor.submit(() => new Promise<void>((resolve) => unblock = resolve), 0);

    const results = Array.from({ length: count }, (_, i) => executor.submit(task, i));
    assert.equal(executor.queued, count);
    unblock();
    const outcomes = await Promise.allSettled(results);
    await blocker;

    assert.ok(outcomes.every((outcome) => outcome.status === "rejected"));
    for (const outcome of outcomes) {
      const reason = (outcome as PromiseRejectedResult).reason;
      assert.ok(!(reason instanceof RangeError), String(reason));
    }
    assert.ok(maxDepth <= firstDepth + 10, `stack grew from ${firstDepth} to ${maxDepth} frames`);
    assert.equal(executor.running, 0);
    assert.equal(executor.queued, 0);
  });

  it("Pipeline settles 100,000 synchronous throws", TIMEOUT, async () => {
    const count = size(1_000_000, 100_000);
    const fail = (n: number): number => {
      throw new Error(`item ${n}`);
    };
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "fail", workers: 4, queueCapacity: 0, tasks: [fail] })],
    });

    let failed = 0;
    for await (const result of pipeline.run(range(count))) if (!result.ok) failed++;
    const stats = pipeline.stats();

    assert.equal(failed, count);
    assert.equal(stats.failed, count);
    assert.equal(stats.inFlight, 0);
    assert.equal(stats.errors.recent.length <= 50, true);
  });
});

describe("stress: long pipelines and many runs", () => {
  it("Pipeline passes items through 1,000 stages", TIMEOUT, async () => {
    const stageCount = 1_000;
    const count = size(1_000, 50);
    const stages = Array.from({ length: stageCount }, (_, s) =>
      new Stage({
        name: `s${s}`,
        workers: 2,
        queueCapacity: 1,
        tasks: [(n: number) => n + 1],
      }));
    const pipeline = new Pipeline({ stages: stages as unknown as [Stage<number, number>] });
    const inputs = Array.from({ length: count }, (_, i) => i);

    const results: PipelineResult<number>[] = await pipeline.run(inputs);
    const stats = pipeline.stats();

    assert.deepEqual(results.map((r) => r.ok && r.value), inputs.map((i) => i + stageCount));
    assert.equal(stats.fed, count);
    assert.equal(stats.succeeded, count);
    assert.equal(stats.inFlight, 0);
    assert.equal(stats.stages.length, stageCount);
    for (const stage of stats.stages) {
      assert.equal(stage.completed, count, `stage ${stage.name}`);
      assert.equal(itemsInStage(stage), 0, `stage ${stage.name}`);
      assert.equal(stage.busy, 0, `stage ${stage.name}`);
    }
  });

  it("Pipeline runs 10,000 times without growing", TIMEOUT, async () => {
    const runs = size(10_000, 2_000);
    const runSignal = new AbortController().signal;
    const pipelineSignal = new AbortController().signal;
    const runListeners = countListeners(runSignal);
    const pipelineListeners = countListeners(pipelineSignal);
    const check = (n: number): number => {
      if (n === 2) throw new Error("two");
      return n;
    };
    const pipeline = new Pipeline({
      stages: [
        new Stage({ name: "double", workers: 2, tasks: [(n: number) => n * 2] }),
        new Stage({ name: "check", workers: 2, tasks: [check], retry: { attempts: 2 } }),
      ],
      signal: pipelineSignal,
    });
    const baseline = pipelineListeners();
    const heap = new HeapSampler();

    for (let run = 0; run < runs; run++) {
      const results = await pipeline.run([0, 1, 2], { signal: runSignal });
      assert.deepEqual(results.map((r) => r.ok), [true, false, true]);
      assert.equal(runListeners(), 0);
      if ((run + 1) % (runs / 10) === 0) {
        heap.sample();
        const stats = pipeline.stats();
        assert.equal(stats.fed, 3);
        assert.equal(stats.succeeded, 2);
        assert.equal(stats.failed, 1);
        assert.equal(stats.inFlight, 0);
        assert.equal(stats.errors.total, 1);
        assert.equal(stats.errors.recent.length, 1);
      }
    }

    assert.equal(pipelineListeners(), baseline);
    heap.assertBounded("pipeline runs");
  });
});
