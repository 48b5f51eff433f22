// The engine behind AsyncExecutor.map and mapUnordered: pulls inputs lazily, starts one task per
// input, and hands results out in input or completion order, holding no more than the running
// tasks plus a bounded buffer of finished results.

import type { ResultSource } from "./result_stream.ts";
import type { Permit } from "./semaphore.ts";
import { linkSignal, noop } from "./_signals.ts";

/** A finished input of a map run. */
export interface MapEntry<I> {
  readonly index: number;
  readonly input: I;
  readonly ok: boolean;
  readonly value: unknown;
}

/** Reports the outcome of one input; it may be called synchronously from `execute`. */
export type SettleCallback<I> = (index: number, input: I, ok: boolean, value: unknown) => void;

/** The services a map run needs from the executor or pipeline that owns it. */
export interface MapRunHost<I> {
  /**
   * Runs the work for one input under the owner's limits, with the run's signal, and reports the
   * outcome through `settle` exactly once. `admission` is the permit taken from
   * {@linkcode MapRunHost.admission} before the input was pulled.
   */
  execute(
    input: I,
    signal: AbortSignal,
    index: number,
    admission: Permit | undefined,
    settle: SettleCallback<I>,
  ): void;
  /** The maximum number of inputs in flight at once. */
  workers(): number;
  /** The owner's own signal, aborted on cancelling shutdown. */
  readonly executorSignal: AbortSignal;
  /**
   * A limiter whose permit is taken before each input is pulled, so input is read only when the
   * owner has room for it. The permit passes to `execute`, which releases it.
   */
  readonly admission?: {
    tryAcquire(): Permit | undefined;
    acquire(signal: AbortSignal): Promise<Permit>;
  } | undefined;
  /** Called once when the run starts, with the run's signal, and once when it ends. */
  runStarted(signal: AbortSignal): void;
  runEnded(): void;
}

/** The options of a map run, validated by the executor. */
export interface MapRunOptions<I, R> {
  readonly ordered: boolean;
  /** `true`: failures are results; `false`: the first failure ends the run (fail-fast). */
  readonly settled: boolean;
  /** The maximum number of finished results buffered before the run stops pulling input; `undefined` means the worker count. */
  readonly bufferSize: number | undefined;
  readonly signal: AbortSignal | undefined;
  readonly format: (entry: MapEntry<I>) => R;
  /** `format` returns an entry's value unchanged, so collecting can skip building entries. */
  readonly plainValues?: boolean | undefined;
}

type Source<I> =
  | { kind: "array"; array: ArrayLike<I> }
  | { kind: "sync"; iterator: Iterator<I> }
  | { kind: "async"; iterator: AsyncIterator<I> };

/** Opens the iterator of `inputs`, which may be an array, an `Iterable` or an `AsyncIterable`. */
export function openSource<I>(inputs: Iterable<I> | AsyncIterable<I>): Source<I> {
  if (Array.isArray(inputs)) return { kind: "array", array: inputs as I[] };
  if (typeof (inputs as AsyncIterable<I>)[Symbol.asyncIterator] === "function") {
    return { kind: "async", iterator: (inputs as AsyncIterable<I>)[Symbol.asyncIterator]() };
  }
  return { kind: "sync", iterator: (inputs as Iterable<I>)[Symbol.iterator]() };
}

const closedEarly = () => new DOMException("The result stream was closed early", "AbortError");

/** Creates the result source of one map call. Nothing runs until it is iterated or collected. */
export function mapSource<I, R>(
  host: MapRunHost<I>,
  inputs: Iterable<I> | AsyncIterable<I>,
  options: MapRunOptions<I, R>,
): ResultSource<R> {
  return {
    iterate: () => new MapRun(host, inputs, options, false),
    collect: () => new MapRun(host, inputs, options, true).collect(),
  };
}

/** One run of a map: an async iterator of its results that can also collect all of them. */
export class MapRun<I, R> implements AsyncIterator<R, undefined> {
  readonly #host: MapRunHost<I>;
  readonly #options: MapRunOptions<I, R>;
  readonly #collecting: boolean;
  readonly #inputs: Iterable<I> | AsyncIterable<I>;
  #source: Source<I> | undefined;
  #arrayIndex = 0;

  readonly #controller = new AbortController();
  #unlinkCaller = noop;
  #unlinkExecutor = noop;
  #started = false;
  #ended = false;

  #nextIndex = 0;
  #inFlight = 0;
  #pulling = false;
  #inputDone = false;
  #sourceFailed = false;
  #sourceError: unknown;
  #failed = false;
  #failure: unknown;

  // Finished entries not yet handed out: by index when ordered, in completion order otherwise.
  #byIndex = new Map<number, MapEntry<I>>();
  #queue: MapEntry<I>[] = [];
  #queueStart = 0;
  #buffered = 0;
  #nextYield = 0;
  #results: R[] = [];

  #admitted: Permit | undefined;
  #pumping = false;
  #insideNext = false;
  #closeDeferred = false;
  #wake: (() => void) | undefined;
  #inProgress: Promise<unknown> | undefined;

  constructor(
    host: MapRunHost<I>,
    inputs: Iterable<I> | AsyncIterable<I>,
    options: MapRunOptions<I, R>,
    collecting: boolean,
  ) {
    this.#host = host;
    this.#inputs = inputs;
    this.#options = options;
    this.#collecting = collecting;
  }

  /** Ends the run with `reason`, as a failure of a fail-fast run would. */
  abort(reason: unknown): void {
    if (this.#failed || this.#controller.signal.aborted) return;
    this.#failed = true;
    this.#failure = reason;
    this.#abort(reason);
    this.#notify();
  }

  /** Starts pulling input and running work before anyone reads the results. */
  begin(): void {
    this.#start();
    this.#pump();
  }

  async collect(): Promise<R[]> {
    this.#start();
    while (true) {
      this.#pump();
      for (let entry = this.#take(); entry !== undefined; entry = this.#take()) {
        this.#results[entry.index] = this.#options.format(entry);
      }
      const outcome = this.#outcome();
      if (outcome === "done") {
        await this.#end();
        return this.#results;
      }
      if (outcome === "failed") {
        await this.#end();
        throw this.#failure;
      }
      await this.#sleep();
    }
  }

  next(): Promise<IteratorResult<R, undefined>> {
    // Fast path: a result is ready and no earlier call is still in progress.
    if (this.#inProgress === undefined && this.#started && !this.#ended) {
      this.#pump();
      const entry = this.#take();
      if (entry !== undefined) {
        // The entry's buffer slot is free now, so another input may start.
        this.#pump();
        return Promise.resolve({ done: false, value: this.#options.format(entry) });
      }
    }
    return this.#serialize(() => this.#next());
  }

  return(): Promise<IteratorResult<R, undefined>> {
    return this.#serialize(() => this.#return());
  }

  // Runs calls of next() and return() one after another, as a for-await loop would.
  #serialize(
    call: () => Promise<IteratorResult<R, undefined>>,
  ): Promise<IteratorResult<R, undefined>> {
    const previous = this.#inProgress;
    const result = previous === undefined ? call() : previous.then(call, call);
    this.#inProgress = result;
    const clear = () => {
      if (this.#inProgress === result) this.#inProgress = undefined;
    };
    result.then(clear, clear);
    return result;
  }

  async #next(): Promise<IteratorResult<R, undefined>> {
    if (this.#ended) return { done: true, value: undefined };
    this.#start();

    while (true) {
      this.#pump();
      const entry = this.#take();
      if (entry !== undefined) {
        this.#pump();
        return { done: false, value: this.#options.format(entry) };
      }

      const outcome = this.#outcome();
      if (outcome === "done") {
        await this.#end();
        return { done: true, value: undefined };
      }
      if (outcome === "failed") {
        await this.#end();
        throw this.#failure;
      }
      await this.#sleep();
    }
  }

  async #return(): Promise<IteratorResult<R, undefined>> {
    if (!this.#ended) {
      if (this.#started) this.#abort(closedEarly());
      await this.#end();
    }
    return { done: true, value: undefined };
  }

  #start(): void {
    if (this.#started) return;
    const signal = this.#controller.signal;
    this.#host.runStarted(signal);
    this.#started = true;
    signal.addEventListener("abort", () => this.#onAbort(), { once: true });
    this.#unlinkExecutor = linkSignal(this.#controller, this.#host.executorSignal);
    this.#unlinkCaller = linkSignal(this.#controller, this.#options.signal);
    if (signal.aborted) return;
    try {
      this.#source = openSource(this.#inputs);
    } catch (error) {
      // An input that fails to open ends the run like one that fails on its first read.
      this.#onSourceError(error);
    }
  }

  // "running": keep waiting; "done": every result was handed out; "failed": end with #failure.
  #outcome(): "running" | "done" | "failed" {
    if (this.#controller.signal.aborted && !this.#failed) {
      this.#failed = true;
      this.#failure = this.#controller.signal.reason;
    }
    if (this.#failed) return this.#inFlight === 0 ? "failed" : "running";
    if (!this.#inputDone || this.#pulling || this.#inFlight > 0 || this.#buffered > 0) {
      return "running";
    }
    if (this.#sourceFailed) {
      this.#failed = true;
      this.#failure = this.#sourceError;
      return "failed";
    }
    return "done";
  }

  #take(): MapEntry<I> | undefined {
    if (this.#failed || this.#controller.signal.aborted || this.#buffered === 0) return undefined;
    let entry: MapEntry<I> | undefined;
    if (this.#options.ordered) {
      entry = this.#byIndex.get(this.#nextYield);
      if (entry === undefined) return undefined;
      this.#byIndex.delete(this.#nextYield);
      this.#nextYield++;
    } else {
      entry = this.#queue[this.#queueStart];
      this.#queue[this.#queueStart++] = undefined as unknown as MapEntry<I>;
      if (this.#queueStart === this.#queue.length) {
        this.#queue = [];
        this.#queueStart = 0;
      }
    }
    this.#buffered--;
    return entry;
  }

  #pump(): void {
    // A task that settles synchronously calls #settle, and so #pump, from inside this loop; the
    // outer loop goes on instead, which keeps the stack flat.
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      this.#pumpInputs();
    } finally {
      this.#pumping = false;
    }
  }

  #pumpInputs(): void {
    const source = this.#source;
    if (source === undefined || this.#inputDone || this.#pulling) return;
    const signal = this.#controller.signal;
    const workers = this.#host.workers();
    const limit = workers + (this.#collecting ? Infinity : this.#options.bufferSize ?? workers);

    while (!signal.aborted && this.#inFlight < workers && this.#inFlight + this.#buffered < limit) {
      if (!this.#admit()) return;

      if (source.kind === "array") {
        if (this.#arrayIndex >= source.array.length) {
          this.#inputDone = true;
          this.#releaseAdmission();
          return;
        }
        this.#launch(source.array[this.#arrayIndex++] as I);
        continue;
      }

      let step: IteratorResult<I> | Promise<IteratorResult<I>>;
      this.#insideNext = true;
      try {
        step = source.iterator.next();
      } catch (error) {
        this.#onSourceError(error);
        return;
      } finally {
        this.#insideNext = false;
      }
      if (this.#closeDeferred) {
        // The run was cancelled while the source ran; whatever it yielded is dropped.
        this.#closeDeferred = false;
        if (source.kind === "async") Promise.resolve(step).catch(noop);
        this.#closeIterator(source.iterator);
        return;
      }
      if (source.kind === "async") {
        this.#pulling = true;
        Promise.resolve(step).then(
          (result) => this.#onPulled(result),
          (error) => this.#onPulled(undefined, error),
        );
        return;
      }
      const result = step as IteratorResult<I>;
      if (result.done) {
        this.#inputDone = true;
        this.#releaseAdmission();
        return;
      }
      this.#launch(result.value);
    }
  }

  // Takes the owner's admission permit for the next input; false while waiting for it.
  #admit(): boolean {
    const admission = this.#host.admission;
    if (admission === undefined || this.#admitted !== undefined) return true;
    this.#admitted = admission.tryAcquire();
    if (this.#admitted !== undefined) return true;

    this.#pulling = true;
    admission.acquire(this.#controller.signal).then(
      (permit) => {
        this.#pulling = false;
        if (this.#controller.signal.aborted || this.#inputDone) permit.release();
        else this.#admitted = permit;
        this.#pump();
        this.#notify();
      },
      () => {
        // Only an abort rejects the wait, and the abort ends the run.
        this.#pulling = false;
        this.#notify();
      },
    );
    return false;
  }

  #releaseAdmission(): void {
    this.#admitted?.release();
    this.#admitted = undefined;
  }

  #onPulled(result: IteratorResult<I> | undefined, error?: unknown): void {
    this.#pulling = false;
    if (result === undefined) this.#onSourceError(error);
    else if (result.done) {
      this.#inputDone = true;
      this.#releaseAdmission();
    } else if (this.#controller.signal.aborted) {
      // The source yielded after the run was cancelled: the input is dropped, never started.
      this.#releaseAdmission();
    } else this.#launch(result.value);
    this.#pump();
    this.#notify();
  }

  #onSourceError(error: unknown): void {
    this.#inputDone = true;
    this.#releaseAdmission();
    this.#sourceFailed = true;
    this.#sourceError = error;
  }

  #launch(input: I): void {
    const index = this.#nextIndex++;
    const admission = this.#admitted;
    this.#admitted = undefined;
    this.#inFlight++;
    this.#host.execute(input, this.#controller.signal, index, admission, this.#settleCallback);
  }

  readonly #settleCallback: SettleCallback<I> = (index, input, ok, value) =>
    this.#settle(index, input, ok, value);

  #settle(index: number, input: I, ok: boolean, value: unknown): void {
    this.#inFlight--;
    if (this.#failed || this.#controller.signal.aborted) {
      this.#notify();
      return;
    }

    if (!ok && !this.#options.settled) {
      this.#failed = true;
      this.#failure = value;
      this.#abort(value);
      this.#notify();
      return;
    }

    if (this.#collecting && this.#options.plainValues === true) {
      this.#results[index] = value as R;
      this.#pump();
      this.#notify();
      return;
    }
    const entry: MapEntry<I> = { index, input, ok, value };
    if (this.#collecting) {
      this.#results[index] = this.#options.format(entry);
    } else {
      if (this.#options.ordered) this.#byIndex.set(index, entry);
      else this.#queue.push(entry);
      this.#buffered++;
    }
    this.#pump();
    this.#notify();
  }

  #abort(reason: unknown): void {
    if (!this.#controller.signal.aborted) this.#controller.abort(reason);
  }

  #onAbort(): void {
    this.#closeSource();
    this.#notify();
  }

  #closeSource(): void {
    this.#releaseAdmission();
    const source = this.#source;
    const alreadyDone = this.#inputDone;
    this.#inputDone = true;
    if (source === undefined || source.kind === "array" || alreadyDone) return;
    // A source that cancels the run from inside its own next() cannot be closed until it returns.
    if (this.#insideNext) this.#closeDeferred = true;
    else this.#closeIterator(source.iterator);
  }

  #closeIterator(iterator: Iterator<I> | AsyncIterator<I>): void {
    try {
      const closing = iterator.return?.();
      if (closing instanceof Promise) closing.catch(noop);
    } catch {
      // An input iterator that throws while closing has nothing more to report to this run.
    }
  }

  #notify(): void {
    const wake = this.#wake;
    if (wake !== undefined) {
      this.#wake = undefined;
      wake();
    }
  }

  #sleep(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#wake = resolve;
    });
  }

  async #end(): Promise<void> {
    if (this.#ended) return;
    this.#closeSource();
    // A pending pull of an async input is not awaited: it may never settle once the run is
    // cancelled, and whatever it yields is dropped.
    while (this.#inFlight > 0) await this.#sleep();
    this.#ended = true;
    this.#unlinkCaller();
    this.#unlinkExecutor();
    this.#byIndex.clear();
    this.#queue = [];
    if (this.#started) this.#host.runEnded();
  }
}
