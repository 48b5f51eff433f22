// Abort plumbing: linking signals with listeners that are always removed, and timeouts whose timer
// is always cleared. AbortSignal.any and AbortSignal.timeout are not used because neither can be
// detached early, and virtual clocks in tests cannot drive AbortSignal.timeout.

/** Aborts `controller` with `parent.reason` when `parent` aborts; returns the unlink function. */
export function linkSignal(
  controller: AbortController,
  parent: AbortSignal | undefined,
): () => void {
  if (parent === undefined) return noop;
  if (parent.aborted) {
    controller.abort(parent.reason);
    return noop;
  }
  const onAbort = () => controller.abort(parent.reason);
  parent.addEventListener("abort", onAbort, { once: true });
  return () => parent.removeEventListener("abort", onAbort);
}

/** Calls `onAbort` with `signal.reason` when `signal` aborts, at once if it already has. */
export function whenAborted(
  signal: AbortSignal | undefined,
  onAbort: (reason: unknown) => void,
): () => void {
  if (signal === undefined) return noop;
  if (signal.aborted) {
    onAbort(signal.reason);
    return noop;
  }
  const listener = () => onAbort(signal.reason);
  signal.addEventListener("abort", listener, { once: true });
  return () => signal.removeEventListener("abort", listener);
}

/** Does nothing; the unlink function of a link that needs none. */
export function noop(): void {}

/** Creates the abort reason of an attempt that ran past its timeout, as `AbortSignal.timeout` would. */
export function timeoutReason(timeoutMs: number): DOMException {
  return new DOMException(`The task timed out after ${timeoutMs} ms`, "TimeoutError");
}

/**
 * Links many controllers to a few shared signals with one listener per signal, so thousands of
 * tasks that follow one long-lived signal cost one listener, and unlinking one is O(1) instead
 * of a scan of the signal's listener list.
 */
export class SignalFanout {
  readonly #groups = new Map<
    AbortSignal,
    { controllers: Set<AbortController>; onAbort: () => void }
  >();

  /** Aborts `controller` with `signal.reason` when `signal` aborts; returns the unlink function. */
  link(controller: AbortController, signal: AbortSignal): () => void {
    if (signal.aborted) {
      controller.abort(signal.reason);
      return noop;
    }

    let group = this.#groups.get(signal);
    if (group === undefined) {
      const controllers = new Set<AbortController>();
      const onAbort = () => {
        this.#groups.delete(signal);
        for (const member of controllers) member.abort(signal.reason);
      };
      group = { controllers, onAbort };
      this.#groups.set(signal, group);
      signal.addEventListener("abort", onAbort, { once: true });
    }
    const linked = group;
    linked.controllers.add(controller);

    return () => {
      linked.controllers.delete(controller);
      if (linked.controllers.size === 0 && this.#groups.get(signal) === linked) {
        this.#groups.delete(signal);
        signal.removeEventListener("abort", linked.onAbort);
      }
    };
  }
}
