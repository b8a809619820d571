// Whether the chart's PrometheusRule holds exactly the rule groups of a Prometheus rules file
// (deploy/prometheus/alerts.yaml), compared as parsed YAML: key order and line folding aside,
// every group, rule, expression, duration, label and annotation, the annotations' Prometheus
// templates ({{ $labels.x }}) unexpanded.
// Exit 0 when they are equal; 1 with the first difference.
//   node rule_groups.mjs MANIFEST.yaml RULES.yaml
import { readFileSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import { parse, parseAllDocuments } from "yaml";

const [manifestPath, rulesPath] = process.argv.slice(2);
const rules = parse(readFileSync(rulesPath, "utf8"));
const objects = parseAllDocuments(readFileSync(manifestPath, "utf8"))
  .map((doc) => doc.toJS())
  .filter((o) => o && o.kind === "PrometheusRule");

function firstDifference(got, want) {
  const n = Math.max(got.length, want.length);
  for (let g = 0; g < n; ++g) {
    const a = got[g] ?? {};
    const b = want[g] ?? {};
    if (a.name !== b.name) return `group ${g}: '${a.name}' rendered, '${b.name}' in the file`;
    const m = Math.max(a.rules?.length ?? 0, b.rules?.length ?? 0);
    for (let r = 0; r < m; ++r) {
      const x = a.rules?.[r];
      const y = b.rules?.[r];
      if (!isDeepStrictEqual(x, y)) {
        const name = (rule) => (rule ? rule.alert ?? rule.record : "nothing");
        if (!x || !y || name(x) !== name(y)) {
          return `group '${b.name}', rule ${r}: ${name(x)} rendered, ${name(y)} in the file`;
        }
        const fields = [...new Set([...Object.keys(x), ...Object.keys(y)])]
          .filter((k) => !isDeepStrictEqual(x[k], y[k]))
          .map((k) => `${k} (rendered ${JSON.stringify(x[k])}, in the file ${JSON.stringify(y[k])})`);
        return `${name(y)}: ${fields.join("; ")}`;
      }
    }
    if (!isDeepStrictEqual(a, b)) return `group '${b.name}': its fields differ`;
  }
  return "";
}

if (objects.length !== 1) {
  console.log(`${manifestPath}: ${objects.length} PrometheusRule objects, not 1`);
  process.exit(1);
}
if (!Array.isArray(rules?.groups) || rules.groups.length === 0) {
  console.log(`${rulesPath}: no rule groups`);
  process.exit(1);
}
const difference = firstDifference(objects[0].spec?.groups ?? [], rules.groups);
if (difference) {
  console.log(`the PrometheusRule differs from ${rulesPath}: ${difference}`.slice(0, 600));
  process.exit(1);
}
const count = rules.groups.reduce((n, g) => n + g.rules.length, 0);
console.log(`the PrometheusRule holds the file's ${rules.groups.length} group(s), ${count} rules`);
