"""What promtool does not check about demod's alert rules.

Usage: alert_coverage.py RULES TESTS RUNBOOK

- every alert in RULES has a `severity` label (critical or warning), `summary` and
  `description` annotations, and a `runbook_url` that is RUNBOOK_BASE#<alert name, lowercased>;
- every alert has, in TESTS (promtool's unit-test file), a case where it fires (exp_alerts not
  empty) and one where it does not (exp_alerts: []), and TESTS tests no alert RULES lacks;
- RUNBOOK (docs/operations.md) has a heading that is exactly the alert's name, so the
  runbook_url's anchor lands on it.

Prints one line per problem and exits 1, or prints a summary and exits 0. Needs PyYAML
(Debian's python3-yaml, which scripts/setup.sh installs).
"""

import re
import sys

import yaml

RUNBOOK_BASE = "https://github.com/demod/demod/blob/main/docs/operations.md"
SEVERITIES = ("critical", "warning")


def github_anchor(heading):
    """The anchor GitHub gives a Markdown heading: lowercased, punctuation dropped."""
    anchor = heading.strip().lower()
    anchor = re.sub(r"[^\w\- ]", "", anchor)
    return anchor.replace(" ", "-")


def main(rules_path, tests_path, runbook_path):
    problems = []
    with open(rules_path) as f:
        rules = yaml.safe_load(f)
    alerts = {}
    for group in rules.get("groups") or []:
        for rule in group.get("rules") or []:
            if "alert" in rule:
                alerts[rule["alert"]] = rule
    if not alerts:
        problems.append(f"{rules_path}: no alerts")

    for name, rule in alerts.items():
        severity = (rule.get("labels") or {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(f"{name}: severity label is {severity!r}, not one of {SEVERITIES}")
        annotations = rule.get("annotations") or {}
        for key in ("summary", "description"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: no {key} annotation")
        want = f"{RUNBOOK_BASE}#{name.lower()}"
        if annotations.get("runbook_url") != want:
            problems.append(f"{name}: runbook_url is {annotations.get('runbook_url')!r}, not {want!r}")

    with open(tests_path) as f:
        tests = yaml.safe_load(f)
    fires, quiet = set(), set()
    for test in tests.get("tests") or []:
        for case in test.get("alert_rule_test") or []:
            name = case.get("alertname")
            if name not in alerts:
                problems.append(f"{tests_path}: a case for {name!r}, which {rules_path} lacks")
            (fires if case.get("exp_alerts") else quiet).add(name)
    for name in alerts:
        if name not in fires:
            problems.append(f"{name}: no test case where it fires (exp_alerts with an alert)")
        if name not in quiet:
            problems.append(f"{name}: no test case where it does not fire (exp_alerts: [])")

    with open(runbook_path) as f:
        headings = {m.group(1).strip() for m in re.finditer(r"^#{1,6} +(.+?) *#*$", f.read(), re.M)}
    anchors = {github_anchor(h) for h in headings}
    for name in alerts:
        if name not in headings or name.lower() not in anchors:
            problems.append(f"{name}: no runbook section in {runbook_path} (a heading '### {name}')")

    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"{len(alerts)} alerts, each with a firing and a quiet test case and a runbook section")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
