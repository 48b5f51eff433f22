// A worker process for the cross-process Redis limiter tests. It takes one JSON argument (see
// WorkerJob), uses the limiter through the public entry points as an application would, and
// prints one JSON line per event on standard output.
//
//   deno run -A tests/redis/_worker.ts '<json>'
//   bun run tests/redis/_worker.ts '<json>'

import process from "node:process";
import { setTimeout as sleep } from "node:timers/promises";
import { AsyncExecutor } from "@antflow/antflow";
import { RedisRateLimiter, RedisSemaphore } from "@antflow/antflow/redis";
import { Redis } from "ioredis";

/** What a worker does. */
export type WorkerJob =
  | {
    /** Runs `items` tasks through an executor limited by a shared RedisSemaphore. */
    mode: "semaphore";
    port: number;
    key: string;
    permits: number;
    items: number;
    maxWorkers: number;
    holdMs: number;
    /** The Redis key of the counter of tasks running in any process. */
    activeKey: string;
    /** The Redis key of the highest value that counter reached. */
    peakKey: string;
  }
  | {
    /** Acquires one permit, prints "acquired" and then holds it until killed. */
    mode: "hold";
    port: number;
    key: string;
    permits: number;
    leaseMs: number;
  }
  | {
    /** Acquires `count` permits of a shared RedisRateLimiter and prints their grant times. */
    mode: "rate";
    port: number;
    key: string;
    limit: number;
    intervalMs: number;
    count: number;
  };

// Increments the running counter and raises the peak to it, in one step.
const ENTER = `
local running = redis.call('INCR', KEYS[1])
local peak = tonumber(redis.call('GET', KEYS[2]) or '0')
if running > peak then redis.call('SET', KEYS[2], running) end
return running
`;

function print(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

async function runSemaphore(job: Extract<WorkerJob, { mode: "semaphore" }>): Promise<void> {
  const client = new Redis({ host: "127.0.0.1", port: job.port });
  const counter = new Redis({ host: "127.0.0.1", port: job.port });
  const semaphore = new RedisSemaphore({ client, key: job.key, permits: job.permits, pollMs: 10 });
  const executor = new AsyncExecutor({ maxWorkers: job.maxWorkers });
  const items = Array.from({ length: job.items }, (_, index) => index);

  const done = await executor.map(
    async (item: number) => {
      await counter.eval(ENTER, 2, job.activeKey, job.peakKey);
      await sleep(job.holdMs);
      // The counter goes down before the permit is released, so it never counts a task late.
      await counter.decr(job.activeKey);
      return item;
    },
    items,
    { semaphore },
  );

  await executor.shutdown();
  print({ done: done.length });
  await Promise.all([client.quit(), counter.quit()]);
}

async function runHold(job: Extract<WorkerJob, { mode: "hold" }>): Promise<void> {
  const client = new Redis({ host: "127.0.0.1", port: job.port });
  const semaphore = new RedisSemaphore({
    client,
    key: job.key,
    permits: job.permits,
    leaseMs: job.leaseMs,
  });
  await semaphore.acquire();
  print({ acquired: true });
  // Lease renewals do not keep a process alive, so this timer does until the test kills it.
  setInterval(() => {}, 1000);
}

async function runRate(job: Extract<WorkerJob, { mode: "rate" }>): Promise<void> {
  const client = new Redis({ host: "127.0.0.1", port: job.port });
  const limiter = new RedisRateLimiter({
    client,
    key: job.key,
    limit: job.limit,
    intervalMs: job.intervalMs,
    pollMs: 10,
  });
  const permits = await Promise.all(
    Array.from({ length: job.count }, () => limiter.acquire()),
  );
  print({ grantedAt: permits.map((permit) => permit.grantedAt) });
  await client.quit();
}

const job = JSON.parse(process.argv[2] ?? "") as WorkerJob;
if (job.mode === "semaphore") await runSemaphore(job);
else if (job.mode === "hold") await runHold(job);
else await runRate(job);
