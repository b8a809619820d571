// Checks the Grafana dashboards of deploy/grafana:
// 1. deploy/grafana/dashboards.ts type-checks (tsc --strict) against @grafana/schema's
//    Dashboard and panel types, and generates the dashboards;
// 2. the committed deploy/grafana/dashboards/*.json are exactly what it generates;
// 3. the committed JSON: the expected uids, the template variables, unique panel ids, a
//    description and a unit on every panel, Grafana variables only where they are defined and
//    only in =~ matchers (where a multi-value selection works);
// 4. every PromQL expression parses: with Grafana's variables substituted ($__rate_interval
//    and $__interval by 1m, every template variable by .*), each becomes a recording rule of a
//    file that `promtool check rules` must accept.
// Exit 0 when all pass; 1 with one line per problem.
//   node check.mjs [--write] [--list-queries FILE] [--dashboards DIR] [--root DIR]
// --write writes the generated JSON into deploy/grafana/dashboards/ first (how to regenerate);
// --list-queries writes every expression, substituted as for promtool, as JSON lines
// {dashboard, panel, expr}; --dashboards checks the JSON of another folder (the fault tests).
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync }
  from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { pathToFileURL } from "node:url";

const here = path.dirname(new URL(import.meta.url).pathname);
const require = createRequire(import.meta.url);
const EXPECTED_UIDS = ["demod-bandwidth", "demod-hardware", "demod-run-overview",
                       "demod-stragglers"];
// What Grafana's own variables stand for when promtool parses an expression.
const BUILTINS = { __rate_interval: "1m", __interval: "1m" };
const REGENERATE = "node tools/dashboards-check/check.mjs --write";

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const option = (name) => (args.includes(name) ? args[args.indexOf(name) + 1] : undefined);
// Installed in tools/dashboards-check, two folders below the repository's root.
const root = path.resolve(option("--root") ?? path.join(here, "..", ".."));
const source = path.join(root, "deploy/grafana/dashboards.ts");
const committed = path.join(root, "deploy/grafana/dashboards");
const dashboardsDir = path.resolve(option("--dashboards") ?? committed);
const rel = (file) => path.relative(root, file);

const problems = [];
const work = mkdtempSync(path.join(here, "work-"));
try {
  const generated = await generate();
  if (generated && flag("--write")) {
    for (const [name, text] of Object.entries(generated)) {
      writeFileSync(path.join(committed, name), text);
    }
  }
  if (generated) compare(generated);
  const dashboards = readDashboards();
  const queries = dashboards.flatMap(checkDashboard);
  checkUids(dashboards);
  if (!option("--dashboards")) panelReference(dashboards);
  promtool(queries);
  const list = option("--list-queries");
  if (list) {
    writeFileSync(list, queries.map(({ dashboard, panel, expr }) =>
      JSON.stringify({ dashboard, panel, expr }) + "\n").join(""));
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
for (const problem of problems) console.log(problem);
process.exit(problems.length ? 1 : 0);

// Type-checks and runs the generator; its dashboards' JSON text by file name, or null.
async function generate() {
  // Compiled beside node_modules, where TypeScript and Node find @grafana/schema.
  const copy = path.join(work, "dashboards.ts");
  copyFileSync(source, copy);
  const tsc = require.resolve("typescript/bin/tsc");
  try {
    execFileSync(process.execPath, [tsc, "--strict", "--noUnusedLocals", "--noEmitOnError",
      "--module", "es2022", "--moduleResolution", "bundler", "--target", "es2022",
      "--outDir", work, copy], { cwd: here, encoding: "utf8", stdio: "pipe" });
  } catch (error) {
    for (const line of (error.stdout || "").split("\n")) {
      if (line.includes("error TS")) problems.push(line.replace(/^.*dashboards\.ts/, rel(source)));
    }
    if (!problems.length) problems.push(`tsc failed: ${error.message}`);
    return null;
  }
  const { dashboards } = await import(pathToFileURL(path.join(work, "dashboards.js")).href);
  return Object.fromEntries(Object.entries(dashboards).map(
    ([name, dashboard]) => [name, JSON.stringify(dashboard, null, 2) + "\n"]));
}

function compare(generated) {
  const files = readdirSync(committed).filter((name) => name.endsWith(".json"));
  for (const [name, text] of Object.entries(generated)) {
    const file = path.join(committed, name);
    if (!files.includes(name)) {
      problems.push(`${rel(file)} is missing; ${rel(source)} generates it: run ${REGENERATE}`);
      continue;
    }
    const lines = readFileSync(file, "utf8").split("\n");
    const want = text.split("\n");
    const line = want.findIndex((wanted, i) => wanted !== lines[i]);
    if (line >= 0 || lines.length !== want.length) {
      problems.push(`${rel(file)} differs from what ${rel(source)} generates (first at line ` +
        `${(line >= 0 ? line : want.length) + 1}): run ${REGENERATE}`);
    }
  }
  for (const name of files.filter((name) => !(name in generated))) {
    problems.push(`${rel(path.join(committed, name))}: not generated by ${rel(source)}`);
  }
}

// docs/operations.md's panel reference, between its markers, is made from the dashboards'
// titles and descriptions, so the two cannot disagree: --write rewrites it, else it is compared.
function panelReference(dashboards) {
  const doc = path.join(root, "docs/operations.md");
  const begin = "<!-- panels: generated by tests/monitor/dashboards_check/check.mjs -->";
  const end = "<!-- panels: end -->";
  const lines = [begin, ""];
  for (const d of dashboards) {
    lines.push(`### ${d.title} (\`${d.uid}\`)`, "");
    for (const panel of d.panels ?? []) {
      if (panel.type === "row") {
        lines.push(`*${panel.title}*`, "");
        continue;
      }
      const unit = panel.fieldConfig?.defaults?.unit;
      lines.push(`- **${panel.title}**${unit ? ` (${unit})` : ""}: ${panel.description}`);
    }
    lines.push("");
  }
  lines.push(end);
  const text = readFileSync(doc, "utf8");
  const from = text.indexOf(begin);
  const to = text.indexOf(end);
  if (from < 0 || to < from) {
    problems.push(`${rel(doc)}: no panel reference between "${begin}" and "${end}"`);
    return;
  }
  const updated = text.slice(0, from) + lines.join("\n") + text.slice(to + end.length);
  if (updated === text) return;
  if (flag("--write")) writeFileSync(doc, updated);
  else problems.push(`${rel(doc)}: its panel reference is not the dashboards': run ${REGENERATE}`);
}

function readDashboards() {
  const dashboards = [];
  for (const name of readdirSync(dashboardsDir).filter((n) => n.endsWith(".json")).sort()) {
    const file = path.join(dashboardsDir, name);
    try {
      dashboards.push({ file: rel(file), ...JSON.parse(readFileSync(file, "utf8")) });
    } catch (error) {
      problems.push(`${rel(file)}: not JSON: ${error.message}`);
    }
  }
  return dashboards;
}

function checkUids(dashboards) {
  const uids = dashboards.map((d) => d.uid).sort();
  if (JSON.stringify(uids) !== JSON.stringify(EXPECTED_UIDS)) {
    problems.push(`dashboard uids are ${uids.join(", ")}; expected ${EXPECTED_UIDS.join(", ")}`);
  }
}

// Checks one dashboard; returns its queries as {dashboard, panel, record, expr} (expr
// substituted), the template variables' selectors among them.
function checkDashboard(d) {
  const fail = (message) => problems.push(`${d.file}: ${message}`);
  if (d.refresh !== "10s") fail(`refresh is ${d.refresh}, expected 10s`);
  if (d.time?.from !== "now-1h" || d.time?.to !== "now") fail("time range is not the last 1h");

  const variables = new Map((d.templating?.list ?? []).map((v) => [v.name, v]));
  const expectVariable = (name, test, what) => {
    if (!test(variables.get(name))) fail(`template variable ${name}: expected ${what}`);
  };
  expectVariable("datasource", (v) => v?.type === "datasource" && v.query === "prometheus",
                 "a prometheus data source variable");
  expectVariable("run", (v) => /^label_values\(demod_run_info\b.*, *run_id\)$/.test(v?.query),
                 "label_values(demod_run_info, run_id)");
  expectVariable("worker", (v) => /^label_values\(demod_worker_info\b.*, *worker\)$/.test(v?.query)
                 && v.multi && v.includeAll, "label_values(demod_worker_info, worker), multi, all");

  const queries = [];
  const slug = String(d.uid).replace(/\W/g, "_");
  // addQuery: checks an expression's variables, and keeps it with them substituted.
  const addQuery = (panel, record, expr) => {
    // Values of =~ matchers, where variables belong; any variable left outside is misused.
    const outside = expr.replace(/=~\s*"(?:[^"\\]|\\.)*"/g, '=~""').replace(/\$__\w+/g, "");
    if (/\$|\[\[/.test(outside)) fail(`${panel}: a variable outside a =~ matcher: ${expr}`);
    const substituted = expr.replace(/\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]/g,
      (text, ...names) => {
        const name = names.slice(0, 3).find(Boolean);
        if (name in BUILTINS) return BUILTINS[name];
        if (variables.has(name)) return ".*";
        fail(`${panel}: ${text} is not a variable of the dashboard`);
        return text;
      });
    queries.push({ dashboard: d.uid, panel, record: `${slug}:${record}`, expr: substituted });
  };
  for (const v of variables.values()) {
    const selector = /^label_values\((.*),\s*\w+\)$/.exec(v.type === "query" ? v.query : "");
    if (selector) addQuery(`variable ${v.name}`, `variable_${v.name}`, selector[1]);
  }

  const ids = new Set();
  const panels = (d.panels ?? []).flatMap((p) => [p, ...(p.panels ?? [])]);
  for (const p of panels) {
    const panel = `panel ${p.id} "${p.title}"`;
    if (!Number.isInteger(p.id)) fail(`${panel}: no integer id`);
    else if (ids.has(p.id)) fail(`${panel}: duplicate panel id ${p.id}`);
    ids.add(p.id);
    if (p.type === "row") continue;
    if (!p.description?.trim()) fail(`${panel}: no description`);
    if (!p.fieldConfig?.defaults?.unit) fail(`${panel}: no unit (fieldConfig.defaults.unit)`);
    if (p.datasource?.uid !== "${datasource}") fail(`${panel}: data source is not $datasource`);
    if (!p.targets?.length) fail(`${panel}: no queries`);
    for (const t of p.targets ?? []) {
      if (!t.expr) fail(`${panel}: query ${t.refId} has no expr`);
      else addQuery(`panel ${p.id} "${p.title}" (${t.refId})`, `panel_${p.id}:${t.refId}`, t.expr);
    }
  }
  if (!panels.length) fail("no panels");
  return queries;
}

// Every expression as a recording rule; promtool must parse them all.
function promtool(queries) {
  const groups = [...new Set(queries.map((q) => q.dashboard))].map((dashboard) => ({
    name: dashboard,
    rules: queries.filter((q) => q.dashboard === dashboard)
      .map(({ record, expr }) => ({ record, expr })),
  }));
  const rules = path.join(work, "rules.yaml");
  writeFileSync(rules, JSON.stringify({ groups }, null, 2));  // JSON is YAML
  const promtoolBin = process.env.PROMTOOL ?? "promtool";
  try {
    execFileSync(promtoolBin, ["check", "rules", rules], { encoding: "utf8", stdio: "pipe" });
  } catch (error) {
    if (error.code === "ENOENT") {
      problems.push(`no ${promtoolBin} (install the Debian package prometheus)`);
      return;
    }
    const byRecord = new Map(queries.map((q) => [q.record, q]));
    let found = false;
    for (const line of `${error.stdout}\n${error.stderr}`.split("\n")) {
      const match = /rule \d+, "([^"]+)": (.*)$/.exec(line);
      const query = match && byRecord.get(match[1]);
      if (query) {
        problems.push(`${query.dashboard}: ${query.panel}: ${match[2]}: ${query.expr}`);
        found = true;
      }
    }
    if (!found) problems.push(`promtool check rules failed: ${error.stdout}${error.stderr}`);
  }
}
