import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import process from "node:process";
import {
  AsyncExecutor,
  ExecutorShutdownError,
  type Limiter,
  RateLimiter,
  Semaphore,
  type TaskContext,
} from "@antflow/antflow";
import {
  countListeners,
  deferred,
  flush,
  Gauge,
  HeldTasks,
  observe,
  trackUnhandled,
  untilAborted,
  useVirtualClock,
} from "./_helpers.ts";

/** Waits `ms` milliseconds of (virtual) time. */
function sleep(ms: number): Promise<void> {
  return new Promise<void>((resolve) => setTimeout(resolve, ms));
}

describe("AsyncExecutor construction", () => {
  it("AsyncExecutor() rejects maxWorkers out of range", () => {
    for (const value of [0, -1, 1.5, NaN, Infinity]) {
      assert.throws(() => new AsyncExecutor({ maxWorkers: value }), {
        name: "RangeError",
        message:
          `Cannot create AsyncExecutor as 'maxWorkers' must be an integer >= 1: received ${value}`,
      });
    }
  });

  it("AsyncExecutor() rejects maxWorkers of the wrong type", () => {
    const cases: [unknown, string][] = [["3", `"3"`], [undefined, "undefined"], [null, "null"]];
    for (const [value, shown] of cases) {
      assert.throws(() => new AsyncExecutor({ maxWorkers: value as number }), {
        name: "TypeError",
        message:
          `Cannot create AsyncExecutor as 'maxWorkers' must be an integer >= 1: received ${shown}`,
      });
    }
  });

  it("AsyncExecutor() rejects missing options", () => {
    assert.throws(() => new AsyncExecutor(undefined as never), {
      name: "TypeError",
      message:
        "Cannot create AsyncExecutor as 'maxWorkers' must be an integer >= 1: received undefined",
    });
  });

  it("AsyncExecutor() rejects a signal that is not an AbortSignal", () => {
    assert.throws(() => new AsyncExecutor({ maxWorkers: 1, signal: {} as AbortSignal }), {
      name: "TypeError",
      message: "Cannot create AsyncExecutor as 'signal' must be an AbortSignal: received an object",
    });
  });

  it("AsyncExecutor.maxWorkers setter rejects invalid values", () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const cases: [unknown, string, string][] = [
      [0, "RangeError", "0"],
      [-1, "RangeError", "-1"],
      [1.5, "RangeError", "1.5"],
      [NaN, "RangeError", "NaN"],
      [Infinity, "RangeError", "Infinity"],
      ["3", "TypeError", `"3"`],
      [undefined, "TypeError", "undefined"],
    ];

    for (const [value, name, shown] of cases) {
      assert.throws(() => executor.maxWorkers = value as number, {
        name,
        message: `Cannot set maxWorkers as 'maxWorkers' must be an integer >= 1: received ${shown}`,
      });
    }

    assert.equal(executor.maxWorkers, 2);
  });
});

describe("AsyncExecutor.submit() validation", () => {
  const semaphore = new Semaphore(1);
  const cases: { options: unknown; name: string; message: string }[] = [
    {
      options: { timeoutMs: 0 },
      name: "RangeError",
      message: "'timeoutMs' must be a number > 0: received 0",
    },
    {
      options: { timeoutMs: -5 },
      name: "RangeError",
      message: "'timeoutMs' must be a number > 0: received -5",
    },
    {
      options: { timeoutMs: NaN },
      name: "RangeError",
      message: "'timeoutMs' must be a number > 0: received NaN",
    },
    {
      options: { timeoutMs: "10" },
      name: "TypeError",
      message: `'timeoutMs' must be a number > 0: received "10"`,
    },
    { options: { retry: 3 }, name: "TypeError", message: "'retry' must be an object: received 3" },
    {
      options: { retry: null },
      name: "TypeError",
      message: "'retry' must be an object: received null",
    },
    {
      options: { retry: { attempts: 0 } },
      name: "RangeError",
      message: "'retry.attempts' must be an integer >= 1: received 0",
    },
    {
      options: { retry: { attempts: 1.5 } },
      name: "RangeError",
      message: "'retry.attempts' must be an integer >= 1: received 1.5",
    },
    {
      options: { retry: { attempts: "2" } },
      name: "TypeError",
      message: `'retry.attempts' must be an integer >= 1: received "2"`,
    },
    {
      options: { retry: { delayMs: -1 } },
      name: "RangeError",
      message: "'retry.delayMs' must be a finite number >= 0: received -1",
    },
    {
      options: { retry: { delayMs: Infinity } },
      name: "RangeError",
      message: "'retry.delayMs' must be a finite number >= 0: received Infinity",
    },
    {
      options: { retry: { backoff: "linear" } },
      name: "RangeError",
      message: `'retry.backoff' must be "fixed" or "exponential": received "linear"`,
    },
    {
      options: { retry: { factor: 0.5 } },
      name: "RangeError",
      message: "'retry.factor' must be a finite number >= 1: received 0.5",
    },
    {
      options: { retry: { maxDelayMs: -1 } },
      name: "RangeError",
      message: "'retry.maxDelayMs' must be a finite number >= 0: received -1",
    },
    {
      options: { retry: { jitter: 1.5 } },
      name: "RangeError",
      message: "'retry.jitter' must be a number from 0 to 1: received 1.5",
    },
    {
      options: { retry: { jitter: -0.5 } },
      name: "RangeError",
      message: "'retry.jitter' must be a number from 0 to 1: received -0.5",
    },
    {
      options: { retry: { retryIf: "yes" } },
      name: "TypeError",
      message: `'retry.retryIf' must be a function: received "yes"`,
    },
    {
      options: { semaphore: {} },
      name: "TypeError",
      message: "'semaphore' must be a Limiter or an array of Limiters: received an object",
    },
    {
      options: { semaphore: 2 },
      name: "TypeError",
      message: "'semaphore' must be a Limiter or an array of Limiters: received 2",
    },
    {
      options: { semaphore: [semaphore, {}] },
      name: "TypeError",
      message: "'semaphore[1]' must be a Limiter: received an object",
    },
    {
      options: { signal: {} },
      name: "TypeError",
      message: "'signal' must be an AbortSignal: received an object",
    },
  ];

  it("AsyncExecutor.submit() rejects a task that is not a function", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });

    for (const [task, shown] of [[1, "1"], ["f", `"f"`], [undefined, "undefined"]]) {
      await assert.rejects(executor.submit(task as never, null), {
        name: "TypeError",
        message: `Cannot submit the task as 'task' must be a function: received ${shown}`,
      });
    }
  });

  it("AsyncExecutor.submit() rejects invalid options", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    let calls = 0;

    for (const { options, name, message } of cases) {
      await assert.rejects(executor.submit(() => calls++, null, options as never), {
        name,
        message: `Cannot submit the task as ${message}`,
      });
    }

    assert.equal(calls, 0);
    assert.equal(executor.running, 0);
    assert.equal(executor.queued, 0);
  });

  it("AsyncExecutor.submit() returns a rejection instead of throwing", () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    let result: Promise<unknown> | undefined;

    assert.doesNotThrow(() => {
      result = executor.submit(() => 1, null, { timeoutMs: -1 });
    });

    assert.ok(result instanceof Promise);
    return assert.rejects(result, RangeError);
  });
});

describe("AsyncExecutor.maxWorkers at run time", () => {
  it("AsyncExecutor.maxWorkers raised starts queued tasks", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<string>();
    const results = ["a", "b", "c", "d"].map((name) => executor.submit(held.task, name));
    await flush();
    assert.deepEqual(held.started, ["a"]);

    executor.maxWorkers = 3;
    await flush();

    assert.deepEqual(held.started, ["a", "b", "c"]);
    assert.equal(executor.running, 3);
    assert.equal(executor.queued, 1);

    for (const name of ["a", "b", "c"]) held.release(name);
    await flush();
    held.release("d");
    assert.deepEqual(await Promise.all(results), ["a", "b", "c", "d"]);
  });

  it("AsyncExecutor.maxWorkers lowered starts nothing until below", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 3 });
    const gauge = new Gauge();
    const held = new HeldTasks<number>();
    const task = gauge.wrap(held.task);
    const results = [0, 1, 2, 3, 4].map((n) => executor.submit(task, n));
    await flush();
    assert.deepEqual(held.started, [0, 1, 2]);

    executor.maxWorkers = 1;
    held.release(0);
    await flush();

    assert.deepEqual(held.started, [0, 1, 2]);
    assert.equal(executor.running, 2);

    held.release(1);
    await flush();

    assert.deepEqual(held.started, [0, 1, 2]);

    held.release(2);
    await flush();

    assert.deepEqual(held.started, [0, 1, 2, 3]);
    assert.equal(gauge.current, 1);

    held.release(3);
    await flush();
    held.release(4);
    await Promise.all(results);
    assert.equal(gauge.peak, 3);
  });

  it("AsyncExecutor.maxWorkers lowered is never exceeded", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 4 });
    const held = new HeldTasks<number>();
    const runningAtStart: number[] = [];
    const task = (n: number, context: TaskContext) => {
      runningAtStart.push(executor.running);
      return held.task(n, context);
    };
    const inputs = Array.from({ length: 12 }, (_, i) => i);
    const results = inputs.map((n) => executor.submit(task, n));
    await flush();

    executor.maxWorkers = 2;
    for (const n of inputs) {
      held.release(n);
      await flush();
    }
    await Promise.all(results);

    assert.deepEqual(runningAtStart.slice(0, 4), [1, 2, 3, 4]);
    assert.equal(runningAtStart.length, 12);
    for (const running of runningAtStart.slice(4)) assert.ok(running <= 2, `${running} running`);
  });

  it("AsyncExecutor.maxWorkers raised from one reaches five at once", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<number>();
    const inputs = Array.from({ length: 20 }, (_, i) => i);
    const results = inputs.map((n) => executor.submit(held.task, n));
    await flush();

    executor.maxWorkers = 5;
    await flush();

    assert.equal(executor.running, 5);
    assert.equal(held.started.length, 5);

    executor.maxWorkers = 2;
    for (const n of inputs) {
      held.release(n);
      await flush();
      if (n >= 3) assert.ok(executor.running <= 2, `${executor.running} running after ${n}`);
    }
    await Promise.all(results);
  });
});

describe("AsyncExecutor task context", () => {
  it("AsyncExecutor.submit() passes attempt 1 and a live signal", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    let seen: TaskContext | undefined;

    await executor.submit((_: null, context) => {
      seen = context;
    }, null);

    assert.equal(seen?.attempt, 1);
    assert.ok(seen?.signal instanceof AbortSignal);
    assert.equal(seen?.signal.aborted, false);
  });

  it("AsyncExecutor.submit() aborts context.signal with the caller's reason", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const controller = new AbortController();
    const held = new HeldTasks<string>();
    const result = observe(executor.submit(held.task, "a", { signal: controller.signal }));
    await flush();
    const reason = new Error("stop");

    controller.abort(reason);
    await flush();

    assert.equal(held.signal("a").aborted, true);
    assert.equal(held.signal("a").reason, reason);
    assert.equal(result.state, "rejected");
    assert.equal(result.reason, reason);
    held.release("a");
  });

  it("AsyncExecutor.submit() passes the task's input and returns its value", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });

    const value = await executor.submit((n: number) => n * 2, 21);

    assert.equal(value, 42);
  });

  it("AsyncExecutor.submit() rejects with a synchronous throw", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const error = new Error("sync");

    await assert.rejects(
      executor.submit(() => {
        throw error;
      }, null),
      error,
    );

    assert.equal(executor.running, 0);
  });
});

describe("AsyncExecutor.submit() with thenables", () => {
  it("AsyncExecutor.submit() accepts a thenable result", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const thenable: PromiseLike<number> = {
      then(onFulfilled) {
        return Promise.resolve(7).then(onFulfilled);
      },
    };

    assert.equal(await executor.submit(() => thenable, null), 7);
    assert.equal(executor.running, 0);
  });

  it("AsyncExecutor.submit() settles once for a thenable calling back twice", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const thenable = {
      then(onFulfilled: (value: number) => void, onRejected: (reason: unknown) => void) {
        onFulfilled(1);
        onRejected(new Error("late"));
        onFulfilled(3);
      },
    } as unknown as PromiseLike<number>;

    assert.equal(await executor.submit(() => thenable, null), 1);

    assert.equal(executor.running, 0);
    assert.equal(await executor.submit((n: number) => n, 2), 2);
  });

  it("AsyncExecutor.submit() frees the worker when then() throws", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const error = new Error("then threw");
    const broken = {
      then() {
        throw error;
      },
    } as unknown as PromiseLike<number>;

    await assert.rejects(executor.submit(() => broken, null), error);

    assert.equal(executor.running, 0);
  });
});

describe("AsyncExecutor.submit() with a semaphore", () => {
  it("AsyncExecutor.submit() runs CPU tasks while database tasks wait", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const database = new Semaphore(1);
    const db = new HeldTasks<number>();
    const dbInputs = Array.from({ length: 10 }, (_, i) => i);
    const cpuDone: number[] = [];

    const dbResults = dbInputs.map((n) => executor.submit(db.task, n, { semaphore: database }));
    const cpuResults = [0, 1, 2, 3, 4].map((n) =>
      executor.submit((m: number) => {
        cpuDone.push(m);
        return m;
      }, n)
    );
    await Promise.all(cpuResults);

    assert.deepEqual(cpuDone, [0, 1, 2, 3, 4]);
    assert.ok(db.started.length <= 1, `${db.started.length} database tasks started`);

    await flush();

    assert.deepEqual(db.started, [0]);
    assert.equal(executor.running, 1);
    assert.equal(executor.queued, 9);
    assert.equal(database.available, 0);

    for (const n of dbInputs) {
      db.release(n);
      await flush();
    }
    assert.deepEqual(await Promise.all(dbResults), dbInputs);
    assert.equal(database.available, 1);
  });

  it("AsyncExecutor.submit() waiting for a semaphore holds no worker", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const database = new Semaphore(1);
    const outside = await database.acquire();
    let ran = false;
    const waiting = observe(executor.submit(() => ran = true, null, { semaphore: database }));
    await flush();

    assert.equal(executor.queued, 1);
    assert.equal(executor.running, 0);

    assert.equal(await executor.submit((n: number) => n, 7), 7);

    assert.equal(ran, false);
    assert.equal(waiting.state, "pending");

    outside.release();
    await flush();

    assert.equal(ran, true);
    assert.equal(waiting.state, "fulfilled");
  });

  it("AsyncExecutor.submit() holds every limiter of an array", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const first = new Semaphore(2);
    const second = new Semaphore(3);
    let during: number[] = [];

    await executor.submit(
      () => {
        during = [first.available, second.available];
      },
      null,
      { semaphore: [first, second] },
    );

    assert.deepEqual(during, [1, 2]);
    assert.equal(first.available, 2);
    assert.equal(second.available, 3);
  });

  it("AsyncExecutor.submit() never exceeds a shared semaphore", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 8 });
    const shared = new Semaphore(3);
    const gauge = new Gauge();
    const task = gauge.wrap(async (n: number) => {
      await flush(1);
      return n;
    });

    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) => executor.submit(task, i, { semaphore: shared })),
    );

    assert.equal(results.length, 30);
    assert.equal(gauge.peak, 3);
  });

  it("AsyncExecutor.submit() accepts a limiter of the caller's own", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    let acquired = 0;
    let released = 0;
    const counting: Limiter = {
      acquire() {
        acquired++;
        const release = () => {
          released++;
        };
        return Promise.resolve({ release, [Symbol.dispose]: release });
      },
    };

    await executor.submit((n: number) => n, 1, { semaphore: counting });

    assert.equal(acquired, 1);
    assert.equal(released, 1);
  });
});

describe("AsyncExecutor timeouts", () => {
  it("AsyncExecutor.submit() starts the timeout when the task starts", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const first = executor.submit(() => sleep(5000), null);
    const second = observe(
      executor.submit(
        async () => {
          await sleep(500);
          return "second";
        },
        null,
        { timeoutMs: 1000 },
      ),
    );

    await clock.tick(5000);
    await first;

    assert.equal(second.state, "pending");

    await clock.tick(500);

    assert.equal(second.state, "fulfilled");
    assert.equal(second.value, "second");
  });

  it("AsyncExecutor.submit() rejects with a TimeoutError", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const result = observe(
      executor.submit((_: null, { signal }) => untilAborted(signal), null, { timeoutMs: 1000 }),
    );

    await clock.tick(999);

    assert.equal(result.state, "pending");

    await clock.tick(1);

    assert.equal(result.state, "rejected");
    assert.ok(result.reason instanceof DOMException);
    assert.equal(result.reason.name, "TimeoutError");
  });

  it("AsyncExecutor.submit() aborts the signal with the timeout's reason", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<string>();
    const result = observe(executor.submit(held.task, "a", { timeoutMs: 100 }));

    await clock.tick(100);

    assert.equal(result.state, "rejected");
    assert.equal(held.signal("a").aborted, true);
    assert.equal(held.signal("a").reason, result.reason);
    held.release("a");
  });

  it("AsyncExecutor.submit() holds the worker until a timed-out task settles", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<string>();
    const first = observe(executor.submit(held.task, "ignores", { timeoutMs: 100 }));
    const second = executor.submit(held.task, "queued");

    await clock.tick(100);

    assert.equal(first.state, "rejected");
    assert.equal(executor.running, 1);
    assert.equal(executor.queued, 1);
    assert.deepEqual(held.started, ["ignores"]);

    held.release("ignores");
    await flush();

    assert.deepEqual(held.started, ["ignores", "queued"]);
    held.release("queued");
    assert.equal(await second, "queued");
  });

  it("AsyncExecutor.submit() leaves no timer after an early finish", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 2 });

    const values = await Promise.all([
      executor.submit((n: number) => n, 1, { timeoutMs: 1000 }),
      executor.submit(
        async (n: number) => {
          await sleep(10);
          return n;
        },
        2,
        { timeoutMs: 1000 },
      ).then((value) => value),
      clock.tick(10),
    ]);

    assert.deepEqual(values.slice(0, 2), [1, 2]);
    assert.equal(clock.timers(), 0);
  });

  it("AsyncExecutor.submit() treats an Infinity timeout as none", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<string>();
    const result = observe(executor.submit(held.task, "a", { timeoutMs: Infinity }));
    await flush();

    assert.equal(clock.timers(), 0);

    held.release("a");
    await flush();
    assert.equal(result.state, "fulfilled");
  });
});

describe("AsyncExecutor retries", () => {
  it("AsyncExecutor.submit() counts attempts from one", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const attempts: number[] = [];

    const value = await executor.submit(
      (_: null, { attempt }) => {
        attempts.push(attempt);
        if (attempt < 3) throw new Error(`attempt ${attempt}`);
        return "done";
      },
      null,
      { retry: { attempts: 3 } },
    );

    assert.equal(value, "done");
    assert.deepEqual(attempts, [1, 2, 3]);
  });

  it("AsyncExecutor.submit() rejects with the last attempt's error", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    let calls = 0;

    await assert.rejects(
      executor.submit(
        (_: null, { attempt }) => {
          calls++;
          throw new Error(`attempt ${attempt}`);
        },
        null,
        { retry: { attempts: 3 } },
      ),
      { message: "attempt 3" },
    );

    assert.equal(calls, 3);
  });

  it("AsyncExecutor.submit() waits delayMs between fixed attempts", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const startedAt: number[] = [];
    const result = executor.submit(
      () => {
        startedAt.push(clock.now());
        throw new Error("flaky");
      },
      null,
      { retry: { attempts: 4, delayMs: 100 } },
    );
    result.catch(() => {});

    await clock.runAll();

    assert.deepEqual(startedAt, [0, 100, 200, 300]);
    await assert.rejects(result, { message: "flaky" });
  });

  it("AsyncExecutor.submit() grows exponential delays up to maxDelayMs", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const startedAt: number[] = [];
    const result = executor.submit(
      () => {
        startedAt.push(clock.now());
        throw new Error("flaky");
      },
      null,
      {
        retry: { attempts: 5, delayMs: 100, backoff: "exponential", factor: 3, maxDelayMs: 500 },
      },
    );
    result.catch(() => {});

    await clock.runAll();

    assert.deepEqual(startedAt, [0, 100, 400, 900, 1400]);
  });

  it("AsyncExecutor.submit() doubles exponential delays by default", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const startedAt: number[] = [];
    const result = executor.submit(
      () => {
        startedAt.push(clock.now());
        throw new Error("flaky");
      },
      null,
      { retry: { attempts: 4, delayMs: 100, backoff: "exponential" } },
    );
    result.catch(() => {});

    await clock.runAll();

    assert.deepEqual(startedAt, [0, 100, 300, 700]);
  });

  it("AsyncExecutor.submit() keeps jittered delays within bounds", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 20 });
    const secondAt: number[] = [];
    const results = Array.from(
      { length: 20 },
      (_, i) =>
        executor.submit(
          (_n: number, { attempt }) => {
            if (attempt === 1) throw new Error("flaky");
            secondAt.push(clock.now());
          },
          i,
          { retry: { attempts: 2, delayMs: 1000, jitter: 0.5 } },
        ),
    );

    await clock.tick(499);

    assert.deepEqual(secondAt, []);

    await clock.tick(501);
    await Promise.all(results);

    assert.equal(secondAt.length, 20);
    for (const at of secondAt) assert.ok(at >= 500 && at <= 1000, `second attempt at ${at} ms`);
  });

  it("AsyncExecutor.submit() passes the error and attempt to retryIf", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const errors = [new Error("first"), new Error("second"), new Error("third")];
    const calls: [unknown, number][] = [];

    const result = executor.submit(
      (_: null, { attempt }) => {
        throw errors[attempt - 1];
      },
      null,
      {
        retry: {
          attempts: 5,
          retryIf: (error, attempt) => {
            calls.push([error, attempt]);
            return attempt < 2;
          },
        },
      },
    );

    await assert.rejects(result, errors[1]);
    assert.deepEqual(calls, [[errors[0], 1], [errors[1], 2]]);
  });

  it("AsyncExecutor.submit() rejects with retryIf's own error", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const thrown = new Error("retryIf failed");

    const result = executor.submit(
      () => {
        throw new Error("task failed");
      },
      null,
      {
        retry: {
          attempts: 3,
          retryIf: () => {
            throw thrown;
          },
        },
      },
    );

    await assert.rejects(result, thrown);
  });

  it("AsyncExecutor.submit() retries a timed-out attempt", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const result = observe(executor.submit(
      (_: null, { signal, attempt }) => {
        if (attempt === 1) return untilAborted(signal);
        return "second";
      },
      null,
      { timeoutMs: 100, retry: { attempts: 2 } },
    ));

    await clock.tick(100);
    await flush();

    assert.equal(result.state, "fulfilled");
    assert.equal(result.value, "second");
  });

  it("AsyncExecutor.submit() never retries after the caller's abort", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const controller = new AbortController();
    const reason = new Error("stop");
    let calls = 0;
    const result = executor.submit(
      (_: null, { signal }) => {
        calls++;
        return untilAborted(signal);
      },
      null,
      { signal: controller.signal, retry: { attempts: 3 } },
    );
    await flush();

    controller.abort(reason);

    await assert.rejects(result, reason);
    await flush();
    assert.equal(calls, 1);
  });

  it("AsyncExecutor.submit() re-acquires the semaphore for every attempt", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const database = new Semaphore(1);
    const availableDuring: number[] = [];
    const result = executor.submit(
      (_: null, { attempt }) => {
        availableDuring.push(database.available);
        if (attempt === 1) throw new Error("flaky");
        return "ok";
      },
      null,
      { semaphore: database, retry: { attempts: 2, delayMs: 1000 } },
    );

    await clock.tick(500);

    assert.equal(database.available, 1);
    assert.deepEqual(availableDuring, [0]);

    await clock.tick(500);

    assert.equal(await result, "ok");
    assert.deepEqual(availableDuring, [0, 0]);
    assert.equal(database.available, 1);
  });

  it("AsyncExecutor.submit() holds no worker between attempts", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const result = executor.submit(
      (_: null, { attempt }) => {
        if (attempt === 1) throw new Error("flaky");
        return "retried";
      },
      null,
      { retry: { attempts: 2, delayMs: 1000 } },
    );
    await clock.tick(10);

    assert.equal(executor.running, 0);
    assert.equal(await executor.submit((n: number) => n, 5), 5);

    await clock.tick(990);

    assert.equal(await result, "retried");
  });

  it("AsyncExecutor.submit() rejects at once when aborted between attempts", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const controller = new AbortController();
    const reason = new Error("stop");
    let calls = 0;
    const result = observe(executor.submit(
      () => {
        calls++;
        throw new Error("flaky");
      },
      null,
      { signal: controller.signal, retry: { attempts: 2, delayMs: 1000 } },
    ));
    await clock.tick(500);

    controller.abort(reason);
    await flush();

    assert.equal(result.state, "rejected");
    assert.equal(result.reason, reason);
    assert.equal(clock.timers(), 0);

    await clock.tick(1000);

    assert.equal(calls, 1);
  });
});

describe("AsyncExecutor.shutdown()", () => {
  it("AsyncExecutor.submit() rejects after shutdown", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    await executor.shutdown();
    let calls = 0;

    await assert.rejects(executor.submit(() => calls++, null), {
      name: "ExecutorShutdownError",
      message: "Cannot run the task as the executor is shut down",
    });

    await assert.rejects(executor.submit(() => calls++, null), ExecutorShutdownError);
    assert.equal(calls, 0);
    assert.equal(executor.closed, true);
  });

  it("AsyncExecutor.shutdown() lets queued and running tasks finish", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<string>();
    const first = executor.submit(held.task, "running");
    const second = executor.submit(held.task, "queued");
    const shutdown = observe(executor.shutdown());
    await flush();

    assert.equal(executor.closed, true);
    assert.equal(shutdown.state, "pending");

    held.release("running");
    await flush();

    assert.deepEqual(held.started, ["running", "queued"]);
    assert.equal(shutdown.state, "pending");

    held.release("queued");
    await flush();

    assert.equal(shutdown.state, "fulfilled");
    assert.equal(await first, "running");
    assert.equal(await second, "queued");
  });

  it("AsyncExecutor.shutdown() with cancel rejects queued tasks", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<string>();
    const running = observe(executor.submit(held.task, "running"));
    const queued = [
      observe(executor.submit(held.task, "b")),
      observe(executor.submit(held.task, "c")),
    ];
    await flush();

    const shutdown = observe(executor.shutdown({ cancel: true }));
    await flush();

    for (const result of queued) {
      assert.equal(result.state, "rejected");
      assert.ok(result.reason instanceof ExecutorShutdownError);
      assert.equal(
        (result.reason as Error).message,
        "Cannot run the task as the executor was shut down with cancel",
      );
    }
    assert.deepEqual(held.started, ["running"]);
    assert.equal(executor.queued, 0);
    assert.equal(running.state, "pending");
    assert.equal(shutdown.state, "pending");

    held.release("running");
    await flush();

    assert.equal(running.state, "fulfilled");
    assert.equal(shutdown.state, "fulfilled");
  });

  it("AsyncExecutor.shutdown() with cancel aborts running tasks' signals", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const results = ["a", "b"].map((name) =>
      executor.submit((_: string, { signal }) => untilAborted(signal), name)
    );
    await flush();

    await executor.shutdown({ cancel: true });

    for (const result of results) await assert.rejects(result, ExecutorShutdownError);
    assert.equal(executor.running, 0);
  });

  it("AsyncExecutor.shutdown() waits for tasks that ignore the abort", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<string>();
    const result = executor.submit(held.task, "a");
    await flush();
    const shutdown = observe(executor.shutdown({ cancel: true }));
    await flush();

    assert.equal(held.signal("a").aborted, true);
    assert.equal(shutdown.state, "pending");
    assert.equal(executor.running, 1);

    held.release("a");
    await flush();

    assert.equal(shutdown.state, "fulfilled");
    assert.equal(executor.running, 0);
    assert.equal(await result, "a");
  });

  it("AsyncExecutor.shutdown() waits for aborted tasks with a signal", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<string>();
    const controller = new AbortController();
    const result = observe(executor.submit(held.task, "a", { signal: controller.signal }));
    await flush();
    const shutdown = observe(executor.shutdown({ cancel: true }));
    await flush();

    assert.equal(result.state, "rejected");
    assert.equal(executor.running, 1);
    assert.equal(shutdown.state, "pending");

    held.release("a");
    await flush();
    assert.equal(shutdown.state, "fulfilled");
  });

  it("AsyncExecutor.shutdown() with cancel rejects semaphore waiters", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const database = new Semaphore(1);
    const outside = await database.acquire();
    let ran = false;
    const waiting = observe(executor.submit(() => ran = true, null, { semaphore: database }));
    await flush();

    const shutdown = observe(executor.shutdown({ cancel: true }));
    await flush();

    assert.equal(waiting.state, "rejected");
    assert.ok(waiting.reason instanceof ExecutorShutdownError);
    assert.equal(executor.queued, 0);
    assert.equal(shutdown.state, "fulfilled");

    outside.release();
    await flush();
    assert.equal(ran, false);
  });

  it("AsyncExecutor.shutdown() resolves on every call", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<string>();
    const result = executor.submit(held.task, "a");
    const first = observe(executor.shutdown());
    const second = observe(executor.shutdown());
    await flush();

    assert.equal(first.state, "pending");
    assert.equal(second.state, "pending");

    held.release("a");
    await flush();

    assert.equal(first.state, "fulfilled");
    assert.equal(second.state, "fulfilled");
    await executor.shutdown();
    await executor.shutdown({ cancel: true });
    assert.equal(await result, "a");
  });

  it("AsyncExecutor.shutdown() with cancel after a graceful one cancels", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<string>();
    executor.submit(held.task, "a").catch(() => {});
    const queued = observe(executor.submit(held.task, "b"));
    const graceful = observe(executor.shutdown());
    await flush();

    const cancelling = observe(executor.shutdown({ cancel: true }));
    await flush();

    assert.equal(queued.state, "rejected");
    assert.equal(held.signal("a").aborted, true);
    held.release("a");
    await flush();
    assert.equal(graceful.state, "fulfilled");
    assert.equal(cancelling.state, "fulfilled");
  });

  it("AsyncExecutor shuts down gracefully at the end of await using", async () => {
    const held = new HeldTasks<string>();
    let executor: AsyncExecutor | undefined;
    let result: Promise<unknown> | undefined;
    const scope = observe((async () => {
      await using inner = new AsyncExecutor({ maxWorkers: 1 });
      executor = inner;
      result = inner.submit(held.task, "a");
    })());
    await flush();

    assert.equal(scope.state, "pending");
    assert.equal(executor?.closed, true);

    held.release("a");
    await flush();

    assert.equal(scope.state, "fulfilled");
    assert.equal(await result, "a");
  });

  it("AsyncExecutor() signal cancels like shutdown with its reason", async () => {
    const controller = new AbortController();
    const executor = new AsyncExecutor({ maxWorkers: 1, signal: controller.signal });
    const held = new HeldTasks<string>();
    const runningResult = executor.submit(held.task, "running");
    const running = observe(runningResult);
    const queued = observe(executor.submit(held.task, "queued"));
    await flush();
    const reason = new Error("service stopping");

    controller.abort(reason);
    await flush();

    assert.equal(executor.closed, true);
    assert.equal(queued.state, "rejected");
    assert.equal(queued.reason, reason);
    assert.equal(held.signal("running").reason, reason);
    assert.equal(running.state, "pending");
    await assert.rejects(executor.submit(() => 1, null), ExecutorShutdownError);

    held.release("running");
    assert.equal(await runningResult, "running");
  });

  it("AsyncExecutor() signal already aborted starts closed", async () => {
    const executor = new AsyncExecutor({
      maxWorkers: 1,
      signal: AbortSignal.abort(new Error("no")),
    });

    assert.equal(executor.closed, true);
    await assert.rejects(executor.submit(() => 1, null), ExecutorShutdownError);
  });

  it("AsyncExecutor.shutdown() removes its listener from the signal", async () => {
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);
    const executor = new AsyncExecutor({ maxWorkers: 1, signal: controller.signal });

    assert.equal(listeners(), 1);

    await executor.shutdown();

    assert.equal(listeners(), 0);
  });
});

describe("AsyncExecutor introspection", () => {
  it("AsyncExecutor.running and queued count tasks", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const held = new HeldTasks<number>();
    const results = [0, 1, 2, 3, 4].map((n) => executor.submit(held.task, n));
    await flush();

    assert.equal(executor.running, 2);
    assert.equal(executor.queued, 3);

    for (const n of [0, 1, 2, 3, 4]) {
      held.release(n);
      await flush();
    }
    await Promise.all(results);

    assert.equal(executor.running, 0);
    assert.equal(executor.queued, 0);
  });

  it("AsyncExecutor.onIdle() resolves at once when idle", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });

    const fresh = observe(executor.onIdle());
    await flush(1);

    assert.equal(fresh.state, "fulfilled");

    await executor.submit(() => 1, null);
    const after = observe(executor.onIdle());
    await flush(1);

    assert.equal(after.state, "fulfilled");
  });

  it("AsyncExecutor.shutdown() resolves at once on a fresh executor", async () => {
    const first = new AsyncExecutor({ maxWorkers: 1 });
    const second = new AsyncExecutor({ maxWorkers: 1 });

    const shutdown = observe(first.shutdown());
    const disposed = observe(second[Symbol.asyncDispose]());
    await flush(1);

    assert.equal(shutdown.state, "fulfilled");
    assert.equal(disposed.state, "fulfilled");
  });

  it("AsyncExecutor.onIdle() waits for work submitted in the same tick", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<number>();
    for (const n of [0, 1, 2]) executor.submit(held.task, n);
    const idle = observe(executor.onIdle());

    for (const n of [0, 1, 2]) {
      await flush();
      assert.equal(idle.state, "pending");
      held.release(n);
    }
    await flush();

    assert.equal(idle.state, "fulfilled");
    assert.deepEqual(held.started, [0, 1, 2]);
  });

  it("AsyncExecutor.onIdle() resolves after results are delivered", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const held = new HeldTasks<number>();
    const delivered: unknown[] = [];
    for (const n of [0, 1, 2]) executor.submit(held.task, n).then((value) => delivered.push(value));
    const idle = executor.onIdle();

    for (const n of [0, 1, 2]) {
      await flush();
      held.release(n);
    }
    await idle;

    assert.deepEqual(delivered, [0, 1, 2]);
  });

  it("AsyncExecutor.onIdle() ignores work submitted after it resolved", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<string>();
    const idle = executor.onIdle();

    const result = executor.submit(held.task, "later");
    await idle;

    assert.equal(executor.running, 1);
    held.release("later");
    await result;
  });

  it("AsyncExecutor.onIdle() waits for an active map run", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<number>();
    const results = observe(executor.map(held.task, [0]).toArray());
    await flush();
    const idle = observe(executor.onIdle());
    await flush();

    assert.equal(idle.state, "pending");

    held.release(0);
    await flush();

    assert.equal(idle.state, "fulfilled");
    assert.deepEqual(results.value, [0]);
  });

  it("AsyncExecutor.onIdle() waits for a timed-out task to settle", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<string>();
    executor.submit(held.task, "a", { timeoutMs: 100 }).catch(() => {});
    const idle = observe(executor.onIdle());

    await clock.tick(100);

    assert.equal(executor.running, 1);
    assert.equal(idle.state, "pending");

    held.release("a");
    await flush();
    assert.equal(idle.state, "fulfilled");
  });
});

describe("AsyncExecutor.asCompleted()", () => {
  it("AsyncExecutor.asCompleted() yields in completion order", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const [a, b, c] = [deferred<string>(), deferred<string>(), deferred<string>()];
    const seen: string[] = [];
    const loop = (async () => {
      for await (const value of executor.asCompleted([a.promise, b.promise, c.promise])) {
        seen.push(value);
      }
    })();

    b.resolve("b");
    await flush();
    c.resolve("c");
    await flush();
    a.resolve("a");
    await loop;

    assert.deepEqual(seen, ["b", "c", "a"]);
  });

  it("AsyncExecutor.asCompleted() throws a rejection", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const error = new Error("failed");
    const failing = deferred<number>();
    const seen: number[] = [];

    const loop = (async () => {
      for await (const value of executor.asCompleted([Promise.resolve(1), failing.promise])) {
        seen.push(value);
      }
    })();
    await flush();
    failing.reject(error);

    await assert.rejects(loop, error);
    assert.deepEqual(seen, [1]);
  });

  it("AsyncExecutor.asCompleted() break leaves no unhandled rejection", async () => {
    using unhandled = trackUnhandled();
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const later = deferred<number>();
    const seen: number[] = [];

    for await (const value of executor.asCompleted([Promise.resolve(1), later.promise])) {
      seen.push(value);
      break;
    }
    later.reject(new Error("after break"));
    await flush();

    assert.deepEqual(seen, [1]);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("AsyncExecutor.asCompleted() throws a TimeoutError at its deadline", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const never = new Promise<number>(() => {});
    const seen: number[] = [];
    const loop = observe((async () => {
      for await (
        const value of executor.asCompleted([Promise.resolve(1), never], { timeoutMs: 1000 })
      ) {
        seen.push(value);
      }
    })());

    await clock.tick(999);

    assert.equal(loop.state, "pending");
    assert.deepEqual(seen, [1]);

    await clock.tick(1);

    assert.equal(loop.state, "rejected");
    assert.ok(loop.reason instanceof DOMException);
    assert.equal(loop.reason.name, "TimeoutError");
    assert.equal(clock.timers(), 0);
  });

  it("AsyncExecutor.asCompleted() clears its timer when done early", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const seen: number[] = [];

    for await (const value of executor.asCompleted([Promise.resolve(1)], { timeoutMs: 1000 })) {
      seen.push(value);
    }

    assert.deepEqual(seen, [1]);
    assert.equal(clock.timers(), 0);
  });

  it("AsyncExecutor.asCompleted() ends with the signal's reason", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);
    const reason = new Error("stop");
    const loop = (async () => {
      for await (
        const _ of executor.asCompleted([new Promise(() => {})], { signal: controller.signal })
      ) {
        assert.fail("nothing settles");
      }
    })();
    await flush();

    controller.abort(reason);

    await assert.rejects(loop, reason);
    assert.equal(listeners(), 0);
  });

  it("AsyncExecutor.asCompleted() rejects an aborted signal", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const reason = new Error("already");
    const iterator = executor.asCompleted([Promise.resolve(1)], {
      signal: AbortSignal.abort(reason),
    });

    await assert.rejects(iterator.next(), reason);
  });

  it("AsyncExecutor.asCompleted() yields submitted results", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const held = new HeldTasks<string>();
    const results = ["slow", "fast"].map((name) => executor.submit(held.task, name));
    const seen: unknown[] = [];
    const loop = (async () => {
      for await (const value of executor.asCompleted(results)) seen.push(value);
    })();
    await flush();

    held.release("fast");
    await flush();
    held.release("slow");
    await loop;

    assert.deepEqual(seen, ["fast", "slow"]);
  });

  it("AsyncExecutor.asCompleted() rejects an invalid timeoutMs", () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });

    assert.throws(() => executor.asCompleted([], { timeoutMs: 0 }), {
      name: "RangeError",
      message: "Cannot iterate as completed as 'timeoutMs' must be a number > 0: received 0",
    });
  });
});

describe("AsyncExecutor.wait()", () => {
  it("AsyncExecutor.wait() waits for all by default", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const [a, b] = [deferred<number>(), deferred<number>()];
    const result = observe(executor.wait([a.promise, b.promise]));

    a.resolve(1);
    await flush();

    assert.equal(result.state, "pending");

    b.reject(new Error("b"));
    await flush();

    assert.equal(result.state, "fulfilled");
    assert.deepEqual(result.value?.done, new Set([a.promise, b.promise]));
    assert.equal(result.value?.pending.size, 0);
  });

  it("AsyncExecutor.wait() returns at the first completion", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const [a, b] = [deferred<number>(), deferred<number>()];
    const result = executor.wait([a.promise, b.promise], { returnWhen: "first-completed" });

    b.resolve(2);
    const { done, pending } = await result;

    assert.deepEqual(done, new Set([b.promise]));
    assert.deepEqual(pending, new Set([a.promise]));
  });

  it("AsyncExecutor.wait() returns at the first error", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const [a, b, c] = [deferred<number>(), deferred<number>(), deferred<number>()];
    const result = observe(
      executor.wait([a.promise, b.promise, c.promise], { returnWhen: "first-error" }),
    );

    a.resolve(1);
    await flush();

    assert.equal(result.state, "pending");

    b.reject(new Error("b"));
    await flush();

    assert.equal(result.state, "fulfilled");
    assert.deepEqual(result.value?.done, new Set([a.promise, b.promise]));
    assert.deepEqual(result.value?.pending, new Set([c.promise]));
  });

  it("AsyncExecutor.wait() with first-error waits for all without errors", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const promises = [Promise.resolve(1), Promise.resolve(2)];

    const { done, pending } = await executor.wait(promises, { returnWhen: "first-error" });

    assert.deepEqual(done, new Set(promises));
    assert.equal(pending.size, 0);
  });

  it("AsyncExecutor.wait() returns the split at its timeout", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const settled = Promise.resolve(1);
    const never = new Promise<number>(() => {});
    const result = observe(executor.wait([settled, never], { timeoutMs: 1000 }));

    await clock.tick(999);

    assert.equal(result.state, "pending");

    await clock.tick(1);

    assert.equal(result.state, "fulfilled");
    assert.deepEqual(result.value?.done, new Set([settled]));
    assert.deepEqual(result.value?.pending, new Set([never]));
    assert.equal(clock.timers(), 0);
  });

  it("AsyncExecutor.wait() clears its timer when done early", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });

    await executor.wait([Promise.resolve(1)], { timeoutMs: 1000 });

    assert.equal(clock.timers(), 0);
  });

  it("AsyncExecutor.wait() resolves at once for no promises", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });

    const { done, pending } = await executor.wait([]);

    assert.equal(done.size, 0);
    assert.equal(pending.size, 0);
  });

  it("AsyncExecutor.wait() rejects an invalid returnWhen", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });

    await assert.rejects(executor.wait([], { returnWhen: "any" as never }), {
      name: "RangeError",
      message: `Cannot wait for the promises as 'returnWhen' must be "first-completed", ` +
        `"first-error" or "all-completed": received "any"`,
    });
  });

  it("AsyncExecutor.wait() rejects an invalid timeoutMs", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });

    await assert.rejects(executor.wait([], { timeoutMs: -1 }), {
      name: "RangeError",
      message: "Cannot wait for the promises as 'timeoutMs' must be a number > 0: received -1",
    });
  });
});

describe("AsyncExecutor edge cases", () => {
  // NOTE: every queued or running task adds an abort listener to the caller's signal and each removal
  // scans that list, so this takes 2 to 8 s (Deno 2.9.6, Bun 1.4.5, 2 cores), over the 5 s default.
  it(
    "AsyncExecutor.submit() leaves no listener on a shared signal",
    { timeout: 60_000 },
    async () => {
      const executor = new AsyncExecutor({ maxWorkers: 4 });
      const controller = new AbortController();
      const listeners = countListeners(controller.signal);

      const results = Array.from(
        { length: 10_000 },
        (_, i) => executor.submit((n: number) => n, i, { signal: controller.signal }),
      );
      await Promise.all(results);

      assert.equal(listeners(), 0);
    },
  );

  it("AsyncExecutor.submit() with a timeout leaves no listener", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 4 });
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);
    const semaphore = new Semaphore(2);

    const results = Array.from({ length: 1000 }, (_, i) =>
      executor.submit(
        async (n: number) => {
          await Promise.resolve();
          return n;
        },
        i,
        { signal: controller.signal, timeoutMs: 60_000, semaphore },
      ));
    await Promise.all(results);

    assert.equal(listeners(), 0);
  });

  it("AsyncExecutor.submit() rejects an aborted signal at once", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const reason = new Error("already aborted");
    const signal = AbortSignal.abort(reason);
    const listeners = countListeners(signal);
    let calls = 0;

    const result = observe(executor.submit(() => calls++, null, { signal }));
    await Promise.resolve();

    assert.equal(result.state, "rejected");
    assert.equal(result.reason, reason);
    assert.equal(calls, 0);
    assert.equal(executor.queued, 0);
    assert.equal(listeners(), 0);
  });

  it("AsyncExecutor.submit() rejects an aborted signal with workers busy", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const held = new HeldTasks<string>();
    const running = executor.submit(held.task, "running");
    await flush();
    const reason = new Error("already aborted");
    let calls = 0;

    const result = observe(
      executor.submit(() => calls++, null, { signal: AbortSignal.abort(reason) }),
    );
    await Promise.resolve();

    assert.equal(result.state, "rejected");
    assert.equal(result.reason, reason);
    assert.equal(executor.queued, 0);

    held.release("running");
    await running;
    assert.equal(calls, 0);
  });

  it("AsyncExecutor keeps working after a running and a queued task abort together", async () => {
    for (const order of [["a", "b"], ["b", "a"]]) {
      const executor = new AsyncExecutor({ maxWorkers: 1 });
      const controllers = new Map([["a", new AbortController()], ["b", new AbortController()]]);
      const reasons = new Map([["a", new Error("a")], ["b", new Error("b")]]);
      const started: string[] = [];
      const task = (name: string, { signal }: TaskContext) => {
        started.push(name);
        return untilAborted(signal);
      };
      const a = executor.submit(task, "a", { signal: controllers.get("a")?.signal });
      const b = executor.submit(task, "b", { signal: controllers.get("b")?.signal });
      await flush();

      for (const name of order) controllers.get(name)?.abort(reasons.get(name));
      const c = await executor.submit((name: string) => name, "c");

      await assert.rejects(a, reasons.get("a"));
      await assert.rejects(b, reasons.get("b"));
      assert.equal(c, "c");
      assert.deepEqual(started, ["a"]);
      await executor.onIdle();
      assert.equal(executor.running, 0);
      assert.equal(executor.queued, 0);
    }
  });

  it("AsyncExecutor.submit() aborted as its worker frees never starts", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const gate = deferred<string>();
    const running = executor.submit(() => gate.promise, "a");
    const controller = new AbortController();
    const reason = new Error("aborted in the hand-off");
    let calls = 0;
    const queued = executor.submit(() => calls++, null, { signal: controller.signal });
    await flush();
    // This callback runs after the executor's release callback, which was registered when the
    // task started: the worker has just been granted to the queued task when the abort comes.
    gate.promise.then(() => controller.abort(reason));

    gate.resolve("a");

    await assert.rejects(queued, reason);
    assert.equal(await running, "a");
    assert.equal(calls, 0);
    assert.equal(await executor.submit((n: number) => n, 3), 3);
    assert.equal(executor.running, 0);
  });

  it("AsyncExecutor.submit() aborted tasks spend no rate budget", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const limiter = new RateLimiter({ limit: 1, intervalMs: 1000 });
    await limiter.acquire();
    const controller = new AbortController();
    const reason = new Error("stop");
    let abortedCalls = 0;
    const aborted = Array.from(
      { length: 10 },
      () =>
        observe(executor.submit(() => abortedCalls++, null, {
          semaphore: limiter,
          signal: controller.signal,
        })),
    );
    const healthy = observe(executor.submit(() => clock.now(), null, { semaphore: limiter }));

    controller.abort(reason);
    await flush();

    for (const result of aborted) assert.equal(result.reason, reason);

    await clock.tick(999);

    assert.equal(healthy.state, "pending");

    await clock.tick(1);

    assert.equal(healthy.state, "fulfilled");
    assert.equal(healthy.value, 1000);
    assert.equal(abortedCalls, 0);
    assert.equal(limiter.remaining, 0);
    assert.equal(clock.timers(), 0);
  });

  it("AsyncExecutor.shutdown() with cancel settles every promise", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const a = executor.submit((_: string, { signal }) => untilAborted(signal), "a");
    const b = executor.submit((name: string) => name, "b");
    const c = executor.submit((name: string) => name, "c");
    const idle = executor.onIdle();
    await flush();

    await executor.shutdown({ cancel: true });
    const outcomes = await Promise.allSettled([a, b, c]);

    assert.deepEqual(outcomes.map((outcome) => outcome.status), [
      "rejected",
      "rejected",
      "rejected",
    ]);
    for (const outcome of outcomes) {
      assert.ok((outcome as PromiseRejectedResult).reason instanceof ExecutorShutdownError);
    }
    await idle;
  });

  it("AsyncExecutor.shutdown() with cancel keeps counting running tasks", async () => {
    using unhandled = trackUnhandled();
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const held = new HeldTasks<number>();
    const gauge = new Gauge();
    const task = gauge.wrap(held.task);
    const results = Array.from({ length: 52 }, (_, i) => executor.submit(task, i));
    await flush();

    const shutdown = observe(executor.shutdown({ cancel: true }));
    const outcomes = await Promise.allSettled(results.slice(2));

    assert.ok(outcomes.every((outcome) => outcome.status === "rejected"));
    assert.equal(executor.running, 2);
    assert.equal(executor.queued, 0);

    held.release(0);
    await flush();

    assert.equal(executor.running, 1);
    assert.equal(shutdown.state, "pending");

    held.release(1);
    await flush();

    assert.equal(executor.running, 0);
    assert.equal(shutdown.state, "fulfilled");
    assert.equal(gauge.peak, 2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("AsyncExecutor keeps its limit when tasks fail", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 5 });
    const gauge = new Gauge();
    const task = gauge.wrap(async (n: number) => {
      if (n % 7 === 0) {
        await sleep(10);
        throw new Error(`item ${n}`);
      }
      await sleep(20);
      return n;
    });

    const results = Array.from({ length: 200 }, (_, i) => executor.submit(task, i));
    const outcomes = Promise.allSettled(results);
    await clock.runAll();

    assert.equal((await outcomes).filter((outcome) => outcome.status === "rejected").length, 29);
    assert.equal(gauge.peak, 5);
    assert.equal(executor.running, 0);
  });

  it("AsyncExecutor keeps its limit when tasks throw synchronously", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 5 });
    const gauge = new Gauge();
    const task = (n: number) => {
      if (n % 7 === 0) throw new Error(`item ${n}`);
      gauge.enter();
      return sleep(20).then(() => {
        gauge.leave();
        return n;
      });
    };

    const outcomes = Promise.allSettled(
      Array.from({ length: 200 }, (_, i) => executor.submit(task, i)),
    );
    await clock.runAll();

    assert.equal((await outcomes).filter((outcome) => outcome.status === "rejected").length, 29);
    assert.equal(gauge.peak, 5);
    assert.equal(executor.running, 0);
  });

  it("AsyncExecutor keeps its limit when tasks time out", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 5 });
    const gauge = new Gauge();
    // Every seventh task ignores its signal and runs past its timeout.
    const task = gauge.wrap(async (n: number) => {
      await sleep(n % 7 === 0 ? 30 : 10);
      return n;
    });

    const outcomes = Promise.allSettled(
      Array.from({ length: 200 }, (_, i) => executor.submit(task, i, { timeoutMs: 20 })),
    );
    await clock.runAll();

    const rejected = (await outcomes).filter((outcome) => outcome.status === "rejected");
    assert.equal(rejected.length, 29);
    assert.equal(gauge.peak, 5);
    assert.equal(executor.running, 0);
  });

  it("AsyncExecutor.submit() failures with observers are never unhandled", async () => {
    using unhandled = trackUnhandled();
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const failing = (n: number) => {
      throw new Error(`task ${n}`);
    };
    const seen: unknown[] = [];

    const caught = executor.submit(failing, 1).catch((error) => seen.push(error));
    const waited = executor.wait([executor.submit(failing, 2)]);
    const iterated = (async () => {
      try {
        for await (const _ of executor.asCompleted([executor.submit(failing, 3)])) {
          assert.fail("the task fails");
        }
      } catch (error) {
        seen.push(error);
      }
    })();
    await Promise.all([caught, waited, iterated]);
    await flush();

    assert.equal(seen.length, 2);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("AsyncExecutor.submit() reports an unobserved failure once", () => {
    // The test runners fail a test on any unhandled rejection, so a child process counts them.
    const library = new URL("../mod.ts", import.meta.url).href;
    const script = `
      import { AsyncExecutor } from ${JSON.stringify(library)};
      let reports = 0;
      if (typeof Deno === "object") {
        addEventListener("unhandledrejection", (event) => {
          event.preventDefault();
          reports++;
        });
      } else {
        process.on("unhandledRejection", () => reports++);
      }
      const executor = new AsyncExecutor({ maxWorkers: 1 });
      executor.submit(() => { throw new Error("unobserved"); }, null);
      await executor.onIdle();
      for (let i = 0; i < 5; i++) await new Promise((resolve) => setTimeout(resolve, 0));
      console.log(JSON.stringify({ reports }));
    `;
    const args = "Deno" in globalThis ? ["eval", "--ext=ts", script] : ["--eval", script];

    const child = spawnSync(process.execPath, args, { encoding: "utf8" });

    assert.equal(child.status, 0, child.stderr);
    assert.deepEqual(JSON.parse(child.stdout.trim()), { reports: 1 });
  });

  it("AsyncExecutor leaves no timer after timeouts and rate limits", async () => {
    using clock = useVirtualClock();
    const limiter = new RateLimiter({ limit: 2, intervalMs: 100 });
    const executor = new AsyncExecutor({ maxWorkers: 3 });

    const outcomes = Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        executor.submit(
          async (n: number, { signal }) => {
            if (n % 3 === 0) return await untilAborted(signal);
            await sleep(5);
            return n;
          },
          i,
          { semaphore: limiter, timeoutMs: 50 },
        )),
    );
    await clock.runAll();
    await outcomes;
    await executor[Symbol.asyncDispose]();

    assert.equal(clock.timers(), 0);
    assert.equal(executor.running, 0);
  });

  it("AsyncExecutor creates no timer without work", async () => {
    using clock = useVirtualClock();

    const executor = new AsyncExecutor({ maxWorkers: 3 });
    await executor.onIdle();

    assert.equal(clock.timers(), 0);
  });

  it("AsyncExecutor.submit() never inflates a shared semaphore", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 4 });
    const semaphore = new Semaphore(1);
    const controller = new AbortController();
    const timedOut = executor.submit(() => sleep(100), "slow", { semaphore, timeoutMs: 10 });
    const aborted = executor.submit((_: string, { signal }) => untilAborted(signal), "aborted", {
      semaphore,
      signal: controller.signal,
    });
    const failed = executor.submit(
      () => {
        throw new Error("failed");
      },
      "failed",
      { semaphore },
    );
    const outcomes = Promise.allSettled([timedOut, aborted, failed]);
    await clock.tick(100);
    controller.abort(new Error("stop"));
    await clock.runAll();
    await outcomes;

    assert.equal(semaphore.available, 1);
    assert.equal(semaphore.inUse, 0);

    const gauge = new Gauge();
    const task = gauge.wrap(() => sleep(10));
    const both = Promise.all([1, 2].map((n) => executor.submit(task, n, { semaphore })));
    await clock.runAll();
    await both;

    assert.equal(gauge.peak, 1);
    assert.equal(semaphore.available, 1);
  });

  it("AsyncExecutor returns to idle after many callers", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 4 });
    let peakRunning = 0;
    let peakQueued = 0;
    const caller = async (id: number) => {
      for (let i = 0; i < 5000; i++) {
        const result = executor.submit((n: number) => n, id * 5000 + i);
        peakRunning = Math.max(peakRunning, executor.running);
        peakQueued = Math.max(peakQueued, executor.queued);
        await result;
      }
    };

    await Promise.all(Array.from({ length: 20 }, (_, id) => caller(id)));

    assert.ok(peakRunning <= 4, `${peakRunning} running`);
    assert.ok(peakQueued <= 20, `${peakQueued} queued`);
    assert.equal(executor.running, 0);
    assert.equal(executor.queued, 0);
    const idle = observe(executor.onIdle());
    await flush(1);
    assert.equal(idle.state, "fulfilled");
  });
});
