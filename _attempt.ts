// One call of a task under the permits it holds, shared by the executor and pipeline stages.

import type { Permit, Semaphore } from "./semaphore.ts";
import { linkSignal, noop, timeoutReason } from "./_signals.ts";

/** Calls `fn`, turning a synchronous throw into a rejection. */
export function callSafely<O>(fn: () => O | PromiseLike<O>): Promise<O> {
  try {
    return Promise.resolve(fn());
  } catch (error) {
    return Promise.reject(error);
  }
}

/**
 * Runs `start` with a signal derived from `parent`, and releases `permits` only when the promise
 * that `start` returned really settles, so a limit holds even for work that ignores its signal.
 *
 * With `timeoutMs`, the signal aborts after that many milliseconds with a `TimeoutError`. With a
 * timeout or with `race`, the returned promise rejects with the signal's reason as soon as it
 * aborts, while the permits stay held until the work settles; `abandoned` hears when such work
 * begins to run on unobserved and when it finally settles.
 */
export function runGuarded<O>(
  start: (signal: AbortSignal) => Promise<O>,
  parent: AbortSignal,
  timeoutMs: number | undefined,
  race: boolean,
  worker: Permit,
  limiterPermit: Permit | undefined,
  abandoned?: { begin(): void; end(): void },
): Promise<O> {
  if (timeoutMs === undefined && !race) {
    return start(parent).finally(() => {
      worker.release();
      limiterPermit?.release();
    });
  }

  let signal = parent;
  let unlink = noop;
  let timer: ReturnType<typeof setTimeout> | undefined;
  if (timeoutMs !== undefined) {
    const controller = new AbortController();
    unlink = linkSignal(controller, parent);
    timer = setTimeout(() => controller.abort(timeoutReason(timeoutMs)), timeoutMs);
    signal = controller.signal;
  }

  return new Promise<O>((resolve, reject) => {
    if (signal.aborted) {
      clearTimeout(timer);
      unlink();
      worker.release();
      limiterPermit?.release();
      reject(signal.reason);
      return;
    }

    const detach = () => {
      clearTimeout(timer);
      unlink();
      signal.removeEventListener("abort", onAbort);
    };
    let rejectedEarly = false;
    const onAbort = () => {
      detach();
      rejectedEarly = true;
      abandoned?.begin();
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });

    start(signal).then(
      (value) => {
        detach();
        worker.release();
        limiterPermit?.release();
        resolve(value);
        if (rejectedEarly) abandoned?.end();
      },
      (error) => {
        detach();
        worker.release();
        limiterPermit?.release();
        reject(error);
        if (rejectedEarly) abandoned?.end();
      },
    );
  });
}

/**
 * Takes a worker after the task's limiter permit: at once when one is free, otherwise waiting
 * with `waitSignal`. When the wait fails the limiter permit is released, and a worker granted in
 * the same turn as an abort of `signal` goes back, so no permit is lost either way.
 */
export async function acquireWorker(
  workers: Semaphore,
  signal: AbortSignal,
  waitSignal: AbortSignal | undefined,
  priority: number,
  limiterPermit: Permit | undefined,
): Promise<Permit> {
  let worker = workers.tryAcquire();
  if (worker === undefined) {
    try {
      signal.throwIfAborted();
      worker = await workers.acquire({ signal: waitSignal, priority });
    } catch (error) {
      limiterPermit?.release();
      throw error;
    }
  }
  if (signal.aborted) {
    worker.release();
    limiterPermit?.release();
    throw signal.reason;
  }
  return worker;
}
