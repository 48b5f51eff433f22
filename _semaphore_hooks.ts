// Entry points into Semaphore that the executor and pipeline use on their hot paths, kept out of
// the public API. semaphore.ts fills them in when it loads.

import type { Permit, Semaphore } from "./semaphore.ts";

/** Internal operations on a {@linkcode Semaphore}. */
export interface SemaphoreHooks {
  /**
   * Waits for one permit without allocating a promise: `onGrant` runs with the permit, or
   * `onReject` with the reason when the wait is rejected (by `rejectWaiting` or `resize`).
   */
  enqueue(
    semaphore: Semaphore,
    onGrant: (permit: Permit) => void,
    onReject: (reason: unknown) => void,
  ): void;
}

/** Set by semaphore.ts at load time. */
export const semaphoreHooks: SemaphoreHooks = {
  enqueue(): void {
    throw new Error("Cannot use the semaphore hooks before semaphore.ts has loaded");
  },
};
