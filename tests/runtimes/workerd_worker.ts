/**
 * A Cloudflare Worker that runs antflow scenarios inside workerd. `GET /<scenario>` runs one
 * scenario in the fetch handler and responds with what it observed as JSON. The checks live in
 * workerd.ts, which bundles this file, serves it and calls each path. A scenario that throws
 * responds with status 500 and the error.
 *
 * The file uses only Web APIs, as a Worker must: no `Deno`, `Bun` or `node:` module.
 *
 * @module
 */

import { AsyncExecutor, Pipeline, RateLimiter, Semaphore, Stage } from "@antflow/antflow";

/** What `GET /runtime` returns: the user agent that identifies the runtime. */
export interface RuntimeReport {
  /** `navigator.userAgent`, "Cloudflare-Workers" in workerd. */
  userAgent: string;
}

/** What `GET /map` returns. */
export interface MapReport {
  /** The squares of 0 to 11, in input order. */
  results: number[];
  /** The peak number of tasks running at once, with `maxWorkers: 3`. */
  peak: number;
}

/** What `GET /pipeline` returns. */
export interface PipelineReport {
  /** Each item's value after both stages, in input order. */
  values: string[];
  /** The number of failed items. */
  failed: number;
  /** The peak number of `callApi` calls running at once, with a task limit of 2 and 4 workers. */
  callApiPeak: number;
  /** The peak number of tasks running at once across both stages. */
  taskPeak: number;
}

/** What `GET /semaphore` returns. */
export interface SemaphoreReport {
  /** The peak number of tasks running at once under a shared `Semaphore(2)` and 5 workers. */
  peak: number;
  /** `semaphore.available` after every task settled. */
  availableAfter: number;
}

/** What `GET /rate-limiter` returns. */
export interface RateLimiterReport {
  /** The limit and window of the limiter under test. */
  limit: number;
  intervalMs: number;
  /** When each of 6 concurrent `acquire()` calls resolved, in ms from the first call. */
  grantedAtMs: number[];
}

/** What `GET /abort` returns. */
export interface AbortReport {
  /** Whether the running task's rejection was the abort reason itself. */
  runningRejectedWithReason: boolean;
  /** Whether the running task saw its `context.signal` abort. */
  runningSignalAborted: boolean;
  /** Whether the queued task's rejection was the abort reason itself. */
  queuedRejectedWithReason: boolean;
  /** Whether the queued task ever started. */
  queuedStarted: boolean;
  /** `semaphore.waiting` after an aborted `acquire()`. */
  semaphoreWaitingAfterAbort: number;
  /** Whether the aborted `acquire()` rejected with the abort reason itself. */
  acquireRejectedWithReason: boolean;
}

/** What `GET /timeout` returns. */
export interface TimeoutReport {
  /** The name of the error a task rejected with after its `timeoutMs` passed. */
  errorName: string;
  /** Whether the task saw its `context.signal` abort. */
  signalAborted: boolean;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_resolve, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}

/** Counts calls that run at once. */
class Gauge {
  current = 0;
  peak = 0;

  async around<T>(work: () => Promise<T>): Promise<T> {
    this.current++;
    this.peak = Math.max(this.peak, this.current);
    try {
      return await work();
    } finally {
      this.current--;
    }
  }
}

async function runMap(): Promise<MapReport> {
  await using executor = new AsyncExecutor({ maxWorkers: 3 });
  const gauge = new Gauge();
  const inputs = Array.from({ length: 12 }, (_, i) => i);

  const results = await executor.map(
    (n: number) =>
      gauge.around(async () => {
        await sleep(2);
        return n * n;
      }),
    inputs,
  );

  return { results, peak: gauge.peak };
}

async function runPipeline(): Promise<PipelineReport> {
  const callApiGauge = new Gauge();
  const taskGauge = new Gauge();

  function prepare(id: number): Promise<string> {
    return taskGauge.around(() => Promise.resolve(`item-${id}`));
  }
  function callApi(key: string): Promise<string> {
    return taskGauge.around(() =>
      callApiGauge.around(async () => {
        await sleep(3);
        return key.toUpperCase();
      })
    );
  }
  function format(value: string): Promise<string> {
    return taskGauge.around(async () => {
      await sleep(1);
      return `${value}!`;
    });
  }

  const fetchStage = new Stage({
    name: "fetch",
    workers: 4,
    tasks: [prepare, callApi],
    taskConcurrencyLimits: { callApi: 2 },
  });
  const formatStage = new Stage({ name: "format", workers: 2, tasks: [format] });
  await using pipeline = new Pipeline({ stages: [fetchStage, formatStage] });

  const results = await pipeline.run(Array.from({ length: 10 }, (_, i) => i));

  return {
    values: results.map((result) => result.ok ? result.value : `failed: ${String(result.error)}`),
    failed: results.filter((result) => !result.ok).length,
    callApiPeak: callApiGauge.peak,
    taskPeak: taskGauge.peak,
  };
}

async function runSemaphore(): Promise<SemaphoreReport> {
  await using executor = new AsyncExecutor({ maxWorkers: 5 });
  const semaphore = new Semaphore(2);
  const gauge = new Gauge();

  const tasks = Array.from({ length: 8 }, (_, i) =>
    executor.submit(
      (n: number) => gauge.around(() => sleep(2).then(() => n)),
      i,
      { semaphore },
    ));
  await Promise.all(tasks);

  return { peak: gauge.peak, availableAfter: semaphore.available };
}

async function runRateLimiter(): Promise<RateLimiterReport> {
  const limit = 2;
  const intervalMs = 40;
  const limiter = new RateLimiter({ limit, intervalMs });
  const start = performance.now();

  const grants = Array.from(
    { length: 6 },
    () => limiter.acquire().then(() => performance.now() - start),
  );

  return { limit, intervalMs, grantedAtMs: await Promise.all(grants) };
}

async function runAbort(): Promise<AbortReport> {
  await using executor = new AsyncExecutor({ maxWorkers: 1 });
  const controller = new AbortController();
  const reason = new Error("stopped by the test");
  let runningSignal: AbortSignal | undefined;
  let queuedStarted = false;

  const running = executor.submit(
    (_: null, { signal }) => {
      runningSignal = signal;
      return untilAborted(signal);
    },
    null,
    { signal: controller.signal },
  );
  const queued = executor.submit(
    () => {
      queuedStarted = true;
    },
    null,
    { signal: controller.signal },
  );
  await sleep(1);
  controller.abort(reason);
  const [runningOutcome, queuedOutcome] = await Promise.allSettled([running, queued]);

  const semaphore = new Semaphore(1);
  const heldPermit = await semaphore.acquire();
  const waiterController = new AbortController();
  const waiter = semaphore.acquire({ signal: waiterController.signal });
  waiterController.abort(reason);
  const [waiterOutcome] = await Promise.allSettled([waiter]);
  heldPermit.release();

  return {
    runningRejectedWithReason: runningOutcome.status === "rejected" &&
      runningOutcome.reason === reason,
    runningSignalAborted: runningSignal?.aborted === true,
    queuedRejectedWithReason: queuedOutcome.status === "rejected" &&
      queuedOutcome.reason === reason,
    queuedStarted,
    semaphoreWaitingAfterAbort: semaphore.waiting,
    acquireRejectedWithReason: waiterOutcome?.status === "rejected" &&
      waiterOutcome.reason === reason,
  };
}

async function runTimeout(): Promise<TimeoutReport> {
  await using executor = new AsyncExecutor({ maxWorkers: 1 });
  let taskSignal: AbortSignal | undefined;

  const outcome = await executor.submit(
    (_: null, { signal }) => {
      taskSignal = signal;
      return untilAborted(signal);
    },
    null,
    { timeoutMs: 20 },
  ).then(
    () => "fulfilled",
    (error: unknown) => error instanceof Error ? error.name : String(error),
  );

  return { errorName: outcome, signalAborted: taskSignal?.aborted === true };
}

const scenarios: Record<string, () => Promise<unknown>> = {
  "/runtime": () => Promise.resolve({ userAgent: navigator.userAgent } satisfies RuntimeReport),
  "/map": runMap,
  "/pipeline": runPipeline,
  "/semaphore": runSemaphore,
  "/rate-limiter": runRateLimiter,
  "/abort": runAbort,
  "/timeout": runTimeout,
};

/** The Worker's handlers. */
const worker: { fetch(request: Request): Promise<Response> } = {
  async fetch(request: Request): Promise<Response> {
    const scenario = scenarios[new URL(request.url).pathname];
    if (scenario === undefined) {
      return Response.json({ error: "Unknown scenario" }, { status: 404 });
    }
    try {
      return Response.json(await scenario());
    } catch (error) {
      const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      return Response.json({ error: message }, { status: 500 });
    }
  },
};

export default worker;
