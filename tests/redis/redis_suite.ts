// Tests of the Redis-backed limiters against real redis-server processes on 127.0.0.1, some of
// them shared by several Deno or Bun processes. Run them with `deno task test:redis`, which runs
// this file under both runtimes. The name does not end in `_test.ts`, so the main test run, which
// does not need Redis, leaves it out.

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import process from "node:process";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { AsyncExecutor } from "@antflow/antflow";
import {
  RedisLimiterError,
  type RedisPermit,
  RedisRateLimiter,
  type RedisScriptClient,
  RedisSemaphore,
} from "@antflow/antflow/redis";
import type { Redis } from "ioredis";
import { countListeners, deferred, observe } from "../_helpers.ts";
import { type RedisServer, startRedisServer } from "./_server.ts";
import type { WorkerJob } from "./_worker.ts";

const repositoryRoot = fileURLToPath(new URL("../../", import.meta.url));
const workerScript = fileURLToPath(new URL("./_worker.ts", import.meta.url));

let keyCount = 0;

/** Returns a key that no other test uses. */
function uniqueKey(): string {
  return `antflow-test:${process.pid}:${++keyCount}`;
}

/** Waits until `check` returns true, polling every 10 ms, and fails after `timeoutMs`. */
async function eventually(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting until ${what}`);
    await sleep(10);
  }
}

/** Rejects when `promise` has not settled after `timeoutMs`, so a hung test fails. */
function within<T>(promise: Promise<T>, what: string, timeoutMs = 10_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out waiting for ${what}`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A client whose every call fails the test, for paths that must not reach Redis. */
function unusedClient(): RedisScriptClient & { calls: number } {
  const client = {
    calls: 0,
    eval(): Promise<unknown> {
      client.calls++;
      return Promise.reject(new Error("Redis must not be called"));
    },
    evalsha(): Promise<unknown> {
      client.calls++;
      return Promise.reject(new Error("Redis must not be called"));
    },
  };
  return client;
}

/** A worker process started with `process.execPath`, which is deno or bun as the test runs. */
class Worker {
  readonly child: ChildProcess;
  readonly events: Record<string, unknown>[] = [];
  readonly exit: Promise<number | null>;
  #stderr = "";

  constructor(job: WorkerJob) {
    const argument = JSON.stringify(job);
    const args = "Deno" in globalThis
      ? ["run", "-A", workerScript, argument]
      : ["run", workerScript, argument];
    this.child = spawn(process.execPath, args, {
      cwd: repositoryRoot,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let buffered = "";
    this.child.stdout?.on("data", (chunk: Uint8Array) => {
      buffered += String(chunk);
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      for (const line of lines) if (line !== "") this.events.push(JSON.parse(line));
    });
    this.child.stderr?.on("data", (chunk: Uint8Array) => {
      this.#stderr += String(chunk);
    });
    this.exit = new Promise((resolve) => this.child.once("exit", (code) => resolve(code)));
  }

  /** Waits for the first event that has `field` and returns it. */
  async event(field: string, timeoutMs = 20_000): Promise<Record<string, unknown>> {
    let found: Record<string, unknown> | undefined;
    await eventually(
      () => {
        found = this.events.find((event) => field in event);
        if (found === undefined && this.child.exitCode !== null) {
          throw new Error(`Worker exited with ${this.child.exitCode}:\n${this.#stderr}`);
        }
        return found !== undefined;
      },
      `the worker prints "${field}"`,
      timeoutMs,
    );
    return found as Record<string, unknown>;
  }

  kill(): void {
    if (this.child.exitCode === null) this.child.kill("SIGKILL");
  }
}

/** Asserts that no `intervalMs` window contains more than `limit` of the grant times. */
function assertWindows(times: number[], limit: number, intervalMs: number): void {
  const sorted = [...times].sort((a, b) => a - b);
  for (let i = 0; i + limit < sorted.length; i++) {
    const span = (sorted[i + limit] as number) - (sorted[i] as number);
    assert.ok(
      span >= intervalMs,
      `grants ${i} to ${i + limit} lie within ${span} ms, under the ${intervalMs} ms window`,
    );
  }
}

let server: RedisServer;
let client: Redis;
let inspector: Redis;

before(async () => {
  server = await startRedisServer();
  client = server.connect();
  inspector = server.connect();
});

after(async () => {
  await Promise.allSettled([client?.quit(), inspector?.quit()]);
  await server?.stop();
});

function zcard(key: string): Promise<number> {
  return inspector.zcard(key);
}

describe("RedisSemaphore", () => {
  it("acquire() stores a lease and release() deletes it", async () => {
    const key = uniqueKey();
    const semaphore = new RedisSemaphore({ client, key, permits: 2 });

    const permit = await semaphore.acquire();
    assert.equal(await zcard(`${key}:holders`), 1);

    permit.release();
    await eventually(async () => await zcard(`${key}:holders`) === 0, "the lease is deleted");
  });

  it("release() is idempotent", async () => {
    const key = uniqueKey();
    const semaphore = new RedisSemaphore({ client, key, permits: 1 });
    const first = await semaphore.acquire();
    first.release();
    first.release();

    const second = await within(semaphore.acquire(), "the second permit");
    first.release();
    assert.equal(await zcard(`${key}:holders`), 1);
    const third = observe(semaphore.acquire());
    await sleep(200);
    assert.equal(third.state, "pending");

    second.release();
    await eventually(() => third.state === "fulfilled", "the third permit");
    (third.value as RedisPermit).release();
  });

  it("permits work with using", async () => {
    const key = uniqueKey();
    const semaphore = new RedisSemaphore({ client, key, permits: 1 });
    {
      using _permit = await semaphore.acquire();
      assert.equal(await zcard(`${key}:holders`), 1);
    }
    await eventually(async () => await zcard(`${key}:holders`) === 0, "the lease is deleted");
  });

  it("acquire() hands a released permit to a waiter", async () => {
    const key = uniqueKey();
    const semaphore = new RedisSemaphore({ client, key, permits: 1, pollMs: 10 });
    const held = await semaphore.acquire();
    const waiting = observe(semaphore.acquire());
    await eventually(async () => await zcard(`${key}:queue`) === 1, "the waiter is queued");
    assert.equal(waiting.state, "pending");

    held.release();
    await eventually(() => waiting.state === "fulfilled", "the waiter is granted");
    assert.equal(await zcard(`${key}:queue`), 0);
    (waiting.value as RedisPermit).release();
  });

  it("acquire() grants waiters in arrival order", async () => {
    const key = uniqueKey();
    const semaphore = new RedisSemaphore({ client, key, permits: 1, pollMs: 10 });
    const held = await semaphore.acquire();
    const order: string[] = [];
    const waiters: Promise<void>[] = [];
    for (const [index, name] of ["a", "b", "c", "d"].entries()) {
      waiters.push(
        semaphore.acquire().then((permit) => {
          order.push(name);
          permit.release();
        }),
      );
      await eventually(
        async () => await zcard(`${key}:queue`) === index + 1,
        `waiter ${name} is queued`,
      );
    }

    held.release();
    await within(Promise.all(waiters), "every waiter");
    assert.deepEqual(order, ["a", "b", "c", "d"]);
  });

  it("acquire() calls made in a row are granted in call order", async () => {
    const key = uniqueKey();
    const semaphore = new RedisSemaphore({ client, key, permits: 1, pollMs: 10 });
    const held = await semaphore.acquire();
    const order: string[] = [];
    const waiters = ["a", "b", "c", "d"].map((name) =>
      semaphore.acquire().then((permit) => {
        order.push(name);
        permit.release();
      })
    );
    await eventually(async () => await zcard(`${key}:queue`) === 4, "every waiter is queued");

    held.release();
    await within(Promise.all(waiters), "every waiter");
    assert.deepEqual(order, ["a", "b", "c", "d"]);
  });

  it("the keys of an idle limiter expire", async () => {
    const key = uniqueKey();
    const semaphore = new RedisSemaphore({ client, key, permits: 1, leaseMs: 300, pollMs: 10 });
    const held = await semaphore.acquire();
    const waiting = semaphore.acquire();
    await eventually(async () => await zcard(`${key}:queue`) === 1, "the waiter is queued");
    assert.deepEqual((await inspector.keys(`${key}:*`)).sort(), [
      `${key}:deadlines`,
      `${key}:holders`,
      `${key}:queue`,
      `${key}:tickets`,
    ]);

    held.release();
    (await waiting).release();
    await eventually(
      async () => (await inspector.keys(`${key}:*`)).length === 0,
      "the keys expire",
    );
  });

  it("acquire() keeps a later light waiter behind a heavy one", async () => {
    const key = uniqueKey();
    const semaphore = new RedisSemaphore({ client, key, permits: 3, pollMs: 10 });
    const held = await semaphore.acquire({ weight: 2 });
    const heavy = observe(semaphore.acquire({ weight: 2 }));
    await eventually(async () => await zcard(`${key}:queue`) === 1, "the heavy waiter is queued");
    const light = observe(semaphore.acquire({ weight: 1 }));
    await eventually(async () => await zcard(`${key}:queue`) === 2, "the light waiter is queued");

    // One unit is free, enough for the light waiter, but it stays behind the heavy one.
    await sleep(300);
    assert.equal(heavy.state, "pending");
    assert.equal(light.state, "pending");

    held.release();
    await eventually(() => light.state === "fulfilled", "the light waiter is granted");
    assert.equal(heavy.state, "fulfilled");
    (heavy.value as RedisPermit).release();
    (light.value as RedisPermit).release();
  });

  it("acquire() with an aborted signal rejects without calling Redis", async () => {
    const unused = unusedClient();
    const semaphore = new RedisSemaphore({ client: unused, key: uniqueKey(), permits: 1 });
    const reason = new Error("cancelled before the call");

    await assert.rejects(
      semaphore.acquire({ signal: AbortSignal.abort(reason) }),
      (error) => error === reason,
    );
    assert.equal(unused.calls, 0);
  });

  it("abort while waiting rejects with the reason and leaves the queue", async () => {
    const key = uniqueKey();
    const semaphore = new RedisSemaphore({ client, key, permits: 1, pollMs: 10 });
    const held = await semaphore.acquire();
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);
    const waiting = semaphore.acquire({ signal: controller.signal });
    await eventually(async () => await zcard(`${key}:queue`) === 1, "the waiter is queued");
    assert.equal(listeners(), 1);

    const reason = new Error("no longer needed");
    controller.abort(reason);
    await assert.rejects(waiting, (error) => error === reason);
    assert.equal(listeners(), 0);
    await eventually(async () => await zcard(`${key}:queue`) === 0, "the waiter leaves the queue");

    held.release();
    const next = await within(semaphore.acquire(), "a permit after the abort");
    assert.equal(await zcard(`${key}:holders`), 1);
    next.release();
  });

  it("acquire() removes its abort listener once granted", async () => {
    const semaphore = new RedisSemaphore({ client, key: uniqueKey(), permits: 1 });
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);

    const permit = await semaphore.acquire({ signal: controller.signal });
    assert.equal(listeners(), 0);

    controller.abort();
    assert.equal(permit.signal.aborted, false);
    permit.release();
  });

  it("acquire() rejects a weight above permits with a RangeError", async () => {
    const unused = unusedClient();
    const semaphore = new RedisSemaphore({ client: unused, key: uniqueKey(), permits: 3 });
    const cases: [unknown, ErrorConstructor, string][] = [
      [
        4,
        RangeError,
        "Cannot acquire a permit as 'weight' must be at most the capacity 3: received 4",
      ],
      [0, RangeError, "Cannot acquire a permit as 'weight' must be an integer >= 1: received 0"],
      [
        1.5,
        RangeError,
        "Cannot acquire a permit as 'weight' must be an integer >= 1: received 1.5",
      ],
      ["2", TypeError, `Cannot acquire a permit as 'weight' must be an integer >= 1: received "2"`],
    ];
    for (const [weight, type, message] of cases) {
      await assert.rejects(semaphore.acquire({ weight: weight as number }), {
        name: type.name,
        message,
      });
    }
    await assert.rejects(
      semaphore.acquire({ signal: "stop" as unknown as AbortSignal }),
      {
        name: "TypeError",
        message: `Cannot acquire a permit as 'signal' must be an AbortSignal: received "stop"`,
      },
    );
    assert.equal(unused.calls, 0);
  });

  it("constructor rejects invalid options with the package message", () => {
    const valid = { client: unusedClient(), key: "k", permits: 1 };
    const cases: [Record<string, unknown>, ErrorConstructor, string][] = [
      [
        { client: undefined },
        TypeError,
        "Cannot create RedisSemaphore as 'client' must be an object with eval and evalsha methods: received undefined",
      ],
      [
        { client: { eval: () => {} } },
        TypeError,
        "Cannot create RedisSemaphore as 'client' must be an object with eval and evalsha methods: received an object",
      ],
      [
        { key: 7 },
        TypeError,
        "Cannot create RedisSemaphore as 'key' must be a non-empty string: received 7",
      ],
      [
        { key: "" },
        RangeError,
        `Cannot create RedisSemaphore as 'key' must be a non-empty string: received ""`,
      ],
      [
        { permits: 0 },
        RangeError,
        "Cannot create RedisSemaphore as 'permits' must be an integer >= 1: received 0",
      ],
      [
        { permits: Infinity },
        RangeError,
        "Cannot create RedisSemaphore as 'permits' must be an integer >= 1: received Infinity",
      ],
      [
        { permits: "3" },
        TypeError,
        `Cannot create RedisSemaphore as 'permits' must be an integer >= 1: received "3"`,
      ],
      [
        { leaseMs: 0.5 },
        RangeError,
        "Cannot create RedisSemaphore as 'leaseMs' must be an integer >= 1: received 0.5",
      ],
      [
        { pollMs: NaN },
        RangeError,
        "Cannot create RedisSemaphore as 'pollMs' must be an integer >= 1: received NaN",
      ],
      [
        { onLeaseLost: "log" },
        TypeError,
        `Cannot create RedisSemaphore as 'onLeaseLost' must be a function: received "log"`,
      ],
    ];
    for (const [override, type, message] of cases) {
      assert.throws(
        () => new RedisSemaphore({ ...valid, ...override } as never),
        { name: type.name, message },
      );
    }
  });

  it("renewals keep a lease past leaseMs", async () => {
    const key = uniqueKey();
    const semaphore = new RedisSemaphore({ client, key, permits: 1, leaseMs: 300, pollMs: 10 });
    const held = await semaphore.acquire();
    const waiting = observe(semaphore.acquire());

    await sleep(1000);
    assert.equal(waiting.state, "pending");
    assert.equal(held.signal.aborted, false);

    held.release();
    await eventually(() => waiting.state === "fulfilled", "the waiter is granted");
    (waiting.value as RedisPermit).release();
  });

  it("a script that runs twice counts its permit once", async () => {
    const key = uniqueKey();
    // Runs every call twice and returns the second reply, as a client that resends a command
    // whose reply was lost would.
    const resending: RedisScriptClient = {
      eval: (script, numKeys, ...args) =>
        client.eval(script, numKeys, ...args).then(() => client.eval(script, numKeys, ...args)),
      evalsha: (sha1, numKeys, ...args) =>
        client.evalsha(sha1, numKeys, ...args).then(() => client.evalsha(sha1, numKeys, ...args)),
    };
    const semaphore = new RedisSemaphore({ client: resending, key, permits: 2 });

    const first = await semaphore.acquire();
    assert.equal(await zcard(`${key}:holders`), 1);
    const second = await within(semaphore.acquire(), "the second permit");
    assert.equal(await zcard(`${key}:holders`), 2);

    first.release();
    second.release();
    await eventually(async () => await zcard(`${key}:holders`) === 0, "both leases are deleted");
  });

  it("4 processes never hold more than 3 permits", async () => {
    const key = uniqueKey();
    const job: WorkerJob = {
      mode: "semaphore",
      port: server.port,
      key,
      permits: 3,
      items: 8,
      maxWorkers: 3,
      holdMs: 30,
      activeKey: `${key}:running`,
      peakKey: `${key}:peak`,
    };
    const workers = Array.from({ length: 4 }, () => new Worker(job));
    try {
      const events = await Promise.all(workers.map((worker) => worker.event("done", 30_000)));
      assert.deepEqual(events.map((event) => event.done), [8, 8, 8, 8]);
      assert.deepEqual(await Promise.all(workers.map((worker) => worker.exit)), [0, 0, 0, 0]);
    } finally {
      for (const worker of workers) worker.kill();
    }

    const peak = Number(await inspector.get(`${key}:peak`));
    assert.ok(peak <= 3, `${peak} tasks ran at once`);
    assert.ok(peak >= 2, `only ${peak} task ran at a time`);
    assert.equal(await inspector.get(`${key}:running`), "0");
  });

  it("a killed holder's permit comes back after the lease", async () => {
    const key = uniqueKey();
    const holder = new Worker({ mode: "hold", port: server.port, key, permits: 1, leaseMs: 300 });
    try {
      await holder.event("acquired");
      const semaphore = new RedisSemaphore({ client, key, permits: 1, pollMs: 10 });
      const waiting = observe(semaphore.acquire());

      // The holder renews its lease, so the permit stays taken for several lease lengths.
      await sleep(1000);
      assert.equal(waiting.state, "pending");

      holder.kill();
      await holder.exit;
      await eventually(
        () => waiting.state === "fulfilled",
        "the waiter gets the dead holder's unit",
      );
      (waiting.value as RedisPermit).release();
    } finally {
      holder.kill();
    }
  });
});

describe("RedisSemaphore when Redis fails", () => {
  it("a restart rejects waiters with RedisLimiterError and retried tasks all finish", async () => {
    await using own = await startRedisServer();
    const ownClient = own.connect();
    try {
      const semaphore = new RedisSemaphore({
        client: ownClient,
        key: uniqueKey(),
        permits: 2,
        leaseMs: 300,
        pollMs: 10,
      });
      const limiterErrors: RedisLimiterError[] = [];
      const running = deferred();
      let started = 0;
      await using executor = new AsyncExecutor({ maxWorkers: 6 });
      const items = Array.from({ length: 30 }, (_, index) => index);

      // toArray() starts the run, which map() leaves to its consumer.
      const results = executor.map(
        async (item: number) => {
          if (++started === 4) running.resolve();
          await sleep(40);
          return item * 2;
        },
        items,
        {
          semaphore,
          retry: {
            attempts: 100,
            delayMs: 50,
            retryIf: (error) => {
              if (!(error instanceof RedisLimiterError)) return false;
              limiterErrors.push(error);
              return true;
            },
          },
        },
      ).toArray();
      await within(running.promise, "4 tasks start");
      await own.restart();

      assert.deepEqual(
        await within(results, "every result", 30_000),
        items.map((item) => item * 2),
      );
      assert.ok(limiterErrors.length > 0, "no waiter saw the restart");
      for (const error of limiterErrors) {
        assert.match(error.message, /^Failed to acquire a permit for Redis key "antflow-test:/);
      }
    } finally {
      ownClient.disconnect();
    }
  });

  it("a restart aborts the signal of a held permit and calls onLeaseLost", async () => {
    await using own = await startRedisServer();
    const ownClient = own.connect();
    try {
      const key = uniqueKey();
      const lost: RedisLimiterError[] = [];
      const semaphore = new RedisSemaphore({
        client: ownClient,
        key,
        permits: 1,
        leaseMs: 300,
        onLeaseLost: (error) => lost.push(error),
      });
      const permit = await semaphore.acquire();

      await own.restart();
      await eventually(() => permit.signal.aborted, "the permit's signal aborts");
      const reason = permit.signal.reason as unknown;
      assert.ok(reason instanceof RedisLimiterError);
      assert.equal(reason.key, key);
      assert.ok(reason.message.startsWith(`Lost the lease of a permit for Redis key "${key}" as `));
      assert.deepEqual(lost, [reason]);

      // The old permit's release changes nothing, and the fresh server grants the unit again.
      permit.release();
      const next = await within(semaphore.acquire(), "a permit after the restart");
      next.release();
    } finally {
      ownClient.disconnect();
    }
  });

  it("a lost connection rejects waiters and ends renewals", async () => {
    const own = await startRedisServer();
    const ownClient = own.connect();
    try {
      const key = uniqueKey();
      const semaphore = new RedisSemaphore({
        client: ownClient,
        key,
        permits: 1,
        leaseMs: 300,
        pollMs: 10,
      });
      const held = await semaphore.acquire();
      const waiting = semaphore.acquire();
      waiting.catch(() => {});
      await eventually(
        async () => await ownClient.zcard(`${key}:queue`) === 1,
        "the waiter is queued",
      );

      await own.stop();
      const error = await within(
        waiting.then(() => undefined, (reason) => reason),
        "the rejection",
      );
      assert.ok(error instanceof RedisLimiterError);
      assert.ok(error.cause instanceof Error);
      assert.ok(
        error.message.startsWith(
          `Failed to acquire a permit for Redis key "${key}" as a Redis call failed: `,
        ),
      );

      await eventually(() => held.signal.aborted, "the held permit's lease runs out");
      const reason = held.signal.reason as RedisLimiterError;
      assert.ok(
        reason.message.startsWith(
          `Lost the lease of a permit for Redis key "${key}" as renewing it failed until the lease ran out: `,
        ),
      );
      held.release();
    } finally {
      ownClient.disconnect();
      await own.stop();
    }
  });
});

describe("RedisRateLimiter", () => {
  it("acquire() keeps every window within the limit", async () => {
    const key = uniqueKey();
    const limiter = new RedisRateLimiter({ client, key, limit: 3, intervalMs: 300, pollMs: 10 });

    const permits = await within(
      Promise.all(Array.from({ length: 9 }, () => limiter.acquire())),
      "9 grants",
    );
    assertWindows(permits.map((permit) => permit.grantedAt), 3, 300);
  });

  it("4 processes share one limit", async () => {
    const key = uniqueKey();
    const job: WorkerJob = {
      mode: "rate",
      port: server.port,
      key,
      limit: 5,
      intervalMs: 500,
      count: 5,
    };
    const workers = Array.from({ length: 4 }, () => new Worker(job));
    let times: number[];
    try {
      const events = await Promise.all(workers.map((worker) => worker.event("grantedAt", 30_000)));
      times = events.flatMap((event) => event.grantedAt as number[]);
    } finally {
      for (const worker of workers) worker.kill();
    }

    assert.equal(times.length, 20);
    assertWindows(times, 5, 500);
  });

  it("acquire() keeps a later light waiter behind a heavy one", async () => {
    const key = uniqueKey();
    const limiter = new RedisRateLimiter({ client, key, limit: 3, intervalMs: 400, pollMs: 10 });
    await limiter.acquire({ weight: 2 });
    const order: string[] = [];
    const heavy = limiter.acquire({ weight: 3 }).then((permit) => {
      order.push("heavy");
      return permit;
    });
    await eventually(async () => await zcard(`${key}:queue`) === 1, "the heavy waiter is queued");
    const light = limiter.acquire({ weight: 1 }).then((permit) => {
      order.push("light");
      return permit;
    });

    const [heavyPermit, lightPermit] = await within(Promise.all([heavy, light]), "both grants");
    assert.deepEqual(order, ["heavy", "light"]);
    assert.ok(lightPermit.grantedAt - heavyPermit.grantedAt >= 400);
  });

  it("abort while waiting rejects with the reason and spends nothing", async () => {
    const key = uniqueKey();
    const limiter = new RedisRateLimiter({ client, key, limit: 1, intervalMs: 60_000, pollMs: 10 });
    await limiter.acquire();
    const controller = new AbortController();
    const listeners = countListeners(controller.signal);
    const waiting = limiter.acquire({ signal: controller.signal });
    await eventually(async () => await zcard(`${key}:queue`) === 1, "the waiter is queued");

    const reason = new Error("stop");
    controller.abort(reason);
    await assert.rejects(waiting, (error) => error === reason);
    assert.equal(listeners(), 0);
    await eventually(async () => await zcard(`${key}:queue`) === 0, "the waiter leaves the queue");
    assert.equal(await zcard(`${key}:grants`), 1);
  });

  it("acquire() with an aborted signal rejects without calling Redis", async () => {
    const unused = unusedClient();
    const limiter = new RedisRateLimiter({ client: unused, key: "k", limit: 1, intervalMs: 10 });
    const reason = new Error("cancelled before the call");

    await assert.rejects(
      limiter.acquire({ signal: AbortSignal.abort(reason) }),
      (error) => error === reason,
    );
    assert.equal(unused.calls, 0);
  });

  it("acquire() rejects a weight above the limit with a RangeError", async () => {
    const unused = unusedClient();
    const limiter = new RedisRateLimiter({ client: unused, key: "k", limit: 2, intervalMs: 10 });

    await assert.rejects(limiter.acquire({ weight: 3 }), {
      name: "RangeError",
      message: "Cannot acquire a permit as 'weight' must be at most the limit 2: received 3",
    });
    assert.equal(unused.calls, 0);
  });

  it("the keys of an idle limiter expire", async () => {
    const key = uniqueKey();
    const limiter = new RedisRateLimiter({ client, key, limit: 1, intervalMs: 200, pollMs: 10 });
    await limiter.acquire();
    await limiter.acquire();
    assert.ok((await inspector.keys(`${key}:*`)).includes(`${key}:grants`));

    await eventually(
      async () => (await inspector.keys(`${key}:*`)).length === 0,
      "the keys expire",
    );
  });

  it("release() of a rate permit does nothing", async () => {
    const key = uniqueKey();
    const limiter = new RedisRateLimiter({ client, key, limit: 1, intervalMs: 60_000 });
    const permit = await limiter.acquire();
    permit.release();
    permit.release();

    await sleep(50);
    assert.equal(await zcard(`${key}:grants`), 1);
  });

  it("constructor rejects invalid options with the package message", () => {
    const valid = { client: unusedClient(), key: "k", limit: 1, intervalMs: 1000 };
    const cases: [Record<string, unknown>, ErrorConstructor, string][] = [
      [
        { client: null },
        TypeError,
        "Cannot create RedisRateLimiter as 'client' must be an object with eval and evalsha methods: received null",
      ],
      [
        { key: "" },
        RangeError,
        `Cannot create RedisRateLimiter as 'key' must be a non-empty string: received ""`,
      ],
      [
        { limit: 0 },
        RangeError,
        "Cannot create RedisRateLimiter as 'limit' must be an integer >= 1: received 0",
      ],
      [
        { intervalMs: 0 },
        RangeError,
        "Cannot create RedisRateLimiter as 'intervalMs' must be a finite number > 0: received 0",
      ],
      [
        { intervalMs: -1 },
        RangeError,
        "Cannot create RedisRateLimiter as 'intervalMs' must be a finite number > 0: received -1",
      ],
      [
        { leaseMs: 0 },
        RangeError,
        "Cannot create RedisRateLimiter as 'leaseMs' must be an integer >= 1: received 0",
      ],
      [
        { pollMs: "fast" },
        TypeError,
        `Cannot create RedisRateLimiter as 'pollMs' must be an integer >= 1: received "fast"`,
      ],
    ];
    for (const [override, type, message] of cases) {
      assert.throws(
        () => new RedisRateLimiter({ ...valid, ...override } as never),
        { name: type.name, message },
      );
    }
  });
});
