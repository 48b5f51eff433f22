// Times overhead cases of the benchmark suite at one or more concurrencies, under the runtime
// that runs this file. suite.ts starts it once per case and concurrency (all of them in one
// process with --quick); it can also run alone:
//
//   deno run -A --v8-flags=--expose-gc bench/suite_overhead.ts --case submit --concurrency 8 \
//     --tasks 50000 --runs 5 --warmups 1 --result-file /tmp/submit.json
//   bun run bench/suite_overhead.ts --case submit ...
//
// `--case` and `--concurrency` take comma-separated lists. Every implementation of a case first
// runs `--warmups` times untimed. Then come `--runs` rounds; in each round every implementation
// runs once, starting with a different one each round, after a forced garbage collection. Each
// run's sum of outputs is checked, and the result file contains the nanoseconds per task of
// every timed run.

import process from "node:process";
import {
  checkSum,
  collectGarbage,
  expectedSum,
  parseArguments,
  requireInteger,
  requireOption,
  runtimeName,
  writeResult,
} from "./_suite_common.ts";
import { findCase, type Implementation } from "./_suite_overhead_cases.ts";

/** The timings of one implementation at one concurrency. */
export interface OverheadRow {
  implementation: string;
  library: string;
  floor: boolean;
  concurrency: number;
  /** Nanoseconds per task of each timed run, in run order. */
  samples: number[];
}

/** The rows of one case. */
export interface OverheadCaseResult {
  case: string;
  title: string;
  rows: OverheadRow[];
}

/** The content of `--result-file`. */
export interface OverheadResult {
  kind: "overhead";
  runtime: string;
  forcedGc: boolean;
  tasks: number;
  runs: number;
  warmups: number;
  cases: OverheadCaseResult[];
}

async function runChecked(implementation: Implementation, inputs: number[], c: number) {
  const total = await implementation.run(inputs, c);
  checkSum(implementation.name, total, expectedSum(inputs.length));
}

async function measure(
  implementations: readonly Implementation[],
  inputs: number[],
  c: number,
  runs: number,
  warmups: number,
): Promise<OverheadRow[]> {
  for (let warmup = 0; warmup < warmups; warmup++) {
    for (const implementation of implementations) await runChecked(implementation, inputs, c);
  }

  const rows = implementations.map((implementation, index): OverheadRow => ({
    implementation: implementation.name,
    library: implementation.library,
    floor: index === 0,
    concurrency: c,
    samples: [],
  }));
  for (let run = 0; run < runs; run++) {
    for (let offset = 0; offset < implementations.length; offset++) {
      const index = (run + offset) % implementations.length;
      const implementation = implementations[index] as Implementation;
      collectGarbage();
      const start = performance.now();
      const total = await implementation.run(inputs, c);
      const elapsedMs = performance.now() - start;
      checkSum(implementation.name, total, expectedSum(inputs.length));
      rows[index]?.samples.push((elapsedMs * 1e6) / inputs.length);
    }
  }
  return rows;
}

async function main(): Promise<void> {
  const options = parseArguments(process.argv.slice(2));
  const caseNames = requireOption(options, "case").split(",");
  const concurrencies = requireOption(options, "concurrency").split(",").map(Number);
  const tasks = requireInteger(options, "tasks");
  const runs = requireInteger(options, "runs");
  const warmups = Number(options.get("warmups") ?? "1");

  const inputs = Array.from({ length: tasks }, (_, i) => i);
  const cases: OverheadCaseResult[] = [];
  for (const caseName of caseNames) {
    const overheadCase = findCase(caseName);
    const rows: OverheadRow[] = [];
    for (const c of concurrencies) {
      rows.push(...await measure(overheadCase.implementations, inputs, c, runs, warmups));
    }
    cases.push({ case: overheadCase.name, title: overheadCase.title, rows });
  }

  const result: OverheadResult = {
    kind: "overhead",
    runtime: runtimeName(),
    forcedGc: collectGarbage(),
    tasks,
    runs,
    warmups,
    cases,
  };
  writeResult(options, result);
}

await main();
