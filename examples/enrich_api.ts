// The antflow demo: push a data set through an HTTP API that enforces strict limits, and finish
// without one rejected request.
//
//   deno run -A examples/enrich_api.ts [--input <path>] [--output <path>] [--limit <n>] [--no-progress]
//   bun run examples/enrich_api.ts [the same options]
//
// It starts a provider API on 127.0.0.1 that responds with 429 to a 6th request in flight or to a
// 151st request in any sliding second. The API adds 10 to 60 ms of latency and fails the first
// attempt of every 20th record with 503. A three-stage pipeline then validates each input row,
// looks up the row's country through the API, and appends the enriched record to a JSON Lines
// file. The lookup stage has 32 workers, but only its API call is limited: to 5 at once, and to
// 15 per 125 ms.
//
// The default input is examples/data/cities.csv (2,066 world cities with their ISO 3166-1 country
// codes). The exit code is 1 if the API counted more than 5 requests in flight or sent any 429,
// and 2 for a usage error, an unreadable input file or an output file that cannot be opened.
// Malformed rows are reported as failed items and do not change the exit code.

import process from "node:process";
import { type FileHandle, open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  Pipeline,
  type PipelineResult,
  RateLimiter,
  Semaphore,
  Stage,
  type StageTaskContext,
} from "@antflow/antflow";
import { ProgressDisplay } from "@antflow/antflow/progress";
import { type Country, loadCountries, startFakeApi } from "./_fake_api.ts";
import { type RawRow, readRows, splitCsvLine } from "./_rows.ts";

/** The provider's limits, which the API enforces and the pipeline must respect. */
const PROVIDER = { maxInFlight: 5, maxPerSecond: 150, failEvery: 20 };

const DATA = fileURLToPath(new URL("./data/", import.meta.url));

const USAGE = `Usage: enrich_api.ts [--input <path>] [--output <path>] [--limit <n>] [--no-progress]

  --input <path>   CSV with the columns id, city, country_code, or JSON Lines with the same
                   fields (.jsonl or .ndjson). Default: examples/data/cities.csv
  --output <path>  The JSON Lines file to write. Default: antflow-enriched.jsonl in the OS
                   temporary directory
  --limit <n>      Read only the first n rows
  --no-progress    Do not draw the progress display on standard error`;

/** A validated input row. */
interface CityRecord {
  readonly id: number;
  readonly city: string;
  readonly countryCode: string;
}

/** A row enriched with its country. */
interface EnrichedRecord extends CityRecord {
  readonly country: string;
  readonly region: string;
}

/** An input row that fails validation. */
class ValidationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ValidationError";
  }
}

/** A response from the API with a status other than 200. */
class ApiError extends Error {
  readonly status: number;

  constructor(status: number, message: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

// Ends the process with exit code 2 after printing the message, and the usage when asked.
function exitWithError(message: string, showUsage: boolean): never {
  console.error(showUsage ? `${message}\n\n${USAGE}` : message);
  process.exit(2);
}

function parseOptions() {
  let values;
  try {
    ({ values } = parseArgs({
      args: process.argv.slice(2),
      options: {
        input: { type: "string" },
        output: { type: "string" },
        limit: { type: "string" },
        "no-progress": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    exitWithError((error as Error).message, true);
  }
  if (values.help === true) {
    console.log(USAGE);
    process.exit(0);
  }

  let limit = Infinity;
  if (values.limit !== undefined) {
    limit = Number(values.limit);
    if (!Number.isInteger(limit) || limit < 1) {
      exitWithError(
        `Cannot run the demo as '--limit' must be an integer >= 1: received "${values.limit}"`,
        true,
      );
    }
  }
  return {
    input: values.input ?? join(DATA, "cities.csv"),
    output: values.output ?? join(tmpdir(), "antflow-enriched.jsonl"),
    limit,
    progress: values["no-progress"] !== true,
  };
}

// Builds the error of a malformed row; `field` is undefined when the whole line is at fault.
function invalid(
  row: RawRow,
  field: string | undefined,
  rule: string,
  value: unknown,
): ValidationError {
  const subject = field === undefined ? "the row" : `'${field}'`;
  return new ValidationError(
    `Cannot validate line ${row.line} as ${subject} must be ${rule}: received ${
      JSON.stringify(value)
    }`,
  );
}

/** Turns an input line into a record, or throws a ValidationError; the first stage's task. */
function validateRow(row: RawRow): CityRecord {
  let fields: Record<string, unknown>;
  if (row.header === undefined) {
    try {
      fields = JSON.parse(row.text);
    } catch {
      throw invalid(row, undefined, "a JSON object", row.text);
    }
    if (typeof fields !== "object" || fields === null || Array.isArray(fields)) {
      throw invalid(row, undefined, "a JSON object", row.text);
    }
  } else {
    let values: string[];
    try {
      values = splitCsvLine(row.text);
    } catch {
      throw invalid(row, undefined, "CSV with every quoted field closed", row.text);
    }
    if (values.length !== row.header.length) {
      throw invalid(row, undefined, `${row.header.length} comma-separated fields`, row.text);
    }
    fields = Object.fromEntries(row.header.map((name, i) => [name, values[i]]));
  }

  const id = typeof fields.id === "string" && /^\d+$/.test(fields.id)
    ? Number(fields.id)
    : fields.id;
  if (!Number.isSafeInteger(id) || (id as number) < 1) {
    throw invalid(row, "id", "an integer >= 1", fields.id);
  }
  const city = typeof fields.city === "string" ? fields.city.trim() : fields.city;
  if (typeof city !== "string" || city === "") {
    throw invalid(row, "city", "a non-empty string", fields.city);
  }
  const countryCode = fields.country_code ?? fields.countryCode;
  if (typeof countryCode !== "string" || !/^[A-Z]{2}$/.test(countryCode)) {
    throw invalid(row, "country_code", "two capital letters", countryCode);
  }
  return { id: id as number, city, countryCode };
}

async function main(): Promise<void> {
  const options = parseOptions();
  let rows: RawRow[];
  try {
    rows = await readRows(options.input, options.limit);
  } catch (error) {
    exitWithError((error as Error).message, false);
  }

  await using api = await startFakeApi({
    maxInFlight: PROVIDER.maxInFlight,
    maxPerWindow: PROVIDER.maxPerSecond,
    windowMs: 1_000,
    failEvery: PROVIDER.failEvery,
    countries: await loadCountries(join(DATA, "countries.csv")),
  });

  // The tasks of the lookup stage. Only callApi is limited; the other two run on any free worker.
  function toRequest(record: CityRecord) {
    const path = `/v1/countries/${encodeURIComponent(record.countryCode)}`;
    return { record, path, url: `${api.url}${path}?record=${record.id}` };
  }
  async function callApi(
    request: { record: CityRecord; path: string; url: string },
    { signal }: StageTaskContext,
  ) {
    const response = await fetch(request.url, { signal });
    const body = await response.text();
    if (!response.ok) {
      const status = `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, `GET ${request.path} failed with ${status}`);
    }
    return { record: request.record, country: JSON.parse(body) as Country };
  }
  function merge(reply: { record: CityRecord; country: Country }): EnrichedRecord {
    return { ...reply.record, country: reply.country.name, region: reply.country.region };
  }

  // The provider counts a request when it arrives, some time after the client's limiter granted
  // it. That delay varies, up to a few hundred ms on a busy machine, because this server and the
  // client share one event loop. A burst of the whole quota could then land in the same provider
  // second as the previous burst. So the client spends the quota in slices, with headroom: at most
  // 15 requests in any 125 ms, which is never more than 150 in any 1,250 ms.
  const apiLimits = [
    new Semaphore(PROVIDER.maxInFlight),
    new RateLimiter({ limit: 15, intervalMs: 125 }),
  ];

  let file: FileHandle;
  try {
    file = await open(options.output, "w");
  } catch (error) {
    exitWithError(`Cannot write ${options.output}: ${(error as Error).message}`, false);
  }
  let written = 0;
  async function appendLine(record: EnrichedRecord): Promise<EnrichedRecord> {
    await file.write(`${JSON.stringify(record)}\n`);
    written++;
    return record;
  }

  const pipeline = new Pipeline({
    stages: [
      new Stage({ name: "validate", workers: 4, tasks: [validateRow] }),
      new Stage({
        name: "lookup",
        workers: 32,
        tasks: [toRequest, callApi, merge],
        taskConcurrencyLimits: { callApi: apiLimits },
        retry: {
          attempts: 3,
          delayMs: 100,
          backoff: "exponential",
          retryIf: (error) => error instanceof ApiError && error.status === 503,
        },
      }),
      new Stage({ name: "write", workers: 1, tasks: [appendLine] }),
    ],
  });

  const failures: Extract<PipelineResult<unknown>, { ok: false }>[] = [];
  let succeeded = 0;
  try {
    using _progress = options.progress
      ? new ProgressDisplay(pipeline, { total: rows.length }).start()
      : undefined;
    for await (const result of pipeline.run(rows)) {
      if (result.ok) succeeded++;
      else failures.push(result);
    }
  } finally {
    await file.close();
  }

  await api.close();
  const stats = pipeline.stats();
  const apiCounts = api.counts();
  const retries = stats.stages.reduce((sum, stage) => sum + stage.retried, 0);
  const count = (n: number) => n.toLocaleString("en-US");

  console.log(`Input:      ${options.input} (${count(rows.length)} rows)`);
  console.log(`Output:     ${options.output} (${count(written)} lines)`);
  console.log(`Items:      ${count(succeeded)} ok, ${count(failures.length)} failed`);
  console.log(`Retries:    ${count(retries)}`);
  const seconds = (stats.elapsedMs / 1000).toFixed(1);
  console.log(`Throughput: ${stats.throughput.toFixed(1)} items/s over ${seconds} s`);
  console.log(
    `API limits: ${PROVIDER.maxInFlight} in flight, ${PROVIDER.maxPerSecond} per sliding second`,
  );
  console.log(
    `API counts: ${count(apiCounts.requests)} requests, max ${apiCounts.maxInFlight} in flight, ` +
      `${count(apiCounts.tooManyRequests)} x 429 sent, ${
        count(apiCounts.unavailable)
      } x 503 sent, ` +
      `${count(apiCounts.notFound)} x 404 sent`,
  );

  if (failures.length > 0) {
    failures.sort((a, b) => a.index - b.index);
    console.log("Failed rows:");
    for (const failure of failures.slice(0, 10)) {
      const row = failure.input as RawRow;
      const error = failure.error instanceof Error ? failure.error.message : String(failure.error);
      console.log(`  line ${row.line}, ${failure.stage}/${failure.task}: ${error}`);
    }
    if (failures.length > 10) console.log(`  and ${count(failures.length - 10)} more`);
  }

  if (apiCounts.maxInFlight > PROVIDER.maxInFlight || apiCounts.tooManyRequests > 0) {
    console.log("FAIL: the API's limits were broken");
    process.exitCode = 1;
  } else {
    console.log(
      `OK: no request was rejected with 429 and at most ${PROVIDER.maxInFlight} were in flight`,
    );
  }
}

await main();
