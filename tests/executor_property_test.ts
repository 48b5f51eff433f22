import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  AsyncExecutor,
  ExecutorShutdownError,
  Semaphore,
  type SettledResult,
  type TaskContext,
} from "@antflow/antflow";
import {
  deferred,
  flush,
  Gauge,
  observe,
  type Observed,
  probeSource,
  trackUnhandled,
  untilAborted,
  useVirtualClock,
} from "./_helpers.ts";

/**
 * What a generated task does on each attempt. "hang" waits until its signal aborts; "ignore"
 * ignores its signal and settles only when the test releases every ignoring task at the end.
 */
type Behaviour = "resolve" | "reject" | "throw" | "hang" | "ignore";

interface TaskSpec {
  behaviour: Behaviour;
  /** Whether attempts after the first resolve instead of repeating the behaviour. */
  recovers: boolean;
  delayMs: number;
  useSemaphore: boolean;
  abortAtMs: number | undefined;
  timeoutMs: number | undefined;
  attempts: number;
  retryDelayMs: number;
}

/** The error that a generated task rejects or throws with. */
class TaskError extends Error {}

/** The reason of a generated abort. */
class AbortReason extends Error {}

const behaviour: fc.Arbitrary<Behaviour> = fc.oneof(
  { arbitrary: fc.constant("resolve" as const), weight: 4 },
  { arbitrary: fc.constantFrom("reject" as const, "throw" as const, "hang" as const), weight: 3 },
  { arbitrary: fc.constant("ignore" as const), weight: 1 },
);

const taskSpec: fc.Arbitrary<TaskSpec> = fc.record({
  behaviour,
  recovers: fc.boolean(),
  delayMs: fc.integer({ min: 0, max: 50 }),
  useSemaphore: fc.boolean(),
  abortAtMs: fc.option(fc.integer({ min: 0, max: 120 }), { nil: undefined }),
  timeoutMs: fc.option(fc.integer({ min: 1, max: 60 }), { nil: undefined }),
  attempts: fc.integer({ min: 1, max: 3 }),
  retryDelayMs: fc.integer({ min: 0, max: 20 }),
});

function sleep(ms: number): Promise<void> {
  return new Promise<void>((resolve) => setTimeout(resolve, ms));
}

/**
 * Builds the task function of `spec`. `running` counts every call that has not settled, and
 * `limited` counts those that hold the shared semaphore.
 */
function makeTask(
  spec: TaskSpec,
  running: Gauge,
  limited: Gauge,
  released: Promise<void>,
): (id: number, context: TaskContext) => Promise<number> {
  return (id, { signal, attempt }) => {
    const behaviour = attempt > 1 && spec.recovers ? "resolve" : spec.behaviour;
    if (behaviour === "throw") throw new TaskError(`task ${id} threw`);

    running.enter();
    if (spec.useSemaphore) limited.enter();
    const leave = () => {
      running.leave();
      if (spec.useSemaphore) limited.leave();
    };
    let work: Promise<number>;
    switch (behaviour) {
      case "resolve":
        work = sleep(spec.delayMs).then(() => id);
        break;
      case "reject":
        work = sleep(spec.delayMs).then(() => {
          throw new TaskError(`task ${id} rejected`);
        });
        break;
      case "hang":
        work = untilAborted(signal);
        break;
      default:
        work = released.then(() => id);
    }
    return work.finally(leave);
  };
}

/** Checks whether `reason` is one of the rejections that the generated work can cause. */
function isExpectedReason(reason: unknown): boolean {
  return reason instanceof TaskError || reason instanceof AbortReason ||
    reason instanceof ExecutorShutdownError ||
    reason instanceof DOMException &&
      (reason.name === "TimeoutError" || reason.name === "AbortError");
}

function retryOf(spec: TaskSpec): { attempts: number; delayMs: number } {
  return { attempts: spec.attempts, delayMs: spec.retryDelayMs };
}

describe("AsyncExecutor properties", () => {
  it("AsyncExecutor.submit() keeps every limit and settles every task", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 3 }),
        fc.array(taskSpec, { maxLength: 25 }),
        fc.integer({ min: 0, max: 300 }),
        async (maxWorkers, permits, specs, runForMs) => {
          using clock = useVirtualClock();
          using unhandled = trackUnhandled();
          const executor = new AsyncExecutor({ maxWorkers });
          const semaphore = new Semaphore(permits);
          const running = new Gauge();
          const limited = new Gauge();
          const release = deferred();

          const results: Observed<number>[] = specs.map((spec, id) => {
            let signal: AbortSignal | undefined;
            if (spec.abortAtMs !== undefined) {
              const controller = new AbortController();
              signal = controller.signal;
              const abortAtMs = spec.abortAtMs;
              setTimeout(() => controller.abort(new AbortReason(`abort ${id}`)), abortAtMs);
            }
            return observe(executor.submit(makeTask(spec, running, limited, release.promise), id, {
              signal,
              timeoutMs: spec.timeoutMs,
              retry: retryOf(spec),
              semaphore: spec.useSemaphore ? semaphore : undefined,
            }));
          });

          await clock.tick(runForMs);
          const shutdown = observe(executor.shutdown({ cancel: true }));
          release.resolve();
          await clock.runAll();
          await flush();

          assert.ok(running.peak <= maxWorkers, `${running.peak} tasks ran at once`);
          assert.ok(limited.peak <= permits, `${limited.peak} tasks held the semaphore`);
          for (const [id, result] of results.entries()) {
            assert.notEqual(result.state, "pending", `task ${id} never settled`);
            if (result.state === "fulfilled") assert.equal(result.value, id);
            else assert.ok(isExpectedReason(result.reason), `task ${id}: ${result.reason}`);
          }
          assert.equal(shutdown.state, "fulfilled");
          assert.equal(executor.running, 0);
          assert.equal(executor.queued, 0);
          assert.equal(semaphore.available, permits);
          assert.equal(clock.timers(), 0);
          assert.deepEqual(unhandled.reasons, []);
        },
      ),
      { numRuns: 100 },
    );
  });

  it("AsyncExecutor.map() settles every input exactly once", async () => {
    const mapTaskSpec = taskSpec.filter((spec) =>
      spec.behaviour !== "hang" || spec.timeoutMs !== undefined
    );
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4 }),
        fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }),
        fc.boolean(),
        fc.constantFrom("array", "sync generator", "async generator"),
        fc.array(mapTaskSpec, { maxLength: 20 }),
        fc.option(fc.integer({ min: 0, max: 10 }), { nil: undefined }),
        fc.option(fc.integer({ min: 0, max: 150 }), { nil: undefined }),
        async (maxWorkers, bufferSize, ordered, sourceKind, specs, exitAfter, abortAtMs) => {
          using clock = useVirtualClock();
          using unhandled = trackUnhandled();
          const executor = new AsyncExecutor({ maxWorkers });
          const semaphore = new Semaphore(1);
          const running = new Gauge();
          const limited = new Gauge();
          const release = deferred();
          const controller = new AbortController();
          if (abortAtMs !== undefined) {
            setTimeout(() => controller.abort(new AbortReason("map aborted")), abortAtMs);
          }
          const probe = probeSource(specs.length);
          const syncIds = function* (): Generator<number> {
            for (let id = 0; id < specs.length; id++) yield id;
          };
          const ids: Iterable<number> | AsyncIterable<number> = sourceKind === "array"
            ? specs.map((_, id) => id)
            : sourceKind === "sync generator"
            ? syncIds()
            : probe.source;
          // Every input shares one timeout, retry policy and semaphore choice, from the first spec.
          const shared = specs[0];
          const task = (id: number, context: TaskContext) => {
            const spec = { ...specs[id] as TaskSpec, useSemaphore: shared?.useSemaphore === true };
            return makeTask(spec, running, limited, release.promise)(id, context);
          };
          const options = {
            settled: true as const,
            bufferSize,
            signal: controller.signal,
            timeoutMs: shared?.timeoutMs ?? 60,
            retry: shared === undefined ? undefined : retryOf(shared),
            semaphore: shared?.useSemaphore ? semaphore : undefined,
          };
          const stream = ordered
            ? executor.map(task, ids, options)
            : executor.mapUnordered(task, ids, options);

          const seen: SettledResult<number, number>[] = [];
          const consumer = observe((async () => {
            for await (const result of stream) {
              seen.push(result);
              if (exitAfter !== undefined && seen.length > exitAfter) break;
            }
          })());
          await clock.tick(200);
          release.resolve();
          await clock.runAll();
          await flush();

          assert.notEqual(consumer.state, "pending", "the map run never ended");
          assert.ok(running.peak <= maxWorkers, `${running.peak} tasks ran at once`);
          assert.ok(limited.peak <= 1, `${limited.peak} tasks held the semaphore`);
          const indices = seen.map((result) => result.index);
          assert.equal(new Set(indices).size, indices.length, "an input was reported twice");
          for (const result of seen) {
            assert.equal(result.input, result.index);
            if (result.ok) assert.equal(result.value, result.index);
            else assert.ok(isExpectedReason(result.error), String(result.error));
          }
          if (ordered) assert.deepEqual(indices, indices.map((_, i) => i));
          const exitedEarly = exitAfter !== undefined && seen.length > exitAfter;
          if (consumer.state === "fulfilled" && !exitedEarly) {
            assert.deepEqual([...indices].sort((a, b) => a - b), specs.map((_, id) => id));
          }
          if (consumer.state === "rejected") {
            assert.ok(consumer.reason instanceof AbortReason, String(consumer.reason));
          }
          if (sourceKind === "async generator") assert.equal(probe.closed(), true);
          assert.equal(executor.running, 0);
          assert.equal(executor.queued, 0);
          assert.equal(semaphore.available, 1);
          assert.equal(clock.timers(), 0);
          assert.deepEqual(unhandled.reasons, []);
          await executor.shutdown();
        },
      ),
      { numRuns: 100 },
    );
  });
});
