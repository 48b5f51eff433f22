import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Pipeline, Stage } from "@antflow/antflow";
import { itemsInStage } from "./_helpers.ts";

// One million items through three stages took about 7 s under Deno 2.9.6 and 5 s under Bun 1.4.5
// on the development container, so the test allows a minute.
const COUNT = 1_000_000;
const SAMPLE_EVERY = 1_000;

describe("Pipeline at scale", () => {
  it("Pipeline bounds a million-item run", { timeout: 60_000 }, async () => {
    function* numbers(): Generator<number> {
      for (let i = 0; i < COUNT; i++) yield i;
    }
    let calls = 0;
    let peakInFlight = 0;
    const peakInStage = [0, 0, 0];
    const sample = () => {
      if (++calls % SAMPLE_EVERY !== 0) return;
      const stats = pipeline.stats();
      peakInFlight = Math.max(peakInFlight, stats.inFlight);
      stats.stages.forEach((stage, i) => {
        peakInStage[i] = Math.max(peakInStage[i] as number, itemsInStage(stage));
      });
    };
    const stage = (name: string, workers: number, queueCapacity: number) =>
      new Stage({
        name,
        workers,
        queueCapacity,
        tasks: [(n: number) => {
          sample();
          return n + 1;
        }],
      });
    const pipeline = new Pipeline({
      stages: [stage("parse", 4, 8), stage("enrich", 8, 0), stage("store", 2, 4)],
    });
    let succeeded = 0;
    let last = -1;

    for await (const result of pipeline.run(numbers())) {
      if (result.ok) succeeded++;
      last = Math.max(last, result.index);
    }
    const stats = pipeline.stats();

    assert.equal(succeeded, COUNT);
    assert.equal(last, COUNT - 1);
    assert.equal(stats.fed, COUNT);
    assert.equal(stats.inFlight, 0);
    assert.ok(peakInFlight <= 12 + 8 + 6, `peak inFlight ${peakInFlight}`);
    assert.ok((peakInStage[0] as number) <= 12, `peak in parse ${peakInStage[0]}`);
    assert.ok((peakInStage[1] as number) <= 8, `peak in enrich ${peakInStage[1]}`);
    assert.ok((peakInStage[2] as number) <= 6, `peak in store ${peakInStage[2]}`);
  });
});
