// The overhead and timer-bound cases of the benchmark suite: for each case, the hand-written floor
// and every implementation that does the same work. Each implementation runs the task on every
// input at concurrency `c` and resolves with the sum of the outputs, which the runner checks.

import pMap, { pMapIterable } from "p-map";
import { PromisePool } from "@supercharge/promise-pool";
import pLimit from "p-limit";
import PQueue from "p-queue";
import fastq from "fastq";
import { Sema } from "async-sema";
import Bottleneck from "bottleneck";
import { AsyncExecutor, Pipeline, Semaphore, Stage } from "@antflow/antflow";

/** One way to do a case's work. */
export interface Implementation {
  /** The row label, such as `p-map`. */
  readonly name: string;
  /** The package, or `floor` for the hand-written loop; charts draw one line per library. */
  readonly library: string;
  /** Runs the task on every input with at most `c` tasks at once; resolves with their sum. */
  run(inputs: number[], c: number): Promise<number>;
}

/** A case: what one task does, and the implementations compared on it. The first is the floor. */
export interface OverheadCase {
  readonly name: string;
  readonly title: string;
  readonly implementations: readonly Implementation[];
}

type Task = (input: number) => Promise<number>;

// The cheapest async task: it settles without awaiting anything, so the time measured is the
// library's own cost per task.
// deno-lint-ignore require-await
const noop: Task = async (x) => x;

// A task that waits for one turn of the timer queue, as real I/O-bound work waits for an event.
const afterTimer: Task = (x) => new Promise((resolve) => setTimeout(() => resolve(x), 0));

function sum(values: readonly number[]): number {
  let total = 0;
  for (const value of values) total += value;
  return total;
}

// The floor: `c` async loops that take the next index from a shared counter and store each
// output, the least work any limiter can do.
async function workerLoop(inputs: number[], c: number, task: Task): Promise<number> {
  const outputs = new Array<number>(inputs.length);
  let next = 0;
  const worker = async () => {
    while (next < inputs.length) {
      const index = next++;
      outputs[index] = await task(inputs[index] as number);
    }
  };
  await Promise.all(Array.from({ length: Math.min(c, inputs.length) }, worker));
  return sum(outputs);
}

// The streaming floor: the same loops, adding each output to the total as it arrives.
async function summingWorkerLoop(inputs: number[], c: number, task: Task): Promise<number> {
  let next = 0;
  let total = 0;
  const worker = async () => {
    while (next < inputs.length) {
      // The await comes first: `total += await ...` would read `total` before the task ran.
      const value = await task(inputs[next++] as number);
      total += value;
    }
  };
  await Promise.all(Array.from({ length: Math.min(c, inputs.length) }, worker));
  return total;
}

async function sumStream(stream: AsyncIterable<number>): Promise<number> {
  let total = 0;
  for await (const value of stream) total += value;
  return total;
}

async function executorMap(inputs: number[], c: number, task: Task): Promise<number> {
  await using executor = new AsyncExecutor({ maxWorkers: c });
  return sum(await executor.map(task, inputs));
}

async function executorSubmit(inputs: number[], c: number, task: Task): Promise<number> {
  await using executor = new AsyncExecutor({ maxWorkers: c });
  return sum(await Promise.all(inputs.map((input) => executor.submit(task, input))));
}

async function pMapAwait(inputs: number[], c: number, task: Task): Promise<number> {
  return sum(await pMap(inputs, task, { concurrency: c }));
}

async function promisePool(inputs: number[], c: number, task: Task): Promise<number> {
  const { results } = await PromisePool.withConcurrency(c).for(inputs).process(task);
  return sum(results);
}

async function pLimitCalls(inputs: number[], c: number, task: Task): Promise<number> {
  const limit = pLimit(c);
  return sum(await Promise.all(inputs.map((input) => limit(task, input))));
}

async function pQueueAdd(inputs: number[], c: number, task: Task): Promise<number> {
  const queue = new PQueue({ concurrency: c });
  return sum(await Promise.all(inputs.map((input) => queue.add(() => task(input)))));
}

async function fastqPush(inputs: number[], c: number, task: Task): Promise<number> {
  const queue = fastq.promise(task, c);
  return sum(await Promise.all(inputs.map((input) => queue.push(input))));
}

/** An unbounded FIFO of values between two stages of the hand-written pipeline. */
class Channel {
  readonly #values: number[] = [];
  #head = 0;
  #closed = false;
  readonly #takers: ((value: number | undefined) => void)[] = [];

  put(value: number): void {
    const taker = this.#takers.shift();
    if (taker === undefined) this.#values.push(value);
    else taker(value);
  }

  close(): void {
    this.#closed = true;
    for (const taker of this.#takers.splice(0)) taker(undefined);
  }

  /** Resolves with the next value, or with `undefined` once the channel is closed and empty. */
  take(): number | undefined | Promise<number | undefined> {
    if (this.#head < this.#values.length) return this.#values[this.#head++];
    if (this.#closed) return undefined;
    return new Promise((resolve) => this.#takers.push(resolve));
  }
}

const STAGES = 3;

// The pipeline floor: three stages of `c` loops each, joined by unbounded channels.
async function handPipeline(inputs: number[], c: number, task: Task): Promise<number> {
  const channels = Array.from({ length: STAGES + 1 }, () => new Channel());
  const first = channels[0] as Channel;
  for (const input of inputs) first.put(input);
  first.close();

  const stages = Array.from({ length: STAGES }, async (_, k) => {
    const from = channels[k] as Channel;
    const to = channels[k + 1] as Channel;
    const worker = async () => {
      for (let value = await from.take(); value !== undefined; value = await from.take()) {
        to.put(await task(value));
      }
    };
    await Promise.all(Array.from({ length: c }, worker));
    to.close();
  });

  let total = 0;
  const last = channels[STAGES] as Channel;
  const drain = (async () => {
    for (let value = await last.take(); value !== undefined; value = await last.take()) {
      total += value;
    }
  })();
  await Promise.all([...stages, drain]);
  return total;
}

async function antflowPipeline(
  inputs: number[],
  c: number,
  task: Task,
  stages = STAGES,
): Promise<number> {
  const stageList = Array.from(
    { length: stages },
    (_, k) => new Stage({ name: `stage${k}`, workers: c, tasks: [task] }),
  ) as [Stage<number, number>, ...Stage<number, number>[]];
  const results = await new Pipeline({ stages: stageList }).run(inputs);
  let total = 0;
  for (const result of results) {
    if (!result.ok) throw new Error("A pipeline item failed");
    total += result.value as number;
  }
  return total;
}

async function chainedExecutorMaps(inputs: number[], c: number, task: Task): Promise<number> {
  await using first = new AsyncExecutor({ maxWorkers: c });
  await using second = new AsyncExecutor({ maxWorkers: c });
  await using third = new AsyncExecutor({ maxWorkers: c });
  return await sumStream(third.map(task, second.map(task, first.map(task, inputs))));
}

function chainedPMapIterable(inputs: number[], c: number, task: Task): Promise<number> {
  const options = { concurrency: c };
  return sumStream(
    pMapIterable(pMapIterable(pMapIterable(inputs, task, options), task, options), task, options),
  );
}

async function chainedPLimit(inputs: number[], c: number, task: Task): Promise<number> {
  const [a, b, d] = [pLimit(c), pLimit(c), pLimit(c)];
  return sum(
    await Promise.all(
      inputs.map((input) =>
        a(task, input).then((value) => b(task, value)).then((value) => d(task, value))
      ),
    ),
  );
}

async function chainedFastq(inputs: number[], c: number, task: Task): Promise<number> {
  const [a, b, d] = [fastq.promise(task, c), fastq.promise(task, c), fastq.promise(task, c)];
  return sum(
    await Promise.all(
      inputs.map((input) =>
        a.push(input).then((value) => b.push(value)).then((value) => d.push(value))
      ),
    ),
  );
}

// Semaphore cases: every input starts at once as its own async function that takes a permit,
// runs the task and gives the permit back.

// The semaphore floor: a counter and a FIFO of waiting resolvers that hands a freed unit straight
// to the oldest waiter, with no weights, no checks and no abort support.
async function counterAndQueue(inputs: number[], c: number, task: Task): Promise<number> {
  let free = c;
  const waiting: (() => void)[] = [];
  let head = 0;
  const guarded = async (input: number) => {
    if (free > 0) free--;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    try {
      return await task(input);
    } finally {
      if (head < waiting.length) (waiting[head++] as () => void)();
      else free++;
    }
  };
  return sum(await Promise.all(inputs.map(guarded)));
}

async function antflowSemaphore(inputs: number[], c: number, task: Task): Promise<number> {
  const semaphore = new Semaphore(c);
  const guarded = async (input: number) => {
    using _permit = await semaphore.acquire();
    return await task(input);
  };
  return sum(await Promise.all(inputs.map(guarded)));
}

async function asyncSema(inputs: number[], c: number, task: Task): Promise<number> {
  const sema = new Sema(c);
  const guarded = async (input: number) => {
    await sema.acquire();
    try {
      return await task(input);
    } finally {
      sema.release();
    }
  };
  return sum(await Promise.all(inputs.map(guarded)));
}

async function bottleneck(inputs: number[], c: number, task: Task): Promise<number> {
  const limiter = new Bottleneck({ maxConcurrent: c });
  return sum(await Promise.all(inputs.map((input) => limiter.schedule(task, input))));
}

// The semaphore cases' task: the critical section yields once, so waiters pile up behind it.
const criticalSection: Task = async (x) => {
  await Promise.resolve();
  return x;
};

function implementation(
  name: string,
  library: string,
  body: (inputs: number[], c: number, task: Task) => Promise<number>,
  task: Task,
): Implementation {
  return { name, library, run: (inputs, c) => body(inputs, c, task) };
}

/** The overhead cases, by name. */
export const overheadCases: readonly OverheadCase[] = [
  {
    name: "map-await",
    title: "await executor.map (collect every output)",
    implementations: [
      implementation("worker loop (floor)", "floor", workerLoop, noop),
      implementation("antflow await executor.map", "antflow", executorMap, noop),
      implementation("p-map await pMap", "p-map", pMapAwait, noop),
      implementation("promise-pool process", "promise-pool", promisePool, noop),
      implementation(
        "p-limit limit.map",
        "p-limit",
        async (inputs, c, task) => sum(await pLimit(c).map(inputs, task)),
        noop,
      ),
    ],
  },
  {
    name: "map-for-await",
    title: "for await over executor.map (stream the outputs)",
    implementations: [
      implementation("worker loop (floor)", "floor", summingWorkerLoop, noop),
      implementation(
        "antflow for await executor.map",
        "antflow",
        async (inputs, c, task) => {
          await using executor = new AsyncExecutor({ maxWorkers: c });
          return await sumStream(executor.map(task, inputs));
        },
        noop,
      ),
      implementation(
        "antflow for await mapUnordered",
        "antflow unordered",
        async (inputs, c, task) => {
          await using executor = new AsyncExecutor({ maxWorkers: c });
          return await sumStream(executor.mapUnordered(task, inputs));
        },
        noop,
      ),
      implementation(
        "p-map for await pMapIterable",
        "p-map",
        (inputs, c, task) => sumStream(pMapIterable(inputs, task, { concurrency: c })),
        noop,
      ),
      implementation(
        "p-map pMapIterable preserveOrder: false",
        "p-map unordered",
        (inputs, c, task) =>
          sumStream(pMapIterable(inputs, task, { concurrency: c, preserveOrder: false })),
        noop,
      ),
    ],
  },
  {
    name: "submit",
    title: "executor.submit per input (every call queued up front)",
    implementations: [
      implementation("worker loop (floor)", "floor", workerLoop, noop),
      implementation("antflow executor.submit", "antflow", executorSubmit, noop),
      implementation("p-limit limit(fn)", "p-limit", pLimitCalls, noop),
      implementation("p-queue add", "p-queue", pQueueAdd, noop),
      implementation("fastq push", "fastq", fastqPush, noop),
    ],
  },
  {
    name: "pipeline",
    title: "3-stage pipeline, C workers per stage (ns per item)",
    implementations: [
      implementation("3 chained worker loops (floor)", "floor", handPipeline, noop),
      implementation("antflow Pipeline.run", "antflow", antflowPipeline, noop),
      implementation("antflow 3 chained executor.map", "antflow map", chainedExecutorMaps, noop),
      implementation("p-map 3 chained pMapIterable", "p-map", chainedPMapIterable, noop),
      implementation("p-limit 3 chained limiters", "p-limit", chainedPLimit, noop),
      implementation("fastq 3 chained queues", "fastq", chainedFastq, noop),
    ],
  },
  {
    name: "semaphore",
    title: "semaphore: every input waits for a permit (capacity C)",
    implementations: [
      implementation("counter + FIFO (floor)", "floor", counterAndQueue, criticalSection),
      implementation("antflow Semaphore", "antflow", antflowSemaphore, criticalSection),
      implementation("async-sema Sema", "async-sema", asyncSema, criticalSection),
      implementation("p-limit limit(fn)", "p-limit", pLimitCalls, criticalSection),
    ],
  },
];

/** The timer-bound case: every task waits for a 0 ms timer, so the timer, not the limiter, sets the pace. */
export const timerCase: OverheadCase = {
  name: "timer",
  title: "timer-bound: each task awaits a 0 ms timer",
  implementations: [
    implementation("worker loop (floor)", "floor", workerLoop, afterTimer),
    implementation("antflow await executor.map", "antflow", executorMap, afterTimer),
    implementation("antflow executor.submit", "antflow submit", executorSubmit, afterTimer),
    implementation(
      "antflow 1-stage Pipeline.run",
      "antflow pipeline",
      (inputs, c, task) => antflowPipeline(inputs, c, task, 1),
      afterTimer,
    ),
    implementation("antflow Semaphore", "antflow semaphore", antflowSemaphore, afterTimer),
    implementation("p-map await pMap", "p-map", pMapAwait, afterTimer),
    implementation("promise-pool process", "promise-pool", promisePool, afterTimer),
    implementation("p-limit limit(fn)", "p-limit", pLimitCalls, afterTimer),
    implementation("p-queue add", "p-queue", pQueueAdd, afterTimer),
    implementation("fastq push", "fastq", fastqPush, afterTimer),
    implementation("async-sema Sema", "async-sema", asyncSema, afterTimer),
    implementation("bottleneck schedule", "bottleneck", bottleneck, afterTimer),
  ],
};

/** Returns the overhead or timer-bound case named `name`, or throws for an unknown name. */
export function findCase(name: string): OverheadCase {
  const cases = [...overheadCases, timerCase];
  const found = cases.find((candidate) => candidate.name === name);
  if (found === undefined) {
    const known = cases.map((candidate) => candidate.name).join(", ");
    throw new Error(`Unknown case ${name}: expected one of ${known}`);
  }
  return found;
}
