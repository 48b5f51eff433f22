/**
 * The benchmark suite: measures antflow against its peers and a hand-written floor, under Deno
 * and then Bun, and writes tables and SVG charts.
 *
 * Run from the repository root:
 *
 *   deno task bench          # full run, 11 minutes on 2 busy cores, which updates docs/
 *   deno task bench:quick    # smoke test in under a minute, written to a temporary directory
 *
 * or directly: `deno run -A bench/suite.ts [--quick] [--out DIR] [--runtimes deno,bun]
 * [--only overhead,timer,memory]`. `--render FILE` redraws the tables and charts from the
 * `bench-results.json` of an earlier run, without measuring.
 *
 * Every case runs in a subprocess of the runtime under test (`./node_modules/.bin/deno run -A
 * --v8-flags=--expose-gc` or `./node_modules/.bin/bun run`), which writes its samples as JSON:
 * `suite_overhead.ts` for the overhead and timer-bound cases, `suite_memory.ts` for memory. A
 * full run starts one process per case and concurrency, and one per memory implementation and
 * input, so no case inherits another's compiled code or heap. `--quick` runs few tasks once, in
 * one process per kind of case, to check that the suite works; its numbers mean nothing.
 *
 * A full run writes `bench-results.json`, `bench-deno.svg`, `bench-bun.svg` and
 * `bench-memory.svg` to `--out` (default `docs/`), and, when that is `docs/`, replaces the part
 * of `docs/benchmarks.md` between the `bench:generated` markers. The exit code is 0 when every
 * subprocess ran and every output sum was right, and 1 otherwise; noisy numbers do not fail it.
 *
 * @module
 */

import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, release, tmpdir, totalmem, type } from "node:os";
import { join, relative, resolve } from "node:path";
import process from "node:process";
import { parseArguments } from "./_suite_common.ts";
import {
  memoryFigure,
  overheadFigure,
  renderMarkdown,
  type RuntimeReport,
  type SuiteReport,
  type SuiteSettings,
} from "./_suite_report.ts";
import { overheadCases, timerCase } from "./_suite_overhead_cases.ts";
import type { OverheadCaseResult, OverheadResult } from "./suite_overhead.ts";
import type { MemoryResult } from "./suite_memory.ts";

const root = resolve(import.meta.dirname ?? ".", "..");
const PEERS = [
  "p-map",
  "@supercharge/promise-pool",
  "p-limit",
  "p-queue",
  "fastq",
  "async-sema",
  "bottleneck",
];
const PAGE = join(root, "docs", "benchmarks.md");
const BEGIN_MARKER = "<!-- bench:generated:begin -->";
const END_MARKER = "<!-- bench:generated:end -->";
/** A subprocess that runs longer than this is stopped and reported as failed. */
const SUBPROCESS_TIMEOUT_MS = 10 * 60 * 1000;

const STREAMING = ["floor", "antflow-stream", "p-map-iterable"];
const COLLECTING = ["antflow-await", "p-map-await", "promise-pool"];
const EAGER = ["antflow-submit", "p-limit", "p-queue", "fastq"];
const ALL_MEMORY = [...STREAMING, ...COLLECTING, ...EAGER];

// Eager queues hold 300 to 900 bytes per queued input (measured at 1M), so 10M inputs would need
// 3 to 9 GB. That is more than Deno's default V8 heap limit, and a minute or more per run. At 10M
// only the streaming implementations and antflow's collecting form run.
function settingsFor(quick: boolean): SuiteSettings {
  if (quick) {
    return {
      quick,
      tasks: 2_000,
      runs: 1,
      warmups: 1,
      concurrencies: [1, 8, 64, 1024],
      timerTasks: 256,
      timerConcurrency: 64,
      memoryConcurrency: 8,
      memoryInputs: [
        { input: "generator", length: 10_000, implementations: ALL_MEMORY },
        { input: "array", length: 20_000, implementations: ALL_MEMORY },
        { input: "generator", length: 20_000, implementations: ALL_MEMORY },
        { input: "generator", length: 100_000, implementations: [...STREAMING, "antflow-await"] },
      ],
    };
  }
  return {
    quick,
    tasks: 50_000,
    runs: 5,
    warmups: 1,
    concurrencies: [1, 8, 64, 1024],
    // bottleneck starts one job per timer turn (about 2 to 5 ms here), so 1,280 tasks cost it
    // seconds per run while the others finish 20 rounds of 64 in about 60 ms.
    timerTasks: 1_280,
    timerConcurrency: 64,
    memoryConcurrency: 8,
    memoryInputs: [
      { input: "generator", length: 100_000, implementations: ALL_MEMORY },
      { input: "array", length: 1_000_000, implementations: ALL_MEMORY },
      { input: "generator", length: 1_000_000, implementations: ALL_MEMORY },
      { input: "generator", length: 10_000_000, implementations: [...STREAMING, "antflow-await"] },
    ],
  };
}

interface Runtime {
  id: string;
  binary: string;
  /** The arguments before the script path. */
  prefix: string[];
}

const RUNTIMES: Runtime[] = [
  {
    id: "deno",
    binary: join(root, "node_modules", ".bin", "deno"),
    prefix: ["run", "-A", "--v8-flags=--expose-gc"],
  },
  { id: "bun", binary: join(root, "node_modules", ".bin", "bun"), prefix: ["run"] },
];

/** Runs a case file under `runtime`, and returns the JSON it wrote, or throws with its stderr. */
function runCase(
  runtime: Runtime,
  script: string,
  args: string[],
  resultFile: string,
): Promise<unknown> {
  rmSync(resultFile, { force: true });
  const argv = [...runtime.prefix, join("bench", script), ...args, "--result-file", resultFile];
  const child = spawn(runtime.binary, argv, {
    cwd: root,
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, NO_COLOR: "1" },
  });
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), SUBPROCESS_TIMEOUT_MS);
  return new Promise((resolvePromise, reject) => {
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code !== 0 || !existsSync(resultFile)) {
        const status = signal === null ? `exit code ${code}` : `signal ${signal}`;
        reject(new Error(`${status}: ${stderr.trim().split("\n").slice(-6).join(" / ")}`));
        return;
      }
      resolvePromise(JSON.parse(readFileSync(resultFile, "utf8")));
    });
  });
}

function readCpuModel(): string {
  try {
    const line = readFileSync("/proc/cpuinfo", "utf8").split("\n").find((text) =>
      text.startsWith("model name")
    );
    if (line !== undefined) return line.split(":")[1]?.trim() ?? "unknown CPU";
  } catch {
    // Not Linux: fall back to what node:os reports.
  }
  return cpus()[0]?.model ?? "unknown CPU";
}

function readVersion(packageName: string): string {
  const path = join(root, "node_modules", packageName, "package.json");
  return (JSON.parse(readFileSync(path, "utf8")) as { version: string }).version;
}

async function gitCommit(): Promise<string> {
  const output = (args: string[]) =>
    new Promise<string>((resolvePromise) => {
      const child = spawn("git", args, { cwd: root, stdio: ["ignore", "pipe", "ignore"] });
      let text = "";
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (chunk: string) => text += chunk);
      child.on("error", () => resolvePromise(""));
      child.on("close", () => resolvePromise(text.trim()));
    });
  const commit = await output(["rev-parse", "--short", "HEAD"]);
  if (commit === "") return "commit unknown";
  const dirty = await output(["status", "--porcelain", "--untracked-files=no"]);
  return `commit ${commit}${dirty === "" ? "" : " with uncommitted changes"}`;
}

/** One subprocess of the plan, with what to do with its result. */
interface Job {
  runtime: Runtime;
  label: string;
  script: string;
  args: string[];
  collect: (result: unknown, report: RuntimeReport) => void;
}

function mergeOverhead(target: OverheadCaseResult[], results: OverheadCaseResult[]): void {
  for (const result of results) {
    const existing = target.find((candidate) => candidate.case === result.case);
    if (existing === undefined) target.push({ ...result, rows: [...result.rows] });
    else existing.rows.push(...result.rows);
  }
}

function collectOverhead(result: unknown, report: RuntimeReport): void {
  const overhead = result as OverheadResult;
  report.name = overhead.runtime;
  report.forcedGc = overhead.forcedGc;
  const timer = overhead.cases.filter((entry) => entry.case === timerCase.name);
  const others = overhead.cases.filter((entry) => entry.case !== timerCase.name);
  mergeOverhead(report.overhead, others);
  if (timer.length > 0) {
    report.timer ??= { ...(timer[0] as OverheadCaseResult), rows: [] };
    report.timer.rows.push(...timer.flatMap((entry) => entry.rows));
  }
}

function collectMemory(result: unknown, report: RuntimeReport): void {
  const memory = result as MemoryResult;
  report.name = memory.runtime;
  report.forcedGc = memory.forcedGc;
  report.memory.push(...memory.records);
}

function planJobs(settings: SuiteSettings, runtimes: Runtime[], only: Set<string>): Job[] {
  const jobs: Job[] = [];
  const common = ["--runs", String(settings.runs), "--warmups", String(settings.warmups)];
  const overheadArgs = (caseNames: string[], concurrencies: readonly number[]) => [
    "--case",
    caseNames.join(","),
    "--concurrency",
    concurrencies.join(","),
    "--tasks",
    String(settings.tasks),
    ...common,
  ];
  for (const runtime of runtimes) {
    if (only.has("overhead")) {
      const names = overheadCases.map((entry) => entry.name);
      if (settings.quick) {
        jobs.push({
          runtime,
          label: `overhead: ${names.join(", ")}`,
          script: "suite_overhead.ts",
          args: overheadArgs(names, settings.concurrencies),
          collect: collectOverhead,
        });
      } else {
        for (const name of names) {
          for (const c of settings.concurrencies) {
            jobs.push({
              runtime,
              label: `overhead: ${name}, C = ${c}`,
              script: "suite_overhead.ts",
              args: overheadArgs([name], [c]),
              collect: collectOverhead,
            });
          }
        }
      }
    }
    if (only.has("timer")) {
      jobs.push({
        runtime,
        label: `timer-bound, C = ${settings.timerConcurrency}`,
        script: "suite_overhead.ts",
        args: [
          "--case",
          timerCase.name,
          "--concurrency",
          String(settings.timerConcurrency),
          "--tasks",
          String(settings.timerTasks),
          ...common,
        ],
        collect: collectOverhead,
      });
    }
    if (only.has("memory")) {
      for (const input of settings.memoryInputs) {
        // A fresh process per implementation gives each its own peak RSS; quick mode shares one.
        const groups = settings.quick
          ? [input.implementations]
          : input.implementations.map((id) => [id]);
        for (const group of groups) {
          jobs.push({
            runtime,
            label: `memory: ${input.input} ${input.length}, ${group.join(", ")}`,
            script: "suite_memory.ts",
            args: [
              "--implementations",
              group.join(","),
              "--input",
              input.input,
              "--length",
              String(input.length),
              "--runs",
              String(settings.runs),
            ],
            collect: collectMemory,
          });
        }
      }
    }
  }
  return jobs;
}

function checkMarkers(page: string): void {
  if (!page.includes(BEGIN_MARKER) || !page.includes(END_MARKER)) {
    throw new Error(`${PAGE} must contain the lines ${BEGIN_MARKER} and ${END_MARKER}`);
  }
}

// Formats written files the way `deno fmt --check` in CI expects them.
function formatFiles(paths: string[]): Promise<void> {
  const deno = RUNTIMES.find((runtime) => runtime.id === "deno") as Runtime;
  return new Promise((resolvePromise, reject) => {
    const child = spawn(deno.binary, ["fmt", "--quiet", ...paths], { cwd: root, stdio: "inherit" });
    child.on("error", reject);
    child.on(
      "close",
      (code) =>
        code === 0 ? resolvePromise() : reject(new Error(`deno fmt failed with exit code ${code}`)),
    );
  });
}

async function writeOutputs(report: SuiteReport, outDir: string): Promise<void> {
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, "bench-results.json"), JSON.stringify(report, null, 1) + "\n");
  for (const runtime of report.runtimes) {
    writeFileSync(join(outDir, `bench-${runtime.id}.svg`), overheadFigure(report, runtime));
  }
  writeFileSync(join(outDir, "bench-memory.svg"), memoryFigure(report));

  const generated = renderMarkdown(report);
  if (resolve(outDir) === resolve(root, "docs")) {
    const page = readFileSync(PAGE, "utf8");
    checkMarkers(page);
    const before = page.slice(0, page.indexOf(BEGIN_MARKER) + BEGIN_MARKER.length);
    const after = page.slice(page.indexOf(END_MARKER));
    writeFileSync(PAGE, `${before}\n\n${generated}\n${after}`);
    const written = ["bench-results.json", "bench-memory.svg"].concat(
      report.runtimes.map((runtime) => `bench-${runtime.id}.svg`),
    );
    await formatFiles([PAGE, ...written.map((name) => join(outDir, name))]);
  } else {
    writeFileSync(join(outDir, "benchmarks.md"), generated);
  }
}

async function main(): Promise<void> {
  const options = parseArguments(process.argv.slice(2));
  const rendered = options.get("render");
  if (rendered !== undefined) {
    // Redraws the tables and charts of an earlier run without measuring anything.
    const report = JSON.parse(readFileSync(rendered, "utf8")) as SuiteReport;
    await writeOutputs(report, resolve(options.get("out") ?? join(root, "docs")));
    return;
  }
  const quick = options.has("quick");
  const settings = settingsFor(quick);
  const outDir = resolve(
    options.get("out") ?? (quick ? join(tmpdir(), "antflow-bench-quick") : join(root, "docs")),
  );
  const runtimeIds = (options.get("runtimes") ?? "deno,bun").split(",");
  const runtimes = RUNTIMES.filter((runtime) => runtimeIds.includes(runtime.id));
  const only = new Set((options.get("only") ?? "overhead,timer,memory").split(","));
  for (const runtime of runtimes) {
    if (!existsSync(runtime.binary)) {
      throw new Error(`${runtime.binary} is missing; run npm ci first`);
    }
  }
  if (!quick && resolve(outDir) === resolve(root, "docs")) checkMarkers(readFileSync(PAGE, "utf8"));

  const startedAt = new Date();
  const loadBefore = loadavg();
  const scratch = join(tmpdir(), `antflow-bench-${process.pid}`);
  mkdirSync(scratch, { recursive: true });
  const reports = new Map<string, RuntimeReport>(runtimes.map((runtime) => [runtime.id, {
    id: runtime.id,
    name: runtime.id,
    forcedGc: false,
    overhead: [],
    timer: undefined,
    memory: [],
  }]));
  const failures: string[] = [];

  const jobs = planJobs(settings, runtimes, only);
  const shownOutDir = outDir.startsWith(root) ? relative(root, outDir) || "." : outDir;
  console.log(
    `antflow benchmark suite${quick ? " (quick)" : ""}: ${jobs.length} subprocesses; ` +
      `results go to ${shownOutDir}`,
  );
  for (const [index, job] of jobs.entries()) {
    const start = performance.now();
    const resultFile = join(scratch, `${index}.json`);
    const prefix = `[${index + 1}/${jobs.length}] ${job.runtime.id}: ${job.label}`;
    try {
      const result = await runCase(job.runtime, job.script, job.args, resultFile);
      job.collect(result, reports.get(job.runtime.id) as RuntimeReport);
      console.log(`${prefix} (${((performance.now() - start) / 1000).toFixed(1)} s)`);
    } catch (error) {
      const message = `${job.runtime.id}, ${job.label}: ${(error as Error).message}`;
      failures.push(message);
      console.error(`${prefix} FAILED: ${(error as Error).message}`);
    }
  }
  rmSync(scratch, { recursive: true, force: true });

  const report: SuiteReport = {
    startedAt: startedAt.toISOString(),
    elapsedSeconds: (Date.now() - startedAt.getTime()) / 1000,
    command: quick ? "deno task bench:quick" : "deno task bench",
    machine: {
      cpu: readCpuModel(),
      cores: cpus().length,
      memoryGiB: totalmem() / 2 ** 30,
      os: `${type()} ${release()}`,
      loadBefore,
      loadAfter: loadavg(),
    },
    antflow: {
      version: (JSON.parse(readFileSync(join(root, "deno.json"), "utf8")) as { version: string })
        .version,
      commit: await gitCommit(),
    },
    peers: PEERS.map((name) => ({ name, version: readVersion(name) })),
    settings,
    runtimes: [...reports.values()],
    failures,
  };
  await writeOutputs(report, outDir);

  console.log(`\n${renderMarkdown(report, `${shownOutDir}/`)}`);
  console.log(
    `Finished in ${(report.elapsedSeconds / 60).toFixed(1)} minutes; ` +
      `${failures.length} of ${jobs.length} subprocesses failed.`,
  );
  if (failures.length > 0) process.exitCode = 1;
}

await main();
