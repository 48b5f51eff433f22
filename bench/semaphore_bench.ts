// Cost of one Semaphore acquire and release in antflow, against async-sema's Sema and a bare
// counter with no queue, no checks and no permit objects.
//
// Run from the repository root:
//   deno run -A [--v8-flags=--expose-gc] bench/semaphore_bench.ts [--quick]
//   bun run bench/semaphore_bench.ts [--quick]
//
// Cases, all measured in one run:
// - uncontended: one loop of N sequential `await acquire()` + `release()` at capacity 1, so a
//   permit is always free. The floor is a counter check around `await Promise.resolve()`.
// - contended: N tasks started together at capacity 1 and 8, each doing acquire, one
//   `await Promise.resolve()`, release. The floor is the same counter plus an array of waiting
//   resolvers, a FIFO hand-off with no checks, no weights and no abort support.
// Each implementation runs once to warm up, then the implementations of a case take turns for RUNS
// timed rounds, with a forced GC before each timed run where the runtime offers one (Bun always,
// Deno with `--v8-flags=--expose-gc`). The table shows nanoseconds per operation (median, min, max
// over the timed runs) and the median as a ratio to the floor of its case. `--quick` uses
// N = 10,000 and one timed run, for a smoke test only.

import process from "node:process";
import { Sema } from "async-sema";
import { Semaphore } from "@antflow/antflow";

const quick = process.argv.includes("--quick");
const UNCONTENDED_N = quick ? 10_000 : 1_000_000;
const CONTENDED_N = quick ? 10_000 : 100_000;
const RUNS = quick ? 1 : 5;

interface Row {
  caseName: string;
  implementation: string;
  floor: boolean;
  nsPerOp: number[];
}

interface Candidate {
  implementation: string;
  floor: boolean;
  body: () => Promise<void>;
}

const runtime = globalThis as {
  Deno?: { version: { deno: string } };
  Bun?: { version: string; gc(force: boolean): void };
  gc?: () => void;
};

// Collects garbage left by the previous run, so it is not charged to the next one.
function collectGarbage(): void {
  if (runtime.Bun !== undefined) runtime.Bun.gc(true);
  else runtime.gc?.();
}

// Warms up every candidate once, then times RUNS rounds in which each candidate runs once, and
// returns one row per candidate with the nanoseconds per operation of each timed run.
async function measure(
  caseName: string,
  operations: number,
  candidates: Candidate[],
): Promise<Row[]> {
  for (const candidate of candidates) await candidate.body();
  const rows = candidates.map(({ implementation, floor }) => ({
    caseName,
    implementation,
    floor,
    nsPerOp: [] as number[],
  }));
  for (let run = 0; run < RUNS; run++) {
    for (const [index, candidate] of candidates.entries()) {
      collectGarbage();
      const start = performance.now();
      await candidate.body();
      rows[index]?.nsPerOp.push(((performance.now() - start) * 1e6) / operations);
    }
  }
  return rows;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? sorted[middle] as number
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

async function uncontendedAntflow(): Promise<void> {
  const semaphore = new Semaphore(1);
  for (let i = 0; i < UNCONTENDED_N; i++) {
    const permit = await semaphore.acquire();
    permit.release();
  }
}

async function uncontendedAsyncSema(): Promise<void> {
  const sema = new Sema(1);
  for (let i = 0; i < UNCONTENDED_N; i++) {
    await sema.acquire();
    sema.release();
  }
}

async function uncontendedCounter(): Promise<void> {
  const max = 1;
  let count = 0;
  for (let i = 0; i < UNCONTENDED_N; i++) {
    if (count < max) {
      count++;
      await Promise.resolve();
      count--;
    }
  }
}

async function contendedAntflow(capacity: number): Promise<void> {
  const semaphore = new Semaphore(capacity);
  const task = async () => {
    const permit = await semaphore.acquire();
    await Promise.resolve();
    permit.release();
  };
  await Promise.all(Array.from({ length: CONTENDED_N }, task));
}

async function contendedAsyncSema(capacity: number): Promise<void> {
  const sema = new Sema(capacity);
  const task = async () => {
    await sema.acquire();
    await Promise.resolve();
    sema.release();
  };
  await Promise.all(Array.from({ length: CONTENDED_N }, task));
}

async function contendedCounter(capacity: number): Promise<void> {
  let count = 0;
  const waiting: (() => void)[] = [];
  let next = 0;
  const task = async () => {
    if (count < capacity) count++;
    else await new Promise<void>((resolve) => waiting.push(resolve));
    await Promise.resolve();
    // Hands the unit straight to the oldest waiter, or frees it when no task waits.
    if (next < waiting.length) (waiting[next++] as () => void)();
    else count--;
  };
  await Promise.all(Array.from({ length: CONTENDED_N }, task));
}

function runtimeName(): string {
  if (runtime.Bun !== undefined) return `Bun ${runtime.Bun.version}`;
  if (runtime.Deno !== undefined) return `Deno ${runtime.Deno.version.deno}`;
  return `Node.js ${process.version}`;
}

function printTable(rows: Row[]): void {
  const header = ["case", "implementation", "median ns/op", "min", "max", "x floor"];
  const lines = rows.map((row) => {
    const floor = rows.find((other) => other.caseName === row.caseName && other.floor);
    const value = median(row.nsPerOp);
    const ratio = floor === undefined ? "" : (value / median(floor.nsPerOp)).toFixed(2);
    return [
      row.caseName,
      row.implementation,
      value.toFixed(1),
      Math.min(...row.nsPerOp).toFixed(1),
      Math.max(...row.nsPerOp).toFixed(1),
      ratio,
    ];
  });
  const widths = header.map((title, column) =>
    Math.max(title.length, ...lines.map((line) => (line[column] as string).length))
  );
  const format = (cells: string[]) =>
    cells.map((cell, column) =>
      column < 2 ? cell.padEnd(widths[column] as number) : cell.padStart(widths[column] as number)
    ).join("  ");
  console.log(format(header));
  console.log(widths.map((width) => "-".repeat(width)).join("  "));
  for (const line of lines) console.log(format(line));
}

async function main(): Promise<void> {
  console.log(
    `${runtimeName()}: uncontended N = ${UNCONTENDED_N}, contended N = ${CONTENDED_N}, ` +
      `${RUNS} timed runs after one warm-up`,
  );
  const gcNote = runtime.Bun !== undefined || runtime.gc !== undefined ? "on" : "off";
  console.log(`Forced GC between runs: ${gcNote}\n`);

  const uncontended = "uncontended";
  const rows: Row[] = await measure(uncontended, UNCONTENDED_N, [
    { implementation: "bare counter (floor)", floor: true, body: uncontendedCounter },
    { implementation: "antflow Semaphore", floor: false, body: uncontendedAntflow },
    { implementation: "async-sema Sema", floor: false, body: uncontendedAsyncSema },
  ]);

  for (const capacity of [1, 8]) {
    rows.push(
      ...await measure(`contended, capacity ${capacity}`, CONTENDED_N, [
        {
          implementation: "counter + queue (floor)",
          floor: true,
          body: () => contendedCounter(capacity),
        },
        {
          implementation: "antflow Semaphore",
          floor: false,
          body: () => contendedAntflow(capacity),
        },
        {
          implementation: "async-sema Sema",
          floor: false,
          body: () => contendedAsyncSema(capacity),
        },
      ]),
    );
  }

  printTable(rows);

  const counter = rows.find((row) => row.caseName === uncontended && row.floor);
  const antflow = rows.find((row) =>
    row.caseName === uncontended && row.implementation === "antflow Semaphore"
  );
  if (counter !== undefined && antflow !== undefined) {
    const ratio = median(antflow.nsPerOp) / median(counter.nsPerOp);
    const verdict = ratio <= 2 ? "met" : "missed";
    console.log(
      `\nUncontended antflow / bare counter: ${ratio.toFixed(2)} (goal <= 2, ${verdict})`,
    );
  }
}

await main();
