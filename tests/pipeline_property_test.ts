import { describe, it } from "node:test";
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  Pipeline,
  PipelineItemError,
  type PipelineResult,
  PipelineShutdownError,
  Semaphore,
  Stage,
  type StageTaskContext,
} from "@antflow/antflow";
import {
  Gauge,
  itemsInStage,
  observe,
  type Observed,
  trackUnhandled,
  useVirtualClock,
} from "./_helpers.ts";

/** What one item does in one stage: how long each task takes and how often the last one fails. */
interface ItemPlan {
  delayMs: number;
  failures: number;
  honoursSignal: boolean;
}

interface StagePlan {
  workers: number;
  queueCapacity: number;
  tasks: number;
  shared: boolean;
  ownLimit: number;
  attempts: number;
  scope: "task" | "stage";
  retryDelayMs: number;
  timeoutMs: number | undefined;
  stageTimeoutMs: number | undefined;
}

type Exit = "collect" | "stream" | "ordered" | "break" | "abort" | "failFast" | "shutdown";

interface Scenario {
  stages: StagePlan[];
  sharedPermits: number;
  items: ItemPlan[][];
  input: "array" | "sync" | "async";
  exit: Exit;
  breakAfter: number;
  exitAtMs: number;
}

/** The error of a planned task failure. */
class PlannedFailure extends Error {}

const MAX_STAGES = 4;

const stagePlan: fc.Arbitrary<StagePlan> = fc.record({
  workers: fc.integer({ min: 1, max: 4 }),
  queueCapacity: fc.integer({ min: 0, max: 5 }),
  tasks: fc.integer({ min: 1, max: 2 }),
  shared: fc.boolean(),
  ownLimit: fc.integer({ min: 0, max: 2 }),
  attempts: fc.integer({ min: 1, max: 3 }),
  scope: fc.constantFrom("task" as const, "stage" as const),
  retryDelayMs: fc.integer({ min: 0, max: 10 }),
  timeoutMs: fc.option(fc.integer({ min: 5, max: 40 }), { nil: undefined, freq: 4 }),
  stageTimeoutMs: fc.option(fc.integer({ min: 20, max: 80 }), { nil: undefined, freq: 4 }),
});

const itemPlan: fc.Arbitrary<ItemPlan> = fc.record({
  delayMs: fc.integer({ min: 0, max: 20 }),
  failures: fc.oneof(
    { arbitrary: fc.constant(0), weight: 3 },
    { arbitrary: fc.integer({ min: 1, max: 3 }), weight: 1 },
  ),
  honoursSignal: fc.boolean(),
});

const scenario: fc.Arbitrary<Scenario> = fc.record({
  stages: fc.array(stagePlan, { minLength: 1, maxLength: MAX_STAGES }),
  sharedPermits: fc.integer({ min: 1, max: 3 }),
  items: fc.array(fc.array(itemPlan, { minLength: MAX_STAGES, maxLength: MAX_STAGES }), {
    maxLength: 25,
  }),
  input: fc.constantFrom("array" as const, "sync" as const, "async" as const),
  exit: fc.constantFrom<Exit>(
    "collect",
    "stream",
    "ordered",
    "break",
    "abort",
    "failFast",
    "shutdown",
  ),
  breakAfter: fc.integer({ min: 0, max: 10 }),
  exitAtMs: fc.integer({ min: 0, max: 100 }),
});

/** Waits `ms` virtual milliseconds, or rejects with `signal.reason` when given and aborted. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Finds the stage where the planned failures alone fail an item, ignoring timeouts; returns
 * `undefined` when the retries absorb every planned failure.
 */
function expectedFailure(
  scenario: Scenario,
  plans: ItemPlan[],
): { stage: number; attempts: number } | undefined {
  for (const [s, stage] of scenario.stages.entries()) {
    if ((plans[s] as ItemPlan).failures >= stage.attempts) {
      return { stage: s, attempts: stage.attempts };
    }
  }
  return undefined;
}

interface Probes {
  workers: Gauge[];
  own: Gauge[];
  shared: Gauge;
  peakInStage: number[];
  peakInFlight: number;
}

function build(
  scenario: Scenario,
  shared: Semaphore,
  probes: Probes,
  sample: () => void,
): Stage<number, number>[] {
  const failuresSeen = scenario.items.map(() => scenario.stages.map(() => 0));

  return scenario.stages.map((plan, s) => {
    const tasks = Array.from({ length: plan.tasks }, (_, t) => {
      const last = t === plan.tasks - 1;
      const usesShared = plan.shared && t === 0;
      const usesOwn = plan.ownLimit > 0 && last;
      const run = async (value: number, { index, signal }: StageTaskContext) => {
        const item = scenario.items[index]?.[s] as ItemPlan;
        probes.workers[s]?.enter();
        if (usesShared) probes.shared.enter();
        if (usesOwn) probes.own[s]?.enter();
        sample();
        try {
          await sleep(item.delayMs, item.honoursSignal ? signal : undefined);
          const seen = failuresSeen[index] as number[];
          if (last && (seen[s] as number) < item.failures) {
            seen[s] = (seen[s] as number) + 1;
            throw new PlannedFailure(`item ${index} failed in stage ${s}`);
          }
          return value + 1;
        } finally {
          probes.workers[s]?.leave();
          if (usesShared) probes.shared.leave();
          if (usesOwn) probes.own[s]?.leave();
        }
      };
      Object.defineProperty(run, "name", { value: `task${s}_${t}` });
      return run;
    });

    // With one task, the shared and the stage's own limit apply to the same task.
    const limits: Record<string, Semaphore[]> = {};
    if (plan.shared) limits[`task${s}_0`] = [shared];
    if (plan.ownLimit > 0) {
      const name = `task${s}_${plan.tasks - 1}`;
      limits[name] = [...limits[name] ?? [], new Semaphore(plan.ownLimit)];
    }

    return new Stage<number, number>({
      name: `stage${s}`,
      workers: plan.workers,
      queueCapacity: plan.queueCapacity,
      tasks: tasks as unknown as [(value: number, context: StageTaskContext) => Promise<number>],
      taskConcurrencyLimits: limits,
      retry: { attempts: plan.attempts, delayMs: plan.retryDelayMs, scope: plan.scope },
      timeoutMs: plan.timeoutMs,
      stageTimeoutMs: plan.stageTimeoutMs,
    });
  });
}

async function check(scenario: Scenario): Promise<void> {
  using clock = useVirtualClock();
  using unhandled = trackUnhandled();
  const shared = new Semaphore(scenario.sharedPermits);
  const probes: Probes = {
    workers: scenario.stages.map(() => new Gauge()),
    own: scenario.stages.map(() => new Gauge()),
    shared: new Gauge(),
    peakInStage: scenario.stages.map(() => 0),
    peakInFlight: 0,
  };
  const sample = () => {
    const stats = pipeline.stats();
    probes.peakInFlight = Math.max(probes.peakInFlight, stats.inFlight);
    stats.stages.forEach((stage, s) => {
      probes.peakInStage[s] = Math.max(probes.peakInStage[s] as number, itemsInStage(stage));
    });
  };
  const stages = build(scenario, shared, probes, sample);
  const pipeline = new Pipeline({ stages: stages as [Stage<number, number>] });
  pipeline.addEventListener("item", sample);
  const inputs = scenario.items.map((_, i) => i * 10);
  const source = scenario.input === "async"
    ? (async function* () {
      for (const input of inputs) yield input;
    })()
    : scenario.input === "sync"
    ? inputs.values()
    : inputs;
  const controller = new AbortController();
  const yielded: PipelineResult<number>[] = [];

  let outcome: Observed<unknown>;
  const exit = scenario.exit;
  if (exit === "collect" || exit === "failFast") {
    outcome = observe(pipeline.run(source, { failFast: exit === "failFast" }).toArray());
  } else {
    const stream = pipeline.run(source, {
      ordered: exit === "ordered",
      signal: controller.signal,
    });
    outcome = observe((async () => {
      for await (const result of stream) {
        yielded.push(result);
        if (exit === "break" && yielded.length > scenario.breakAfter) break;
      }
    })());
  }
  if (exit === "abort") setTimeout(() => controller.abort(new Error("abort")), scenario.exitAtMs);
  if (exit === "shutdown") {
    setTimeout(() => void pipeline.shutdown({ cancel: true }), scenario.exitAtMs);
  }

  for (let turn = 0; turn < 5_000 && outcome.state === "pending"; turn++) await clock.tick(5);

  assert.notEqual(outcome.state, "pending", "the run never settled");

  const stats = pipeline.stats();
  assert.equal(stats.inFlight, 0);
  assert.equal(stats.running, false);
  assert.equal(stats.fed, stats.succeeded + stats.failed + stats.cancelled);
  assert.ok(stats.fed <= inputs.length);

  const capacities = scenario.stages.map((plan) => plan.queueCapacity + plan.workers);
  scenario.stages.forEach((plan, s) => {
    assert.ok((probes.workers[s] as Gauge).peak <= plan.workers, `stage ${s} over its workers`);
    assert.ok((probes.own[s] as Gauge).peak <= plan.ownLimit, `stage ${s} over its task limit`);
    assert.ok(
      (probes.peakInStage[s] as number) <= (capacities[s] as number),
      `stage ${s} held ${probes.peakInStage[s]} items`,
    );
  });
  assert.ok(probes.shared.peak <= scenario.sharedPermits, "the shared limit was exceeded");
  assert.ok(probes.peakInFlight <= capacities.reduce((a, b) => a + b, 0));

  const indices = yielded.map((result) => result.index);
  assert.equal(new Set(indices).size, indices.length, "an item ended twice");

  const timed = scenario.stages.some((plan) =>
    plan.timeoutMs !== undefined || plan.stageTimeoutMs !== undefined
  );
  const totalTasks = scenario.stages.reduce((sum, plan) => sum + plan.tasks, 0);
  const results = exit === "collect"
    ? outcome.value as PipelineResult<number>[]
    : exit === "stream" || exit === "ordered"
    ? yielded
    : undefined;

  if (results !== undefined) {
    assert.equal(outcome.state, "fulfilled");
    assert.deepEqual(results.map((r) => r.index).sort((a, b) => a - b), inputs.map((_, i) => i));
    if (exit === "ordered") assert.deepEqual(results.map((r) => r.index), inputs.map((_, i) => i));
    for (const result of results) {
      if (result.ok) assert.equal(result.value, inputs[result.index] as number + totalTasks);
      const expected = expectedFailure(scenario, scenario.items[result.index] as ItemPlan[]);
      if (timed) continue;
      assert.equal(result.ok, expected === undefined, `item ${result.index}`);
      if (!result.ok && expected !== undefined) {
        assert.equal(result.stage, `stage${expected.stage}`);
        assert.equal(result.attempts, expected.attempts);
        assert.ok(result.error instanceof PlannedFailure);
      }
    }
  }

  if (exit === "failFast") {
    const anyFailure = scenario.items.some((plans) => expectedFailure(scenario, plans));
    if (outcome.state === "rejected") assert.ok(outcome.reason instanceof PipelineItemError);
    if (!timed) assert.equal(outcome.state, anyFailure ? "rejected" : "fulfilled");
  }
  if (exit === "abort" && outcome.state === "rejected") {
    assert.equal((outcome.reason as Error).message, "abort");
  }
  if (exit === "shutdown" && outcome.state === "rejected") {
    assert.ok(outcome.reason instanceof PipelineShutdownError);
  }
  if (exit === "break") assert.equal(outcome.state, "fulfilled");

  await clock.runAll();

  for (const stage of pipeline.stats().stages) assert.equal(stage.busy, 0);
  assert.equal(shared.inUse, 0);
  assert.equal(clock.timers(), 0);
  assert.deepEqual(unhandled.reasons, []);
}

describe("Pipeline properties", () => {
  it("Pipeline keeps limits and ends items once", { timeout: 120_000 }, async () => {
    await fc.assert(fc.asyncProperty(scenario, check), { numRuns: 100 });
  });
});
