// A local HTTP API that enforces limits the way a strict provider does, for the enrich_api demo.
// It serves ISO 3166-1 country records on 127.0.0.1 and counts every request it receives.

import { readFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { splitCsvLine } from "./_rows.ts";

/** A country record that the API returns. */
export interface Country {
  /** The ISO 3166-1 alpha-2 code. */
  readonly code: string;
  /** The English short name. */
  readonly name: string;
  /** The UN M49 region. */
  readonly region: string;
}

/** The limits the API enforces and the data it serves. */
export interface FakeApiOptions {
  /** The maximum number of requests in flight; one more gets a 429 response. */
  readonly maxInFlight: number;
  /** The maximum number of requests in any sliding window; one more gets a 429 response. */
  readonly maxPerWindow: number;
  /** The window length in milliseconds. */
  readonly windowMs: number;
  /** Every record whose id is a multiple of this gets a 503 response to its first attempt. */
  readonly failEvery: number;
  /** The countries by code. */
  readonly countries: ReadonlyMap<string, Country>;
}

/** The API's counters. */
export interface ApiCounts {
  /** Every request received. */
  readonly requests: number;
  /** The maximum number of requests in flight at one time, rejected ones included. */
  readonly maxInFlight: number;
  /** Responses with status 429 Too Many Requests. */
  readonly tooManyRequests: number;
  /** Responses with status 503 Service Unavailable. */
  readonly unavailable: number;
  /** Responses with status 404 Not Found. */
  readonly notFound: number;
}

/** A running fake API. */
export interface FakeApi extends AsyncDisposable {
  /** The base URL, such as `http://127.0.0.1:40123`. */
  readonly url: string;
  /** Reads the counters. */
  counts(): ApiCounts;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/** Reads the API's countries from a CSV file with the columns code, name and region. */
export async function loadCountries(path: string): Promise<Map<string, Country>> {
  const lines = (await readFile(path, "utf8")).split(/\r?\n/).slice(1);
  const countries = new Map<string, Country>();
  for (const line of lines) {
    if (line === "") continue;
    const [code = "", name = "", region = ""] = splitCsvLine(line);
    countries.set(code, { code, name, region });
  }
  return countries;
}

/**
 * Starts the API on an ephemeral port of 127.0.0.1.
 *
 * `GET /v1/countries/<code>?record=<id>` responds at once with 429 when the request is one more
 * than `maxInFlight` in flight, or one more than `maxPerWindow` in the last `windowMs`. Otherwise
 * it responds after a latency of 10 to 60 ms derived from a hash of the record id, with:
 *
 * - 503 on the first attempt of every record whose id is a multiple of `failEvery`;
 * - 404 for a code that is not two capital letters, an unknown code, or another path;
 * - 200 with the country as JSON otherwise.
 */
export async function startFakeApi(options: FakeApiOptions): Promise<FakeApi> {
  let requests = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  let tooManyRequests = 0;
  let unavailable = 0;
  let notFound = 0;
  const arrivals: number[] = [];
  let firstArrival = 0;
  const attempts = new Map<string, number>();

  function respond(response: ServerResponse, status: number, body: unknown): void {
    inFlight--;
    response.writeHead(status, { "content-type": "application/json" });
    response.end(JSON.stringify(body));
  }

  function handle(request: IncomingMessage, response: ServerResponse): void {
    const now = performance.now();
    requests++;
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    arrivals.push(now);
    while ((arrivals[firstArrival] as number) <= now - options.windowMs) firstArrival++;
    if (firstArrival > 1_000) {
      arrivals.splice(0, firstArrival);
      firstArrival = 0;
    }

    const inWindow = arrivals.length - firstArrival;
    if (inFlight > options.maxInFlight || inWindow > options.maxPerWindow) {
      tooManyRequests++;
      respond(response, 429, { error: "Too Many Requests" });
      return;
    }

    const url = new URL(request.url ?? "/", "http://127.0.0.1");
    const code = /^\/v1\/countries\/([A-Z]{2})$/.exec(url.pathname)?.[1];
    const record = url.searchParams.get("record") ?? "";
    setTimeout(() => {
      if (code === undefined || request.method !== "GET") {
        notFound++;
        respond(response, 404, { error: "Not Found" });
        return;
      }
      const attempt = (attempts.get(record) ?? 0) + 1;
      attempts.set(record, attempt);
      const id = Number(record);
      if (attempt === 1 && Number.isInteger(id) && id % options.failEvery === 0) {
        unavailable++;
        respond(response, 503, { error: "Service Unavailable" });
        return;
      }
      const country = options.countries.get(code);
      if (country === undefined) {
        notFound++;
        respond(response, 404, { error: "Not Found" });
        return;
      }
      respond(response, 200, country);
    }, latencyMs(record));
  }

  const server = createServer(handle);
  // Keeps idle connections open for longer than the default 5 s, so the client's connection pool
  // can reuse them for the whole run.
  server.keepAliveTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const address = server.address();
  if (address === null || typeof address === "string") {
    throw new TypeError(`Cannot start the fake API as its address is not a port: ${address}`);
  }

  const close = async (): Promise<void> => {
    if (!server.listening) return;
    const closed = new Promise<void>((resolve, reject) => {
      server.close((error) => error === undefined ? resolve() : reject(error));
    });
    // Idle keep-alive connections would hold close() open until they time out.
    server.closeAllConnections();
    await closed;
  };

  return {
    url: `http://127.0.0.1:${address.port}`,
    counts: () => ({ requests, maxInFlight, tooManyRequests, unavailable, notFound }),
    close,
    [Symbol.asyncDispose]: close,
  };
}

// A latency from 10 to 60 ms that depends only on the record id (32-bit FNV-1a hash).
function latencyMs(record: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < record.length; i++) {
    hash ^= record.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return 10 + (hash % 51);
}
