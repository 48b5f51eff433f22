/**
 * Checks that the library's own files use only Web APIs, so the package runs unchanged in Deno,
 * Bun, Node.js and Workers runtimes. It scans every top-level `.ts` file of the repository and
 * fails on:
 *
 * - a reference to a runtime-specific global (`Deno`, `Bun`, `process`, `Buffer`, `require` and
 *   the other Node.js module globals), directly or through `globalThis`;
 * - an import of anything other than a relative path, such as `node:fs` or an npm package.
 *
 * {@linkcode ALLOWED_GLOBALS} and {@linkcode ALLOWED_IMPORTS} list the exceptions, each with its
 * reason: runtime adapters that feature-detect a runtime or import a Node.js built-in module.
 * esbuild parses each file, so comments, strings, properties and private
 * members with these names never match, and neither does a local variable that shadows one.
 *
 * Run it with Node.js: `node --test tests/runtimes/portability.ts`.
 *
 * @module
 */

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build, transform } from "esbuild";

const repository = fileURLToPath(new URL("../../", import.meta.url));

/** Globals that exist only in some runtimes. */
const RUNTIME_GLOBALS = [
  "Deno",
  "Bun",
  "process",
  "Buffer",
  "require",
  "module",
  "exports",
  "__dirname",
  "__filename",
  "global",
  "setImmediate",
  "clearImmediate",
];

/**
 * Runtime globals allowed per file. redis.ts calls `Deno.unrefTimer` when it exists, so a lease
 * renewal timer does not keep a Deno process alive, and skips it elsewhere.
 */
const ALLOWED_GLOBALS: Readonly<Record<string, readonly string[]>> = {
  "redis.ts": ["Deno"],
};

/**
 * Non-relative imports allowed per file. progress.ts draws on the terminal through
 * `node:process`, which Deno and Bun both provide, and is its own subpath export.
 */
const ALLOWED_IMPORTS: Readonly<Record<string, readonly string[]>> = {
  "progress.ts": ["node:process"],
};

// A prefix no source file contains, so every match in esbuild's output is a replaced global.
const MARKER = "__antflowRuntimeGlobal_";

/** Lists the `.ts` files directly in `directory`, which at the repository root are the library. */
async function librarySources(directory: string): Promise<string[]> {
  const entries = await readdir(directory, { withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile() && entry.name.endsWith(".ts"))
    .map((entry) => entry.name)
    .sort();
}

/** Returns the runtime globals that `file` references, each with the lines that name it. */
async function runtimeGlobalsIn(directory: string, file: string): Promise<string[]> {
  const source = await readFile(join(directory, file), "utf8");
  const define: Record<string, string> = {};
  for (const name of RUNTIME_GLOBALS) {
    define[name] = `${MARKER}${name}`;
    define[`globalThis.${name}`] = `${MARKER}${name}`;
  }
  const { code } = await transform(source, { loader: "ts", define, sourcefile: file });

  const allowed = ALLOWED_GLOBALS[file] ?? [];
  const found: string[] = [];
  for (const name of RUNTIME_GLOBALS) {
    if (!code.includes(`${MARKER}${name}`) || allowed.includes(name)) continue;
    // esbuild reports no position for a replaced global, so list the lines that mention the
    // name outside comments. A property of the same name on such a line matches too.
    const pattern = new RegExp(`(?:(?<![.#\\w$])|(?<=globalThis\\.))${name}(?![\\w$])`);
    const lines = source.split("\n").flatMap((line, index) =>
      pattern.test(line) && !line.trimStart().startsWith("*") && !line.trimStart().startsWith("//")
        ? [index + 1]
        : []
    );
    found.push(`${file}: global '${name}' (lines ${lines.join(", ") || "unknown"})`);
  }
  return found;
}

/** Returns the imports of every library file that are neither relative nor allowed. */
async function disallowedImports(directory: string, files: readonly string[]): Promise<string[]> {
  const result = await build({
    entryPoints: files.map((file) => join(directory, file)),
    absWorkingDir: directory,
    bundle: true,
    write: false,
    metafile: true,
    platform: "neutral",
    outdir: "out",
    logLevel: "silent",
    plugins: [{
      name: "external-non-relative",
      setup(plugin) {
        plugin.onResolve({ filter: /^[^./]/ }, (args) => ({ path: args.path, external: true }));
      },
    }],
  });

  const found: string[] = [];
  for (const [file, input] of Object.entries(result.metafile.inputs)) {
    const allowed = ALLOWED_IMPORTS[file] ?? [];
    for (const imported of input.imports) {
      if (!imported.external || allowed.includes(imported.path)) continue;
      found.push(`${file}: import of '${imported.path}'`);
    }
  }
  return found;
}

describe("library portability", () => {
  it("library files reference no runtime-specific global", async () => {
    const files = await librarySources(repository);
    const found = (await Promise.all(files.map((file) => runtimeGlobalsIn(repository, file))))
      .flat();

    assert.ok(files.includes("mod.ts"), `no mod.ts among ${files.join(", ")}`);
    assert.deepEqual(found, [], `Move these into a runtime adapter:\n${found.join("\n")}`);
  });

  it("library files import only relative paths", async () => {
    const found = await disallowedImports(repository, await librarySources(repository));

    assert.deepEqual(found, [], `Replace or allow these imports:\n${found.join("\n")}`);
  });

  it("the scan reports globals and imports but not names in text", async () => {
    const directory = await mkdtemp(join(tmpdir(), "antflow-portability-"));
    try {
      const probe = [
        `import { readFileSync } from "node:fs";`,
        `import { helper } from "./helper.ts";`,
        `// Deno.exit() and process.exit() in a comment`,
        `const text = "Bun.env and Buffer.from in a string";`,
        `class Runner { #process(): void {} process = 1; }`,
        `function load(require: (id: string) => unknown): unknown { return require("x"); }`,
        `export const env = typeof Deno === "object" ? Deno.env : undefined;`,
        `export const exit = globalThis.process?.exit;`,
        `export { helper, load, readFileSync, Runner, text };`,
      ].join("\n");
      await writeFile(join(directory, "probe.ts"), probe);
      await writeFile(join(directory, "helper.ts"), "export const helper = 1;\n");

      const globals = await runtimeGlobalsIn(directory, "probe.ts");
      const imports = await disallowedImports(directory, await librarySources(directory));

      assert.deepEqual(globals, [
        "probe.ts: global 'Deno' (lines 7)",
        "probe.ts: global 'process' (lines 5, 8)",
      ]);
      assert.deepEqual(imports, ["probe.ts: import of 'node:fs'"]);
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });
});
