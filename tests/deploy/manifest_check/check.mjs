// Checks every object of a rendered manifest (helm template's output) two ways:
// 1. validate() of its kubernetes-models class: types, required fields, formats, enums;
// 2. a TypeScript file in which each object is a literal that `satisfies` its interface,
//    type-checked with tsc --strict: unknown (misspelled) keys are errors there, though the
//    JSON schemas accept them.
// Exit 0 when both pass; 1 with one line per problem.
//   node check.mjs MANIFEST.yaml
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { execFileSync } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { parseAllDocuments } from "yaml";

const [manifestPath] = process.argv.slice(2);
const here = path.dirname(new URL(import.meta.url).pathname);
const require = createRequire(import.meta.url);

// The module of an object's class: kubernetes-models for the built-in groups, the Prometheus
// Operator's package for its CRDs.
function modulePath(apiVersion, kind) {
  if (apiVersion.startsWith("monitoring.coreos.com/")) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`;
  }
  return `kubernetes-models/${apiVersion}/${kind}`;
}

const problems = [];
const lines = [];
let index = 0;
for (const doc of parseAllDocuments(readFileSync(manifestPath, "utf8"))) {
  if (doc.errors.length) {
    problems.push(`${manifestPath}: YAML: ${doc.errors[0].message}`);
    continue;
  }
  const object = doc.toJSON();
  if (object === null) continue;
  const name = `${object.kind} ${object.metadata?.name}`;
  const module = modulePath(object.apiVersion, object.kind);
  let classes;
  try {
    classes = await import(module);
  } catch {
    problems.push(`${name}: no schema for ${object.apiVersion} ${object.kind}`);
    continue;
  }
  try {
    new classes[object.kind](object).validate();
  } catch (error) {
    problems.push(`${name}: ${error.message.split("\n").slice(0, 3).join("; ")}`);
  }
  lines.push(`import type { I${object.kind} as T${index} } from "${module}";`);
  lines.push(`export const object${index}: T${index} = ${JSON.stringify(object, null, 2)} satisfies T${index};`);
  index++;
}

// Beside node_modules, where TypeScript finds the models' types.
const work = mkdtempSync(path.join(here, "work-"));
const source = path.join(work, "manifest.ts");
writeFileSync(source, lines.join("\n") + "\n");
const tsc = require.resolve("typescript/bin/tsc");
try {
  execFileSync(process.execPath, [tsc, "--noEmit", "--strict", "--skipLibCheck", "--module",
    "nodenext", "--moduleResolution", "nodenext", "--target", "es2022",
    "--typeRoots", path.join(here, "node_modules", "@types"), source],
    { cwd: here, encoding: "utf8", stdio: "pipe" });
} catch (error) {
  for (const line of (error.stdout || "").split("\n")) {
    if (line.includes("error TS")) problems.push(line.replace(/^.*manifest\.ts/, "manifest.ts"));
  }
  if (!problems.length) problems.push(`tsc failed: ${error.message}`);
}

rmSync(work, { recursive: true, force: true });
for (const problem of problems) console.log(problem);
process.exit(problems.length ? 1 : 0);
