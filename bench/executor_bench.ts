// Throughput and memory of AsyncExecutor against p-map, @supercharge/promise-pool, p-limit,
// p-queue, fastq and a hand-written worker loop.
//
// Run from the repository root:
//   deno run -A --v8-flags=--expose-gc bench/executor_bench.ts [--quick]
//   bun run bench/executor_bench.ts [--quick]
//
// Each case runs N no-op tasks at each concurrency C: once to warm up, then RUNS more times. The
// table shows nanoseconds per task (median, min, max) and the median as a ratio to the worker loop
// ("floor") and to the peer named in the last column. `--quick` uses N = 20,000 and one run, for a
// smoke test only. The memory section queues 1,000,000 inputs behind tasks that wait on a gate and
// reports the live heap growth per input, after a forced GC where the runtime offers one.

import process from "node:process";
import pMap, { pMapIterable } from "p-map";
import { PromisePool } from "@supercharge/promise-pool";
import pLimit from "p-limit";
import PQueue from "p-queue";
import fastq from "fastq";
import { AsyncExecutor } from "@antflow/antflow";

const quick = process.argv.includes("--quick");
const N = quick ? 20_000 : 200_000;
const RUNS = quick ? 1 : 5;
const CONCURRENCIES = [1, 8, 64, 1024];
const MEMORY_INPUTS = 1_000_000;

type Task = (input: number) => Promise<number>;

const tasks: { name: string; fn: Task }[] = [
  // The cheapest async task: it settles in one microtask without awaiting anything.
  // deno-lint-ignore require-await
  { name: "async (x) => x", fn: async (x) => x },
  {
    name: "await Promise.resolve()",
    fn: async (x) => {
      await Promise.resolve();
      return x;
    },
  },
];

/** One way to run every input through a task at concurrency `c`; resolves when all are done. */
type Runner = (inputs: number[], task: Task, c: number) => Promise<unknown>;

// The floor: `c` workers that pull the next index from a shared counter.
async function workerLoop(inputs: number[], task: Task, c: number): Promise<number[]> {
  const results = new Array<number>(inputs.length);
  let next = 0;
  const worker = async () => {
    while (next < inputs.length) {
      const index = next++;
      results[index] = await task(inputs[index] as number);
    }
  };
  await Promise.all(Array.from({ length: Math.min(c, inputs.length) }, worker));
  return results;
}

const runners: Record<string, Runner> = {
  "floor": workerLoop,
  "executor.map await": async (inputs, task, c) => {
    await using executor = new AsyncExecutor({ maxWorkers: c });
    return await executor.map(task, inputs);
  },
  "executor.map for await": async (inputs, task, c) => {
    await using executor = new AsyncExecutor({ maxWorkers: c });
    let sum = 0;
    for await (const value of executor.map(task, inputs)) sum += value;
    return sum;
  },
  "executor.submit": async (inputs, task, c) => {
    await using executor = new AsyncExecutor({ maxWorkers: c });
    return await Promise.all(inputs.map((input) => executor.submit(task, input)));
  },
  "p-map": (inputs, task, c) => pMap(inputs, task, { concurrency: c }),
  "pMapIterable for await": async (inputs, task, c) => {
    let sum = 0;
    for await (const value of pMapIterable(inputs, task, { concurrency: c })) sum += value;
    return sum;
  },
  "promise-pool": (inputs, task, c) => PromisePool.withConcurrency(c).for(inputs).process(task),
  "p-limit": (inputs, task, c) => {
    const limit = pLimit(c);
    return Promise.all(inputs.map((input) => limit(task, input)));
  },
  "p-queue": (inputs, task, c) => {
    const queue = new PQueue({ concurrency: c });
    return Promise.all(inputs.map((input) => queue.add(() => task(input))));
  },
  "fastq": (inputs, task, c) => {
    const queue = fastq.promise(task, c);
    return Promise.all(inputs.map((input) => queue.push(input)));
  },
};

// The peer each executor case is compared with, and the goal for that ratio.
const peers: Record<string, { peer: string; goal: number }> = {
  "executor.map await": { peer: "p-map", goal: 0.5 },
  "executor.map for await": { peer: "pMapIterable for await", goal: 1.0 },
  "executor.submit": { peer: "p-limit", goal: 0.5 },
};
const FLOOR_GOAL = 2.5;

interface Timing {
  median: number;
  min: number;
  max: number;
}

async function measure(runner: Runner, inputs: number[], task: Task, c: number): Promise<Timing> {
  await runner(inputs, task, c);
  const samples: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const start = performance.now();
    await runner(inputs, task, c);
    samples.push(((performance.now() - start) * 1e6) / inputs.length);
  }
  samples.sort((a, b) => a - b);
  return {
    median: samples[Math.floor(samples.length / 2)] as number,
    min: samples[0] as number,
    max: samples[samples.length - 1] as number,
  };
}

function format(value: number, digits = 0): string {
  return value.toFixed(digits);
}

function row(cells: string[], widths: number[]): string {
  return cells.map((cell, i) =>
    i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0)
  )
    .join("  ");
}

// Forces a full garbage collection where the runtime allows it; returns false otherwise.
function collectGarbage(): boolean {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc === "function") {
    gc();
    return true;
  }
  const bun = (globalThis as { Bun?: { gc(force: boolean): void } }).Bun;
  if (bun !== undefined && typeof bun.gc === "function") {
    bun.gc(true);
    return true;
  }
  return false;
}

async function liveHeap(): Promise<number> {
  for (let i = 0; i < 3; i++) {
    collectGarbage();
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
  return process.memoryUsage().heapUsed;
}

/** Queues every input behind tasks that wait on a gate; returns a function that drains the work. */
type Queuer = (inputs: number[], gate: Promise<void>) => () => Promise<unknown>;

const MEMORY_WORKERS = 8;
const queuers: Record<string, Queuer> = {
  "executor.submit": (inputs, gate) => {
    const executor = new AsyncExecutor({ maxWorkers: MEMORY_WORKERS });
    const results = inputs.map((input) => executor.submit(() => gate, input));
    return () => Promise.all(results);
  },
  "executor.map for await": (inputs, gate) => {
    const executor = new AsyncExecutor({ maxWorkers: MEMORY_WORKERS });
    const iterator = executor.map(() => gate, inputs)[Symbol.asyncIterator]();
    const first = iterator.next();
    return async () => {
      await first;
      while (!(await iterator.next()).done);
    };
  },
  "p-limit": (inputs, gate) => {
    const limit = pLimit(MEMORY_WORKERS);
    const results = inputs.map(() => limit(() => gate));
    return () => Promise.all(results);
  },
  "p-queue": (inputs, gate) => {
    const queue = new PQueue({ concurrency: MEMORY_WORKERS });
    const results = inputs.map(() => queue.add(() => gate));
    return () => Promise.all(results);
  },
  "fastq": (inputs, gate) => {
    const queue = fastq.promise(() => gate, MEMORY_WORKERS);
    const results = inputs.map((input) => queue.push(input));
    return () => Promise.all(results);
  },
  "p-map": (inputs, gate) => {
    const result = pMap(inputs, () => gate, { concurrency: MEMORY_WORKERS });
    return () => result;
  },
};

// Returns the live heap growth per input while `queue` keeps every input waiting. It is a function
// of its own, so nothing of one case stays reachable from the frame that measures the next.
async function heapPerInput(queue: Queuer, inputs: number[]): Promise<number> {
  const before = await liveHeap();
  let open!: () => void;
  const gate = new Promise<void>((resolve) => open = resolve);
  const drain = queue(inputs, gate);
  await new Promise((resolve) => setTimeout(resolve, 0));
  const after = await liveHeap();
  open();
  await drain();
  return (after - before) / inputs.length;
}

async function measureMemory(): Promise<void> {
  const forced = collectGarbage();
  console.log(`\n## Live heap with ${MEMORY_INPUTS.toLocaleString("en-US")} queued inputs`);
  console.log(`maxWorkers/concurrency ${MEMORY_WORKERS}; forced GC: ${forced ? "yes" : "no"}`);
  if (!forced) {
    console.log("NOTE: without a forced GC the numbers include garbage; run Deno with");
    console.log("--v8-flags=--expose-gc.");
  }
  const widths = [24, 14];
  console.log(row(["case", "bytes/input"], widths));
  const inputs = Array.from({ length: MEMORY_INPUTS }, (_, i) => i);
  for (const [name, queue] of Object.entries(queuers)) {
    // The first pass warms up the code paths; the second is reported.
    await heapPerInput(queue, inputs);
    const bytes = await heapPerInput(queue, inputs);
    console.log(row([name, format(Math.abs(bytes) < 0.05 ? 0 : bytes, 1)], widths));
  }
}

async function main(): Promise<void> {
  const runtime = "Deno" in globalThis
    ? `Deno ${(globalThis as { Deno?: { version: { deno: string } } }).Deno?.version.deno}`
    : `Bun ${process.versions.bun}`;
  console.log(`# AsyncExecutor benchmark on ${runtime}, ${process.platform} ${process.arch}`);
  console.log(`N = ${N.toLocaleString("en-US")} tasks, median of ${RUNS} run(s) after a warm-up`);

  const inputs = Array.from({ length: N }, (_, i) => i);
  const goals: string[] = [];
  const widths = [24, 5, 8, 8, 8, 8, 8];

  for (const task of tasks) {
    for (const c of CONCURRENCIES) {
      console.log(`\n## ${task.name}, C = ${c}`);
      console.log(row(["case", "C", "median", "min", "max", "×floor", "×peer"], widths));
      const timings: Record<string, Timing> = {};
      for (const [name, runner] of Object.entries(runners)) {
        timings[name] = await measure(runner, inputs, task.fn, c);
      }

      const floor = timings["floor"]?.median ?? NaN;
      for (const [name, timing] of Object.entries(timings)) {
        const comparison = peers[name];
        const peer = comparison === undefined ? undefined : timings[comparison.peer]?.median;
        const peerRatio = peer === undefined
          ? ""
          : `${format(timing.median / peer, 2)} ${comparison?.peer}`;
        console.log(row([
          name,
          String(c),
          format(timing.median),
          format(timing.min),
          format(timing.max),
          format(timing.median / floor, 2),
          peerRatio,
        ], widths));

        if (comparison !== undefined && peer !== undefined) {
          const ratio = timing.median / peer;
          goals.push(
            `${ratio <= comparison.goal ? "met" : "NOT met"}: ${name} ${format(ratio, 2)}× ` +
              `${comparison.peer} (goal ≤ ${comparison.goal}) [${task.name}, C = ${c}]`,
          );
        }
        if (name === "executor.map await") {
          const ratio = timing.median / floor;
          goals.push(
            `${ratio <= FLOOR_GOAL ? "met" : "NOT met"}: ${name} ${format(ratio, 2)}× floor ` +
              `(goal ≤ ${FLOOR_GOAL}) [${task.name}, C = ${c}]`,
          );
        }
      }
    }
  }

  console.log("\n## Goals");
  for (const line of goals) console.log(line);

  await measureMemory();
}

await main();
