// Input checks shared by every public constructor and method. Every message follows one template:
// "Cannot <action> as '<option>' must be <rule>: received <value>".

/** Formats a received value for an error message: strings are quoted, objects name their kind. */
export function describeValue(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "function") return "a function";
  if (value === null) return "null";
  if (Array.isArray(value)) return value.length === 0 ? "an empty array" : "an array";
  if (typeof value === "object") return "an object";
  return String(value);
}

/** Builds the package's one error message template. */
export function invalidMessage(
  action: string,
  option: string,
  rule: string,
  value: unknown,
): string {
  return `Cannot ${action} as '${option}' must be ${rule}: received ${describeValue(value)}`;
}

/** Throws a `TypeError` unless `value` is a number, then a `RangeError` unless it is an integer >= `min`. */
export function checkInteger(action: string, option: string, value: unknown, min: number): number {
  const rule = min === 0 ? "a non-negative integer" : `an integer >= ${min}`;
  if (typeof value !== "number") throw new TypeError(invalidMessage(action, option, rule, value));
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(invalidMessage(action, option, rule, value));
  }
  return value;
}

/** Like {@linkcode checkInteger} with a minimum of 1, but also accepts `Infinity`. */
export function checkCapacity(action: string, option: string, value: unknown): number {
  const rule = "a positive integer or Infinity";
  if (typeof value !== "number") throw new TypeError(invalidMessage(action, option, rule, value));
  if (value !== Infinity && (!Number.isInteger(value) || value < 1)) {
    throw new RangeError(invalidMessage(action, option, rule, value));
  }
  return value;
}

/** Throws unless `value` is a finite number >= `min` (a duration in milliseconds, a factor). */
export function checkFinite(action: string, option: string, value: unknown, min: number): number {
  const rule = `a finite number >= ${min}`;
  if (typeof value !== "number") throw new TypeError(invalidMessage(action, option, rule, value));
  if (!Number.isFinite(value) || value < min) {
    throw new RangeError(invalidMessage(action, option, rule, value));
  }
  return value;
}

/** Throws a `TypeError` unless `value` is a function. */
export function checkFunction(action: string, option: string, value: unknown): void {
  if (typeof value !== "function") {
    throw new TypeError(invalidMessage(action, option, "a function", value));
  }
}

/** Throws a `TypeError` unless `value` is an `AbortSignal` or undefined. */
export function checkSignal(action: string, value: unknown): void {
  if (value !== undefined && !(value instanceof AbortSignal)) {
    throw new TypeError(invalidMessage(action, "signal", "an AbortSignal", value));
  }
}

/** Validates a timeout option: `undefined` or `Infinity` mean none, otherwise a finite number > 0. */
export function checkTimeout(
  action: string,
  value: unknown,
  option = "timeoutMs",
): number | undefined {
  if (value === undefined || value === Infinity) return undefined;
  const rule = "a number > 0";
  if (typeof value !== "number") throw new TypeError(invalidMessage(action, option, rule, value));
  if (!(value > 0)) throw new RangeError(invalidMessage(action, option, rule, value));
  return value;
}

interface AcquireLike {
  acquire(options?: unknown): Promise<unknown>;
}

function isLimiter(value: unknown): boolean {
  return typeof (value as Partial<AcquireLike> | null)?.acquire === "function";
}

/**
 * Validates a `semaphore`-style option, which takes one limiter or an array of them, and returns a
 * single limiter made with `combine`, or `undefined` when the option is absent.
 */
export function toLimiter<L>(
  action: string,
  option: string,
  value: L | readonly L[] | undefined,
  combine: (...limiters: L[]) => L,
): L | undefined {
  if (value === undefined) return undefined;
  if (Array.isArray(value)) {
    for (const [index, limiter] of value.entries()) {
      if (!isLimiter(limiter)) {
        throw new TypeError(invalidMessage(action, `${option}[${index}]`, "a Limiter", limiter));
      }
    }
    return value.length === 0 ? undefined : combine(...value);
  }
  if (!isLimiter(value)) {
    throw new TypeError(invalidMessage(action, option, "a Limiter or an array of Limiters", value));
  }
  return value as L;
}
