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

/** Does nothing; the unlink function of a link that needs none. */
export function noop(): void {}

/** The reason of an attempt that ran past its timeout, as `AbortSignal.timeout` would give. */
export function timeoutReason(timeoutMs: number): DOMException {
  return new DOMException(`The task timed out after ${timeoutMs} ms`, "TimeoutError");
}
