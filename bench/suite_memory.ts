// Measures the memory that implementations hold while they work through a long input, under the
// runtime that runs this file. suite.ts starts it once per implementation and input, so that
// each peak RSS comes from a fresh process; it can also run alone:
//
//   deno run -A --v8-flags=--expose-gc bench/suite_memory.ts --implementations p-limit,floor \
//     --input generator --length 1000000 --runs 5 --result-file /tmp/memory.json
//   bun run bench/suite_memory.ts --implementations p-limit,floor ...
//
// Each run feeds `--length` inputs (an array built once before the runs, or a new generator per
// run) through a no-op async task at concurrency 8. When half of the inputs have reached the
// task, the task forces a garbage collection and records the live heap (`heapUsed`) above the
// run's starting point, so the figure is what the run keeps reachable, not garbage. Peak RSS is
// sampled every 16,384 task calls and at that midpoint. The run is then abandoned: every later
// task call returns a promise that never settles, so nothing references the run any more and the
// next run's starting collection frees it. Finishing the second half would double the cost and
// add nothing to the figures. One warm-up run on at most 100,000 inputs comes first.
//
// RSS is not returned to the system between runs on every runtime, so only the first measured
// run's peak RSS describes the implementation alone.

import process from "node:process";
import pMap, { pMapIterable } from "p-map";
import { PromisePool } from "@supercharge/promise-pool";
import pLimit from "p-limit";
import PQueue from "p-queue";
import fastq from "fastq";
import { AsyncExecutor } from "@antflow/antflow";
import {
  collectGarbage,
  parseArguments,
  requireInteger,
  requireOption,
  runtimeName,
  writeResult,
} from "./_suite_common.ts";

/** The concurrency of every memory run. */
export const MEMORY_CONCURRENCY = 8;
const WARMUP_LENGTH = 100_000;
const RSS_SAMPLE_MASK = 16_383;

type Task = (input: number) => Promise<number>;

/**
 * The way an implementation keeps its work: `streaming` hands each output on and keeps nothing,
 * `collecting` keeps every output until the end, and `eager` queues every input up front.
 */
export type MemoryModel = "streaming" | "collecting" | "eager";

/** One way to feed every input through the task; resolves with the sum of the outputs. */
export interface MemoryImplementation {
  /** A short name for the command line. */
  readonly id: string;
  readonly name: string;
  readonly library: string;
  readonly model: MemoryModel;
  run(source: Iterable<number>, length: number, task: Task): Promise<number>;
}

function sum(values: readonly number[]): number {
  let total = 0;
  for (const value of values) total += value;
  return total;
}

async function sumStream(stream: AsyncIterable<number>): Promise<number> {
  let total = 0;
  for await (const value of stream) total += value;
  return total;
}

// Queues every input at once, as `Promise.all(inputs.map(...))` code does, but keeps none of the
// returned promises, which is the least memory an eager queue can hold.
function queueAll(
  source: Iterable<number>,
  length: number,
  schedule: (input: number) => Promise<number>,
): Promise<number> {
  return new Promise((resolve, reject) => {
    let total = 0;
    let settled = 0;
    const onValue = (value: number) => {
      total += value;
      if (++settled === length) resolve(total);
    };
    for (const input of source) schedule(input).then(onValue, reject);
    if (length === 0) resolve(0);
  });
}

/** The implementations, by name. */
export const memoryImplementations: readonly MemoryImplementation[] = [
  {
    id: "floor",
    name: "worker loop (floor)",
    library: "floor",
    model: "streaming",
    // `C` loops share one iterator, each pulling the next input when its task is done.
    async run(source, _length, task) {
      const iterator = source[Symbol.iterator]();
      let total = 0;
      const worker = async () => {
        for (let step = iterator.next(); !step.done; step = iterator.next()) {
          const value = await task(step.value);
          total += value;
        }
      };
      await Promise.all(Array.from({ length: MEMORY_CONCURRENCY }, worker));
      return total;
    },
  },
  {
    id: "antflow-stream",
    name: "antflow for await executor.map",
    library: "antflow",
    model: "streaming",
    async run(source, _length, task) {
      await using executor = new AsyncExecutor({ maxWorkers: MEMORY_CONCURRENCY });
      return await sumStream(executor.map(task, source));
    },
  },
  {
    id: "p-map-iterable",
    name: "p-map for await pMapIterable",
    library: "p-map",
    model: "streaming",
    run: (source, _length, task) =>
      sumStream(pMapIterable(source, task, { concurrency: MEMORY_CONCURRENCY })),
  },
  {
    id: "antflow-await",
    name: "antflow await executor.map",
    library: "antflow await",
    model: "collecting",
    async run(source, _length, task) {
      await using executor = new AsyncExecutor({ maxWorkers: MEMORY_CONCURRENCY });
      return sum(await executor.map(task, source));
    },
  },
  {
    id: "p-map-await",
    name: "p-map await pMap",
    library: "p-map await",
    model: "collecting",
    run: async (source, _length, task) =>
      sum(await pMap(source, task, { concurrency: MEMORY_CONCURRENCY })),
  },
  {
    id: "promise-pool",
    name: "promise-pool, dontStoreProcessedItems()",
    library: "promise-pool",
    model: "collecting",
    async run(source, _length, task) {
      const { results } = await PromisePool.withConcurrency(MEMORY_CONCURRENCY)
        .dontStoreProcessedItems()
        .for(source)
        .process(task);
      return sum(results);
    },
  },
  {
    id: "antflow-submit",
    name: "antflow executor.submit, all queued",
    library: "antflow submit",
    model: "eager",
    async run(source, length, task) {
      await using executor = new AsyncExecutor({ maxWorkers: MEMORY_CONCURRENCY });
      return await queueAll(source, length, (input) => executor.submit(task, input));
    },
  },
  {
    id: "p-limit",
    name: "p-limit, all queued",
    library: "p-limit",
    model: "eager",
    run(source, length, task) {
      const limit = pLimit(MEMORY_CONCURRENCY);
      return queueAll(source, length, (input) => limit(task, input));
    },
  },
  {
    id: "p-queue",
    name: "p-queue, all queued",
    library: "p-queue",
    model: "eager",
    run(source, length, task) {
      const queue = new PQueue({ concurrency: MEMORY_CONCURRENCY });
      return queueAll(source, length, (input) => queue.add(() => task(input)));
    },
  },
  {
    id: "fastq",
    name: "fastq, all queued",
    library: "fastq",
    model: "eager",
    run(source, length, task) {
      const queue = fastq.promise(task, MEMORY_CONCURRENCY);
      return queueAll(source, length, (input) => queue.push(input));
    },
  },
];

/** The figures of one measured run. */
export interface MemorySample {
  /**
   * Live heap at the midpoint above the lowest starting heap of the measured runs, in bytes. The
   * lowest start is the baseline because leftovers of an earlier run can only raise a start.
   */
  heapBytes: number;
  /** Live heap at the midpoint, in bytes. */
  midpointHeapBytes: number;
  /** The highest RSS sampled during the run, in bytes. */
  peakRssBytes: number;
  /** The RSS at the start of the run, in bytes. */
  startRssBytes: number;
  /** The live heap at the start of the run, in bytes; it stays level when abandoned runs are freed. */
  startHeapBytes: number;
  /** Milliseconds from the start of the run to the midpoint. */
  elapsedMs: number;
}

/** The measured runs of one implementation on one input. */
export interface MemoryRecord {
  implementation: string;
  library: string;
  model: MemoryModel;
  input: InputKind;
  length: number;
  samples: MemorySample[];
}

/** The content of `--result-file`. */
export interface MemoryResult {
  kind: "memory";
  runtime: string;
  forcedGc: boolean;
  runs: number;
  records: MemoryRecord[];
}

/** An array built once before every run, or a new generator for each run. */
export type InputKind = "array" | "generator";

function* numbers(length: number): Generator<number, void, undefined> {
  for (let i = 0; i < length; i++) yield i;
}

/** Runs `implementation` until half of the inputs have reached the task, and measures it. */
async function measureRun(
  implementation: MemoryImplementation,
  array: number[] | undefined,
  length: number,
): Promise<MemorySample> {
  const source = array ?? numbers(length);
  const midpoint = Math.ceil(length / 2);

  let calls = 0;
  let abandoned = false;
  let peakRssBytes = 0;
  let midpointHeapBytes = 0;
  let elapsedMs = 0;
  let reachMidpoint!: () => void;
  const midpointReached = new Promise<void>((resolve) => reachMidpoint = resolve);

  // Jobs of the previous, abandoned run may still wait in the microtask queue, which keeps that
  // run reachable, so a turn of the event loop runs them before the collection. Bun's collector
  // scans the stack conservatively and may keep a few objects one round longer, hence 3 rounds.
  for (let round = 0; round < 3; round++) {
    await new Promise((resolve) => setTimeout(resolve, 0));
    collectGarbage();
  }
  const start = process.memoryUsage();
  const startedAt = performance.now();
  // deno-lint-ignore require-await
  const task: Task = async (x) => {
    // A fresh promise each time: one shared pending promise would keep every abandoned run
    // reachable through its reactions.
    if (abandoned) return new Promise<number>(() => {});
    calls++;
    if ((calls & RSS_SAMPLE_MASK) === 0) {
      peakRssBytes = Math.max(peakRssBytes, process.memoryUsage().rss);
    }
    if (calls === midpoint) {
      elapsedMs = performance.now() - startedAt;
      peakRssBytes = Math.max(peakRssBytes, process.memoryUsage().rss);
      collectGarbage();
      midpointHeapBytes = process.memoryUsage().heapUsed;
      abandoned = true;
      reachMidpoint();
    }
    return x;
  };

  const finished = implementation.run(source, length, task);
  finished.catch((error) => {
    console.error(`${implementation.name} failed:`, error);
    process.exit(1);
  });
  await midpointReached;
  return {
    heapBytes: midpointHeapBytes - start.heapUsed,
    midpointHeapBytes,
    peakRssBytes,
    startRssBytes: start.rss,
    startHeapBytes: start.heapUsed,
    elapsedMs,
  };
}

async function measureImplementation(
  implementation: MemoryImplementation,
  input: InputKind,
  length: number,
  runs: number,
): Promise<MemoryRecord> {
  const warmupLength = Math.min(length, WARMUP_LENGTH);
  const warmupArray = input === "array" ? Array.from({ length: warmupLength }, (_, i) => i) : [];
  await measureRun(implementation, input === "array" ? warmupArray : undefined, warmupLength);

  // The array is part of every run's starting heap, as a caller's own data would be.
  const array = input === "array" ? Array.from({ length }, (_, i) => i) : undefined;
  const samples: MemorySample[] = [];
  for (let run = 0; run < runs; run++) {
    samples.push(await measureRun(implementation, array, length));
  }
  // Bun's collector scans the stack conservatively, so now and then an abandoned run survives the
  // starting collections of the next run and is freed only at its midpoint, which would cancel
  // out that run's growth. The lowest start of the measured runs has no such leftovers.
  const baseline = Math.min(...samples.map((sample) => sample.startHeapBytes));
  for (const sample of samples) sample.heapBytes = sample.midpointHeapBytes - baseline;
  const { name, library, model } = implementation;
  return { implementation: name, library, model, input, length, samples };
}

async function main(): Promise<void> {
  const options = parseArguments(process.argv.slice(2));
  const implementations = requireOption(options, "implementations").split(",").map((id) => {
    const found = memoryImplementations.find((candidate) => candidate.id === id);
    if (found === undefined) {
      const known = memoryImplementations.map((candidate) => candidate.id).join(", ");
      throw new Error(`Unknown implementation id ${id}: expected one of ${known}`);
    }
    return found;
  });
  const input = requireOption(options, "input");
  if (input !== "array" && input !== "generator") {
    throw new Error(`Invalid --input: expected array or generator, received ${input}`);
  }
  const length = requireInteger(options, "length");
  const runs = requireInteger(options, "runs");

  const records: MemoryRecord[] = [];
  for (const implementation of implementations) {
    records.push(await measureImplementation(implementation, input, length, runs));
  }
  const result: MemoryResult = {
    kind: "memory",
    runtime: runtimeName(),
    forcedGc: collectGarbage(),
    runs,
    records,
  };
  writeResult(options, result);
  // Abandoned runs leave tasks that never settle; exiting here does not wait for them.
  process.exit(0);
}

await main();
