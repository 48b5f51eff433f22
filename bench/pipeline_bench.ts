// Per-item cost of a three-stage no-op Pipeline, against the same work done with AsyncExecutor.map
// and with a hand-written chain of worker loops.
//
// Run it with either runtime from the repository root:
//
//   deno run -A bench/pipeline_bench.ts [--quick]
//   bun run bench/pipeline_bench.ts [--quick]
//
// Every case runs once to warm up and then 5 times on 200,000 items. The table shows the median,
// the minimum and the maximum in nanoseconds per item. `--quick` runs 20,000 items once, as a smoke
// check. The goal is a pipeline that costs at most 3.5 times one executor.map pass.

import process from "node:process";
import { AsyncExecutor, Pipeline, Stage } from "@antflow/antflow";

const quick = process.argv.includes("--quick");
const ITEMS = quick ? 20_000 : 200_000;
const RUNS = quick ? 1 : 5;
const WORKERS = 8;
const STAGES = 3;
const GOAL_RATIO = 3.5;

// An async no-op on purpose: every case pays for a task that returns a promise.
// deno-lint-ignore require-await
async function noop(x: number): Promise<number> {
  return x;
}

function inputs(): number[] {
  return Array.from({ length: ITEMS }, (_, i) => i);
}

function check(values: readonly number[]): void {
  if (values.length !== ITEMS || values[ITEMS - 1] !== ITEMS - 1) {
    throw new Error(`The benchmark produced ${values.length} results instead of ${ITEMS}`);
  }
}

async function pipelinePass(): Promise<void> {
  const stage = (name: string) => new Stage({ name, workers: WORKERS, tasks: [noop] });
  const pipeline = new Pipeline({ stages: [stage("first"), stage("second"), stage("third")] });
  const results = await pipeline.run(inputs());
  check(results.map((result) => result.ok ? result.value : -1));
}

async function executorPasses(passes: number): Promise<void> {
  await using executor = new AsyncExecutor({ maxWorkers: WORKERS });
  let values = inputs();
  for (let pass = 0; pass < passes; pass++) values = await executor.map(noop, values);
  check(values);
}

/** A list of ready item indices that stage workers take from, in order. */
class IndexQueue {
  readonly #indices: number[] = [];
  #head = 0;
  #closed = false;
  #waiters: (() => void)[] = [];

  push(index: number): void {
    this.#indices.push(index);
    this.#waiters.shift()?.();
  }

  close(): void {
    this.#closed = true;
    for (const wake of this.#waiters) wake();
    this.#waiters = [];
  }

  async take(): Promise<number | undefined> {
    while (true) {
      if (this.#head < this.#indices.length) return this.#indices[this.#head++];
      if (this.#closed) return undefined;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }
}

/** Runs three stages of eight worker loops each, where stage k takes what stage k - 1 finished. */
async function handChain(): Promise<void> {
  const values = inputs();
  const queues = Array.from({ length: STAGES + 1 }, () => new IndexQueue());
  for (let i = 0; i < ITEMS; i++) queues[0]?.push(i);
  queues[0]?.close();

  const stages = Array.from({ length: STAGES }, async (_, k) => {
    const from = queues[k] as IndexQueue;
    const to = queues[k + 1] as IndexQueue;
    const worker = async () => {
      for (let i = await from.take(); i !== undefined; i = await from.take()) {
        values[i] = await noop(values[i] as number);
        to.push(i);
      }
    };
    await Promise.all(Array.from({ length: WORKERS }, worker));
    to.close();
  });
  await Promise.all(stages);
  check(values);
}

interface Row {
  name: string;
  nsPerItem: number[];
}

async function measure(name: string, body: () => Promise<void>): Promise<Row> {
  await body();
  const nsPerItem: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const start = performance.now();
    await body();
    nsPerItem.push(((performance.now() - start) * 1e6) / ITEMS);
  }
  return { name, nsPerItem };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? sorted[middle] as number
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

const runtime = "Deno" in globalThis
  ? `Deno ${(globalThis as unknown as { Deno: { version: { deno: string } } }).Deno.version.deno}`
  : `Bun ${process.versions.bun}`;

const rows = [
  await measure("Pipeline, 3 stages of 8 workers", pipelinePass),
  await measure("executor.map, 3 chained passes", () => executorPasses(STAGES)),
  await measure("hand-written chain, 3 x 8 loops", handChain),
  await measure("executor.map, 1 pass", () => executorPasses(1)),
];

console.log(`${runtime}, ${ITEMS} items, median of ${RUNS} run(s) after one warm-up\n`);
console.log("| case | median ns/item | min | max |");
console.log("| --- | ---: | ---: | ---: |");
for (const row of rows) {
  const cells = [median(row.nsPerItem), Math.min(...row.nsPerItem), Math.max(...row.nsPerItem)]
    .map((ns) => ns.toFixed(0));
  console.log(`| ${row.name} | ${cells.join(" | ")} |`);
}

const pipelineMedian = median(rows[0]?.nsPerItem ?? []);
const singleMedian = median(rows[3]?.nsPerItem ?? []);
const ratio = pipelineMedian / singleMedian;
console.log(
  `\nPipeline / one executor.map pass: ${ratio.toFixed(2)}x ` +
    `(goal <= ${GOAL_RATIO}x: ${ratio <= GOAL_RATIO ? "met" : "not met"})`,
);
