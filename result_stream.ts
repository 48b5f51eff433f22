/**
 * The result stream that `AsyncExecutor.map` and `Pipeline.run` return.
 *
 * @module
 */

/** The engine behind a {@linkcode ResultStream}: an iterator, or a collection of every result. */
export interface ResultSource<T> {
  /** Starts the work and iterates its results. */
  iterate(): AsyncIterator<T, undefined>;
  /** Starts the work and resolves with every result once it has finished. */
  collect(): Promise<T[]>;
}

/**
 * The results of a batch of work, available two ways: `for await` yields each result as it
 * becomes ready, and `await` (or {@linkcode ResultStream.toArray}) resolves with all of them.
 *
 * The work starts when the stream is first iterated or awaited, not before, and a stream runs
 * once: iterating it a second time, or after awaiting it, throws a `TypeError`; awaiting it twice
 * gives the same array. Leaving a `for await` loop early (`break`, `return` or a throw) cancels
 * the work that is still running, waits for it to settle and closes the input iterator.
 *
 * Because a result stream is a thenable, returning one from an `async` function resolves that
 * function with the array.
 *
 * @typeParam T The result type.
 *
 * @example Stream or collect
 * ```ts
 * import { AsyncExecutor } from "@antflow/antflow";
 * import assert from "node:assert/strict";
 *
 * await using executor = new AsyncExecutor({ maxWorkers: 4 });
 * const doubled = await executor.map((n: number) => n * 2, [1, 2, 3]);
 * assert.deepEqual(doubled, [2, 4, 6]);
 *
 * const seen: number[] = [];
 * for await (const n of executor.map((n: number) => n + 1, [1, 2, 3])) seen.push(n);
 * assert.deepEqual(seen, [2, 3, 4]);
 * ```
 */
export class ResultStream<T> implements AsyncIterable<T>, PromiseLike<T[]> {
  #source: ResultSource<T>;
  #started = false;
  #collected: Promise<T[]> | undefined;

  /**
   * Wraps a result source. Library code creates streams; users receive them.
   *
   * @param source The engine that runs the work.
   */
  constructor(source: ResultSource<T>) {
    this.#source = source;
  }

  /**
   * Starts the work and returns an iterator of its results.
   *
   * @returns The iterator, which is also `AsyncDisposable`.
   * @throws {TypeError} If the stream was already iterated or awaited.
   */
  [Symbol.asyncIterator](): AsyncIterator<T, undefined> & AsyncDisposable {
    this.#claim("iterate");
    const iterator = this.#source.iterate();
    return {
      next: () => iterator.next(),
      return: () => iterator.return?.() ?? Promise.resolve({ done: true, value: undefined }),
      async [Symbol.asyncDispose](): Promise<void> {
        await iterator.return?.();
      },
    };
  }

  /**
   * Starts the work and resolves with every result; a second call returns the same promise.
   *
   * @returns A promise of the results.
   * @throws {TypeError} (as a rejection) If the stream was already iterated.
   *
   * @example Collect
   * ```ts
   * import { AsyncExecutor } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * await using executor = new AsyncExecutor({ maxWorkers: 2 });
   * const lengths = await executor.map((s: string) => s.length, ["a", "bb"]).toArray();
   * assert.deepEqual(lengths, [1, 2]);
   * ```
   */
  toArray(): Promise<T[]> {
    if (this.#collected !== undefined) return this.#collected;
    try {
      this.#claim("collect");
    } catch (error) {
      return Promise.reject(error);
    }
    this.#collected = this.#source.collect();
    return this.#collected;
  }

  /**
   * Resolves with every result, so `await stream` gives the array.
   *
   * @typeParam R1 The fulfilled result of the callback.
   * @typeParam R2 The rejected result of the callback.
   * @param onfulfilled Called with the array.
   * @param onrejected Called with the error that ended the work.
   * @returns A promise of the callback's result.
   */
  then<R1 = T[], R2 = never>(
    onfulfilled?: ((value: T[]) => R1 | PromiseLike<R1>) | null,
    onrejected?: ((reason: unknown) => R2 | PromiseLike<R2>) | null,
  ): Promise<R1 | R2> {
    return this.toArray().then(onfulfilled, onrejected);
  }

  /**
   * Starts the work and returns its results as a Web `ReadableStream`. The stream pulls one result
   * at a time, so a slow reader slows the work; cancelling it cancels the work.
   *
   * @returns The readable stream.
   * @throws {TypeError} If the stream was already iterated or awaited.
   *
   * @example Pipe results into a Web stream
   * ```ts
   * import { AsyncExecutor } from "@antflow/antflow";
   * import assert from "node:assert/strict";
   *
   * await using executor = new AsyncExecutor({ maxWorkers: 2 });
   * const readable = executor.map((n: number) => `${n}\n`, [1, 2]).toReadableStream();
   * const text = await new Response(readable.pipeThrough(new TextEncoderStream())).text();
   * assert.equal(text, "1\n2\n");
   * ```
   */
  toReadableStream(): ReadableStream<T> {
    const iterator = this[Symbol.asyncIterator]();
    return new ReadableStream<T>({
      async pull(controller): Promise<void> {
        const result = await iterator.next();
        if (result.done) controller.close();
        else controller.enqueue(result.value);
      },
      async cancel(): Promise<void> {
        await iterator.return?.();
      },
    }, { highWaterMark: 0 });
  }

  #claim(action: string): void {
    if (this.#started) {
      throw new TypeError(`Cannot ${action} the result stream as it has already started`);
    }
    this.#started = true;
  }
}
