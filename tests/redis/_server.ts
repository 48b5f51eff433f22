// Starts and stops throwaway redis-server processes on 127.0.0.1 for the Redis limiter tests and
// the benchmark. Each server listens on a free port, keeps nothing on disk and is stopped by
// `stop()` (or `await using`), also when a test fails.

import { type ChildProcess, spawn } from "node:child_process";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import process from "node:process";
import { Redis } from "ioredis";

/** A redis-server child process on 127.0.0.1. */
export interface RedisServer extends AsyncDisposable {
  /** The port it listens on; a restart keeps it. */
  readonly port: number;
  /** Kills the server with SIGKILL, so it loses every key, and starts a new one on the same port. */
  restart(downMs?: number): Promise<void>;
  /** Stops the server and waits for it to exit. */
  stop(): Promise<void>;
  /**
   * A new client of this server whose commands fail soon while the server is down and which
   * reconnects quickly; the caller quits it.
   */
  connect(): Redis;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      probe.close(() => {
        if (address === null || typeof address === "string") reject(new Error("No port assigned"));
        else resolve(address.port);
      });
    });
  });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once("exit", () => resolve()));
}

// Resolves once the server logs that it accepts connections; rejects if it exits first.
function launch(port: number): Promise<ChildProcess> {
  const args = [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    tmpdir(),
  ];
  const child = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
  return new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`redis-server on port ${port} did not start within 10 s:\n${output}`));
    }, 10_000);
    child.once("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`Failed to run redis-server: ${error.message}`, { cause: error }));
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited (${code ?? signal}) before it was ready:\n${output}`));
    });
    child.stdout?.on("data", (chunk: Uint8Array) => {
      output += String(chunk);
      if (output.includes("Ready to accept connections")) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        child.stdout?.removeAllListeners("data");
        child.stdout?.resume();
        resolve(child);
      }
    });
    child.stderr?.on("data", (chunk: Uint8Array) => {
      output += String(chunk);
    });
  });
}

/** Starts a redis-server on a free port of 127.0.0.1. */
export async function startRedisServer(): Promise<RedisServer> {
  let port = 0;
  let child: ChildProcess | undefined;
  // Another process can take the probed port before redis-server binds it, so try a few ports.
  for (let attempt = 1; child === undefined; attempt++) {
    port = await freePort();
    try {
      child = await launch(port);
    } catch (error) {
      if (attempt === 3) throw error;
    }
  }
  const stopChild = async (signal: "SIGKILL" | "SIGTERM") => {
    const running = child;
    if (running === undefined) return;
    child = undefined;
    running.kill(signal);
    await exited(running);
  };
  // A test process that exits without stopping the server does not leave it running.
  const onExit = () => child?.kill("SIGKILL");
  process.once("exit", onExit);
  const stop = async (): Promise<void> => {
    process.off("exit", onExit);
    await stopChild("SIGTERM");
  };

  return {
    port,
    async restart(downMs = 200): Promise<void> {
      await stopChild("SIGKILL");
      await new Promise((resolve) => setTimeout(resolve, downMs));
      child = await launch(port);
    },
    stop,
    connect(): Redis {
      const client = new Redis({
        host: "127.0.0.1",
        port,
        maxRetriesPerRequest: 1,
        retryStrategy: (times: number) => Math.min(times * 20, 100),
      });
      // Failed commands reject on their own; the connection errors the tests cause need no log.
      client.on("error", () => {});
      return client;
    },
    [Symbol.asyncDispose]: stop,
  };
}
