// Input reading for the enrich_api demo: the lines of a CSV or JSON Lines file, not yet validated,
// and a small CSV field splitter.

import { readFile } from "node:fs/promises";

/** One input line, as read; the pipeline's first stage validates it. */
export interface RawRow {
  /** The line number in the file, from 1. */
  readonly line: number;
  /** The line's text. */
  readonly text: string;
  /** The CSV header's column names, or `undefined` for JSON Lines. */
  readonly header: readonly string[] | undefined;
}

/** The columns a CSV input must have, in any order. */
export const REQUIRED_COLUMNS: readonly string[] = ["id", "city", "country_code"];

/**
 * Reads the non-empty lines of a CSV file (after its header) or of a JSON Lines file (`.jsonl`
 * or `.ndjson`), at most `limit` of them.
 *
 * @throws {Error} If the file cannot be read, or a CSV header lacks a required column.
 */
export async function readRows(path: string, limit: number = Infinity): Promise<RawRow[]> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new Error(`Cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
  const lines = text.split(/\r?\n/);
  const jsonLines = /\.(jsonl|ndjson)$/i.test(path);

  let header: string[] | undefined;
  let first = 0;
  if (!jsonLines) {
    header = splitCsvLine(lines[0] ?? "").map((name) => name.trim());
    const missing = REQUIRED_COLUMNS.filter((name) => !header?.includes(name));
    if (missing.length > 0) {
      throw new Error(
        `Cannot read ${path} as its CSV header must name the columns ` +
          `${REQUIRED_COLUMNS.join(", ")}: missing ${missing.join(", ")}`,
      );
    }
    first = 1;
  }

  const rows: RawRow[] = [];
  for (let i = first; i < lines.length && rows.length < limit; i++) {
    const text = lines[i] as string;
    if (text.trim() !== "") rows.push({ line: i + 1, text, header });
  }
  return rows;
}

/**
 * Splits one CSV line into fields: commas separate fields, a field in double quotes may contain
 * commas, and `""` inside quotes is one quote. Multi-line fields are not supported.
 *
 * @throws {SyntaxError} If a quoted field is not closed.
 */
export function splitCsvLine(text: string): string[] {
  const fields: string[] = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (quoted) {
      if (char !== '"') field += char;
      else if (text[i + 1] === '"') {
        field += '"';
        i++;
      } else quoted = false;
    } else if (char === '"' && field === "") quoted = true;
    else if (char === ",") {
      fields.push(field);
      field = "";
    } else field += char;
  }
  if (quoted) throw new SyntaxError("a quoted field is not closed");
  fields.push(field);
  return fields;
}
