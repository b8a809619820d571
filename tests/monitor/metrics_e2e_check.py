#!/usr/bin/env python3
"""Checks a live Prometheus against the run metrics_e2e_test.sh drove, through its HTTP API.

1. Every series a dashboard query or an alert rule names is one Prometheus has scraped from the
   coordinator; a missing one fails by name, with the panels and rules that use it.
2. Every dashboard query returns data at --time (all workers present).
3. Every alert rule was evaluated by Prometheus without error, each series it names has data
   at --time, and no alert fires in this healthy run.
4. The values are what the run did: steps, contributors, joins and leaves, state transfers,
   and per worker the payload bytes, the tokens (the last step's report included) and, for a
   worker that logged every step, the aggregate bytes equal the sums of the worker's CSV;
   with --global_batch (a run balancing its batch), every worker present at --time has a
   measured throughput and a batch share, the shares add up to the global batch, and the
   killed worker has neither.
Exit status 1 when a check fails; every check prints ok/FAIL with what it saw.
"""
import argparse
import csv
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import Checks  # noqa: E402

SERIES = re.compile(r"\b(demod_[a-z0-9_]+|up)\b")


class Prometheus:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def get(self, path, **params):
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as e:  # Prometheus answers bad queries with 400 + JSON
            body = json.load(e)
        if body.get("status") != "success":
            raise ValueError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr, time=None):
        params = {"query": expr}
        if time is not None:
            params["time"] = time
        return self.get("/api/v1/query", **params)["result"]

    def value(self, expr, time=None):
        """The value of an expression with exactly one series, or None."""
        result = self.query(expr, time)
        return float(result[0]["value"][1]) if len(result) == 1 else None


def csv_sums(path):
    sums = {"bytes_up": 0, "bytes_down": 0, "tokens": 0, "rows": 0}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for key in ("bytes_up", "bytes_down", "tokens"):
                sums[key] += int(row[key])
            sums["rows"] += 1
    return sums


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prometheus", required=True)
    parser.add_argument("--time", required=True, help="when all workers were present (unix s)")
    parser.add_argument("--queries", required=True, help="JSON lines {dashboard, panel, expr}")
    parser.add_argument("--csv_dir", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--finished", required=True, help="workers that ran to the end")
    parser.add_argument("--killed", required=True, help="the worker killed mid-run")
    parser.add_argument("--global_batch", type=int,
                        help="the run's batch.global, when it balances its batch")
    args = parser.parse_args()
    prom = Prometheus(args.prometheus)
    checks = Checks()
    t = args.time
    finished = args.finished.split(",")

    with open(args.queries) as f:
        queries = [json.loads(line) for line in f if line.strip()]
    rules = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
    checks.check("the dashboards have queries", len(queries) > 0, f"{len(queries)}")
    checks.check("Prometheus loaded the alert rules", len(rules) > 0, f"{len(rules)}")

    # 1. Series named by dashboards and rules, against the names Prometheus holds.
    exported = set(prom.get("/api/v1/label/__name__/values"))
    users = {}
    for q in queries:
        for name in SERIES.findall(q["expr"]):
            users.setdefault(name, set()).add(f"{q['dashboard']}: {q['panel']}")
    for r in rules:
        for name in SERIES.findall(r["query"]):
            users.setdefault(name, set()).add(f"rule {r['name']}")
    for name in sorted(users):
        if name not in exported:
            checks.check(f"series {name} is exported", False,
                         "used by " + "; ".join(sorted(users[name])))
    checks.check("every series the dashboards and rules use is exported",
                 all(n in exported for n in users), f"{len(users)} series")

    # 2. Every dashboard query returns data while the run trains.
    empty = 0
    for q in queries:
        try:
            result = prom.query(q["expr"], t)
        except ValueError as e:
            checks.check(f"{q['dashboard']}: {q['panel']}: {q['expr']}", False, str(e))
            empty += 1
            continue
        if not result:
            checks.check(f"{q['dashboard']}: {q['panel']} returns data", False, q["expr"])
            empty += 1
    checks.check("every dashboard query returns data", empty == 0, f"{len(queries)} queries")

    # 3. Alert rules: evaluated without error, their series have data, none fires.
    for r in rules:
        checks.check(f"rule {r['name']} evaluates", r.get("health") == "ok",
                     r.get("lastError") or r.get("health", ""))
        for name in sorted(set(SERIES.findall(r["query"]))):
            if name in exported and not prom.query(name, t):
                checks.check(f"rule {r['name']}: {name} has data", False)
        prom.query(r["query"], t)  # raises if Prometheus cannot evaluate it at that time
    firing = [a["labels"].get("alertname") for a in prom.get("/api/v1/alerts")["alerts"]
              if a.get("state") == "firing"]
    checks.check("no alert fires in a healthy run", not firing, ", ".join(firing))

    # 4. Values against what the run did.
    steps = args.steps
    checks.equal("demod_current_step", prom.value("demod_current_step"), steps)
    checks.equal("demod_total_steps", prom.value("demod_total_steps"), steps)
    checks.equal("demod_steps_total", prom.value("demod_steps_total"), steps)
    checks.equal("demod_joins_total (a, b, c and the joiner)", prom.value("demod_joins_total"), 4)
    present = prom.query("demod_worker_info", t)
    checks.equal("workers present at the evaluation time",
                 sorted(s["metric"]["worker"] for s in present), sorted(finished))
    checks.check("every worker reports its device kind as cpu",
                 all(s["metric"].get("device_kind") == "cpu" for s in present))
    checks.equal("contributors then", prom.value("demod_step_contributors", t), len(finished))
    checks.equal("expected contributors then", prom.value("demod_step_expected_contributors", t),
                 len(finished))
    checks.equal("active workers then", prom.value("demod_active_workers", t), len(finished))
    checks.equal("leaves: the killed worker disconnected",
                 prom.value('demod_leaves_total{reason="disconnected"}'), 1)
    checks.equal("leaves: the others finished", prom.value('demod_leaves_total{reason="finished"}'),
                 len(finished))
    checks.equal("no evictions", prom.value("sum(demod_evictions_total)"), 0)
    # Every worker but the first received the run's parameters from a donor.
    checks.equal("state transfers, one per join but the first",
                 prom.value("demod_state_transfers_total"), 3)
    checks.check("the state transfers moved bytes",
                 (prom.value("demod_state_transfer_bytes_total") or 0) > 0)

    for worker in finished + [args.killed]:
        sums = csv_sums(os.path.join(args.csv_dir, f"{worker}.csv"))
        sel = f'{{worker="{worker}"}}'
        payload = prom.value(f"demod_worker_payload_bytes_total{sel}")
        aggregate = prom.value(f"demod_worker_aggregate_bytes_total{sel}")
        tokens = prom.value(f"demod_tokens_total{sel}")
        if worker == args.killed:
            # It may have sent a payload (and received an aggregate) it never logged.
            checks.check(f"{worker} (killed): payload bytes >= its CSV's",
                         payload is not None and payload >= sums["bytes_up"],
                         f"{payload} >= {sums['bytes_up']}")
            continue
        checks.equal(f"{worker}: payload bytes = its CSV's bytes_up", payload, sums["bytes_up"])
        checks.equal(f"{worker}: tokens = its CSV's", tokens, sums["tokens"])
        if sums["rows"] == steps:
            checks.equal(f"{worker}: aggregate bytes = its CSV's bytes_down", aggregate,
                         sums["bytes_down"])
        else:
            # A joiner catches up on aggregates it does not log, and a donor busy sending the
            # parameters may apply a step's aggregate without contributing (no CSV line).
            checks.check(f"{worker} ({sums['rows']} steps logged): aggregate bytes >= its CSV's",
                         aggregate is not None and aggregate >= sums["bytes_down"],
                         f"{aggregate} >= {sums['bytes_down']}")
    if args.global_batch is not None:
        def by_worker(expr):
            return {s["metric"]["worker"]: float(s["value"][1]) for s in prom.query(expr, t)}
        shares = by_worker("demod_worker_batch_samples")
        throughput = by_worker("demod_worker_samples_per_second")
        checks.equal("workers with a batch share then", sorted(shares), sorted(finished))
        checks.equal("the batch shares then add up to the global batch", sum(shares.values()),
                     args.global_batch)
        checks.equal("workers with a measured throughput then", sorted(throughput),
                     sorted(finished))
        checks.check("every measured throughput is above 0",
                     bool(throughput) and all(v > 0 for v in throughput.values()),
                     f"{throughput}")

    total_payload = prom.value("sum(demod_worker_payload_bytes_total)")
    total_received = prom.value("demod_received_bytes_total")
    checks.check("payloads are most of the bytes received, framing the rest",
                 total_payload is not None and total_received is not None
                 and 0.5 * total_received < total_payload <= total_received,
                 f"{total_payload} of {total_received}")

    print("all passed" if checks.failures == 0 else f"{checks.failures} checks failed")
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main())
