// Timeouts and cancellation: a task's `signal` aborts when its timeout passes or when the caller
// aborts, and the promise rejects with the signal's reason.
//
//   deno run examples/timeouts_cancellation.ts
//   bun run examples/timeouts_cancellation.ts

import assert from "node:assert/strict";
import { AsyncExecutor, type TaskContext } from "@antflow/antflow";

// Waits `ms` milliseconds unless the signal aborts first, like a fetch that honours its signal.
function slowCall(ms: number, { signal }: TaskContext): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(`finished after ${ms} ms`), ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });
}

await using executor = new AsyncExecutor({ maxWorkers: 2 });

// 1. A timeout: the attempt's signal aborts after 50 ms with a TimeoutError.
const timedOut = await executor.submit(slowCall, 5_000, { timeoutMs: 50 }).catch((error) => error);
console.log(`timeoutMs 50 on a 5 s call: ${timedOut.name}`);
assert.equal(timedOut.name, "TimeoutError");

// 2. Cancelling a running task: aborting its signal rejects it with the reason given.
const controller = new AbortController();
const pending = executor.submit(slowCall, 5_000, { signal: controller.signal });
await new Promise((resolve) => setTimeout(resolve, 20));
assert.equal(executor.running, 1);
controller.abort(new Error("user pressed cancel"));
const cancelled = await pending.catch((error) => error);
console.log(`abort() on a running call: ${cancelled.message}`);
assert.equal(cancelled.message, "user pressed cancel");

// 3. Leaving a `for await` early cancels the tasks that are still running.
const seen: string[] = [];
for await (const value of executor.mapUnordered(slowCall, [10, 5_000, 5_000])) {
  seen.push(value);
  break;
}
console.log(`break after the first result: ${seen.join(", ")}; the two 5 s calls were aborted`);
assert.deepEqual(seen, ["finished after 10 ms"]);
assert.equal(executor.running, 0);
