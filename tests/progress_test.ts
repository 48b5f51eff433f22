import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Pipeline, Stage } from "@antflow/antflow";
import {
  formatProgress,
  type PipelineStats,
  ProgressDisplay,
  type ProgressOutput,
  type StageStats,
  stderrOutput,
} from "@antflow/antflow/progress";
import { useVirtualClock } from "./_helpers.ts";

// deno-lint-ignore no-control-regex
const ESCAPE = /\x1b\[/;
// deno-lint-ignore no-control-regex
const CURSOR_UP = /\x1b\[(\d+)A/;

/** An output that records every write. */
class FakeOutput implements ProgressOutput {
  readonly writes: string[] = [];
  readonly isTTY: boolean;
  readonly columns: number | undefined;

  constructor(isTTY: boolean, columns?: number) {
    this.isTTY = isTTY;
    this.columns = columns;
  }

  write(text: string): void {
    this.writes.push(text);
  }

  get text(): string {
    return this.writes.join("");
  }
}

/** Builds a stage snapshot with every counter at 0 unless given. */
function stageStats(name: string, overrides: Partial<StageStats> = {}): StageStats {
  return {
    name,
    workers: 1,
    busy: 0,
    queued: 0,
    parked: 0,
    running: 0,
    outbound: 0,
    completed: 0,
    failed: 0,
    retried: 0,
    skipped: 0,
    ...overrides,
  };
}

/** Builds a pipeline snapshot with every counter at 0 unless given. */
function pipelineStats(overrides: Partial<PipelineStats> = {}): PipelineStats {
  return {
    running: false,
    fed: 0,
    succeeded: 0,
    failed: 0,
    cancelled: 0,
    inFlight: 0,
    elapsedMs: 0,
    throughput: 0,
    callbackErrors: 0,
    stages: [stageStats("work")],
    errors: { total: 0, byType: {}, byStage: {}, recent: [] },
    ...overrides,
  };
}

/** A stand-in for a pipeline whose stats the test sets and whose item events it sends. */
class FakeSource extends EventTarget {
  current: PipelineStats = pipelineStats();
  listeners = 0;

  stats(): PipelineStats {
    return this.current;
  }

  override addEventListener(type: string, listener: EventListener): void {
    this.listeners++;
    super.addEventListener(type, listener);
  }

  override removeEventListener(type: string, listener: EventListener): void {
    this.listeners--;
    super.removeEventListener(type, listener);
  }

  /** Sets the counters and sends one `item` event, as a pipeline does when an item moves. */
  progress(overrides: Partial<PipelineStats>): void {
    this.current = pipelineStats({ running: true, ...overrides });
    this.dispatchEvent(new Event("item"));
  }
}

describe("ProgressDisplay construction", () => {
  it("ProgressDisplay() rejects a non-pipeline", () => {
    for (const [value, shown] of [[{}, "an object"], [null, "null"], [undefined, "undefined"]]) {
      assert.throws(() => new ProgressDisplay(value as never, { output: new FakeOutput(false) }), {
        name: "TypeError",
        message:
          `Cannot create ProgressDisplay as 'pipeline' must be a Pipeline: received ${shown}`,
      });
    }
  });

  it("ProgressDisplay() rejects total out of range", () => {
    for (const value of [-1, 1.5, NaN, Infinity]) {
      assert.throws(
        () =>
          new ProgressDisplay(new FakeSource(), { total: value, output: new FakeOutput(false) }),
        {
          name: "RangeError",
          message:
            `Cannot create ProgressDisplay as 'total' must be a non-negative integer: received ${value}`,
        },
      );
    }
  });

  it("ProgressDisplay() rejects total of the wrong type", () => {
    assert.throws(
      () =>
        new ProgressDisplay(new FakeSource(), {
          total: "10" as never,
          output: new FakeOutput(false),
        }),
      {
        name: "TypeError",
        message:
          `Cannot create ProgressDisplay as 'total' must be a non-negative integer: received "10"`,
      },
    );
  });

  it("ProgressDisplay() rejects an output without write", () => {
    assert.throws(() => new ProgressDisplay(new FakeSource(), { output: {} as never }), {
      name: "TypeError",
      message:
        "Cannot create ProgressDisplay as 'output' must be an object with a write method: received an object",
    });
  });

  it("ProgressDisplay() rejects an unknown mode", () => {
    const output = new FakeOutput(false);
    assert.throws(() => new ProgressDisplay(new FakeSource(), { output, mode: "fancy" as never }), {
      name: "RangeError",
      message:
        `Cannot create ProgressDisplay as 'mode' must be "auto", "tty", "plain" or "summary": received "fancy"`,
    });
    assert.throws(() => new ProgressDisplay(new FakeSource(), { output, mode: 1 as never }), {
      name: "TypeError",
      message:
        `Cannot create ProgressDisplay as 'mode' must be "auto", "tty", "plain" or "summary": received 1`,
    });
  });

  it("ProgressDisplay() rejects intervalMs out of range", () => {
    for (const value of [0, 0.5, -1, NaN, Infinity]) {
      assert.throws(
        () =>
          new ProgressDisplay(new FakeSource(), {
            intervalMs: value,
            output: new FakeOutput(false),
          }),
        {
          name: "RangeError",
          message:
            `Cannot create ProgressDisplay as 'intervalMs' must be a finite number >= 1: received ${value}`,
        },
      );
    }
  });

  it("ProgressDisplay() resolves auto mode from the output", () => {
    const source = new FakeSource();
    assert.equal(new ProgressDisplay(source, { output: new FakeOutput(true) }).mode, "tty");
    assert.equal(new ProgressDisplay(source, { output: new FakeOutput(false) }).mode, "plain");
    const forced = new ProgressDisplay(source, { output: new FakeOutput(true), mode: "summary" });
    assert.equal(forced.mode, "summary");
  });

  it("ProgressDisplay() writes nothing before start", () => {
    const output = new FakeOutput(true);
    const progress = new ProgressDisplay(new FakeSource(), { output });
    progress.stop();
    assert.deepEqual(output.writes, []);
    assert.equal(progress.active, false);
  });
});

describe("formatProgress", () => {
  it("formatProgress() shows the bar, counts, failures and ETA", () => {
    const stats = pipelineStats({
      running: true,
      succeeded: 40,
      failed: 2,
      throughput: 10,
      elapsedMs: 4_200,
      stages: [
        stageStats("parse", { workers: 4, busy: 1, queued: 3, completed: 42, failed: 2 }),
        stageStats("enrich", {
          workers: 32,
          busy: 5,
          queued: 12,
          parked: 7,
          completed: 40,
          retried: 3,
        }),
      ],
    });

    const lines = formatProgress(stats, { total: 100 });

    assert.deepEqual(lines, [
      "[████████░░░░░░░░░░░░]  42% 42/100 | 40 ok | 2 failed | 10.0 items/s | ETA 5.8s | 4.2s",
      "  parse   busy  1/4  queued  3  parked 0  done 42  failed 2  retries 0",
      "  enrich  busy 5/32  queued 12  parked 7  done 40  failed 0  retries 3",
    ]);
  });

  it("formatProgress() shows counts without a total", () => {
    const stats = pipelineStats({
      succeeded: 1_234_567,
      failed: 3,
      throughput: 2.25,
      elapsedMs: 61_000,
    });

    const [overall] = formatProgress(stats);

    assert.equal(overall, "1,234,570 done | 1,234,567 ok | 3 failed | 2.3 items/s | 1m01s");
  });

  it("formatProgress() shows cancelled items, skips and an unknown ETA", () => {
    const stats = pipelineStats({
      cancelled: 4,
      stages: [stageStats("work", { skipped: 2 })],
    });

    const lines = formatProgress(stats, { total: 10 });

    assert.equal(
      lines[0],
      "[░░░░░░░░░░░░░░░░░░░░]   0% 0/10 | 0 ok | 0 failed | 4 cancelled | 0.0 items/s | ETA -- | 0.0s",
    );
    assert.match(lines[1] ?? "", /skipped 2$/);
  });

  it("formatProgress() shows 100% for an empty total", () => {
    const [overall] = formatProgress(pipelineStats(), { total: 0 });
    assert.match(overall ?? "", /^\[█{20}\] 100% 0\/0 \| .* \| ETA 0s \| /);
  });
});

describe("ProgressDisplay in tty mode", () => {
  it("ProgressDisplay.start() draws the first frame without moving the cursor", () => {
    using clock = useVirtualClock();
    const source = new FakeSource();
    const output = new FakeOutput(true, 200);

    using _progress = new ProgressDisplay(source, { total: 10, output }).start();

    assert.equal(output.writes.length, 1);
    const first = output.writes[0] ?? "";
    assert.doesNotMatch(first, CURSOR_UP);
    assert.equal(first.split("\n").length - 1, 2);
    assert.match(first, /\[░{20}\] {3}0% 0\/10 \| 0 ok \| 0 failed/);
    assert.match(first, / {2}work {2}busy 0\/1/);
    assert.equal(clock.timers(), 0);
  });

  it("ProgressDisplay redraws in place with cursor-up", async () => {
    using clock = useVirtualClock();
    const source = new FakeSource();
    source.current = pipelineStats({
      stages: [stageStats("parse"), stageStats("enrich")],
    });
    const output = new FakeOutput(true, 200);
    using _progress = new ProgressDisplay(source, { total: 10, output }).start();

    source.progress({ succeeded: 5, stages: [stageStats("parse"), stageStats("enrich")] });
    await clock.tick(100);

    assert.equal(output.writes.length, 2);
    const redraw = output.writes[1] ?? "";
    assert.equal(CURSOR_UP.exec(redraw)?.[1], "3");
    assert.ok(redraw.startsWith("\x1b[3A"));
    assert.equal(redraw.split("\r\x1b[2K").length - 1, 3);
    assert.match(redraw, /50% 5\/10 \| 5 ok/);
  });

  it("ProgressDisplay draws at most once per interval", async () => {
    using clock = useVirtualClock();
    const source = new FakeSource();
    const output = new FakeOutput(true, 200);
    using _progress = new ProgressDisplay(source, { total: 2_000, output, intervalMs: 100 })
      .start();

    for (let i = 1; i <= 1_000; i++) source.progress({ succeeded: i });
    await clock.tick(99);
    assert.equal(output.writes.length, 1);
    assert.equal(clock.timers(), 1);

    await clock.tick(1);
    assert.equal(output.writes.length, 2);
    assert.match(output.writes[1] ?? "", /1,000\/2,000/);

    for (let i = 1_001; i <= 2_000; i++) source.progress({ succeeded: i });
    await clock.tick(50);
    assert.equal(output.writes.length, 2);

    await clock.tick(50);
    assert.equal(output.writes.length, 3);
    assert.match(output.writes[2] ?? "", /100% 2,000\/2,000/);
  });

  it("ProgressDisplay skips a frame that did not change", async () => {
    using clock = useVirtualClock();
    const source = new FakeSource();
    const output = new FakeOutput(true, 200);
    using _progress = new ProgressDisplay(source, { output, intervalMs: 100 }).start();

    source.progress({ succeeded: 1 });
    await clock.tick(100);
    assert.equal(output.writes.length, 2);

    await clock.tick(500);
    assert.equal(output.writes.length, 2);
    assert.equal(clock.timers(), 1);
  });

  it("ProgressDisplay cuts lines to the terminal width", () => {
    using _clock = useVirtualClock();
    const output = new FakeOutput(true, 30);

    using _progress = new ProgressDisplay(new FakeSource(), { total: 5, output }).start();

    const lines = (output.writes[0] ?? "").split("\n").slice(0, -1);
    assert.equal(lines.length, 2);
    for (const line of lines) assert.equal([...line.replace("\r\x1b[2K", "")].length, 29);
  });

  it("ProgressDisplay.stop() draws the final frame and a summary", async () => {
    using clock = useVirtualClock();
    const source = new FakeSource();
    const output = new FakeOutput(true, 200);
    const progress = new ProgressDisplay(source, { total: 4, output }).start();
    source.progress({ succeeded: 3, failed: 1, throughput: 2, elapsedMs: 2_000 });
    await clock.tick(10);

    source.current = pipelineStats({
      succeeded: 3,
      failed: 1,
      throughput: 2,
      elapsedMs: 2_000,
      stages: [stageStats("work", { retried: 1 })],
    });
    progress.stop();

    const [, final, summary] = output.writes;
    assert.ok(final?.startsWith("\x1b[2A"));
    assert.match(final ?? "", /100% 4\/4 \| 3 ok \| 1 failed/);
    assert.equal(summary, "Finished 4 items in 2.0s (2.0 items/s): 3 ok, 1 failed, 1 retry\n");
    assert.equal(clock.timers(), 0);
  });
});

describe("ProgressDisplay in plain mode", () => {
  it("ProgressDisplay prints plain lines per interval", async () => {
    using clock = useVirtualClock();
    const source = new FakeSource();
    const output = new FakeOutput(false);
    using _progress = new ProgressDisplay(source, { total: 100, output, intervalMs: 1_000 })
      .start();
    assert.deepEqual(output.writes, []);

    source.progress({
      succeeded: 25,
      throughput: 25,
      elapsedMs: 1_000,
      stages: [stageStats("work", { workers: 4, busy: 4, queued: 9, parked: 2 })],
    });
    await clock.tick(999);
    assert.deepEqual(output.writes, []);

    await clock.tick(1);
    assert.deepEqual(output.writes, [
      "25% 25/100 | 25 ok | 0 failed | 25.0 items/s | ETA 3.0s | 1.0s | work 4/4 busy 9 queued 2 parked\n",
    ]);

    await clock.tick(1_000);
    assert.equal(output.writes.length, 2);
    for (const line of output.writes) assert.doesNotMatch(line, ESCAPE);
  });

  it("ProgressDisplay defaults to a 5 s interval off a terminal", async () => {
    using clock = useVirtualClock();
    const source = new FakeSource();
    const output = new FakeOutput(false);
    using _progress = new ProgressDisplay(source, { output }).start();

    source.progress({ succeeded: 1 });
    await clock.tick(4_999);
    assert.equal(output.writes.length, 0);

    await clock.tick(1);
    assert.equal(output.writes.length, 1);
    assert.match(output.writes[0] ?? "", /^1 done \| 1 ok \| 0 failed/);
  });

  it("ProgressDisplay in summary mode prints only the summary", async () => {
    using clock = useVirtualClock();
    const source = new FakeSource();
    const output = new FakeOutput(true);
    const progress = new ProgressDisplay(source, { output, mode: "summary", intervalMs: 10 })
      .start();

    source.progress({ succeeded: 1, cancelled: 2 });
    await clock.tick(1_000);
    assert.deepEqual(output.writes, []);

    progress.stop();
    assert.deepEqual(output.writes, [
      "Stopped after 1 item in 0.0s (0.0 items/s): 1 ok, 0 failed, 2 cancelled, 0 retries\n",
    ]);
  });
});

describe("ProgressDisplay lifecycle", () => {
  it("ProgressDisplay keeps no timer while no run is active", () => {
    using clock = useVirtualClock();
    const source = new FakeSource();
    using _progress = new ProgressDisplay(source, { output: new FakeOutput(true) }).start();
    assert.equal(clock.timers(), 0);

    source.progress({ succeeded: 1 });
    assert.equal(clock.timers(), 1);
  });

  it("ProgressDisplay.stop() leaves no timer and no listener", () => {
    using clock = useVirtualClock();
    const source = new FakeSource();
    const progress = new ProgressDisplay(source, { output: new FakeOutput(true) }).start();
    source.progress({ succeeded: 1 });
    assert.equal(clock.timers(), 1);
    assert.equal(source.listeners, 1);

    progress.stop();

    assert.equal(clock.timers(), 0);
    assert.equal(source.listeners, 0);
    assert.equal(progress.active, false);
    source.progress({ succeeded: 2 });
    assert.equal(clock.timers(), 0);
  });

  it("ProgressDisplay.stop() is idempotent", () => {
    using _clock = useVirtualClock();
    const output = new FakeOutput(false);
    const progress = new ProgressDisplay(new FakeSource(), { output }).start();

    progress.stop();
    progress.stop();
    progress[Symbol.dispose]();

    assert.equal(output.writes.length, 1);
  });

  it("ProgressDisplay.start() twice attaches once", () => {
    using _clock = useVirtualClock();
    const source = new FakeSource();
    const output = new FakeOutput(true);
    using progress = new ProgressDisplay(source, { output }).start();

    assert.equal(progress.start(), progress);

    assert.equal(source.listeners, 1);
    assert.equal(output.writes.length, 1);
  });

  it("ProgressDisplay.start() after stop throws", () => {
    const progress = new ProgressDisplay(new FakeSource(), { output: new FakeOutput(false) });
    progress.start().stop();

    assert.throws(() => progress.start(), {
      name: "TypeError",
      message: "Cannot start the progress display as it is already stopped",
    });
  });

  it("ProgressDisplay stops by itself when the run ends", async () => {
    using clock = useVirtualClock();
    const source = new FakeSource();
    const output = new FakeOutput(false);
    const progress = new ProgressDisplay(source, { output, intervalMs: 60_000 }).start();
    source.progress({ succeeded: 3 });

    source.current = pipelineStats({ succeeded: 3, throughput: 3, elapsedMs: 1_000 });
    await clock.tick(250);

    assert.equal(progress.active, false);
    assert.equal(clock.timers(), 0);
    assert.equal(source.listeners, 0);
    assert.deepEqual(output.writes, [
      "Finished 3 items in 1.0s (3.0 items/s): 3 ok, 0 failed, 0 retries\n",
    ]);
  });

  it("ProgressDisplay waits for a run that has not started", async () => {
    using clock = useVirtualClock();
    const source = new FakeSource();
    const output = new FakeOutput(false);
    using progress = new ProgressDisplay(source, { output }).start();

    await clock.tick(10_000);

    assert.equal(progress.active, true);
    assert.deepEqual(output.writes, []);
  });

  it("ProgressDisplay keeps a failed write for stop()", async () => {
    using clock = useVirtualClock();
    const source = new FakeSource();
    const failure = new Error("stream closed");
    let calls = 0;
    const output: ProgressOutput = {
      write(): void {
        calls++;
        throw failure;
      },
    };
    const progress = new ProgressDisplay(source, { output, mode: "plain", intervalMs: 10 })
      .start();

    source.progress({ succeeded: 1 });
    await clock.tick(10);

    assert.equal(calls, 1);
    assert.equal(progress.active, false);
    assert.equal(clock.timers(), 0);
    assert.equal(source.listeners, 0);
    assert.throws(() => progress.stop(), failure);
    progress.stop();
    assert.equal(calls, 1);
  });
});

describe("ProgressDisplay with a pipeline", () => {
  it("ProgressDisplay reports a real run with failures", async () => {
    using clock = useVirtualClock();
    function check(n: number): number {
      if (n % 4 === 0) throw new RangeError(`${n} is a multiple of 4`);
      return n;
    }
    const pipeline = new Pipeline({
      stages: [
        new Stage({ name: "check", workers: 2, tasks: [check] }),
        new Stage({ name: "double", workers: 3, tasks: [(n: number) => n * 2] }),
      ],
    });
    const output = new FakeOutput(true, 120);
    const progress = new ProgressDisplay(pipeline, { total: 8, output }).start();

    const results = await pipeline.run([1, 2, 3, 4, 5, 6, 7, 8]);
    assert.equal(results.filter((result) => !result.ok).length, 2);
    await clock.tick(250);

    assert.equal(progress.active, false);
    assert.equal(clock.timers(), 0);
    const text = output.text;
    assert.match(text, /100% 8\/8 \| 6 ok \| 2 failed/);
    assert.match(text, / {2}check {3}busy 0\/2 .* done 6 {2}failed 2 {2}retries 0/);
    assert.match(text, / {2}double {2}busy 0\/3 .* done 6 {2}failed 0 {2}retries 0/);
    assert.match(text, /Finished 8 items in \S+ \(\S+ items\/s\): 6 ok, 2 failed, 0 retries\n$/);
  });
});

describe("stderrOutput", () => {
  it("stderrOutput() reports the terminal", () => {
    const output = stderrOutput();
    assert.equal(typeof output.write, "function");
    assert.equal(typeof output.isTTY, "boolean");
    const columns = output.columns;
    assert.ok(columns === undefined || columns > 0);
  });
});
