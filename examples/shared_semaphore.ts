// Shared limiters: one Semaphore groups submit() calls of different kinds under one limit, and a
// RateLimiter caps calls per time window. Tasks without a limiter use the pool's workers freely.
//
//   deno run examples/shared_semaphore.ts
//   bun run examples/shared_semaphore.ts

import assert from "node:assert/strict";
import { AsyncExecutor, RateLimiter, Semaphore } from "@antflow/antflow";

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let connections = 0;
let connectionPeak = 0;
let finishedQueries = 0;

// Stands in for a query that needs one of the database's 2 connections.
async function query(sql: string): Promise<string> {
  connections++;
  connectionPeak = Math.max(connectionPeak, connections);
  await wait(15);
  connections--;
  finishedQueries++;
  return `${sql} -> ok`;
}

await using executor = new AsyncExecutor({ maxWorkers: 10 });
const database = new Semaphore(2);

// Inserts and reports are different tasks, but they share the database semaphore.
const inserts = ["a", "b", "c", "d"].map((key) =>
  executor.submit(query, `INSERT ${key}`, { semaphore: database })
);
const reports = ["daily", "weekly"].map((name) =>
  executor.submit(query, `SELECT ${name}`, { semaphore: database })
);
// This task takes no permit, so it runs at once on a free worker, before any query has finished.
const cleanup = await executor.submit(() => finishedQueries, null);
console.log(`An unlimited task ran while ${6 - cleanup} queries waited for or held a connection`);
assert.equal(cleanup, 0);
const rows = await Promise.all([...inserts, ...reports]);
console.log(`${rows.length} queries, at most ${connectionPeak} at once (semaphore of 2)`);
assert.equal(connectionPeak, 2);

// At most 4 calls in any 200 ms: 10 calls need at least two more windows after the first burst.
const perWindow = new RateLimiter({ limit: 4, intervalMs: 200 });
const started = performance.now();
const pings = await Promise.all(
  Array.from(
    { length: 10 },
    (_, i) => executor.submit((n: number) => n, i, { semaphore: perWindow }),
  ),
);
const elapsedMs = performance.now() - started;
console.log(`${pings.length} rate-limited calls (4 per 200 ms) took ${elapsedMs.toFixed(0)} ms`);
assert.ok(elapsedMs >= 400);
