// Web streams: a pipeline's results as a ReadableStream, piped through a TransformStream that
// turns each result into a line of CSV text, then encoded to bytes as a file or response would be.
//
//   deno run examples/web_streams.ts
//   bun run examples/web_streams.ts

import assert from "node:assert/strict";
import { Pipeline, type PipelineResult, Stage } from "@antflow/antflow";

const measure = new Stage({
  name: "measure",
  workers: 3,
  tasks: [(word: string) => ({ word, length: word.length })],
});
const pipeline = new Pipeline({ stages: [measure] });

const toCsvLine = new TransformStream<PipelineResult<{ word: string; length: number }>, string>({
  start(controller) {
    controller.enqueue("word,length\n");
  },
  transform(result, controller) {
    if (result.ok) controller.enqueue(`${result.value.word},${result.value.length}\n`);
  },
});

const bytes = pipeline.run(["ant", "flow", "stream"], { ordered: true })
  .toReadableStream()
  .pipeThrough(toCsvLine)
  .pipeThrough(new TextEncoderStream());
const text = await new Response(bytes).text();

console.log(text.trimEnd());
assert.equal(text, "word,length\nant,3\nflow,4\nstream,6\n");
