// Cost of one acquisition through the Redis-backed limiters, against the in-memory Semaphore and
// against a bare Redis round trip. It starts its own redis-server on a free port of 127.0.0.1
// (Debian's redis-server must be installed: scripts/install-redis-server.sh).
//
// Run from the repository root:
//   deno run -A bench/redis_bench.ts [--quick]
//   bun run bench/redis_bench.ts [--quick]
//
// Cases, each run once to warm up and then RUNS timed times:
// - sequential: one loop of N `await acquire()` + `release()`, so a permit is always free. The
//   Redis floor is one `PING` round trip per operation.
// - contended: 16 loops share 4 permits, each doing N / 16 acquire, one `await Promise.resolve()`,
//   release. Waiters of the Redis semaphore in this process are woken by local releases, so this
//   measures the hand-off within one process, not between processes.
// The table shows microseconds per operation (median, min, max over the timed runs).

import process from "node:process";
import { cpus } from "node:os";
import { Semaphore } from "@antflow/antflow";
import { RedisRateLimiter, RedisSemaphore } from "@antflow/antflow/redis";
import { startRedisServer } from "../tests/redis/_server.ts";

const quick = process.argv.includes("--quick");
const N = quick ? 500 : 5_000;
const RUNS = quick ? 1 : 5;
const LOOPS = 16;
const PERMITS = 4;

interface BenchLimiter {
  acquire(): Promise<{ release(): void }>;
}

async function sequential(limiter: BenchLimiter): Promise<void> {
  for (let i = 0; i < N; i++) (await limiter.acquire()).release();
}

async function contended(limiter: BenchLimiter): Promise<void> {
  await Promise.all(Array.from({ length: LOOPS }, async () => {
    for (let i = 0; i < N / LOOPS; i++) {
      const permit = await limiter.acquire();
      await Promise.resolve();
      permit.release();
    }
  }));
}

async function time(body: () => Promise<void>): Promise<number[]> {
  await body();
  const microsecondsPerOp: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const start = performance.now();
    await body();
    microsecondsPerOp.push((performance.now() - start) * 1000 / N);
  }
  return microsecondsPerOp;
}

function format(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  const median = sorted[Math.floor(sorted.length / 2)] as number;
  const cell = (value: number) => value.toFixed(1).padStart(8);
  return `${cell(median)} ${cell(sorted[0] as number)} ${cell(sorted.at(-1) as number)}`;
}

const runtime = "Deno" in globalThis
  ? `Deno ${(globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno}`
  : `Bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`;

await using server = await startRedisServer();
const client = server.connect();
const rows: [string, number[]][] = [];
try {
  const version = String(await client.call("INFO", "server")).match(/redis_version:(\S+)/)?.[1];
  console.log(
    `${runtime}, Redis ${version}, ${cpus()[0]?.model ?? "unknown CPU"} x ${cpus().length}`,
  );
  console.log(`N = ${N}, ${RUNS} timed runs\n`);

  rows.push([
    "sequential: Redis PING round trip (floor)",
    await time(async () => {
      for (let i = 0; i < N; i++) await client.ping();
    }),
  ]);
  rows.push(["sequential: Semaphore", await time(() => sequential(new Semaphore(1)))]);
  rows.push([
    "sequential: RedisSemaphore",
    await time(() =>
      sequential(new RedisSemaphore({ client, key: "bench:sequential", permits: 1 }))
    ),
  ]);
  rows.push([
    "sequential: RedisRateLimiter",
    await time(() =>
      sequential(
        new RedisRateLimiter({ client, key: "bench:rate", limit: 1_000_000, intervalMs: 1 }),
      )
    ),
  ]);
  rows.push(["contended: Semaphore", await time(() => contended(new Semaphore(PERMITS)))]);
  rows.push([
    "contended: RedisSemaphore",
    await time(() =>
      contended(new RedisSemaphore({ client, key: "bench:contended", permits: PERMITS }))
    ),
  ]);
} finally {
  await client.quit();
}

console.log(
  `${"case".padEnd(44)} ${"µs/op".padStart(8)} ${"min".padStart(8)} ${"max".padStart(8)}`,
);
for (const [name, values] of rows) console.log(`${name.padEnd(44)} ${format(values)}`);
