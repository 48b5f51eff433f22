// Streaming results: `for await` over a result stream yields each result as soon as it is ready.
// `mapUnordered` yields in completion order; `map` keeps input order; `await` gives the array.
//
//   deno run examples/streaming.ts
//   bun run examples/streaming.ts

import assert from "node:assert/strict";
import { AsyncExecutor } from "@antflow/antflow";

// The larger the number, the sooner the call finishes.
async function countdown(n: number): Promise<number> {
  await new Promise((resolve) => setTimeout(resolve, (5 - n) * 15));
  return n;
}

await using executor = new AsyncExecutor({ maxWorkers: 5 });
const inputs = [1, 2, 3, 4, 5];

const completionOrder: number[] = [];
for await (const n of executor.mapUnordered(countdown, inputs)) completionOrder.push(n);
console.log(`mapUnordered, completion order: ${completionOrder.join(", ")}`);
assert.deepEqual(completionOrder, [5, 4, 3, 2, 1]);

const inputOrder: number[] = [];
for await (const n of executor.map(countdown, inputs)) inputOrder.push(n);
console.log(`map, input order:               ${inputOrder.join(", ")}`);
assert.deepEqual(inputOrder, inputs);

const all = await executor.map(countdown, inputs);
console.log(`await map, one array:           [${all.join(", ")}]`);
assert.deepEqual(all, inputs);
