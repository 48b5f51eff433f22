import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import process from "node:process";

// The runtime running this test: deno under `deno test`, bun under `bun test`.
function runtimeArgs(script: string): string[] {
  if ("Deno" in globalThis) return ["run", "--allow-all", script];
  // Node.js: the same flags as this process, so the import hook of test:node applies.
  return process.execPath.includes("bun") ? ["run", script] : [...process.execArgv, script];
}

describe("process exit", () => {
  it("script exits on its own after the work", async () => {
    const script = new URL("./fixtures/exit_script.ts", import.meta.url).pathname;
    const child = spawn(process.execPath, runtimeArgs(script), {
      cwd: new URL("..", import.meta.url).pathname,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let doneAt = 0;
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      if (doneAt === 0 && stdout.includes("done")) doneAt = performance.now();
    });
    child.stderr.on("data", (chunk) => stderr += chunk);

    // A guard against a hang, far above the expected exit time; the run fails if it fires.
    const guard = setTimeout(() => child.kill("SIGKILL"), 20_000);
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) =>
      child.on("exit", (exitCode, exitSignal) => resolve([exitCode, exitSignal]))
    );
    clearTimeout(guard);
    const lingerMs = performance.now() - doneAt;

    assert.equal(signal, null, `killed after hanging; stderr: ${stderr}`);
    assert.equal(code, 0, stderr);
    assert.match(stdout, /done 40/);
    assert.ok(lingerMs < 1_000, `exited ${lingerMs.toFixed(0)} ms after finishing its work`);
  });
});
