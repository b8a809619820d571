#!/usr/bin/env bash
# demod's alert rules (deploy/prometheus/alerts.yaml):
# - `promtool check rules` accepts them, and their unit tests (tests/monitor/alerts_test.yaml)
#   pass under `promtool test rules`: expressions, `for` durations, labels and every
#   annotation's rendered text;
# - every alert has a test case where it fires and one where it does not, its severity,
#   summary, description and runbook_url, and a runbook section in docs/operations.md
#   (alert_coverage.py; checked here to catch an alert that has none).
# promtool is Debian's (the prometheus package, which scripts/setup.sh installs); the
# coverage check needs python3 with PyYAML (python3-yaml). About 3 seconds.
# Usage: alert_rules_test.sh <repository root>
set -u
root="$1"
bin=""
data=""
source "$root/tests/support/process_test_lib.sh"
here="$root/tests/monitor"
rules="$root/deploy/prometheus/alerts.yaml"
tests="$here/alerts_test.yaml"
runbook="$root/docs/operations.md"
command -v promtool >/dev/null ||
  fail "no promtool (scripts/setup.sh installs it: Debian's prometheus package)"
python3 -c 'import yaml' 2>/dev/null ||
  fail "python3 cannot import yaml (scripts/setup.sh installs Debian's python3-yaml)"

check "promtool check rules deploy/prometheus/alerts.yaml" \
  "promtool check rules '$rules' >'$work/check.out' 2>&1 || { cat '$work/check.out'; false; }"
check "promtool test rules tests/monitor/alerts_test.yaml" \
  "promtool test rules '$tests' >'$work/test.out' 2>&1 || { cat '$work/test.out'; false; }"
check "every alert: a firing and a quiet test case, severity, annotations, a runbook section" \
  "python3 '$here/alert_coverage.py' '$rules' '$tests' '$runbook' >'$work/coverage.out' 2>&1;
   rc=\$?; cat '$work/coverage.out'; [ \$rc -eq 0 ]"

# The coverage check itself: an alert with no test case and no runbook section must be named.
cp "$rules" "$work/untested.yaml"
cat >>"$work/untested.yaml" <<'RULE'
      - alert: DemodUntested
        expr: vector(1)
        labels: {severity: warning}
        annotations:
          summary: s
          description: d
          runbook_url: https://github.com/demod/demod/blob/main/docs/operations.md#demoduntested
RULE
check "the coverage check names an alert without test cases or runbook section" \
  "! python3 '$here/alert_coverage.py' '$work/untested.yaml' '$tests' '$runbook' \
     >'$work/untested.out' 2>&1 &&
   grep -q '^DemodUntested: no test case where it fires' '$work/untested.out' &&
   grep -q '^DemodUntested: no test case where it does not fire' '$work/untested.out' &&
   grep -q '^DemodUntested: no runbook section' '$work/untested.out' &&
   [ \$(wc -l <'$work/untested.out') -eq 3 ] || { cat '$work/untested.out'; false; }"
finish
