// Random workloads that drive one executor and one pipeline at the same time, sharing a Semaphore
// and a RateLimiter, under a virtual clock. After every run each limit must have held at every
// grant, every returned promise must have settled, and nothing may be left behind: no running
// task, no timer, no abort listener and no unhandled rejection.
//
// CI runs a few hundred cases; ANTFLOW_STRESS=1 runs thousands.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import process from "node:process";
import fc from "fast-check";
import {
  AsyncExecutor,
  ExecutorShutdownError,
  Pipeline,
  PipelineItemError,
  type PipelineResult,
  PipelineShutdownError,
  RateLimiter,
  Semaphore,
  type SettledResult,
  Stage,
  type StageTaskContext,
  type TaskContext,
} from "@antflow/antflow";
import { deferred, observe, type Observed, untilAborted, useVirtualClock } from "./_helpers.ts";
import { instrument, type Instrumentation, type TaskGauge } from "./_instrument.ts";

const STRESS = process.env.ANTFLOW_STRESS === "1";
const NUM_RUNS = STRESS ? 20_000 : 500;

/**
 * What a task does on one attempt. "hang" waits until its signal aborts; "ignore" ignores its
 * signal and settles only once the test releases every ignoring task.
 */
type Behaviour = "resolve" | "reject" | "throw" | "hang" | "ignore";

/** The shared limiters a task acquires before it runs. */
type Limits = "none" | "semaphore" | "rate" | "both";

interface Work {
  behaviour: Behaviour;
  /** Whether attempts after the first resolve instead of repeating the behaviour. */
  recovers: boolean;
  delayMs: number;
}

interface SubmitPlan extends Work {
  atMs: number;
  limits: Limits;
  abortAtMs: number | undefined;
  /** Whether a task without an abort of its own follows the long-lived service signal. */
  serviceSignal: boolean;
  timeoutMs: number | undefined;
  attempts: number;
  retryDelayMs: number;
}

interface MapPlan {
  works: Work[];
  ordered: boolean;
  settled: boolean;
  limits: Limits;
  timeoutMs: number | undefined;
  attempts: number;
  exitAfter: number | undefined;
  abortAtMs: number | undefined;
}

interface StagePlan {
  workers: number;
  queueCapacity: number;
  tasks: number;
  limits: Limits;
  attempts: number;
  scope: "task" | "stage";
  timeoutMs: number | undefined;
}

type PipelineExit = "collect" | "stream" | "ordered" | "break" | "abort" | "failFast" | "shutdown";

interface PipelinePlan {
  stages: StagePlan[];
  items: Work[][];
  exit: PipelineExit;
  breakAfter: number;
  exitAtMs: number;
}

interface Change {
  atMs: number;
  target: "maxWorkers" | "semaphore";
  value: number;
}

interface Scenario {
  maxWorkers: number;
  permits: number;
  rate: { limit: number; intervalMs: number };
  submits: SubmitPlan[];
  map: MapPlan | undefined;
  pipeline: PipelinePlan | undefined;
  changes: Change[];
  shutdown: { atMs: number; cancel: boolean } | undefined;
  runForMs: number;
}

/** The error of a planned task failure. */
class TaskError extends Error {}

/** The reason of a planned abort. */
class AbortReason extends Error {}

const MAX_STAGES = 3;

const behaviour: fc.Arbitrary<Behaviour> = fc.oneof(
  { arbitrary: fc.constant("resolve" as const), weight: 5 },
  { arbitrary: fc.constantFrom("reject" as const, "throw" as const), weight: 2 },
  { arbitrary: fc.constant("hang" as const), weight: 1 },
  { arbitrary: fc.constant("ignore" as const), weight: 1 },
);

const work: fc.Arbitrary<Work> = fc.record({
  behaviour,
  recovers: fc.boolean(),
  delayMs: fc.integer({ min: 0, max: 30 }),
});

const limits: fc.Arbitrary<Limits> = fc.constantFrom("none", "semaphore", "rate", "both");
const maybeMs = (min: number, max: number) =>
  fc.option(fc.integer({ min, max }), { nil: undefined });

const submitPlan: fc.Arbitrary<SubmitPlan> = fc.record({
  behaviour,
  recovers: fc.boolean(),
  delayMs: fc.integer({ min: 0, max: 30 }),
  atMs: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 150 })),
  limits,
  abortAtMs: maybeMs(0, 150),
  serviceSignal: fc.boolean(),
  timeoutMs: maybeMs(1, 50),
  attempts: fc.integer({ min: 1, max: 3 }),
  retryDelayMs: fc.integer({ min: 0, max: 15 }),
});

const mapPlan: fc.Arbitrary<MapPlan> = fc.record({
  works: fc.array(work, { maxLength: 12 }),
  ordered: fc.boolean(),
  settled: fc.boolean(),
  limits,
  timeoutMs: maybeMs(5, 50),
  attempts: fc.integer({ min: 1, max: 3 }),
  exitAfter: maybeMs(0, 8),
  abortAtMs: maybeMs(0, 150),
});

const stagePlan: fc.Arbitrary<StagePlan> = fc.record({
  workers: fc.integer({ min: 1, max: 3 }),
  queueCapacity: fc.integer({ min: 0, max: 3 }),
  tasks: fc.integer({ min: 1, max: 2 }),
  limits,
  attempts: fc.integer({ min: 1, max: 3 }),
  scope: fc.constantFrom("task" as const, "stage" as const),
  timeoutMs: maybeMs(5, 50),
});

const pipelinePlan: fc.Arbitrary<PipelinePlan> = fc.record({
  stages: fc.array(stagePlan, { minLength: 1, maxLength: MAX_STAGES }),
  items: fc.array(fc.array(work, { minLength: MAX_STAGES, maxLength: MAX_STAGES }), {
    maxLength: 12,
  }),
  exit: fc.constantFrom<PipelineExit>(
    "collect",
    "stream",
    "ordered",
    "break",
    "abort",
    "failFast",
    "shutdown",
  ),
  breakAfter: fc.integer({ min: 0, max: 6 }),
  exitAtMs: fc.integer({ min: 0, max: 150 }),
});

const scenario: fc.Arbitrary<Scenario> = fc.record({
  maxWorkers: fc.integer({ min: 1, max: 4 }),
  permits: fc.integer({ min: 1, max: 3 }),
  rate: fc.record({
    limit: fc.integer({ min: 1, max: 4 }),
    intervalMs: fc.integer({ min: 5, max: 40 }),
  }),
  submits: fc.array(submitPlan, { maxLength: 15 }),
  map: fc.option(mapPlan, { nil: undefined }),
  pipeline: fc.option(pipelinePlan, { nil: undefined }),
  changes: fc.array(
    fc.record({
      atMs: fc.integer({ min: 0, max: 150 }),
      target: fc.constantFrom("maxWorkers" as const, "semaphore" as const),
      value: fc.integer({ min: 1, max: 4 }),
    }),
    { maxLength: 4 },
  ),
  shutdown: fc.option(
    fc.record({ atMs: fc.integer({ min: 0, max: 200 }), cancel: fc.boolean() }),
    { nil: undefined },
  ),
  runForMs: fc.integer({ min: 0, max: 250 }),
});

function sleep(ms: number): Promise<void> {
  return new Promise<void>((resolve) => setTimeout(resolve, ms));
}

/** Checks whether `reason` is one of the rejections that the generated work can cause. */
function isExpectedReason(reason: unknown): boolean {
  return reason instanceof TaskError || reason instanceof AbortReason ||
    reason instanceof ExecutorShutdownError || reason instanceof PipelineShutdownError ||
    reason instanceof PipelineItemError ||
    reason instanceof DOMException &&
      (reason.name === "TimeoutError" || reason.name === "AbortError");
}

/** The limiters shared by the executor and the pipeline, and the gauges that watch them. */
interface Shared {
  readonly semaphore: Semaphore;
  readonly rate: RateLimiter;
  readonly semaphoreTasks: TaskGauge;
  readonly released: Promise<void>;
}

function limitersOf(shared: Shared, choice: Limits): (Semaphore | RateLimiter)[] | undefined {
  if (choice === "semaphore") return [shared.semaphore];
  if (choice === "rate") return [shared.rate];
  if (choice === "both") return [shared.semaphore, shared.rate];
  return undefined;
}

/**
 * Runs one attempt of `work`. A synchronous throw happens before the task counts as running;
 * every other behaviour counts in `gauges` until it settles.
 */
function attempt<T>(
  work: Work,
  value: T,
  signal: AbortSignal,
  attemptNumber: number,
  gauges: TaskGauge[],
  released: Promise<void>,
): Promise<T> {
  const behaviour = attemptNumber > 1 && work.recovers ? "resolve" : work.behaviour;
  if (behaviour === "throw") throw new TaskError("thrown");

  for (const gauge of gauges) gauge.enter();
  let running: Promise<T>;
  switch (behaviour) {
    case "resolve":
      running = sleep(work.delayMs).then(() => value);
      break;
    case "reject":
      running = sleep(work.delayMs).then(() => {
        throw new TaskError("rejected");
      });
      break;
    case "hang":
      running = untilAborted(signal);
      break;
    default:
      running = released.then(() => value);
  }
  return running.finally(() => {
    for (const gauge of gauges) gauge.leave();
  });
}

interface Outcomes {
  submits: Observed<number>[];
  mapConsumer: Observed<void> | undefined;
  mapSeen: unknown[];
  pipelineOutcome: Observed<unknown> | undefined;
  pipelineSeen: PipelineResult<number>[];
}

function startSubmits(
  scenario: Scenario,
  executor: AsyncExecutor,
  shared: Shared,
  executorTasks: TaskGauge,
  service: AbortSignal,
  probe: Instrumentation,
): Observed<number>[] {
  return scenario.submits.map((plan, id) => {
    const result = deferred<number>();
    const observed = observe(probe.track(result.promise));
    const usesSemaphore = plan.limits === "semaphore" || plan.limits === "both";
    const gauges = usesSemaphore ? [executorTasks, shared.semaphoreTasks] : [executorTasks];
    const task = (input: number, { signal, attempt: n }: TaskContext) =>
      attempt(plan, input, signal, n, gauges, shared.released);

    setTimeout(() => {
      let signal: AbortSignal | undefined;
      if (plan.abortAtMs !== undefined) {
        const controller = new AbortController();
        signal = probe.signal(controller.signal);
        setTimeout(() => controller.abort(new AbortReason(`abort ${id}`)), plan.abortAtMs);
      } else if (plan.serviceSignal) signal = service;
      const submitted = executor.submit(task, id, {
        signal,
        semaphore: limitersOf(shared, plan.limits),
        timeoutMs: plan.timeoutMs,
        retry: { attempts: plan.attempts, delayMs: plan.retryDelayMs },
      });
      submitted.then(result.resolve, result.reject);
    }, plan.atMs);
    return observed;
  });
}

function startMap(
  plan: MapPlan,
  executor: AsyncExecutor,
  shared: Shared,
  executorTasks: TaskGauge,
  service: AbortSignal,
  probe: Instrumentation,
  seen: unknown[],
): Observed<void> {
  const usesSemaphore = plan.limits === "semaphore" || plan.limits === "both";
  const gauges = usesSemaphore ? [executorTasks, shared.semaphoreTasks] : [executorTasks];
  const task = (id: number, { signal, attempt: n }: TaskContext) =>
    attempt(plan.works[id] as Work, id, signal, n, gauges, shared.released);
  let signal = service;
  if (plan.abortAtMs !== undefined) {
    const controller = new AbortController();
    signal = probe.signal(controller.signal);
    setTimeout(() => controller.abort(new AbortReason("map aborted")), plan.abortAtMs);
  }
  const options = {
    signal,
    semaphore: limitersOf(shared, plan.limits),
    timeoutMs: plan.timeoutMs,
    retry: { attempts: plan.attempts },
  };
  const ids = plan.works.map((_, id) => id);
  // The overloads take `settled` as a literal, so each mode is a call of its own.
  const map = (plan.ordered ? executor.map : executor.mapUnordered).bind(executor);
  const stream: AsyncIterable<unknown> = plan.settled
    ? map(task, ids, { ...options, settled: true })
    : map(task, ids, { ...options, settled: false });

  return observe(probe.track((async () => {
    for await (const result of stream) {
      seen.push(result);
      if (plan.exitAfter !== undefined && seen.length > plan.exitAfter) break;
    }
  })()));
}

function buildPipeline(
  plan: PipelinePlan,
  shared: Shared,
  probe: Instrumentation,
): Pipeline<[Stage<number, number>]> {
  const stages = plan.stages.map((stagePlan, s) => {
    const workers = probe.gauge(`stage ${s} tasks`, () => stagePlan.workers);
    const tasks = Array.from({ length: stagePlan.tasks }, (_, t) => {
      // The shared limiters apply to the first task of the stage only.
      const usesSemaphore = t === 0 &&
        (stagePlan.limits === "semaphore" || stagePlan.limits === "both");
      const gauges = usesSemaphore ? [workers, shared.semaphoreTasks] : [workers];
      const task = (value: number, { index, signal, attempt: n }: StageTaskContext) => {
        const item = plan.items[index]?.[s] as Work;
        return attempt(item, value + 1, signal, n, gauges, shared.released);
      };
      Object.defineProperty(task, "name", { value: `task${t}` });
      return task;
    });
    const chosen = limitersOf(shared, stagePlan.limits);
    return new Stage<number, number>({
      name: `stage${s}`,
      workers: stagePlan.workers,
      queueCapacity: stagePlan.queueCapacity,
      tasks: tasks as unknown as [(value: number, context: StageTaskContext) => Promise<number>],
      taskConcurrencyLimits: chosen === undefined ? undefined : { task0: chosen },
      retry: { attempts: stagePlan.attempts, scope: stagePlan.scope },
      timeoutMs: stagePlan.timeoutMs,
    });
  });
  return new Pipeline({ stages: stages as [Stage<number, number>] });
}

function startPipeline(
  plan: PipelinePlan,
  pipeline: Pipeline<[Stage<number, number>]>,
  service: AbortSignal,
  probe: Instrumentation,
  seen: PipelineResult<number>[],
): Observed<unknown> {
  const inputs = plan.items.map((_, i) => i * 10);
  const exit = plan.exit;
  if (exit === "collect" || exit === "failFast") {
    return observe(probe.track(pipeline.run(inputs, { failFast: exit === "failFast" }).toArray()));
  }

  let signal = service;
  if (exit === "abort") {
    const controller = new AbortController();
    signal = probe.signal(controller.signal);
    setTimeout(() => controller.abort(new AbortReason("pipeline aborted")), plan.exitAtMs);
  }
  if (exit === "shutdown") {
    setTimeout(() => probe.track(pipeline.shutdown({ cancel: true })), plan.exitAtMs);
  }
  const stream = pipeline.run(inputs, { ordered: exit === "ordered", signal });
  return observe(probe.track((async () => {
    for await (const result of stream) {
      seen.push(result);
      if (exit === "break" && seen.length > plan.breakAfter) break;
    }
  })()));
}

function checkSubmits(outcomes: Observed<number>[]): void {
  for (const [id, outcome] of outcomes.entries()) {
    if (outcome.state === "fulfilled") assert.equal(outcome.value, id);
    else assert.ok(isExpectedReason(outcome.reason), `task ${id}: ${outcome.reason}`);
  }
}

function checkMap(plan: MapPlan, consumer: Observed<void>, seen: unknown[]): void {
  const count = plan.works.length;
  const exitedEarly = plan.exitAfter !== undefined && seen.length > plan.exitAfter;
  if (consumer.state === "rejected") {
    assert.ok(isExpectedReason(consumer.reason), `map: ${consumer.reason}`);
  }

  let indices: number[];
  if (plan.settled) {
    const results = seen as SettledResult<number, number>[];
    indices = results.map((result) => result.index);
    for (const result of results) {
      assert.equal(result.input, result.index);
      if (result.ok) assert.equal(result.value, result.index);
      else assert.ok(isExpectedReason(result.error), `map input ${result.index}: ${result.error}`);
    }
  } else {
    indices = seen as number[];
  }
  assert.equal(new Set(indices).size, indices.length, "a map input was reported twice");
  if (plan.ordered) assert.deepEqual(indices, indices.map((_, i) => i));
  if (consumer.state === "fulfilled" && !exitedEarly) {
    assert.deepEqual([...indices].sort((a, b) => a - b), plan.works.map((_, id) => id));
  }
  assert.ok(indices.every((index) => index >= 0 && index < count));
}

function checkPipeline(
  plan: PipelinePlan,
  pipeline: Pipeline<[Stage<number, number>]>,
  outcome: Observed<unknown>,
  seen: PipelineResult<number>[],
): void {
  const stats = pipeline.stats();
  assert.equal(stats.inFlight, 0);
  assert.equal(stats.running, false);
  assert.equal(stats.fed, stats.succeeded + stats.failed + stats.cancelled);
  assert.ok(stats.fed <= plan.items.length);
  for (const stage of stats.stages) {
    assert.equal(stage.busy, 0, `stage ${stage.name} busy`);
    assert.equal(stage.queued + stage.parked + stage.running + stage.outbound, 0);
  }

  if (outcome.state === "rejected") {
    assert.ok(isExpectedReason(outcome.reason), `pipeline: ${outcome.reason}`);
  }
  // A loop that left early ends normally, even while the run is being cancelled.
  if (plan.exit === "break" && seen.length > plan.breakAfter) {
    assert.equal(outcome.state, "fulfilled");
  }
  const results = plan.exit === "collect" && outcome.state === "fulfilled"
    ? outcome.value as PipelineResult<number>[]
    : seen;
  const indices = results.map((result) => result.index);
  assert.equal(new Set(indices).size, indices.length, "an item ended twice");
  const completeRun = outcome.state === "fulfilled" &&
    (plan.exit === "collect" || plan.exit === "stream" || plan.exit === "ordered");
  if (completeRun) {
    assert.deepEqual([...indices].sort((a, b) => a - b), plan.items.map((_, i) => i));
    assert.equal(stats.succeeded + stats.failed, plan.items.length);
  }
  if (plan.exit === "ordered") assert.deepEqual(indices, indices.map((_, i) => i));
  const totalTasks = plan.stages.reduce((sum, stage) => sum + stage.tasks, 0);
  for (const result of results) {
    if (result.ok) assert.equal(result.value, result.index * 10 + totalTasks);
    else assert.ok(isExpectedReason(result.error), `item ${result.index}: ${result.error}`);
  }
}

async function check(scenario: Scenario): Promise<void> {
  using clock = useVirtualClock();
  using probe = instrument();
  const executor = new AsyncExecutor({ maxWorkers: scenario.maxWorkers });
  const semaphore = new Semaphore(scenario.permits);
  probe.limiter("shared semaphore", semaphore, { capacity: () => semaphore.capacity });
  const rate = new RateLimiter(scenario.rate);
  probe.limiter("shared rate limiter", rate, { window: scenario.rate });
  const release = deferred();
  const shared: Shared = {
    semaphore,
    rate,
    // A task that needs the shared semaphore runs only while one of its permits is held.
    semaphoreTasks: probe.gauge("shared semaphore tasks", () => probe.held("shared semaphore")),
    released: release.promise,
  };
  const executorTasks = probe.gauge("executor tasks", () => executor.maxWorkers);
  const service = probe.signal(new AbortController().signal);

  for (const change of scenario.changes) {
    setTimeout(() => {
      if (change.target === "maxWorkers") executor.maxWorkers = change.value;
      else semaphore.resize(change.value);
    }, change.atMs);
  }
  if (scenario.shutdown !== undefined) {
    const { atMs, cancel } = scenario.shutdown;
    setTimeout(() => probe.track(executor.shutdown({ cancel })), atMs);
  }

  const outcomes: Outcomes = {
    submits: startSubmits(scenario, executor, shared, executorTasks, service, probe),
    mapConsumer: undefined,
    mapSeen: [],
    pipelineOutcome: undefined,
    pipelineSeen: [],
  };
  if (scenario.map !== undefined) {
    outcomes.mapConsumer = startMap(
      scenario.map,
      executor,
      shared,
      executorTasks,
      service,
      probe,
      outcomes.mapSeen,
    );
  }
  const pipeline = scenario.pipeline === undefined
    ? undefined
    : buildPipeline(scenario.pipeline, shared, probe);
  if (scenario.pipeline !== undefined && pipeline !== undefined) {
    outcomes.pipelineOutcome = startPipeline(
      scenario.pipeline,
      pipeline,
      service,
      probe,
      outcomes.pipelineSeen,
    );
  }

  await clock.tick(scenario.runForMs);
  release.resolve();
  await clock.tick(300);
  // Tasks that wait for their signal and were never aborted end only with a cancelling shutdown.
  probe.track(executor.shutdown({ cancel: true }));
  if (pipeline !== undefined) probe.track(pipeline.shutdown({ cancel: true }));
  for (let round = 0; round < 20 && (probe.pending > 0 || clock.timers() > 0); round++) {
    await clock.runAll();
    await probe.quiesce();
  }
  await probe.quiesce();

  probe.assertClean();
  assert.equal(clock.timers(), 0);
  assert.equal(executor.running, 0);
  assert.equal(executor.queued, 0);
  checkSubmits(outcomes.submits);
  if (scenario.map !== undefined && outcomes.mapConsumer !== undefined) {
    checkMap(scenario.map, outcomes.mapConsumer, outcomes.mapSeen);
  }
  if (
    scenario.pipeline !== undefined && pipeline !== undefined &&
    outcomes.pipelineOutcome !== undefined
  ) {
    checkPipeline(scenario.pipeline, pipeline, outcomes.pipelineOutcome, outcomes.pipelineSeen);
  }
}

describe("executor and pipeline invariants", () => {
  it(
    "shared limits hold and nothing leaks",
    { timeout: STRESS ? 3_600_000 : 120_000 },
    async () => {
      await fc.assert(fc.asyncProperty(scenario, check), { numRuns: NUM_RUNS });
    },
  );
});
