import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  AsyncExecutor,
  ExecutorShutdownError,
  Semaphore,
  type TaskContext,
} from "@antflow/antflow";
import {
  countingSource,
  countListeners,
  deferred,
  flush,
  Gauge,
  HeldTasks,
  observe,
  probeSource,
  trackUnhandled,
  untilAborted,
  useVirtualClock,
} from "./_helpers.ts";

/** A sync generator over `0..count-1` that reports each pull to `onPull`. */
function* countedRange(count: number, onPull: (index: number) => void): Generator<number> {
  for (let i = 0; i < count; i++) {
    onPull(i);
    yield i;
  }
}

/** Waits `ms` milliseconds of (virtual) time. */
function sleep(ms: number): Promise<void> {
  return new Promise<void>((resolve) => setTimeout(resolve, ms));
}

/** Returns the first value of `stream`, leaving its `for await` loop early. */
async function firstThenBreak<T>(stream: AsyncIterable<T>): Promise<T | undefined> {
  for await (const value of stream) return value;
  return undefined;
}

describe("AsyncExecutor.map() results", () => {
  it("AsyncExecutor.map() resolves to an array in input order", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 3 });
    const held = new HeldTasks<number>();
    const results = observe(executor.map(held.task, [0, 1, 2]).toArray());
    await flush();

    for (const n of [2, 1, 0]) {
      held.release(n, n * 10);
      await flush();
    }

    assert.deepEqual(held.started, [0, 1, 2]);
    assert.deepEqual(results.value, [0, 10, 20]);
  });

  it("AsyncExecutor.map() works with await on the stream", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });

    const results = await executor.map((n: number) => n * 2, [1, 2, 3]);

    assert.deepEqual(results, [2, 4, 6]);
  });

  it("AsyncExecutor.map() yields in input order with for await", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 3 });
    const held = new HeldTasks<number>();
    const seen: unknown[] = [];
    const loop = (async () => {
      for await (const value of executor.map(held.task, [0, 1, 2])) seen.push(value);
    })();
    await flush();

    held.release(2);
    held.release(1);
    await flush();

    assert.deepEqual(seen, []);

    held.release(0);
    await loop;

    assert.deepEqual(seen, [0, 1, 2]);
  });

  it("AsyncExecutor.map() accepts arrays, iterables and generators", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    function* syncNumbers() {
      yield* [1, 2, 3];
    }
    async function* asyncNumbers() {
      yield* [1, 2, 3];
    }
    const inputs: [string, Iterable<number> | AsyncIterable<number>][] = [
      ["array", [1, 2, 3]],
      ["Set", new Set([1, 2, 3])],
      ["Map keys", new Map([[1, "a"], [2, "b"], [3, "c"]]).keys()],
      ["sync generator", syncNumbers()],
      ["async generator", asyncNumbers()],
    ];

    for (const [kind, input] of inputs) {
      assert.deepEqual(await executor.map((n: number) => n * 2, input), [2, 4, 6], kind);
    }
  });

  it("AsyncExecutor.map() starts nothing until iterated or awaited", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const probe = probeSource(3);
    let calls = 0;

    const stream = executor.map((n: number) => {
      calls++;
      return n;
    }, probe.source);
    await flush();

    assert.equal(calls, 0);
    assert.equal(probe.pulled(), 0);
    assert.equal(executor.running, 0);

    assert.deepEqual(await stream, [0, 1, 2]);
  });

  it("AsyncExecutor.map() passes a signal and attempt to each task", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const contexts: TaskContext[] = [];

    await executor.map((n: number, context) => {
      contexts.push(context);
      return n;
    }, [1, 2]);

    assert.equal(contexts.length, 2);
    for (const context of contexts) {
      assert.equal(context.attempt, 1);
      assert.equal(context.signal.aborted, false);
    }
  });

  it("AsyncExecutor.map() yields settled results", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const error = new Error("two");

    const results = await executor.map(
      (n: number) => {
        if (n === 2) throw error;
        return n * 10;
      },
      [1, 2, 3],
      { settled: true },
    );

    assert.deepEqual(results, [
      { ok: true, value: 10, index: 0, input: 1 },
      { ok: false, error, index: 1, input: 2 },
      { ok: true, value: 30, index: 2, input: 3 },
    ]);
  });

  it("AsyncExecutor.map() settled results stream in input order", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 3 });
    const held = new HeldTasks<string>();
    const error = new Error("b");
    const seen: unknown[] = [];
    const loop = (async () => {
      const stream = executor.map(held.task, ["a", "b", "c"], { settled: true });
      for await (const result of stream) seen.push(result);
    })();
    await flush();

    held.release("c");
    held.fail("b", error);
    held.release("a");
    await loop;

    assert.deepEqual(seen, [
      { ok: true, value: "a", index: 0, input: "a" },
      { ok: false, error, index: 1, input: "b" },
      { ok: true, value: "c", index: 2, input: "c" },
    ]);
  });

  it("AsyncExecutor.map() shares the executor's workers with submit", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const gauge = new Gauge();
    const task = gauge.wrap(async (n: number) => {
      await flush(1);
      return n;
    });

    const [mapped, submitted] = await Promise.all([
      executor.map(task, [1, 2, 3, 4]).toArray(),
      Promise.all([5, 6, 7].map((n) => executor.submit(task, n))),
    ]);

    assert.deepEqual(mapped, [1, 2, 3, 4]);
    assert.deepEqual(submitted, [5, 6, 7]);
    assert.equal(gauge.peak, 2);
  });

  it("AsyncExecutor.map() respects a semaphore", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 4 });
    const semaphore = new Semaphore(2);
    const gauge = new Gauge();
    const task = gauge.wrap(async (n: number) => {
      await flush(1);
      return n;
    });

    const results = await executor.map(task, [1, 2, 3, 4, 5, 6], { semaphore });

    assert.deepEqual(results, [1, 2, 3, 4, 5, 6]);
    assert.equal(gauge.peak, 2);
    assert.equal(semaphore.available, 2);
  });
});

describe("AsyncExecutor.map() with thenables", () => {
  it("AsyncExecutor.map() frees the worker when then() throws", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const error = new Error("then threw");
    const broken = {
      then() {
        throw error;
      },
    } as unknown as PromiseLike<number>;

    await assert.rejects(executor.map(() => broken, [1]).toArray(), error);

    assert.equal(executor.running, 0);
  });
});

describe("AsyncExecutor.map() validation", () => {
  it("AsyncExecutor.map() rejects inputs that are not iterable", () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const cases: [unknown, string][] = [[5, "5"], [null, "null"], [{}, "an object"]];

    for (const [inputs, shown] of cases) {
      assert.throws(() => executor.map((n: number) => n, inputs as never), {
        name: "TypeError",
        message:
          `Cannot map the inputs as 'inputs' must be an Iterable or AsyncIterable: received ${shown}`,
      });
    }
  });

  it("AsyncExecutor.map() rejects an invalid bufferSize", () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const cases: [unknown, string, string][] = [
      [-1, "RangeError", "-1"],
      [1.5, "RangeError", "1.5"],
      ["2", "TypeError", `"2"`],
    ];

    for (const [bufferSize, name, shown] of cases) {
      assert.throws(
        () => executor.map((n: number) => n, [1], { bufferSize: bufferSize as number }),
        {
          name,
          message:
            `Cannot map the inputs as 'bufferSize' must be a non-negative integer: received ${shown}`,
        },
      );
    }
  });

  it("AsyncExecutor.map() rejects a task that is not a function", () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });

    assert.throws(() => executor.map("task" as never, [1]), {
      name: "TypeError",
      message: `Cannot map the inputs as 'task' must be a function: received "task"`,
    });
  });

  it("AsyncExecutor.map() rejects an invalid timeoutMs", () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });

    assert.throws(() => executor.map((n: number) => n, [1], { timeoutMs: 0 }), {
      name: "RangeError",
      message: "Cannot map the inputs as 'timeoutMs' must be a number > 0: received 0",
    });
  });

  it("AsyncExecutor.map() stream runs only once", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    const stream = executor.map((n: number) => n, [1]);
    await stream;

    assert.throws(() => stream[Symbol.asyncIterator](), {
      name: "TypeError",
      message: "Cannot iterate the result stream as it has already started",
    });
  });
});

describe("AsyncExecutor.map() lazy input", () => {
  it("AsyncExecutor.map() stops pulling at workers plus buffer", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    let pulled = 0;
    const iterator = executor.map((n: number) => n, countedRange(100, () => pulled++))[
      Symbol.asyncIterator
    ]();

    assert.deepEqual(await iterator.next(), { done: false, value: 0 });
    await flush();

    assert.equal(pulled - 1, 4);

    await iterator.return?.();
  });

  it("AsyncExecutor.map() with bufferSize 0 pulls only for free workers", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    let pulled = 0;
    const stream = executor.map((n: number) => n, countedRange(100, () => pulled++), {
      bufferSize: 0,
    });
    const iterator = stream[Symbol.asyncIterator]();

    await iterator.next();
    await flush();

    assert.ok(pulled - 1 <= 2, `${pulled - 1} inputs pulled ahead`);

    await iterator.return?.();
  });

  it("AsyncExecutor.map() pulls at most workers plus buffer ahead", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    let consumed = 0;
    let ahead = 0;
    const numbers = countedRange(200, (index) => ahead = Math.max(ahead, index + 1 - consumed));

    for await (const _ of executor.map((n: number) => n, numbers)) consumed++;

    assert.equal(consumed, 200);
    // Two running, two buffered, and the one result the loop body holds, which no longer counts.
    assert.ok(ahead <= 5, `${ahead} inputs pulled ahead of the loop`);
  });

  it("AsyncExecutor.map() completes a million-input generator", async () => {
    const maxWorkers = 4;
    const executor = new AsyncExecutor({ maxWorkers });
    const count = 1_000_000;
    let consumed = 0;
    let ahead = 0;
    const numbers = countedRange(count, (index) => ahead = Math.max(ahead, index + 1 - consumed));

    let sum = 0;
    for await (const value of executor.map((n: number) => n, numbers)) {
      consumed++;
      sum += value;
    }

    assert.equal(consumed, count);
    assert.equal(sum, (count * (count - 1)) / 2);
    // The default bufferSize equals maxWorkers. The result the loop body holds has left the
    // buffer, so one input more than workers plus buffer can be out.
    assert.ok(ahead <= maxWorkers * 2 + 1, `${ahead} inputs pulled ahead of the loop`);
  });

  it("AsyncExecutor.map() holds later results behind a slow first one", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 4 });
    const slow = deferred<number>();
    let pulled = 0;
    const seen: number[] = [];
    const gauge = new Gauge();
    const task = gauge.wrap((n: number) => n === 0 ? slow.promise : n);
    const loop = (async () => {
      for await (const value of executor.map(task, countedRange(20, () => pulled++))) {
        seen.push(value);
      }
    })();
    await flush();

    assert.deepEqual(seen, []);
    assert.ok(pulled <= 8, `${pulled} inputs pulled`);
    assert.equal(pulled, 8);

    slow.resolve(0);
    await loop;

    assert.deepEqual(seen, Array.from({ length: 20 }, (_, i) => i));
  });

  it("AsyncExecutor.mapUnordered() yields others before a slow first one", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 4 });
    const slow = deferred<number>();
    const seen: number[] = [];
    const gauge = new Gauge();
    const task = gauge.wrap(async (n: number) => {
      if (n === 0) return await slow.promise;
      await flush(1);
      return n;
    });
    const loop = (async () => {
      for await (const value of executor.mapUnordered(task, countedRange(20, () => {}))) {
        seen.push(value);
        if (seen.length === 19) slow.resolve(0);
      }
    })();

    await loop;

    assert.deepEqual(seen.slice(0, 19), Array.from({ length: 19 }, (_, i) => i + 1));
    assert.equal(seen[19], 0);
    assert.equal(gauge.peak, 4);
  });
});

describe("AsyncExecutor.mapUnordered()", () => {
  it("AsyncExecutor.mapUnordered() yields in completion order", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 3 });
    const held = new HeldTasks<string>();
    const seen: unknown[] = [];
    const loop = (async () => {
      for await (const value of executor.mapUnordered(held.task, ["a", "b", "c"])) {
        seen.push(value);
      }
    })();
    await flush();

    for (const name of ["c", "a", "b"]) {
      held.release(name);
      await flush();
    }
    await loop;

    assert.deepEqual(seen, ["c", "a", "b"]);
  });

  it("AsyncExecutor.mapUnordered() resolves to an array in input order", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 3 });
    const held = new HeldTasks<string>();
    const results = observe(executor.mapUnordered(held.task, ["a", "b", "c"]).toArray());
    await flush();

    for (const name of ["c", "a", "b"]) {
      held.release(name);
      await flush();
    }

    assert.deepEqual(results.value, ["a", "b", "c"]);
  });

  it("AsyncExecutor.mapUnordered() settled results carry their index", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const held = new HeldTasks<string>();
    const seen: number[] = [];
    const loop = (async () => {
      for await (const result of executor.mapUnordered(held.task, ["a", "b"], { settled: true })) {
        seen.push(result.index);
      }
    })();
    await flush();

    held.fail("b", new Error("b"));
    await flush();
    held.release("a");
    await loop;

    assert.deepEqual(seen, [1, 0]);
  });

  it("AsyncExecutor.mapUnordered() fails fast", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const error = new Error("two");

    await assert.rejects(
      executor.mapUnordered((n: number) => {
        if (n === 2) throw error;
        return n;
      }, [1, 2, 3]).toArray(),
      error,
    );
  });
});

describe("AsyncExecutor.map() fail-fast", () => {
  it("AsyncExecutor.map() aborts running tasks with the first error", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 3 });
    const held = new HeldTasks<number>();
    const error = new Error("one failed");
    const results = observe(executor.map(held.task, [0, 1, 2, 3, 4, 5]).toArray());
    await flush();

    held.fail(1, error);
    await flush();

    assert.equal(held.signal(0).reason, error);
    assert.equal(held.signal(2).reason, error);
    assert.equal(results.state, "pending");

    held.release(0);
    held.release(2);
    await flush();

    assert.equal(results.state, "rejected");
    assert.equal(results.reason, error);
    assert.deepEqual(held.started, [0, 1, 2]);
  });

  it("AsyncExecutor.map() stops pulling after the first error", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const counting = countingSource(100);
    const error = new Error("first");
    let calls = 0;

    await assert.rejects(
      executor.map(async (n: number) => {
        calls++;
        await flush(1);
        if (n === 0) throw error;
        return n;
      }, counting.source).toArray(),
      error,
    );

    assert.ok(counting.pulled() <= 4, `${counting.pulled()} inputs pulled`);
    assert.equal(calls, counting.pulled());
    assert.equal(counting.returns(), 1);
  });

  it("AsyncExecutor.map() throws once for the whole run", async () => {
    using unhandled = trackUnhandled();
    const executor = new AsyncExecutor({ maxWorkers: 4 });
    const startedAfterFailure: number[] = [];
    const errors: unknown[] = [];
    // A map run's tasks share the run's signal, which aborts once the run has seen the failure.
    const task = async (n: number, { signal }: TaskContext) => {
      if (signal.aborted) startedAfterFailure.push(n);
      if (n === 5) {
        await flush(1);
        throw new Error("five");
      }
      if (n > 5) return await untilAborted(signal);
      return n;
    };

    try {
      for await (const _ of executor.map(task, Array.from({ length: 20 }, (_, i) => i))) {
        // Results before the failure are consumed.
      }
    } catch (error) {
      errors.push(error);
    }
    await flush();

    assert.equal(errors.length, 1);
    assert.equal((errors[0] as Error).message, "five");
    assert.deepEqual(startedAfterFailure, []);
    assert.equal(executor.running, 0);
    assert.deepEqual(unhandled.reasons, []);
  });

  it("AsyncExecutor.map() aborts every task in flight on failure", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 50 });
    const error = new Error("item 1");
    const signals: AbortSignal[] = [];
    let startedAfterFailure = 0;
    const task = (n: number, { signal }: TaskContext) => {
      if (signal.aborted) startedAfterFailure++;
      signals.push(signal);
      if (n === 1) {
        return flush(1).then(() => {
          throw error;
        });
      }
      return untilAborted(signal);
    };

    await assert.rejects(executor.map(task, countedRange(1000, () => {})).toArray(), error);

    assert.equal(signals.length, 50);
    for (const signal of signals.filter((_, i) => i !== 1)) assert.equal(signal.reason, error);
    assert.equal(startedAfterFailure, 0);
    assert.equal(executor.running, 0);
  });

  it("AsyncExecutor.map() fails fast on a timeout", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const counting = countingSource(10);
    const result = observe(
      executor.map(
        (n: number, { signal }) => {
          if (n >= 1) return untilAborted(signal);
          return n;
        },
        counting.source,
        { timeoutMs: 1000 },
      ).toArray(),
    );

    await clock.tick(1000);
    await flush();

    assert.equal(result.state, "rejected");
    assert.equal((result.reason as DOMException).name, "TimeoutError");
    assert.equal(counting.returns(), 1);
    assert.equal(clock.timers(), 0);
  });

  it("AsyncExecutor.map() reports a timeout as a settled result", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const result = observe(
      executor.map(
        (n: number, { signal }) => {
          if (n === 1) return untilAborted(signal);
          return n;
        },
        [0, 1, 2],
        { timeoutMs: 1000, settled: true },
      ).toArray(),
    );

    await clock.tick(1000);
    await flush();

    assert.equal(result.state, "fulfilled");
    assert.deepEqual(result.value?.map((entry) => entry.ok), [true, false, true]);
    const failed = result.value?.[1];
    assert.equal(failed?.ok === false && (failed.error as DOMException).name, "TimeoutError");
  });

  it("AsyncExecutor.map() retries each input", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const attempts = new Map<number, number[]>();

    const results = await executor.map(
      (n: number, { attempt }) => {
        attempts.set(n, [...attempts.get(n) ?? [], attempt]);
        if (attempt === 1) throw new Error(`first attempt of ${n}`);
        return n;
      },
      [1, 2, 3],
      { retry: { attempts: 2 } },
    );

    assert.deepEqual(results, [1, 2, 3]);
    assert.deepEqual([...attempts.values()], [[1, 2], [1, 2], [1, 2]]);
  });
});

describe("AsyncExecutor.map() early exit", () => {
  it("AsyncExecutor.map() break aborts running tasks", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 3 });
    const signals: AbortSignal[] = [];
    const task = (n: number, { signal }: TaskContext) => {
      signals.push(signal);
      return n === 0 ? n : untilAborted(signal);
    };

    const first = await firstThenBreak(executor.map(task, [0, 1, 2, 3]));

    assert.equal(first, 0);
    assert.ok(signals.length >= 3, `${signals.length} tasks started`);
    for (const signal of signals.slice(1)) {
      assert.ok(signal.reason instanceof DOMException);
      assert.equal(signal.reason.name, "AbortError");
    }
    assert.equal(executor.running, 0);
  });

  it("AsyncExecutor.map() break closes the input iterator", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const probe = probeSource(100);

    await firstThenBreak(executor.map((n: number) => n, probe.source));

    assert.equal(probe.closed(), true);
    assert.ok(probe.pulled() < 100);
  });

  it("AsyncExecutor.map() throw in the loop aborts and closes", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const probe = probeSource(100);
    const signals: AbortSignal[] = [];
    const error = new Error("consumer failed");
    const task = (n: number, { signal }: TaskContext) => {
      signals.push(signal);
      return n === 0 ? n : untilAborted(signal);
    };

    await assert.rejects(
      (async () => {
        for await (const _ of executor.map(task, probe.source)) throw error;
      })(),
      error,
    );

    assert.equal(probe.closed(), true);
    assert.equal(signals.at(-1)?.aborted, true);
    assert.equal(executor.running, 0);
  });

  it("AsyncExecutor.map() break waits for slow cleanups", async () => {
    for (const ordered of [true, false]) {
      const executor = new AsyncExecutor({ maxWorkers: 8 });
      const cleanedUp: number[] = [];
      const task = async (n: number, { signal }: TaskContext) => {
        if (n === 0) return n;
        try {
          return await untilAborted(signal);
        } finally {
          await flush(3);
          cleanedUp.push(n);
        }
      };
      const stream = ordered
        ? executor.map(task, [0, 1, 2])
        : executor.mapUnordered(task, [0, 1, 2]);

      await firstThenBreak(stream);

      assert.deepEqual(cleanedUp.sort(), [1, 2], ordered ? "ordered" : "unordered");
      assert.equal(executor.running, 0);
    }
  });

  it("AsyncExecutor.map() break leaves no unhandled rejection", async () => {
    using unhandled = trackUnhandled();
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const pending = deferred<IteratorResult<number>>();
    let calls = 0;
    let returns = 0;
    const source: AsyncIterableIterator<number> = {
      next() {
        calls++;
        return calls === 1 ? Promise.resolve({ done: false, value: 1 }) : pending.promise;
      },
      return() {
        returns++;
        return Promise.resolve({ done: true, value: undefined });
      },
      [Symbol.asyncIterator]() {
        return source;
      },
    };

    const first = await firstThenBreak(executor.mapUnordered((n: number) => n, source));
    pending.reject(new Error("late source failure"));
    await flush();

    assert.equal(first, 1);
    assert.equal(returns, 1);
    assert.deepEqual(unhandled.reasons, []);
  });
});

describe("AsyncExecutor.map() signal", () => {
  it("AsyncExecutor.map() rejects with the signal's reason", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const controller = new AbortController();
    const probe = probeSource(10);
    const held = new HeldTasks<number>();
    const reason = new Error("stop");
    const results = observe(
      executor.map(held.task, probe.source, { signal: controller.signal }).toArray(),
    );
    await flush();

    controller.abort(reason);
    await flush();

    assert.equal(held.signal(0).reason, reason);
    assert.equal(probe.closed(), true);
    assert.equal(results.state, "pending");

    held.release(0);
    held.release(1);
    await flush();

    assert.equal(results.state, "rejected");
    assert.equal(results.reason, reason);
  });

  it("AsyncExecutor.map() honours an abort after the input ran out", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 3 });
    const controller = new AbortController();
    const held = new HeldTasks<number>();
    const reason = new Error("late abort");
    const iterator = executor.map(held.task, [0, 1, 2], { signal: controller.signal })[
      Symbol.asyncIterator
    ]();
    const first = observe(iterator.next());
    await flush();
    assert.deepEqual(held.started, [0, 1, 2]);

    controller.abort(reason);
    for (const n of [0, 1, 2]) held.release(n);
    await flush();

    assert.equal(first.state, "rejected");
    assert.equal(first.reason, reason);
  });

  it("AsyncExecutor.map() rejects an aborted signal without pulling", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const reason = new Error("already aborted");
    const signal = AbortSignal.abort(reason);
    const listeners = countListeners(signal);
    const probe = probeSource(3);
    let calls = 0;

    await assert.rejects(
      executor.map(() => calls++, probe.source, { signal }).toArray(),
      reason,
    );

    assert.equal(calls, 0);
    assert.equal(probe.pulled(), 0);
    assert.equal(listeners(), 0);
    assert.equal(executor.running, 0);
  });

  it("AsyncExecutor.map() never starts an input yielded during its abort", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const controller = new AbortController();
    const reason = new Error("abort while yielding");
    const calls: number[] = [];
    function* numbers() {
      yield 1;
      controller.abort(reason);
      yield 2;
      yield 3;
    }

    await assert.rejects(
      executor.map((n: number) => calls.push(n), numbers(), { signal: controller.signal })
        .toArray(),
      reason,
    );

    assert.deepEqual(calls, [1]);
  });

  it("AsyncExecutor.map() closes a source that aborts while yielding", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const controller = new AbortController();
    let closed = 0;
    function* numbers() {
      try {
        yield 1;
        controller.abort(new Error("abort while yielding"));
        yield 2;
      } finally {
        closed++;
      }
    }

    await assert.rejects(
      executor.map((n: number) => n, numbers(), { signal: controller.signal }).toArray(),
    );

    assert.equal(closed, 1);
  });

  it("AsyncExecutor.map() leaves no listener on a shared signal", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 4 });
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);
    const inputs = Array.from({ length: 100 }, (_, i) => i);

    for (let run = 0; run < 100; run++) {
      await executor.map((n: number) => n, inputs, { signal: controller.signal });
    }
    const consumed: number[] = [];
    for await (
      const value of executor.map((n: number) => n, countedRange(10_000, () => {}), {
        signal: controller.signal,
      })
    ) {
      consumed.push(value);
    }

    assert.equal(consumed.length, 10_000);
    assert.equal(listeners(), 0);
  });

  it("AsyncExecutor.map() exited early leaves no listener", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 4 });
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);

    for (let run = 0; run < 100; run++) {
      const stream = executor.map(
        async (n: number) => {
          await flush(1);
          return n;
        },
        countedRange(10_000, () => {}),
        { signal: controller.signal, timeoutMs: 60_000 },
      );
      await firstThenBreak(stream);
    }

    assert.equal(listeners(), 0);
  });
});

describe("AsyncExecutor.map() input failures", () => {
  it("AsyncExecutor.map() delivers results before a source error", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const error = new Error("source broke");
    function* numbers() {
      yield 1;
      yield 2;
      throw error;
    }
    const seen: number[] = [];

    await assert.rejects(
      (async () => {
        for await (const value of executor.map((n: number) => n, numbers())) seen.push(value);
      })(),
      error,
    );

    assert.deepEqual(seen, [1, 2]);
  });

  it("AsyncExecutor.map() delivers results before a rejected next()", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const error = new Error("next rejected");
    let calls = 0;
    const source: AsyncIterableIterator<number> = {
      next() {
        calls++;
        if (calls <= 2) return Promise.resolve({ done: false, value: calls });
        return Promise.reject(error);
      },
      [Symbol.asyncIterator]() {
        return source;
      },
    };
    const seen: number[] = [];

    await assert.rejects(
      (async () => {
        for await (const value of executor.map((n: number) => n, source)) seen.push(value);
      })(),
      error,
    );

    assert.deepEqual(seen, [1, 2]);
  });

  it("AsyncExecutor.map() awaited rejects with a source error", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const error = new Error("source broke");
    async function* numbers() {
      yield 1;
      throw error;
    }

    await assert.rejects(executor.map((n: number) => n, numbers()).toArray(), error);
    assert.equal(executor.running, 0);
  });

  it("AsyncExecutor.map() stays idle after the input fails to open", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const error = new Error("cannot open");
    const broken = {
      [Symbol.asyncIterator](): AsyncIterator<number> {
        throw error;
      },
    };

    await assert.rejects(executor.map((n: number) => n, broken).toArray(), error);
    const idle = observe(executor.onIdle());
    await flush();

    assert.equal(idle.state, "fulfilled");
  });
});

describe("AsyncExecutor.map() source closing", () => {
  const cases: {
    name: string;
    run: (executor: AsyncExecutor, source: AsyncIterable<number>) => Promise<unknown>;
  }[] = [
    {
      name: "a break",
      run: (executor, source) => firstThenBreak(executor.map((n: number) => n, source)),
    },
    {
      name: "an abort",
      run: (executor, source) => {
        const controller = new AbortController();
        return executor.map(
          (n: number) => {
            if (n === 3) controller.abort(new Error("stop"));
            return n;
          },
          source,
          { signal: controller.signal },
        ).toArray();
      },
    },
    {
      name: "a task failure",
      run: (executor, source) =>
        executor.map((n: number) => {
          if (n === 3) throw new Error("three");
          return n;
        }, source).toArray(),
    },
    {
      name: "a shutdown with cancel",
      run: (executor, source) => {
        const results = executor.map(async (n: number) => {
          if (n === 3) void executor.shutdown({ cancel: true });
          await flush(1);
          return n;
        }, source).toArray();
        return results;
      },
    },
  ];

  for (const { name, run } of cases) {
    it(`AsyncExecutor.map() closes the source once on ${name}`, async () => {
      const executor = new AsyncExecutor({ maxWorkers: 2 });
      const counting = countingSource(100);

      await run(executor, counting.source).catch(() => {});
      await flush();

      assert.equal(counting.returns(), 1);
      assert.ok(counting.pulled() < 100);
    });
  }

  it("AsyncExecutor.map() closes the source once on a timeout", async () => {
    using clock = useVirtualClock();
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const counting = countingSource(1000);
    // Input 0 runs past its timeout while the other worker works through about a hundred inputs.
    const results = executor.map((n: number) => sleep(n === 0 ? 5000 : 10), counting.source, {
      timeoutMs: 1000,
    }).toArray();
    results.catch(() => {});

    await clock.runAll();
    await assert.rejects(results, { name: "TimeoutError" });

    assert.equal(counting.returns(), 1);
    assert.ok(counting.pulled() < 1000);
  });

  it("AsyncExecutor.map() leaves a finished source unclosed", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const counting = countingSource(5);

    assert.deepEqual(await executor.map((n: number) => n, counting.source), [0, 1, 2, 3, 4]);

    assert.equal(counting.returns(), 0);
  });
});

describe("AsyncExecutor.map() and shutdown", () => {
  it("AsyncExecutor.map() after shutdown rejects", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 1 });
    await executor.shutdown();
    let calls = 0;

    await assert.rejects(executor.map(() => calls++, [1, 2]).toArray(), ExecutorShutdownError);

    assert.equal(calls, 0);
  });

  it("AsyncExecutor.shutdown() lets a started map run finish", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const held = new HeldTasks<number>();
    const results = observe(executor.map(held.task, [0, 1, 2, 3]).toArray());
    await flush();
    const shutdown = observe(executor.shutdown());

    for (const n of [0, 1, 2, 3]) {
      await flush();
      held.release(n);
    }
    await flush();

    assert.deepEqual(results.value, [0, 1, 2, 3]);
    assert.equal(shutdown.state, "fulfilled");
  });

  it("AsyncExecutor.shutdown() with cancel ends a map run", async () => {
    const executor = new AsyncExecutor({ maxWorkers: 2 });
    const probe = probeSource(10);
    const results = observe(
      executor.map((_: number, { signal }) => untilAborted(signal), probe.source).toArray(),
    );
    await flush();

    await executor.shutdown({ cancel: true });
    await flush();

    assert.equal(results.state, "rejected");
    assert.ok(results.reason instanceof ExecutorShutdownError);
    assert.equal(probe.closed(), true);
  });
});
