import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  Pipeline,
  type PipelineInput,
  type PipelineOutput,
  type PipelineResult,
  Stage,
} from "@antflow/antflow";

const parse = new Stage({ name: "parse", workers: 1, tasks: [(line: string) => line.split(",")] });
const count = new Stage({
  name: "count",
  workers: 1,
  tasks: [(fields: string[]) => fields.length],
});
const label = new Stage({ name: "label", workers: 1, tasks: [(n: number) => `${n} fields`] });

/** Compile-time checks only: `deno check` proves each `@ts-expect-error` line is an error. */
function typeChecks(): void {
  const pipeline = new Pipeline({ stages: [parse, count, label] });
  const input: PipelineInput<[typeof parse, typeof count]> = "a,b";
  const output: PipelineOutput<[typeof parse, typeof count]> = 2;

  // @ts-expect-error: label takes a number, not the string[] that parse outputs
  new Pipeline({ stages: [parse, label] });
  // @ts-expect-error: the last count takes string[], not the number that count outputs
  new Pipeline({ stages: [parse, count, count] });

  // @ts-expect-error: the first stage takes strings
  pipeline.run([1, 2]);
  const stream = pipeline.run(["a"]);
  const typed: Promise<PipelineResult<string>[]> = stream.toArray();
  // @ts-expect-error: results carry the last stage's output, a string
  const wrong: Promise<PipelineResult<number>[]> = stream.toArray();

  void [input, output, typed, wrong];
}

describe("Pipeline types", () => {
  it("Pipeline results carry the last stage's output type", async () => {
    const pipeline = new Pipeline({ stages: [parse, count, label] });

    const results: PipelineResult<string>[] = await pipeline.run(["a,b", "c"]);
    const values: string[] = results.flatMap((result) => result.ok ? [result.value] : []);

    assert.deepEqual(values, ["2 fields", "1 fields"]);
    assert.equal(typeof typeChecks, "function");
  });
});
