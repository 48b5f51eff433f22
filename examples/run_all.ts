// Runs every example under Deno and under Bun with the command its header comment gives, and exits
// with 1 if any run fails or an example's header lacks a command. The demo, enrich_api.ts, runs on
// its first 60 rows. `deno task examples` runs this script.
//
//   deno run -A examples/run_all.ts
//   bun run examples/run_all.ts

import process from "node:process";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AsyncExecutor } from "@antflow/antflow";

const EXAMPLES = fileURLToPath(new URL(".", import.meta.url));
const ROOT = join(EXAMPLES, "..");
const SCRATCH = mkdtempSync(join(tmpdir(), "antflow-examples-"));

/** Arguments added after the documented command, so that a run stays short. */
const EXTRA_ARGS: Readonly<Record<string, (runtime: string) => string[]>> = {
  "enrich_api.ts": (runtime) => [
    "--limit",
    "60",
    "--no-progress",
    "--output",
    join(SCRATCH, `enrich_api-${runtime}.jsonl`),
  ],
};

interface Run {
  readonly file: string;
  readonly runtime: "deno" | "bun";
  readonly args: string[];
}

interface Outcome {
  readonly run: Run;
  readonly code: number | null;
  readonly output: string;
  readonly seconds: number;
}

// The runtime that runs this script is used as it is; the other one comes from node_modules/.bin
// when it is installed there, or from PATH.
function binary(runtime: "deno" | "bun"): string {
  const current = "Deno" in globalThis ? "deno" : "bun";
  if (runtime === current) return process.execPath;
  const local = join(ROOT, "node_modules", ".bin", runtime);
  return existsSync(local) ? local : runtime;
}

// Reads the flags of the `<runtime> run [flags] examples/<file>` line of an example's header.
function documentedFlags(file: string, runtime: "deno" | "bun"): string[] | undefined {
  const source = readFileSync(join(EXAMPLES, file), "utf8");
  const pattern = new RegExp(
    `^//\\s+${runtime} run ((?:-\\S+ )*)examples/${file.replaceAll(".", "\\.")}\\b`,
    "m",
  );
  const match = pattern.exec(source);
  return match === null ? undefined : (match[1] as string).split(" ").filter((flag) => flag);
}

function execute(run: Run): Promise<Outcome> {
  const started = performance.now();
  return new Promise((resolve) => {
    const child = spawn(binary(run.runtime), run.args, { cwd: ROOT });
    let output = "";
    child.stdout.on("data", (chunk) => output += chunk);
    child.stderr.on("data", (chunk) => output += chunk);
    child.on("error", (error) => output += `${error}\n`);
    child.on("close", (code) => {
      resolve({ run, code, output, seconds: (performance.now() - started) / 1000 });
    });
  });
}

const files = readdirSync(EXAMPLES)
  .filter((file) => file.endsWith(".ts") && !file.startsWith("_") && file !== "run_all.ts")
  .sort();
const runs: Run[] = [];
const problems: string[] = [];
for (const file of files) {
  for (const runtime of ["deno", "bun"] as const) {
    const flags = documentedFlags(file, runtime);
    if (flags === undefined) {
      problems.push(`examples/${file} has no "${runtime} run ... examples/${file}" header line`);
      continue;
    }
    const extra = EXTRA_ARGS[file]?.(runtime) ?? [];
    runs.push({ file, runtime, args: ["run", ...flags, `examples/${file}`, ...extra] });
  }
}

let failed = 0;
try {
  await using executor = new AsyncExecutor({ maxWorkers: 4 });
  for await (const outcome of executor.map(execute, runs)) {
    const { run, code, seconds } = outcome;
    const status = code === 0 ? "ok  " : "FAIL";
    console.log(
      `${status} ${run.runtime.padEnd(4)} examples/${run.file} (${seconds.toFixed(1)} s)`,
    );
    if (code !== 0) {
      failed++;
      console.log(`     exit code ${code}, output:\n${outcome.output.replace(/^/gm, "     | ")}`);
    }
  }
} finally {
  rmSync(SCRATCH, { recursive: true, force: true });
}

for (const problem of problems) console.log(`FAIL ${problem}`);
const total = runs.length + problems.length;
console.log(`${total - failed - problems.length} of ${total} example runs passed`);
if (failed > 0 || problems.length > 0) process.exitCode = 1;
