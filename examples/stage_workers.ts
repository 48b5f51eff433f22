// Pipeline stages with their own worker counts: a fast parse stage with 2 workers feeds a slower
// lookup stage with 4, and each stage never runs more tasks at once than its `workers`.
//
//   deno run examples/stage_workers.ts
//   bun run examples/stage_workers.ts

import assert from "node:assert/strict";
import { Pipeline, Stage } from "@antflow/antflow";

const peaks = { parse: 0, lookup: 0 };
const running = { parse: 0, lookup: 0 };

// Wraps a task so that it counts how many calls of its stage run at once.
function counted<I, O>(
  stage: keyof typeof peaks,
  task: (input: I) => Promise<O>,
): (input: I) => Promise<O> {
  return async (input) => {
    running[stage]++;
    peaks[stage] = Math.max(peaks[stage], running[stage]);
    try {
      return await task(input);
    } finally {
      running[stage]--;
    }
  };
}

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const parse = new Stage({
  name: "parse",
  workers: 2,
  tasks: [counted("parse", async (line: string) => {
    await wait(5);
    const [word = "", count = "0"] = line.split(":");
    return { word, count: Number(count) };
  })],
});
const lookup = new Stage({
  name: "lookup",
  workers: 4,
  tasks: [counted("lookup", async (entry: { word: string; count: number }) => {
    await wait(20);
    return `${entry.word} x${entry.count}`;
  })],
});

const pipeline = new Pipeline({ stages: [parse, lookup] });
const lines = ["ant:3", "bee:1", "moth:4", "wasp:2", "flea:9", "mite:5", "tick:7", "gnat:6"];
const results = await pipeline.run(lines);

console.log(`Results: ${results.map((result) => result.ok ? result.value : "failed").join(", ")}`);
console.log(
  `Peak tasks at once: parse ${peaks.parse} (workers 2), lookup ${peaks.lookup} (workers 4)`,
);
assert.ok(results.every((result) => result.ok));
assert.ok(peaks.parse <= 2);
assert.ok(peaks.lookup <= 4);
