import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  type ItemFailureInfo,
  type ItemInfo,
  Pipeline,
  type PipelineResult,
  Semaphore,
  Stage,
  type StageOptions,
  type StageTaskContext,
} from "@antflow/antflow";
import {
  deferred,
  flush,
  flushUntil,
  Gauge,
  HeldTasks,
  itemsInStage,
  observe,
  untilAborted,
  useVirtualClock,
} from "./_helpers.ts";

function range(count: number): number[] {
  return Array.from({ length: count }, (_, i) => i);
}

function identity(value: unknown): unknown {
  return value;
}

/** Builds a stage named "s" with one worker and one task, overridden by `options`. */
function stageWith(options: Record<string, unknown>): Stage<unknown, unknown> {
  return new Stage({
    name: "s",
    workers: 1,
    tasks: [identity],
    ...options,
  } as StageOptions<unknown, unknown>);
}

/** Asserts that `fn` throws an instance of `type` whose message is exactly `message`. */
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

/** Runs `stage` alone on `inputs` and collects every result in input order. */
function runAlone<I, O>(stage: Stage<I, O>, inputs: I[]): Promise<PipelineResult<O>[]> {
  return new Pipeline({ stages: [stage] }).run(inputs).toArray();
}

/** Asserts that `result` is a failure and returns it. */
function failureOf<O>(
  result: PipelineResult<O> | undefined,
): Extract<PipelineResult<O>, { ok: false }> {
  assert.ok(result !== undefined, "expected a result");
  assert.ok(!result.ok, `expected a failure, got item ${result.index} succeeding`);
  return result;
}

/** Rejects after `ms` virtual milliseconds, or with `signal.reason` when the signal aborts. */
function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

const S = `Cannot create Stage "s" as`;

describe("Stage() validation", () => {
  it("Stage() rejects a non-string name", () => {
    assertThrowsExactly(
      () => stageWith({ name: 5 }),
      TypeError,
      "Cannot create Stage as 'name' must be a non-empty string: received 5",
    );
  });

  it("Stage() rejects an empty name", () => {
    assertThrowsExactly(
      () => stageWith({ name: "" }),
      RangeError,
      `Cannot create Stage as 'name' must be a non-empty string: received ""`,
    );
  });

  it("Stage() rejects missing options", () => {
    assertThrowsExactly(
      () => new Stage(undefined as unknown as StageOptions<unknown, unknown>),
      TypeError,
      "Cannot create Stage as 'name' must be a non-empty string: received undefined",
    );
  });

  it("Stage() rejects workers out of range", () => {
    for (const workers of [0, -1, 1.5, NaN, Infinity]) {
      assertThrowsExactly(
        () => stageWith({ workers }),
        RangeError,
        `${S} 'workers' must be an integer >= 1: received ${workers}`,
      );
    }
  });

  it("Stage() rejects workers of the wrong type", () => {
    assertThrowsExactly(
      () => stageWith({ workers: "2" }),
      TypeError,
      `${S} 'workers' must be an integer >= 1: received "2"`,
    );
  });

  it("Stage() rejects an empty task list", () => {
    assertThrowsExactly(
      () => stageWith({ tasks: [] }),
      RangeError,
      `${S} 'tasks' must be a non-empty array of functions: received an empty array`,
    );
  });

  it("Stage() rejects non-array tasks", () => {
    const table: [unknown, string][] = [
      [identity, "a function"],
      [{}, "an object"],
      [undefined, "undefined"],
    ];
    for (const [tasks, shown] of table) {
      assertThrowsExactly(
        () => stageWith({ tasks }),
        TypeError,
        `${S} 'tasks' must be a non-empty array of functions: received ${shown}`,
      );
    }
  });

  it("Stage() rejects a non-function task", () => {
    assertThrowsExactly(
      () => stageWith({ tasks: [identity, 5] }),
      TypeError,
      `${S} 'tasks[1]' must be a function: received 5`,
    );
  });

  it("Stage() rejects a limit on an unknown task", () => {
    function prepare(x: unknown): unknown {
      return x;
    }
    function callApi(x: unknown): unknown {
      return x;
    }

    assertThrowsExactly(
      () => stageWith({ tasks: [prepare, callApi], taskConcurrencyLimits: { fetch: 1 } }),
      RangeError,
      `${S} 'taskConcurrencyLimits' must be keyed by a task name of the stage ` +
        `(prepare, callApi): received "fetch"`,
    );
  });

  it("Stage() lists anonymous tasks by position", () => {
    const tasks = [(x: unknown) => x, identity];

    assertThrowsExactly(
      () => stageWith({ tasks: [tasks[0], tasks[1]], taskConcurrencyLimits: { nope: 1 } }),
      RangeError,
      `${S} 'taskConcurrencyLimits' must be keyed by a task name of the stage ` +
        `(task0, identity): received "nope"`,
    );
  });

  it("Stage() rejects a limit on a shared name", () => {
    const first = function step(x: unknown): unknown {
      return x;
    };
    const second = function step(x: unknown): unknown {
      return x;
    };

    assertThrowsExactly(
      () => stageWith({ tasks: [first, second], taskConcurrencyLimits: { step: 1 } }),
      RangeError,
      `${S} 'taskConcurrencyLimits' must be keyed by a task name that only one task has, ` +
        `or by the task function: received "step"`,
    );
  });

  it("Stage() rejects a foreign function key", () => {
    function other(x: unknown): unknown {
      return x;
    }

    assertThrowsExactly(
      () => stageWith({ taskConcurrencyLimits: new Map([[other, 1]]) }),
      RangeError,
      `${S} 'taskConcurrencyLimits' must be keyed by tasks of the stage: received a function`,
    );
  });

  it("Stage() rejects a repeated function key", () => {
    assertThrowsExactly(
      () =>
        stageWith({
          tasks: [identity, identity],
          taskConcurrencyLimits: new Map([[identity, 1]]),
        }),
      RangeError,
      `${S} 'taskConcurrencyLimits' must be keyed by a task that appears once in the stage: ` +
        "received a function",
    );
  });

  it("Stage() rejects non-object limits", () => {
    assertThrowsExactly(
      () => stageWith({ taskConcurrencyLimits: 5 }),
      TypeError,
      `${S} 'taskConcurrencyLimits' must be an object or a Map: received 5`,
    );
  });

  it("Stage() rejects a limit count out of range", () => {
    for (const limit of [0, -1, 1.5]) {
      assertThrowsExactly(
        () => stageWith({ taskConcurrencyLimits: { identity: limit } }),
        RangeError,
        `${S} 'taskConcurrencyLimits.identity' must be an integer >= 1: received ${limit}`,
      );
    }
  });

  it("Stage() rejects a limit of the wrong type", () => {
    assertThrowsExactly(
      () => stageWith({ taskConcurrencyLimits: { identity: "x" } }),
      TypeError,
      `${S} 'taskConcurrencyLimits.identity' must be an integer >= 1, a Limiter or a non-empty ` +
        `array of Limiters: received "x"`,
    );
  });

  it("Stage() rejects an empty array of limiters", () => {
    assertThrowsExactly(
      () => stageWith({ taskConcurrencyLimits: { identity: [] } }),
      TypeError,
      `${S} 'taskConcurrencyLimits.identity' must be an integer >= 1, a Limiter or a non-empty ` +
        `array of Limiters: received an empty array`,
    );
  });

  it("Stage() rejects a non-limiter in a limiter array", () => {
    assertThrowsExactly(
      () => stageWith({ taskConcurrencyLimits: { identity: [new Semaphore(1), 3] } }),
      TypeError,
      `${S} 'taskConcurrencyLimits.identity[1]' must be a Limiter: received 3`,
    );
  });

  for (const option of ["timeoutMs", "stageTimeoutMs"]) {
    it(`Stage() rejects ${option} out of range`, () => {
      for (const value of [0, -1, NaN, -Infinity]) {
        assertThrowsExactly(
          () => stageWith({ [option]: value }),
          RangeError,
          `${S} '${option}' must be a number > 0: received ${value}`,
        );
      }
    });

    it(`Stage() rejects ${option} of the wrong type`, () => {
      assertThrowsExactly(
        () => stageWith({ [option]: "5" }),
        TypeError,
        `${S} '${option}' must be a number > 0: received "5"`,
      );
    });
  }

  it("Stage() treats an Infinity timeout as none", () => {
    const stage = stageWith({ timeoutMs: Infinity, stageTimeoutMs: Infinity });

    assert.equal(stage.timeoutMs, undefined);
    assert.equal(stage.stageTimeoutMs, undefined);
  });

  it("Stage() rejects a queueCapacity out of range", () => {
    for (const queueCapacity of [-1, 1.5, NaN]) {
      assert.throws(() => stageWith({ queueCapacity }), RangeError);
    }
  });

  it("Stage() rejects a queueCapacity of the wrong type", () => {
    assert.throws(() => stageWith({ queueCapacity: "x" }), TypeError);
  });

  it("Stage() names the queueCapacity rule", () => {
    assertThrowsExactly(
      () => stageWith({ queueCapacity: -1 }),
      RangeError,
      `${S} 'queueCapacity' must be a non-negative integer or Infinity: received -1`,
    );
  });

  it("Stage() accepts queueCapacity 0 and Infinity", () => {
    assert.equal(stageWith({ queueCapacity: 0 }).queueCapacity, 0);
    assert.equal(stageWith({ queueCapacity: Infinity }).queueCapacity, Infinity);
  });

  it("Stage() defaults queueCapacity to ten per worker", () => {
    assert.equal(stageWith({ workers: 3 }).queueCapacity, 30);
  });

  it("Stage() rejects bad retry fields", () => {
    const table: [Record<string, unknown>, typeof TypeError | typeof RangeError, string][] = [
      [{ attempts: 0 }, RangeError, "'retry.attempts' must be an integer >= 1: received 0"],
      [{ attempts: 1.5 }, RangeError, "'retry.attempts' must be an integer >= 1: received 1.5"],
      [{ attempts: "3" }, TypeError, `'retry.attempts' must be an integer >= 1: received "3"`],
      [{ delayMs: -1 }, RangeError, "'retry.delayMs' must be a finite number >= 0: received -1"],
      [
        { delayMs: Infinity },
        RangeError,
        "'retry.delayMs' must be a finite number >= 0: received Infinity",
      ],
      [
        { backoff: "linear" },
        RangeError,
        `'retry.backoff' must be "fixed" or "exponential": received "linear"`,
      ],
      [{ factor: 0.5 }, RangeError, "'retry.factor' must be a finite number >= 1: received 0.5"],
      [
        { maxDelayMs: -1 },
        RangeError,
        "'retry.maxDelayMs' must be a finite number >= 0: received -1",
      ],
      [{ jitter: 2 }, RangeError, "'retry.jitter' must be a number from 0 to 1: received 2"],
      [{ retryIf: 1 }, TypeError, "'retry.retryIf' must be a function: received 1"],
    ];

    for (const [retry, type, rest] of table) {
      assertThrowsExactly(() => stageWith({ retry }), type, `${S} ${rest}`);
    }
  });

  it("Stage() rejects a non-object retry", () => {
    assertThrowsExactly(
      () => stageWith({ retry: "x" }),
      TypeError,
      `${S} 'retry' must be an object: received "x"`,
    );
  });

  it("Stage() rejects an unknown retry.scope", () => {
    assertThrowsExactly(
      () => stageWith({ retry: { attempts: 2, scope: "item" } }),
      RangeError,
      `${S} 'retry.scope' must be "task" or "stage": received "item"`,
    );
  });

  it("Stage() rejects callbacks that are not functions", () => {
    for (const callback of ["skipIf", "onSuccess", "onFailure", "onSkip"]) {
      assertThrowsExactly(
        () => stageWith({ [callback]: 1 }),
        TypeError,
        `${S} '${callback}' must be a function: received 1`,
      );
    }
  });

  it("Stage.taskNames lists the tasks in order", () => {
    function load(x: unknown): unknown {
      return x;
    }

    const stage = stageWith({ tasks: [load, (x: unknown) => x] });

    assert.deepEqual(stage.taskNames, ["load", "task1"]);
  });
});

describe("Stage task chain", () => {
  it("Stage runs the tasks in order", async () => {
    const calls: string[] = [];
    function addOne(n: number, { index }: StageTaskContext): number {
      calls.push(`${index}: addOne ${n}`);
      return n + 1;
    }
    async function triple(n: number, { index }: StageTaskContext): Promise<number> {
      calls.push(`${index}: triple ${n}`);
      await flush(1);
      return n * 3;
    }
    function show(n: number, { index }: StageTaskContext): string {
      calls.push(`${index}: show ${n}`);
      return `#${n}`;
    }
    const stage = new Stage({ name: "s", workers: 2, tasks: [addOne, triple, show] });

    const results = await runAlone(stage, [1, 2]);

    assert.deepEqual(results.map((r) => r.ok && r.value), ["#6", "#9"]);
    assert.deepEqual(calls.filter((call) => call.startsWith("0:")), [
      "0: addOne 1",
      "0: triple 2",
      "0: show 6",
    ]);
    assert.deepEqual(calls.filter((call) => call.startsWith("1:")), [
      "1: addOne 2",
      "1: triple 3",
      "1: show 9",
    ]);
  });

  it("Stage passes a TaskContext to every task", async () => {
    const contexts: StageTaskContext[] = [];
    function first(n: number, context: StageTaskContext): number {
      contexts.push(context);
      return n;
    }
    const stage = new Stage({
      name: "ctx",
      workers: 2,
      tasks: [first, (n: number, context: StageTaskContext) => {
        contexts.push(context);
        return n;
      }],
    });

    await runAlone(stage, [10, 20]);

    const seen = contexts.map(({ attempt, stage, task, index }) => ({
      attempt,
      stage,
      task,
      index,
    }))
      .sort((a, b) => a.index - b.index || a.task.localeCompare(b.task));
    assert.deepEqual(seen, [
      { attempt: 1, stage: "ctx", task: "first", index: 0 },
      { attempt: 1, stage: "ctx", task: "task1", index: 0 },
      { attempt: 1, stage: "ctx", task: "first", index: 1 },
      { attempt: 1, stage: "ctx", task: "task1", index: 1 },
    ]);
    for (const context of contexts) assert.ok(context.signal instanceof AbortSignal);
    for (const context of contexts) assert.equal(context.signal.aborted, false);
  });

  it("Stage caps running tasks at workers", async () => {
    const gauge = new Gauge();
    const stage = new Stage({
      name: "s",
      workers: 3,
      tasks: [gauge.wrap(async (n: number) => {
        await flush(2);
        return n;
      })],
    });

    const results = await runAlone(stage, range(12));

    assert.equal(gauge.peak, 3);
    assert.equal(results.filter((r) => r.ok).length, 12);
  });
});

describe("Stage taskConcurrencyLimits", () => {
  /** A named async task that counts its concurrent calls and yields a few macrotask turns. */
  function limited(gauge: Gauge) {
    return async function callApi(n: number): Promise<number> {
      gauge.enter();
      try {
        await flush(2);
        return n;
      } finally {
        gauge.leave();
      }
    };
  }

  function prepare(n: number): number {
    return n;
  }

  it("Stage limits a task by name", async () => {
    const gauge = new Gauge();
    const stage = new Stage({
      name: "s",
      workers: 4,
      tasks: [prepare, limited(gauge)],
      taskConcurrencyLimits: { callApi: 2 },
    });

    const results = await runAlone(stage, range(10));

    assert.equal(gauge.peak, 2);
    assert.equal(results.filter((r) => r.ok).length, 10);
  });

  it("Stage limits a task by its function", async () => {
    const gauge = new Gauge();
    const callApi = limited(gauge);
    const stage = new Stage({
      name: "s",
      workers: 4,
      tasks: [prepare, callApi],
      taskConcurrencyLimits: new Map([[callApi, 1]]),
    });

    await runAlone(stage, range(6));

    assert.equal(gauge.peak, 1);
  });

  it("Stage limits one of two same-named tasks", async () => {
    const firstGauge = new Gauge();
    const secondGauge = new Gauge();
    const first = limited(firstGauge);
    const second = limited(secondGauge);
    const stage = new Stage({
      name: "s",
      workers: 4,
      tasks: [first, second],
      taskConcurrencyLimits: new Map([[second, 1]]),
    });

    await runAlone(stage, range(8));

    assert.equal(secondGauge.peak, 1);
    assert.ok(firstGauge.peak > 1);
  });

  it("Stage limits a task with a Limiter", async () => {
    const gauge = new Gauge();
    const semaphore = new Semaphore(2);
    const stage = new Stage({
      name: "s",
      workers: 5,
      tasks: [prepare, limited(gauge)],
      taskConcurrencyLimits: { callApi: semaphore },
    });

    await runAlone(stage, range(10));

    assert.equal(gauge.peak, 2);
    assert.equal(semaphore.inUse, 0);
  });

  it("Stage limits a task with several Limiters", async () => {
    const gauge = new Gauge();
    const wide = new Semaphore(3);
    const narrow = new Semaphore(2);
    const stage = new Stage({
      name: "s",
      workers: 5,
      tasks: [prepare, limited(gauge)],
      taskConcurrencyLimits: { callApi: [wide, narrow] },
    });

    await runAlone(stage, range(10));

    assert.equal(gauge.peak, 2);
    assert.equal(wide.inUse, 0);
    assert.equal(narrow.inUse, 0);
  });

  it("Stage shares a Semaphore with another stage", async () => {
    const gauge = new Gauge();
    const shared = new Semaphore(2);
    const first = new Stage({
      name: "first",
      workers: 4,
      tasks: [limited(gauge)],
      taskConcurrencyLimits: { callApi: shared },
    });
    const second = new Stage({
      name: "second",
      workers: 4,
      tasks: [limited(gauge)],
      taskConcurrencyLimits: { callApi: shared },
    });

    const results = await new Pipeline({ stages: [first, second] }).run(range(12));

    assert.equal(gauge.peak, 2);
    assert.equal(results.filter((r) => r.ok).length, 12);
  });

  it("Stage shares a Semaphore across pipelines", async () => {
    const gauge = new Gauge();
    const shared = new Semaphore(3);
    const makePipeline = (name: string) =>
      new Pipeline({
        stages: [
          new Stage({
            name,
            workers: 4,
            tasks: [limited(gauge)],
            taskConcurrencyLimits: { callApi: shared },
          }),
        ],
      });

    const [a, b] = await Promise.all([
      makePipeline("a").run(range(10)).toArray(),
      makePipeline("b").run(range(10)).toArray(),
    ]);

    assert.equal(gauge.peak, 3);
    assert.equal(a.filter((r) => r.ok).length, 10);
    assert.equal(b.filter((r) => r.ok).length, 10);
  });

  it("Stage prepares items while a limit waits", async () => {
    const gate = deferred();
    const prepareGauge = new Gauge();
    const callGauge = new Gauge();
    let prepared = 0;
    async function prepareItem(n: number): Promise<number> {
      prepareGauge.enter();
      try {
        await flush(1);
        prepared++;
        return n;
      } finally {
        prepareGauge.leave();
      }
    }
    async function callApi(n: number): Promise<number> {
      callGauge.enter();
      try {
        await gate.promise;
        return n;
      } finally {
        callGauge.leave();
      }
    }
    const pipeline = new Pipeline({
      stages: [
        new Stage({
          name: "enrich",
          workers: 2,
          tasks: [prepareItem, callApi],
          taskConcurrencyLimits: { callApi: 1 },
        }),
      ],
    });

    const results = observe(pipeline.run(range(10)).toArray());
    await flushUntil(() => prepared === 10);
    await flush();
    const stats = pipeline.stats().stages[0];

    assert.equal(prepared, 10);
    assert.equal(prepareGauge.peak, 2);
    assert.equal(callGauge.current, 1);
    assert.equal(stats?.parked, 9);
    assert.equal(stats?.running, 1);
    assert.equal(stats?.busy, 1);
    assert.equal(stats?.queued, 0);

    gate.resolve();
    await flushUntil(() => results.state !== "pending");

    assert.equal(results.state, "fulfilled");
    assert.equal(results.value?.filter((r) => r.ok).length, 10);
    assert.equal(callGauge.peak, 1);
  });

  it("Stage holds at most queueCapacity + workers items", async () => {
    const held = new HeldTasks<number>();
    const fast = new Stage({
      name: "fast",
      workers: 2,
      queueCapacity: 3,
      tasks: [async (n: number) => {
        await flush(1);
        return n;
      }],
    });
    const slow = new Stage({
      name: "slow",
      workers: 2,
      queueCapacity: 1,
      tasks: [(n: number, context: StageTaskContext) => held.task(n, context) as Promise<number>],
    });
    const pipeline = new Pipeline({ stages: [fast, slow] });
    const peaks = [0, 0];
    const sample = () => {
      pipeline.stats().stages.forEach((stage, i) => {
        peaks[i] = Math.max(peaks[i] as number, itemsInStage(stage));
      });
    };
    pipeline.addEventListener("item", sample);
    pipeline.addEventListener("task", sample);

    const results = observe(pipeline.run(range(30)).toArray());
    await flushUntil(() => {
      const [first, second] = pipeline.stats().stages;
      return itemsInStage(first!) === 5 && itemsInStage(second!) === 3;
    });
    for (let released = 0; released < 30; released++) {
      await flushUntil(() => held.started.length > released);
      sample();
      held.release(held.started[released] as number);
    }
    await flushUntil(() => results.state !== "pending");

    assert.equal(results.value?.length, 30);
    assert.ok(peaks[0] as number <= 5, `fast stage held ${peaks[0]} items`);
    assert.ok(peaks[1] as number <= 3, `slow stage held ${peaks[1]} items`);
  });
});

describe("Stage retry", () => {
  it("Stage does not retry by default", async () => {
    let calls = 0;
    function flaky(): never {
      calls++;
      throw new Error("boom");
    }
    const stage = new Stage({ name: "s", workers: 1, tasks: [flaky] });

    const [result] = await runAlone(stage, [1]);

    assert.equal(calls, 1);

    const failure = failureOf(result);

    assert.equal(failure.attempts, 1);
    assert.equal(failure.task, "flaky");
    assert.equal((failure.error as Error).message, "boom");
  });

  it("Stage retries only the failing task", async () => {
    const calls: string[] = [];
    function load(n: number): number {
      calls.push(`load ${n}`);
      return n;
    }
    function send(n: number, { attempt }: StageTaskContext): number {
      calls.push(`send ${n} attempt ${attempt}`);
      if (attempt === 1) throw new Error("transient");
      return n * 2;
    }
    const stage = new Stage({ name: "s", workers: 1, tasks: [load, send], retry: { attempts: 2 } });

    const results = await runAlone(stage, [5]);

    assert.deepEqual(results.map((r) => r.ok && r.value), [10]);
    assert.deepEqual(calls, ["load 5", "send 5 attempt 1", "send 5 attempt 2"]);
  });

  it("Stage reports attempts after task retries", async () => {
    let calls = 0;
    function send(): never {
      calls++;
      throw new TypeError("still failing");
    }
    const stage = new Stage({ name: "s", workers: 1, tasks: [send], retry: { attempts: 3 } });

    const [result] = await runAlone(stage, [1]);

    assert.equal(calls, 3);

    const failure = failureOf(result);

    assert.equal(failure.attempts, 3);
    assert.equal(failure.stage, "s");
    assert.equal(failure.task, "send");
  });

  it("Stage holds no worker during a task backoff", async () => {
    using clock = useVirtualClock();
    const calls: number[] = [];
    function send(n: number, { attempt }: StageTaskContext): number {
      calls.push(n);
      if (n === 0 && attempt === 1) throw new Error("transient");
      return n;
    }
    const pipeline = new Pipeline({
      stages: [
        new Stage({
          name: "s",
          workers: 1,
          tasks: [send],
          retry: { attempts: 2, delayMs: 100 },
        }),
      ],
    });

    const results = observe(pipeline.run([0, 1]).toArray());
    await flush();
    const waiting = pipeline.stats().stages[0];

    assert.equal(waiting?.busy, 0);
    assert.equal(waiting?.parked, 1);
    assert.equal(waiting?.retried, 1);
    assert.equal(waiting?.completed, 1);
    assert.deepEqual(calls, [0, 1]);

    await clock.tick(99);

    assert.deepEqual(calls, [0, 1]);

    await clock.tick(1);
    await flushUntil(() => results.state !== "pending");

    assert.deepEqual(calls, [0, 1, 0]);
    assert.deepEqual(results.value?.map((r) => r.ok && r.value), [0, 1]);
  });

  it("Stage grows an exponential task backoff", async () => {
    using clock = useVirtualClock();
    const startedAt: number[] = [];
    function send(): never {
      startedAt.push(clock.now());
      throw new Error("down");
    }
    const stage = new Stage({
      name: "s",
      workers: 1,
      tasks: [send],
      retry: { attempts: 4, delayMs: 10, backoff: "exponential" },
    });

    const results = observe(runAlone(stage, [1]));
    await flush();
    await clock.tick(70);
    await flushUntil(() => results.state !== "pending");

    assert.deepEqual(startedAt, [0, 10, 30, 70]);
  });

  it("Stage restarts the chain on a stage retry", async () => {
    using clock = useVirtualClock();
    const calls: string[] = [];
    function load(n: number, { attempt }: StageTaskContext): number {
      calls.push(`load attempt ${attempt}`);
      return n;
    }
    let sends = 0;
    function send(n: number, { attempt }: StageTaskContext): number {
      calls.push(`send attempt ${attempt}`);
      if (++sends === 1) throw new Error("transient");
      return n;
    }
    const stage = new Stage({
      name: "s",
      workers: 1,
      tasks: [load, send],
      retry: { attempts: 2, delayMs: 50, scope: "stage" },
    });
    const pipeline = new Pipeline({ stages: [stage] });

    const results = observe(pipeline.run([7]).toArray());
    await flush();

    assert.deepEqual(calls, ["load attempt 1", "send attempt 1"]);
    assert.equal(pipeline.stats().stages[0]?.parked, 1);
    assert.equal(pipeline.stats().stages[0]?.busy, 0);

    await clock.tick(49);

    assert.equal(calls.length, 2);

    await clock.tick(1);
    await flushUntil(() => results.state !== "pending");

    assert.deepEqual(calls, [
      "load attempt 1",
      "send attempt 1",
      "load attempt 1",
      "send attempt 1",
    ]);
    assert.deepEqual(results.value?.map((r) => r.ok && r.value), [7]);
    assert.equal(pipeline.stats().stages[0]?.retried, 1);
  });

  it("Stage reports passes after an exhausted stage retry", async () => {
    let loads = 0;
    function load(n: number): number {
      loads++;
      return n;
    }
    function send(): never {
      throw new Error("down");
    }
    const stage = new Stage({
      name: "s",
      workers: 1,
      tasks: [load, send],
      retry: { attempts: 3, scope: "stage" },
    });

    const [result] = await runAlone(stage, [1]);

    assert.equal(loads, 3);

    const failure = failureOf(result);

    assert.equal(failure.attempts, 3);
    assert.equal(failure.task, "send");
  });

  it("Stage skips retries that retryIf rejects", async () => {
    let calls = 0;
    function send(): never {
      calls++;
      throw new TypeError("permanent");
    }
    const stage = new Stage({
      name: "s",
      workers: 1,
      tasks: [send],
      retry: { attempts: 5, retryIf: (error) => !(error instanceof TypeError) },
    });

    const [result] = await runAlone(stage, [1]);

    assert.equal(calls, 1);

    const failure = failureOf(result);

    assert.equal(failure.attempts, 1);
  });
  it("Stage names the task when retryIf throws", async () => {
    const thrown = new Error("retryIf failed");
    function send(): never {
      throw new Error("send failed");
    }
    const stage = new Stage({
      name: "s",
      workers: 1,
      tasks: [send],
      retry: {
        attempts: 3,
        retryIf: () => {
          throw thrown;
        },
      },
    });

    const [result] = await runAlone(stage, [1]);
    const failure = failureOf(result);

    assert.equal(failure.error, thrown);
    assert.equal(failure.stage, "s");
    assert.equal(failure.task, "send");
    assert.equal(failure.attempts, 1);
  });

  it("Stage fails the item when a stage retryIf throws", async () => {
    const thrown = new Error("retryIf failed");
    function send(): never {
      throw new Error("send failed");
    }
    const pipeline = new Pipeline({
      stages: [
        new Stage({
          name: "s",
          workers: 1,
          tasks: [send],
          retry: {
            attempts: 3,
            scope: "stage",
            retryIf: () => {
              throw thrown;
            },
          },
        }),
      ],
    });

    const [result] = await pipeline.run([1]);
    const failure = failureOf(result);

    assert.equal(failure.error, thrown);
    assert.equal(failure.stage, "s");
    assert.equal(failure.task, "send");
    assert.equal(failure.attempts, 1);
    assert.equal(pipeline.stats().failed, 1);
    assert.equal(pipeline.stats().cancelled, 0);
  });
});

describe("Stage timeouts", () => {
  it("Stage aborts a task after timeoutMs", async () => {
    using clock = useVirtualClock();
    let seen: AbortSignal | undefined;
    function wait(_: number, { signal }: StageTaskContext): Promise<number> {
      seen = signal;
      return untilAborted(signal);
    }
    const stage = new Stage({ name: "s", workers: 1, timeoutMs: 100, tasks: [wait] });

    const results = observe(runAlone(stage, [1]));
    await flush();
    await clock.tick(99);

    assert.equal(results.state, "pending");
    assert.equal(seen?.aborted, false);

    await clock.tick(1);
    await flushUntil(() => results.state !== "pending");
    const [result] = results.value ?? [];

    assert.equal(seen?.aborted, true);
    assert.ok(seen?.reason instanceof DOMException);
    assert.equal(seen?.reason.name, "TimeoutError");

    const failure = failureOf(result);

    assert.equal(failure.error, seen?.reason);
    assert.equal(failure.task, "wait");
    assert.equal(clock.timers(), 0);
  });

  it("Stage counts a timeout as a TimeoutError", async () => {
    using clock = useVirtualClock();
    function wait(_: number, { signal }: StageTaskContext): Promise<number> {
      return untilAborted(signal);
    }
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 2, timeoutMs: 10, tasks: [wait] })],
    });

    const results = observe(pipeline.run([1, 2]).toArray());
    await flush();
    await clock.tick(10);
    await flushUntil(() => results.state !== "pending");

    assert.deepEqual(pipeline.stats().errors.byType, { TimeoutError: 2 });
    assert.deepEqual(pipeline.stats().errors.byStage, { s: 2 });
  });

  it("Stage starts timeoutMs when the task starts", async () => {
    using clock = useVirtualClock();
    async function work(n: number, { signal }: StageTaskContext): Promise<number> {
      await delay(40, signal);
      return n;
    }
    const stage = new Stage({ name: "s", workers: 1, timeoutMs: 50, tasks: [work] });

    const results = observe(runAlone(stage, [0, 1, 2]));
    await flush();
    await clock.tick(120);
    await flushUntil(() => results.state !== "pending");

    assert.deepEqual(results.value?.map((r) => r.ok), [true, true, true]);
  });

  it("Stage retries a timed-out attempt", async () => {
    using clock = useVirtualClock();
    async function work(n: number, { signal, attempt }: StageTaskContext): Promise<number> {
      await delay(attempt === 1 ? 100 : 10, signal);
      return n;
    }
    const stage = new Stage({
      name: "s",
      workers: 1,
      timeoutMs: 50,
      tasks: [work],
      retry: { attempts: 2 },
    });

    const results = observe(runAlone(stage, [3]));
    await flush();
    await clock.tick(60);
    await flushUntil(() => results.state !== "pending");

    assert.deepEqual(results.value?.map((r) => r.ok && r.value), [3]);
  });

  it("Stage holds a timed-out task's worker", async () => {
    using clock = useVirtualClock();
    const gate = deferred<number>();
    function stubborn(): Promise<number> {
      return gate.promise;
    }
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, timeoutMs: 10, tasks: [stubborn] })],
    });

    const results = observe(pipeline.run([1]).toArray());
    await flush();
    await clock.tick(10);
    await flush();

    assert.equal(pipeline.stats().stages[0]?.busy, 1);
    assert.equal(pipeline.stats().stages[0]?.failed, 1);

    gate.resolve(1);
    await flushUntil(() => results.state !== "pending");

    assert.equal(pipeline.stats().stages[0]?.busy, 0);
    assert.equal(results.value?.[0]?.ok, false);
  });

  it("Stage aborts a pass after stageTimeoutMs", async () => {
    using clock = useVirtualClock();
    const signals: AbortSignal[] = [];
    async function first(n: number, { signal }: StageTaskContext): Promise<number> {
      signals.push(signal);
      await delay(30, signal);
      return n;
    }
    async function second(n: number, { signal }: StageTaskContext): Promise<number> {
      signals.push(signal);
      await delay(30, signal);
      return n;
    }
    const stage = new Stage({ name: "s", workers: 1, stageTimeoutMs: 50, tasks: [first, second] });

    const results = observe(runAlone(stage, [1]));
    await flush();
    await clock.tick(49);

    assert.equal(results.state, "pending");

    await clock.tick(1);
    await flushUntil(() => results.state !== "pending");
    const [result] = results.value ?? [];

    const failure = failureOf(result);

    assert.equal(failure.task, "second");
    assert.equal((failure.error as DOMException).name, "TimeoutError");
    assert.equal(signals[1]?.aborted, true);
    assert.equal(clock.timers(), 0);
  });

  it("Stage starts stageTimeoutMs when the first task starts", async () => {
    using clock = useVirtualClock();
    async function work(n: number, { signal }: StageTaskContext): Promise<number> {
      await delay(40, signal);
      return n;
    }
    const stage = new Stage({ name: "s", workers: 1, stageTimeoutMs: 50, tasks: [work] });

    const results = observe(runAlone(stage, [0, 1, 2]));
    await flush();
    await clock.tick(120);
    await flushUntil(() => results.state !== "pending");

    assert.deepEqual(results.value?.map((r) => r.ok), [true, true, true]);
  });

  it("Stage restarts stageTimeoutMs on each pass", async () => {
    using clock = useVirtualClock();
    let passes = 0;
    async function work(n: number, { signal }: StageTaskContext): Promise<number> {
      passes++;
      await delay(passes === 1 ? 60 : 30, signal);
      return n;
    }
    const stage = new Stage({
      name: "s",
      workers: 1,
      stageTimeoutMs: 50,
      tasks: [work],
      retry: { attempts: 2, scope: "stage" },
    });

    const results = observe(runAlone(stage, [4]));
    await flush();
    await clock.tick(50);
    await flush();
    await clock.tick(30);
    await flushUntil(() => results.state !== "pending");

    assert.equal(passes, 2);
    assert.deepEqual(results.value?.map((r) => r.ok && r.value), [4]);
  });
});

describe("Stage skipIf", () => {
  it("Stage passes a skipped value on unchanged", async () => {
    const tenfold: number[] = [];
    const first = new Stage({
      name: "first",
      workers: 2,
      tasks: [(n: number) => {
        tenfold.push(n);
        return n * 10;
      }],
      skipIf: (n: number) => n % 2 === 0,
    });
    const second = new Stage({ name: "second", workers: 2, tasks: [(n: number) => n + 1] });

    const results = await new Pipeline({ stages: [first, second] }).run([1, 2, 3, 4]);

    assert.deepEqual(results.map((r) => r.ok && r.value), [11, 3, 31, 5]);
    assert.deepEqual(tenfold.sort(), [1, 3]);
  });

  it("Stage awaits an async skipIf", async () => {
    const stage = new Stage({
      name: "s",
      workers: 2,
      tasks: [(n: number) => n * 10],
      skipIf: async (n: number) => {
        await flush(1);
        return n > 1;
      },
    });

    const results = await runAlone(stage, [1, 2]);

    assert.deepEqual(results.map((r) => r.ok && r.value), [10, 2]);
  });

  it("Stage calls onSkip for a skipped item", async () => {
    const skipped: [number, ItemInfo][] = [];
    const stage = new Stage({
      name: "s",
      workers: 1,
      tasks: [(n: number) => n],
      skipIf: (n: number) => n === 8,
      onSkip: (value: number, info: ItemInfo) => skipped.push([value, info]),
    });

    await runAlone(stage, [7, 8]);

    assert.deepEqual(skipped, [[8, { index: 1, stage: "s", attempts: 1 }]]);
  });

  it("Stage counts skipped items", async () => {
    const pipeline = new Pipeline({
      stages: [new Stage({ name: "s", workers: 1, tasks: [(n: number) => n], skipIf: () => true })],
    });

    await pipeline.run([1, 2, 3]);

    assert.equal(pipeline.stats().stages[0]?.skipped, 3);
    assert.equal(pipeline.stats().stages[0]?.completed, 0);
    assert.equal(pipeline.stats().succeeded, 3);
  });

  it("Stage fails an item whose skipIf throws", async () => {
    let calls = 0;
    const stage = new Stage({
      name: "s",
      workers: 1,
      tasks: [(n: number) => {
        calls++;
        return n;
      }],
      skipIf: () => {
        throw new Error("bad predicate");
      },
    });

    const [result] = await runAlone(stage, [1]);

    assert.equal(calls, 0);

    const failure = failureOf(result);

    assert.equal(failure.task, "skipIf");
    assert.equal(failure.stage, "s");
    assert.equal(failure.attempts, 1);
    assert.equal((failure.error as Error).message, "bad predicate");
  });

  it("Stage fails an item whose async skipIf rejects", async () => {
    const stage = new Stage({
      name: "s",
      workers: 1,
      tasks: [(n: number) => n],
      skipIf: () => Promise.reject(new Error("bad predicate")),
    });

    const [result] = await runAlone(stage, [1]);

    const failure = failureOf(result);

    assert.equal(failure.task, "skipIf");
  });
});

describe("Stage callbacks", () => {
  it("Stage calls onSuccess with the output", async () => {
    const calls: [number, ItemInfo][] = [];
    const stage = new Stage({
      name: "s",
      workers: 1,
      tasks: [(n: number) => n * 2],
      onSuccess: (value: number, info: ItemInfo) => calls.push([value, info]),
    });

    await runAlone(stage, [1, 2]);

    assert.deepEqual(calls, [
      [2, { index: 0, stage: "s", attempts: 1 }],
      [4, { index: 1, stage: "s", attempts: 1 }],
    ]);
  });

  it("Stage calls onFailure with the error", async () => {
    const calls: [unknown, ItemFailureInfo][] = [];
    const error = new Error("boom");
    function send(): never {
      throw error;
    }
    const stage = new Stage({
      name: "s",
      workers: 1,
      tasks: [send],
      retry: { attempts: 2 },
      onFailure: (caught: unknown, info: ItemFailureInfo) => calls.push([caught, info]),
    });

    await runAlone(stage, [1]);

    assert.deepEqual(calls, [[error, { index: 0, stage: "s", attempts: 2, task: "send" }]]);
  });

  it("Stage skips onSuccess for a failure", async () => {
    let successes = 0;
    const stage = new Stage({
      name: "s",
      workers: 1,
      tasks: [() => {
        throw new Error("boom");
      }],
      onSuccess: () => successes++,
    });

    await runAlone(stage, [1]);

    assert.equal(successes, 0);
  });

  for (const kind of ["sync", "async"] as const) {
    const fail = kind === "sync"
      ? () => {
        throw new Error("callback failed");
      }
      : () => Promise.reject(new Error("callback failed"));

    it(`Stage isolates a ${kind} onSuccess that throws`, async () => {
      let calls = 0;
      const pipeline = new Pipeline({
        stages: [
          new Stage({
            name: "s",
            workers: 1,
            tasks: [(n: number) => {
              calls++;
              return n;
            }],
            onSuccess: fail,
          }),
        ],
      });
      const reported: unknown[] = [];
      pipeline.addEventListener("callbackerror", (event) => {
        reported.push((event as CustomEvent).detail);
      });

      const results = await pipeline.run([5]);
      await flush();

      assert.deepEqual(results.map((r) => r.ok && r.value), [5]);
      assert.equal(calls, 1);
      assert.equal(pipeline.stats().callbackErrors, 1);
      assert.equal(reported.length, 1);
      const [detail] = reported as {
        source: string;
        stage: string;
        index: number;
        error: Error;
      }[];
      assert.equal(detail?.source, "onSuccess");
      assert.equal(detail?.stage, "s");
      assert.equal(detail?.index, 0);
      assert.equal(detail?.error.message, "callback failed");
    });

    it(`Stage isolates a ${kind} onFailure that throws`, async () => {
      const error = new Error("task failed");
      const pipeline = new Pipeline({
        stages: [
          new Stage({
            name: "s",
            workers: 1,
            tasks: [() => {
              throw error;
            }],
            onFailure: fail,
          }),
        ],
      });

      const [result] = await pipeline.run([5]);
      await flush();

      const failure = failureOf(result);

      assert.equal(failure.error, error);
      assert.equal(pipeline.stats().callbackErrors, 1);
    });

    it(`Stage isolates a ${kind} onSkip that throws`, async () => {
      const pipeline = new Pipeline({
        stages: [
          new Stage({
            name: "s",
            workers: 1,
            tasks: [(n: number) => n],
            skipIf: () => true,
            onSkip: fail,
          }),
        ],
      });

      const results = await pipeline.run([5]);
      await flush();

      assert.deepEqual(results.map((r) => r.ok && r.value), [5]);
      assert.equal(pipeline.stats().callbackErrors, 1);
    });

    it(`Stage isolates a ${kind} event listener that throws`, async () => {
      let calls = 0;
      const pipeline = new Pipeline({
        stages: [
          new Stage({
            name: "s",
            workers: 1,
            tasks: [(n: number) => {
              calls++;
              return n;
            }],
          }),
        ],
      });
      const sources: string[] = [];
      pipeline.addEventListener("task", fail);
      pipeline.addEventListener("callbackerror", (event) => {
        sources.push((event as CustomEvent<{ source: string }>).detail.source);
      });

      const results = await pipeline.run([5]);
      await flush();

      assert.deepEqual(results.map((r) => r.ok && r.value), [5]);
      assert.equal(calls, 1);
      assert.deepEqual(sources, ["listener:task", "listener:task"]);
      assert.equal(pipeline.stats().callbackErrors, 2);
    });
  }

  it("Stage does not await a slow callback", async () => {
    const gate = deferred();
    const stage = new Stage({
      name: "s",
      workers: 1,
      tasks: [(n: number) => n],
      onSuccess: () => gate.promise,
    });

    const results = await runAlone(stage, [1, 2]);

    assert.equal(results.length, 2);
    gate.resolve();
  });
});
