// A worker pool: AsyncExecutor runs many async calls, at most `maxWorkers` at once, and returns
// the results in input order.
//
//   deno run examples/worker_pool.ts
//   bun run examples/worker_pool.ts

import assert from "node:assert/strict";
import { AsyncExecutor } from "@antflow/antflow";

let running = 0;
let peak = 0;

// Stands in for a network call: it takes 10 to 40 ms, depending on the name's length.
async function measure(name: string): Promise<number> {
  running++;
  peak = Math.max(peak, running);
  await new Promise((resolve) => setTimeout(resolve, 10 * (name.length % 4 + 1)));
  running--;
  return name.length;
}

const names = ["ant", "bee", "cicada", "dragonfly", "earwig", "firefly", "gnat", "hornet"];
await using executor = new AsyncExecutor({ maxWorkers: 3 });
const lengths = await executor.map(measure, names);

console.log(`Measured ${names.length} names with maxWorkers 3; at most ${peak} ran at once.`);
console.log(`Lengths in input order: ${lengths.join(", ")}`);
assert.equal(peak, 3);
assert.deepEqual(lengths, names.map((name) => name.length));
