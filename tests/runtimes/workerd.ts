/**
 * Runs antflow inside workerd, Cloudflare's Workers runtime. The test bundles workerd_worker.ts
 * with esbuild, serves it with the `workerd` binary from npm on 127.0.0.1 at a port the system
 * picks, calls one path per scenario over HTTP and checks the JSON each returns.
 *
 * Run it with Node.js: `node --test tests/runtimes/workerd.ts` (the `test:workerd` task). The file
 * name has no `_test` suffix, so `deno test tests/` and `bun test tests/` do not pick it up.
 *
 * @module
 */

import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import type {
  AbortReport,
  MapReport,
  PipelineReport,
  RateLimiterReport,
  RuntimeReport,
  SemaphoreReport,
  TimeoutReport,
} from "./workerd_worker.ts";

const repository = fileURLToPath(new URL("../../", import.meta.url));
const workerdBinary = join(repository, "node_modules", ".bin", "workerd");

// A date the pinned workerd supports. workerd rejects dates newer than its own build.
const COMPATIBILITY_DATE = "2026-11-01";
// A guard against a hang, far above the time workerd takes to start.
const START_TIMEOUT_MS = 20_000;

/** Writes a workerd config that serves `worker.js` from `directory` on 127.0.0.1. */
async function writeConfig(directory: string): Promise<string> {
  const config = `using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [(name = "main", worker = .worker)],
  sockets = [(name = "http", address = "127.0.0.1:0", http = (), service = "main")],
);

const worker :Workerd.Worker = (
  modules = [(name = "worker.js", esModule = embed "worker.js")],
  compatibilityDate = "${COMPATIBILITY_DATE}",
);
`;
  const path = join(directory, "config.capnp");
  await writeFile(path, config);
  return path;
}

/** Bundles the worker and its antflow imports into `directory`/worker.js. */
async function bundleWorker(directory: string): Promise<void> {
  await build({
    entryPoints: [join(repository, "tests", "runtimes", "workerd_worker.ts")],
    outfile: join(directory, "worker.js"),
    bundle: true,
    format: "esm",
    platform: "neutral",
    target: "esnext",
    alias: { "@antflow/antflow": join(repository, "mod.ts") },
    logLevel: "warning",
  });
}

/**
 * Resolves with the port of the `http` socket, which workerd writes as a JSON line such as
 * `{"event":"listen","socket":"http","port":40123}` to the control pipe.
 */
function listenPort(control: Readable, child: ChildProcess, stderr: () => string): Promise<number> {
  return new Promise((resolve, reject) => {
    let buffered = "";
    const guard = setTimeout(() => {
      reject(new Error(`workerd did not listen within ${START_TIMEOUT_MS} ms: ${stderr()}`));
    }, START_TIMEOUT_MS);
    control.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      for (const line of lines) {
        const event = JSON.parse(line) as { event?: string; socket?: string; port?: number };
        if (event.event === "listen" && event.socket === "http" && event.port !== undefined) {
          clearTimeout(guard);
          resolve(event.port);
        }
      }
    });
    child.on("exit", (code, signal) => {
      clearTimeout(guard);
      reject(
        new Error(`workerd exited (code ${code}, signal ${signal}) before listening: ${stderr()}`),
      );
    });
  });
}

describe("antflow in workerd", () => {
  let directory = "";
  let workerd: ChildProcess | undefined;
  let origin = "";

  before(async () => {
    directory = await mkdtemp(join(tmpdir(), "antflow-workerd-"));
    await bundleWorker(directory);
    const config = await writeConfig(directory);

    // File descriptor 3 is the control pipe that reports the port workerd listens on.
    workerd = spawn(workerdBinary, ["serve", config, "--control-fd=3"], {
      stdio: ["ignore", "inherit", "pipe", "pipe"],
    });
    let stderr = "";
    workerd.stderr?.on("data", (chunk: Buffer) => stderr += chunk.toString("utf8"));
    const control = workerd.stdio[3] as Readable;
    const port = await listenPort(control, workerd, () => stderr);
    origin = `http://127.0.0.1:${port}`;
  });

  after(async () => {
    if (workerd !== undefined && workerd.exitCode === null && workerd.signalCode === null) {
      const exited = new Promise((resolve) => workerd?.once("exit", resolve));
      workerd.kill("SIGTERM");
      await exited;
    }
    if (directory !== "") await rm(directory, { recursive: true, force: true });
  });

  async function get<T>(path: string): Promise<T> {
    const response = await fetch(`${origin}${path}`);
    const body = await response.json();
    assert.equal(response.status, 200, `GET ${path} failed: ${JSON.stringify(body)}`);
    return body as T;
  }

  it("serves the worker from workerd", async () => {
    const report = await get<RuntimeReport>("/runtime");

    assert.equal(report.userAgent, "Cloudflare-Workers");
  });

  it("AsyncExecutor.map() keeps order within maxWorkers", async () => {
    const report = await get<MapReport>("/map");

    assert.deepEqual(report.results, Array.from({ length: 12 }, (_, i) => i * i));
    assert.equal(report.peak, 3);
  });

  it("Pipeline runs two stages with a task limit", async () => {
    const report = await get<PipelineReport>("/pipeline");

    assert.deepEqual(report.values, Array.from({ length: 10 }, (_, i) => `ITEM-${i}!`));
    assert.equal(report.failed, 0);
    assert.equal(report.callApiPeak, 2);
    assert.ok(report.taskPeak <= 4 + 2, `${report.taskPeak} tasks ran at once in 6 workers`);
  });

  it("Semaphore bounds submits across workers", async () => {
    const report = await get<SemaphoreReport>("/semaphore");

    assert.equal(report.peak, 2);
    assert.equal(report.availableAfter, 2);
  });

  it("RateLimiter spaces grants by the window", async () => {
    const report = await get<RateLimiterReport>("/rate-limiter");
    const granted = report.grantedAtMs;

    assert.equal(granted.length, 6);
    // Sliding window: grant i and grant i - limit are at least one interval apart.
    for (let i = report.limit; i < granted.length; i++) {
      const gap = (granted[i] as number) - (granted[i - report.limit] as number);
      assert.ok(gap >= report.intervalMs, `grants ${i - report.limit} and ${i} ${gap} ms apart`);
    }
  });

  it("AsyncExecutor.submit() rejects with the abort reason", async () => {
    const report = await get<AbortReport>("/abort");

    assert.equal(report.runningRejectedWithReason, true);
    assert.equal(report.runningSignalAborted, true);
    assert.equal(report.queuedRejectedWithReason, true);
    assert.equal(report.queuedStarted, false);
    assert.equal(report.acquireRejectedWithReason, true);
    assert.equal(report.semaphoreWaitingAfterAbort, 0);
  });

  it("AsyncExecutor.submit() times out a task", async () => {
    const report = await get<TimeoutReport>("/timeout");

    assert.equal(report.errorName, "TimeoutError");
    assert.equal(report.signalAborted, true);
  });

  it("responds 404 to an unknown scenario", async () => {
    const response = await fetch(`${origin}/missing`);
    await response.body?.cancel();

    assert.equal(response.status, 404);
  });
});
