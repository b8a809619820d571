#!/usr/bin/env bash
# The Grafana dashboards (deploy/grafana), checked by tests/monitor/dashboards_check (installed
# into tools/dashboards-check by scripts/tools.sh):
# - the committed dashboards pass: the generator type-checks against @grafana/schema, its
#   output is the committed JSON, every panel has an id of its own, a unit and a description,
#   and promtool parses every expression; --list-queries lists them all, variables substituted;
# - the checker catches faults: a duplicated panel id, an expression promtool cannot parse, a
#   panel without a unit or a description, a variable outside a =~ matcher or not defined, JSON
#   that differs from the generator's (and --write mends it), a panel reference in
#   docs/operations.md that is not the dashboards' (likewise), a type error in the generator.
# Usage: grafana_dashboards_test.sh <repository root>
set -u
root="$1"
bin=""
data=""
source "$(dirname "$0")/../support/process_test_lib.sh"
checker="$root/tools/dashboards-check/check.mjs"
(cd "$root" && bash scripts/tools.sh) || { echo "FAIL: scripts/tools.sh failed"; exit 1; }
[ -f "$checker" ] || { echo "FAIL: no $checker (scripts/tools.sh installs it)"; exit 1; }

# run NAME [flags]: the checker's output in $work/NAME.out; its exit status.
run() {
  local name="$1"
  shift
  node "$checker" "$@" >"$work/$name.out" 2>&1
}
# shows NAME TEXT: the run NAME failed and said TEXT (a fixed string).
shows() { grep -qF -- "$2" "$work/$1.out" || { cat "$work/$1.out"; false; }; }

check "the committed dashboards pass" \
  "run committed --list-queries '$work/queries.jsonl' || { cat '$work/committed.out'; false; }"
# listed_well FILE: JSON lines {dashboard, panel, expr} of the four dashboards, no variable left.
listed_well() {
  python3 - "$1" <<'EOF'
import json, sys
queries = [json.loads(line) for line in open(sys.argv[1])]
uids = {"demod-run-overview", "demod-bandwidth", "demod-stragglers", "demod-hardware"}
sys.exit(not (uids == {q["dashboard"] for q in queries} and
              all(q["panel"] and q["expr"] and "$" not in q["expr"] for q in queries)))
EOF
}
check "--list-queries: every dashboard's expressions, variables substituted" \
  "listed_well '$work/queries.jsonl'"

# One fault per dashboard of a copy (python3 edits the JSON).
mkdir "$work/faulty"
cp "$root"/deploy/grafana/dashboards/*.json "$work/faulty/"
python3 - "$work/faulty" <<'EOF'
import json, sys
def edit(name, change):
    path = f"{sys.argv[1]}/{name}"
    d = json.load(open(path))
    change([p for p in d["panels"] if p["type"] != "row"])
    json.dump(d, open(path, "w"), indent=2)
def duplicate_id(panels): panels[1]["id"] = panels[0]["id"]
def bad_expr(panels): panels[0]["targets"][0]["expr"] = "sum by (le (demod_steps_total)"
def no_unit_no_description(panels):
    del panels[0]["fieldConfig"]["defaults"]["unit"]
    panels[1]["description"] = ""
def misused_variables(panels):
    panels[0]["targets"][0]["expr"] = 'demod_current_step{instance="$instance"}'
    panels[1]["targets"][0]["expr"] = 'demod_current_step{instance=~"$nope"}'
edit("run-overview.json", duplicate_id)
edit("bandwidth.json", bad_expr)
edit("stragglers.json", no_unit_no_description)
edit("hardware.json", misused_variables)
EOF
check "faulty copies fail" "! run faulty --dashboards '$work/faulty'"
check "... a duplicated panel id" \
  "shows faulty 'run-overview.json: panel 1 \"Progress\": duplicate panel id 1'"
check "... an expression promtool cannot parse, named by its panel" \
  "shows faulty 'demod-bandwidth: panel 1 \"Compression vs fp32 all-reduce\" (A): could not parse'"
check "... a panel without a unit" "shows faulty 'no unit (fieldConfig.defaults.unit)'"
check "... a panel without a description" "shows faulty ': no description'"
check "... a variable outside a =~ matcher" "shows faulty 'a variable outside a =~ matcher'"
check "... a variable the dashboard does not define" "shows faulty '\$nope is not a variable'"

# A copy of the sources in which a committed dashboard is stale: caught, and --write mends it.
mkdir -p "$work/repo/deploy/grafana" "$work/repo/docs"
cp -r "$root"/deploy/grafana/{dashboards.ts,dashboards} "$work/repo/deploy/grafana/"
cp "$root/docs/operations.md" "$work/repo/docs/"
sed -i 's/"refresh": "10s"/"refresh": "1m"/' "$work/repo/deploy/grafana/dashboards/bandwidth.json"
check "JSON that differs from the generator's fails, saying how to regenerate" \
  "! run stale --root '$work/repo' &&
   shows stale 'bandwidth.json differs from what deploy/grafana/dashboards.ts generates' &&
   shows stale 'check.mjs --write'"
check "--write regenerates it" \
  "run write --root '$work/repo' --write && run rewritten --root '$work/repo' &&
   cmp -s '$work/repo/deploy/grafana/dashboards/bandwidth.json' \
     '$root/deploy/grafana/dashboards/bandwidth.json'"
# docs/operations.md's panel reference is made from the dashboards: a stale one is caught.
sed -i 's/^- \*\*Step\*\* (none): The last completed/- **Step** (none): The latest/' \
  "$work/repo/docs/operations.md"
check "a panel reference in docs/operations.md that is not the dashboards' fails" \
  "! run stale-doc --root '$work/repo' && shows stale-doc 'panel reference is not the dashboards'"
check "--write mends it" \
  "run write-doc --root '$work/repo' --write &&
   cmp -s '$work/repo/docs/operations.md' '$root/docs/operations.md'"
# A misspelled panel key in the generator: @grafana/schema's types refuse it.
sed -i '0,/description: c.description,/s//descripton: c.description,/' \
  "$work/repo/deploy/grafana/dashboards.ts"
check "a type error in the generator fails, with TypeScript's message" \
  "! run typo --root '$work/repo' && shows typo 'deploy/grafana/dashboards.ts(' &&
   shows typo \"'descripton' does not exist\""
finish
