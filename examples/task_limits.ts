// Per-task limits: a stage with 8 workers runs prepare -> callApi -> save on each item, but only
// callApi is limited, to 2 calls at once. Items waiting for that limit hold no worker, so other
// items run prepare and save in the meantime.
//
//   deno run examples/task_limits.ts
//   bun run examples/task_limits.ts

import assert from "node:assert/strict";
import { Pipeline, Stage } from "@antflow/antflow";

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
let apiCalls = 0;
let apiPeak = 0;
let tasksRunning = 0;
let tasksPeak = 0;

// Counts every running task of the stage, and separately the calls of callApi.
function track(): () => void {
  tasksRunning++;
  tasksPeak = Math.max(tasksPeak, tasksRunning);
  return () => tasksRunning--;
}

async function prepare(id: number): Promise<string> {
  const done = track();
  await wait(5);
  done();
  return `order-${id}`;
}

async function callApi(key: string): Promise<string> {
  const done = track();
  apiCalls++;
  apiPeak = Math.max(apiPeak, apiCalls);
  await wait(30);
  apiCalls--;
  done();
  return `${key}:confirmed`;
}

async function save(value: string): Promise<string> {
  const done = track();
  await wait(20);
  done();
  return value;
}

const stage = new Stage({
  name: "orders",
  workers: 8,
  tasks: [prepare, callApi, save],
  taskConcurrencyLimits: { callApi: 2 },
});
const results = await new Pipeline({ stages: [stage] }).run([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);

console.log(
  `Confirmed ${results.filter((result) => result.ok).length} of ${results.length} orders`,
);
console.log(`callApi ran at most ${apiPeak} at once (limit 2)`);
console.log(`All tasks of the stage ran at most ${tasksPeak} at once (workers 8)`);
assert.equal(apiPeak, 2);
assert.ok(tasksPeak > 2, "prepare and save ran while callApi was at its limit");
