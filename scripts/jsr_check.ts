/**
 * Checks that the package is ready to publish on JSR, without publishing and without network
 * access. It prints one line per check and ends with "N passed, N failed". The exit code is 1 when
 * any check failed.
 *
 * The checks:
 *
 * - `deno publish --dry-run` succeeds, which includes JSR's slow-types check, and
 *   `isolatedDeclarations` is on in deno.json, so `deno check` rejects slow types too;
 * - the published files are the library sources, deno.json, README.md and LICENSE: no tests,
 *   benchmarks, examples, docs, scripts or npm files;
 * - `deno doc --lint` passes on every entry point in deno.json `exports`;
 * - every entry point has a module doc with `@module`;
 * - every exported symbol has a JSDoc summary, and every exported class and function has an
 *   `@example` with a title that imports the published specifier.
 *
 * Run it with `deno task jsr-check`, or
 * `deno run --allow-read --allow-run scripts/jsr_check.ts`.
 *
 * @module
 */

const root = new URL("../", import.meta.url);
const PACKAGE_NAME = "@antflow/antflow";

/** Files at the top level that are published besides the library's `.ts` sources. */
const PUBLISHED_EXTRAS = ["deno.json", "LICENSE", "README.md"];

/** The declaration kinds that need an `@example`: the ones a caller calls or constructs. */
const KINDS_NEEDING_EXAMPLES = ["class", "function"];

interface DenoJson {
  name?: string;
  version?: string;
  license?: string;
  exports?: string | Record<string, string>;
  compilerOptions?: { isolatedDeclarations?: boolean };
}

interface JsDocTag {
  kind: string;
  doc?: string;
}

interface DocDeclaration {
  kind: string;
  declarationKind: string;
  location: { filename: string; line: number };
  jsDoc?: { doc?: string; tags?: JsDocTag[] };
}

interface DocNode {
  module_doc?: { doc?: string; tags?: JsDocTag[] };
  symbols: { name: string; declarations: DocDeclaration[] }[];
}

interface CheckResult {
  name: string;
  problems: string[];
}

async function run(args: string[]): Promise<{ success: boolean; output: string }> {
  const command = new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  });
  const { success, stdout, stderr } = await command.output();
  const decoder = new TextDecoder();
  return { success, output: decoder.decode(stdout) + decoder.decode(stderr) };
}

/** Returns the entry point paths of deno.json `exports`, relative to the root, as `mod.ts`. */
function entryPoints(config: DenoJson): string[] {
  const exports = typeof config.exports === "string" ? { ".": config.exports } : config.exports;
  return Object.values(exports ?? {}).map((path) => path.replace(/^\.\//, ""));
}

async function checkPublishDryRun(config: DenoJson, entries: string[]): Promise<CheckResult[]> {
  const manifest: string[] = [];
  for (const field of ["name", "version", "license"] as const) {
    if (typeof config[field] !== "string") manifest.push(`deno.json has no "${field}"`);
  }
  if (config.compilerOptions?.isolatedDeclarations !== true) {
    manifest.push("deno.json compilerOptions.isolatedDeclarations is not true");
  }

  const { success, output } = await run(["publish", "--dry-run", "--allow-dirty"]);
  const dryRun = success ? [] : [`deno publish --dry-run failed:\n${output}`];

  const rootPath = decodeURIComponent(root.pathname);
  const published = [...output.matchAll(/^\s*file:\/\/(\S+)/gm)]
    .map((match) => decodeURIComponent(match[1] as string).slice(rootPath.length));
  const files: string[] = [];
  if (success && published.length === 0) files.push("the dry run listed no files");
  for (const file of published) {
    const isSource = !file.includes("/") && file.endsWith(".ts");
    if (!isSource && !PUBLISHED_EXTRAS.includes(file)) files.push(`${file} would be published`);
  }
  for (const required of [...PUBLISHED_EXTRAS, ...entries]) {
    if (success && !published.includes(required)) files.push(`${required} would not be published`);
  }

  return [
    { name: "deno.json has name, version, license and isolatedDeclarations", problems: manifest },
    { name: "deno publish --dry-run passes, slow types included", problems: dryRun },
    { name: `published files are ${PUBLISHED_EXTRAS.join(", ")} and sources`, problems: files },
  ];
}

async function checkDocLint(entries: string[]): Promise<CheckResult> {
  const { success, output } = await run(["doc", "--lint", ...entries]);
  return { name: "deno doc --lint passes on every entry point", problems: success ? [] : [output] };
}

function exampleProblems(symbol: string, declaration: DocDeclaration): string[] {
  const where = `${symbol} (${declaration.location.filename.split("/").pop()}:` +
    `${declaration.location.line})`;
  const examples = (declaration.jsDoc?.tags ?? []).filter((tag) => tag.kind === "example");
  if (examples.length === 0) return [`${where} has no @example`];

  const problems: string[] = [];
  for (const example of examples) {
    const doc = example.doc ?? "";
    const title = doc.split("\n")[0]?.trim() ?? "";
    if (title === "" || title.startsWith("```")) problems.push(`${where} has an untitled @example`);
    if (!doc.includes(`from "${PACKAGE_NAME}`)) {
      problems.push(`${where} has an @example "${title}" that does not import "${PACKAGE_NAME}"`);
    }
  }
  return problems;
}

async function checkDocs(entries: string[]): Promise<CheckResult[]> {
  const { success, output } = await run(["doc", "--json", ...entries]);
  if (!success) return [{ name: "deno doc --json reads every entry point", problems: [output] }];
  const nodes: Record<string, DocNode> = JSON.parse(output).nodes;

  const moduleDocs: string[] = [];
  const summaries: string[] = [];
  const examples: string[] = [];
  const seen = new Set<string>();
  for (const entry of entries) {
    const node = nodes[new URL(entry, root).href];
    if (node === undefined) {
      moduleDocs.push(`${entry} is missing from the deno doc output`);
      continue;
    }
    const moduleTags = node.module_doc?.tags ?? [];
    if (!node.module_doc?.doc?.trim() || !moduleTags.some((tag) => tag.kind === "module")) {
      moduleDocs.push(`${entry} has no module doc with @module`);
    }

    for (const symbol of node.symbols) {
      for (const declaration of symbol.declarations) {
        // A "reference" re-exports a symbol that deno doc lists, with its docs, under another
        // entry point.
        if (declaration.declarationKind !== "export" || declaration.kind === "reference") continue;
        // A symbol exported by several entry points is reported once.
        const key = `${declaration.location.filename}:${declaration.location.line}`;
        if (seen.has(key)) continue;
        seen.add(key);

        if (!declaration.jsDoc?.doc?.trim()) summaries.push(`${symbol.name} has no JSDoc summary`);
        if (KINDS_NEEDING_EXAMPLES.includes(declaration.kind)) {
          examples.push(...exampleProblems(symbol.name, declaration));
        }
      }
    }
  }

  return [
    { name: "every entry point has a module doc with @module", problems: moduleDocs },
    { name: "every exported symbol has a JSDoc summary", problems: summaries },
    {
      name: `every exported ${KINDS_NEEDING_EXAMPLES.join(" and ")} has a titled @example`,
      problems: examples,
    },
  ];
}

async function main(): Promise<number> {
  const config: DenoJson = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const entries = entryPoints(config);
  const results = [
    ...await checkPublishDryRun(config, entries),
    await checkDocLint(entries),
    ...await checkDocs(entries),
  ];

  for (const result of results) {
    console.log(`${result.problems.length === 0 ? "ok" : "FAILED"}: ${result.name}`);
    for (const problem of result.problems) console.log(`  ${problem.replaceAll("\n", "\n  ")}`);
  }
  const failed = results.filter((result) => result.problems.length > 0).length;
  console.log(`\njsr-check: ${results.length - failed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

Deno.exit(await main());
