// Runs examples/enrich_api.ts as a subprocess, with the runtime that runs this test (Deno under
// `deno test`, Bun under `bun test`, Node.js under `node --test`), and checks its exit code, its
// summary and its output file.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const DEMO = join(ROOT, "examples", "enrich_api.ts");
const RUN_ARGS = runtimeArgs();

/** Returns the arguments before the script's path for the runtime that runs this test. */
function runtimeArgs(): string[] {
  if ("Deno" in globalThis) return ["run", "--allow-all"];
  if ("Bun" in globalThis) return ["run"];
  // Node.js resolves the package's own name through the hook its test command preloads.
  return ["--import", "./tests/runtimes/node_imports.ts"];
}

interface DemoRun {
  readonly status: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** The lines of the output file, without the final empty one. */
  readonly lines: string[];
}

/** Runs the demo with `args` plus an output file in a fresh temporary directory. */
function runDemo(...args: string[]): DemoRun {
  const directory = mkdtempSync(join(tmpdir(), "antflow-demo-test-"));
  const output = join(directory, "out.jsonl");
  try {
    const child = spawnSync(process.execPath, [...RUN_ARGS, DEMO, "--output", output, ...args], {
      cwd: ROOT,
      encoding: "utf8",
      timeout: 60_000,
    });
    let lines: string[] = [];
    try {
      lines = readFileSync(output, "utf8").split("\n").slice(0, -1);
    } catch {
      // No output file: the assertions on the exit code and stderr show why.
    }
    return { status: child.status, stdout: child.stdout, stderr: child.stderr, lines };
  } finally {
    rmSync(directory, { recursive: true, force: true });
  }
}

/** Reads the numbers of the demo's "API counts:" line. */
function apiCounts(stdout: string) {
  const match =
    /^API counts: +(\d+) requests, max (\d+) in flight, (\d+) x 429 sent, (\d+) x 503 sent, (\d+) x 404 sent$/m
      .exec(stdout);
  assert.ok(match, `no "API counts:" line in:\n${stdout}`);
  const [requests, maxInFlight, tooMany, unavailable, notFound] = match.slice(1).map(Number);
  return { requests, maxInFlight, tooMany, unavailable, notFound };
}

describe("enrich_api demo", () => {
  it("demo enriches the first 60 cities", () => {
    const run = runDemo("--limit", "60", "--no-progress");

    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^Items: +60 ok, 0 failed$/m);
    assert.match(run.stdout, /^Retries: +3$/m);
    assert.match(run.stdout, /^Throughput: +\d+\.\d items\/s over \d+\.\d s$/m);
    assert.match(
      run.stdout,
      /^OK: no request was rejected with 429 and at most 5 were in flight$/m,
    );
    assert.equal(run.stderr, "");

    const api = apiCounts(run.stdout);
    assert.equal(api.requests, 63);
    assert.equal(api.tooMany, 0);
    assert.equal(api.unavailable, 3);
    assert.equal(api.notFound, 0);
    assert.ok((api.maxInFlight ?? 0) >= 1, `max in flight ${api.maxInFlight}`);
    assert.ok((api.maxInFlight ?? 0) <= 5, `max in flight ${api.maxInFlight}`);

    assert.equal(run.lines.length, 60);
    const records = run.lines.map((line) => JSON.parse(line));
    assert.deepEqual(records.map((record) => record.id).sort((a, b) => a - b), [
      ...Array.from({ length: 60 }, (_, i) => i + 1),
    ]);
    assert.deepEqual(records.find((record) => record.id === 1), {
      id: 1,
      city: "New York",
      countryCode: "US",
      country: "United States of America",
      region: "Americas",
    });
  });

  it("demo reports malformed CSV rows", () => {
    const run = runDemo("--input", "examples/data/sample_with_errors.csv", "--no-progress");

    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^Items: +18 ok, 6 failed$/m);
    assert.match(run.stdout, /^Retries: +1$/m);
    const failed = run.stdout.slice(run.stdout.indexOf("Failed rows:\n")).split("\n").slice(1, 7);
    assert.deepEqual(failed, [
      `  line 5, validate/validateRow: Cannot validate line 5 as the row must be 3 comma-separated fields: received "4,Lyon"`,
      `  line 6, validate/validateRow: Cannot validate line 6 as 'country_code' must be two capital letters: received "pt"`,
      `  line 7, validate/validateRow: Cannot validate line 7 as 'id' must be an integer >= 1: received "x6"`,
      `  line 8, validate/validateRow: Cannot validate line 8 as 'city' must be a non-empty string: received ""`,
      `  line 9, validate/validateRow: Cannot validate line 9 as the row must be CSV with every quoted field closed: received "8,\\"Quito,EC"`,
      "  line 10, lookup/callApi: GET /v1/countries/XA failed with 404 Not Found",
    ]);

    const api = apiCounts(run.stdout);
    assert.equal(api.requests, 20);
    assert.equal(api.tooMany, 0);
    assert.equal(api.unavailable, 1);
    assert.equal(api.notFound, 1);

    assert.equal(run.lines.length, 18);
    const washington = run.lines.map((line) => JSON.parse(line)).find((record) => record.id === 2);
    assert.equal(washington?.city, "Washington, D.C.");
  });

  it("demo reports malformed JSON Lines", () => {
    const run = runDemo("--input", "examples/data/sample.jsonl", "--no-progress");

    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^Items: +5 ok, 3 failed$/m);
    assert.match(run.stdout, /^ {2}line 4, validate\/validateRow: .* must be a JSON object: /m);
    assert.match(
      run.stdout,
      /^ {2}line 5, validate\/validateRow: .*'city' .*: received undefined$/m,
    );
    assert.match(run.stdout, /^ {2}line 6, validate\/validateRow: .* must be a JSON object: /m);
    assert.equal(apiCounts(run.stdout).unavailable, 2);
    assert.deepEqual(
      run.lines.map((line) => JSON.parse(line).city).sort(),
      ["Cusco", "Hobart", "Kraków", "Nagoya", "Valparaíso"],
    );
  });

  it("demo prints the progress summary off a terminal", () => {
    const run = runDemo("--limit", "20");

    assert.equal(run.status, 0, run.stderr);
    assert.match(
      run.stderr,
      /^Finished 20 items in \d+\.\ds \(\d+\.\d items\/s\): 20 ok, 0 failed, 1 retry\n$/,
    );
  });

  it("demo rejects a bad limit", () => {
    const run = runDemo("--limit", "0");

    assert.equal(run.status, 2);
    assert.match(
      run.stderr,
      /^Cannot run the demo as '--limit' must be an integer >= 1: received "0"\n\nUsage: /,
    );
    assert.equal(run.stdout, "");
  });

  it("demo rejects a missing input file", () => {
    const run = runDemo("--input", "examples/data/no_such_file.csv");

    assert.equal(run.status, 2);
    assert.match(run.stderr, /^Cannot read examples\/data\/no_such_file\.csv: /);
    assert.deepEqual(run.lines, []);
  });
});
