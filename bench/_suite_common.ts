// Helpers shared by the benchmark suite's driver (suite.ts) and its case files, which run in
// subprocesses under Deno or Bun.

import { writeFileSync } from "node:fs";
import process from "node:process";

/** The runtime-specific globals the suite uses; each is absent on the other runtime. */
const runtimeGlobals = globalThis as {
  Deno?: { version: { deno: string; v8: string } };
  Bun?: { version: string; gc(force: boolean): void };
  gc?: () => void;
};

/** The name and version of the runtime running this file, such as `Deno 2.9.6`. */
export function runtimeName(): string {
  if (runtimeGlobals.Bun !== undefined) return `Bun ${runtimeGlobals.Bun.version}`;
  if (runtimeGlobals.Deno !== undefined) return `Deno ${runtimeGlobals.Deno.version.deno}`;
  return `Node.js ${process.version}`;
}

/**
 * Runs a full, synchronous garbage collection: `Bun.gc(true)` on Bun, and `globalThis.gc()` on
 * Deno when it runs with `--v8-flags=--expose-gc`. Returns false when neither is available.
 */
export function collectGarbage(): boolean {
  if (runtimeGlobals.Bun !== undefined) {
    runtimeGlobals.Bun.gc(true);
    return true;
  }
  if (typeof runtimeGlobals.gc === "function") {
    runtimeGlobals.gc();
    return true;
  }
  return false;
}

/** Returns the median of a non-empty list of numbers. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? sorted[middle] as number
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

/** Median, minimum, maximum and relative spread of a list of samples. */
export interface Summary {
  median: number;
  min: number;
  max: number;
  /** (max - min) / median, or 0 for a median of 0. */
  spread: number;
}

/** Summarises samples. A row whose spread is above {@linkcode NOISY_SPREAD} counts as noisy. */
export function summarize(samples: readonly number[]): Summary {
  const value = median(samples);
  const min = Math.min(...samples);
  const max = Math.max(...samples);
  return { median: value, min, max, spread: value === 0 ? 0 : (max - min) / value };
}

/** The spread, (max - min) / median, above which a row counts as noisy. */
export const NOISY_SPREAD = 0.25;

/** Reads `--name value` pairs and bare `--flag` switches from the command line. */
export function parseArguments(argv: readonly string[]): Map<string, string> {
  const options = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const argument = argv[i] as string;
    if (!argument.startsWith("--")) continue;
    const next = argv[i + 1];
    if (next === undefined || next.startsWith("--")) options.set(argument.slice(2), "true");
    else {
      options.set(argument.slice(2), next);
      i++;
    }
  }
  return options;
}

/** Reads a required option, or throws an error that names it. */
export function requireOption(options: Map<string, string>, name: string): string {
  const value = options.get(name);
  if (value === undefined) throw new Error(`Missing required option --${name}`);
  return value;
}

/** Reads a required option as a positive integer. */
export function requireInteger(options: Map<string, string>, name: string): number {
  const text = requireOption(options, name);
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new Error(`Invalid --${name}: expected a positive integer, received ${text}`);
  }
  return value;
}

/**
 * Writes a case file's result as JSON to the path in `--result-file`. A file, unlike stdout, is
 * complete even when the case exits with `process.exit` while work is still queued.
 */
export function writeResult(options: Map<string, string>, result: unknown): void {
  writeFileSync(requireOption(options, "result-file"), JSON.stringify(result));
}

/** Returns the sum 0 + 1 + ... + (n - 1), which every case checks its output against. */
export function expectedSum(n: number): number {
  return (n * (n - 1)) / 2;
}

/** Throws when an implementation returned a wrong sum, so a broken case never reports a time. */
export function checkSum(implementation: string, actual: number, expected: number): void {
  if (actual !== expected) {
    throw new Error(`${implementation} returned the sum ${actual}, expected ${expected}`);
  }
}
