/**
 * A Node.js module hook that resolves the bare specifiers listed under `imports` in deno.json,
 * such as `@antflow/antflow`, to the repository's own files, as Deno does through that map and
 * Bun through the `paths` in tsconfig.json. Node.js has no such map, so the tests preload this
 * file: `node --import ./tests/runtimes/node_imports.ts --test "tests/*_test.ts"`.
 *
 * It uses `module.registerHooks()` (Node.js 22.15 or later), which runs in the loading thread.
 * Any other specifier, including the npm packages the tests import, resolves as usual.
 *
 * @module
 */

import { readFileSync } from "node:fs";
import { registerHooks } from "node:module";

const denoJsonUrl = new URL("../../deno.json", import.meta.url);
const denoJson: { imports?: Record<string, string> } = JSON.parse(
  readFileSync(denoJsonUrl, "utf8"),
);

const targets = new Map<string, string>();
for (const [specifier, path] of Object.entries(denoJson.imports ?? {})) {
  if (path.startsWith("./")) targets.set(specifier, new URL(path, denoJsonUrl).href);
}

registerHooks({
  resolve(specifier, context, nextResolve) {
    const target = targets.get(specifier);
    if (target === undefined) return nextResolve(specifier, context);
    return { url: target, format: "module-typescript", shortCircuit: true };
  },
});
