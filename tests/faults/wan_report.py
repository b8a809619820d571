#!/usr/bin/env python3
"""Figures of one run of tests/faults/wan_test.sh, from typed sources only: the workers' CSVs
(demod-worker --csv) and summaries (--summary_json), and the coordinator's /metrics scrape.

  wan_report.py DIR RUN SECONDS WORKER...

reads DIR/RUN_<worker>.csv, DIR/RUN_<worker>.summary.json and DIR/RUN.metrics, writes the
figures to DIR/RUN.figures.json and prints them as one line.
Figures: steps (the run's, from demod_current_step), rate (steps per minute of the fastest
worker over its CSV, after its first 5 steps: joins and parameter transfers left out),
step_s (median of that worker's step_s), stall (its longest time between two CSV lines),
step_duration and barrier_wait (the means of demod_step_duration_seconds and
demod_barrier_wait_seconds: a step from its opening, and from its first payload, to its close),
missed / late (demod_missed_contributions_total and
demod_late_contributions_total, by worker and in all), joins, reconnects (joins beyond one a
worker), evictions (in all and by reason), leaves by reason, and per worker: CSV rows (steps
it computed a payload for), first and last step, duplicates, gaps, evictions, and from its
summary the steps it skipped (closed before it computed them: applied without a payload), its
last step and fingerprint.
"""

import json
import re
import statistics
import sys

SAMPLE = re.compile(r'^([a-z_]+)(?:\{(.*)\})? ([-+0-9.eE]+|NaN|[+-]Inf)$')


def metrics(path):
    """{(name, labels as a sorted tuple): value}"""
    out = {}
    try:
        text = open(path).read()
    except OSError:
        return out
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if not m:
            continue
        labels = tuple(sorted(re.findall(r'([a-z_]+)="([^"]*)"', m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def by_label(samples, name, label):
    return {dict(labels).get(label, ""): v for (n, labels), v in samples.items() if n == name}


def worker_csv(path):
    rows = []
    try:
        with open(path) as f:
            header = f.readline().strip().split(",")
            for line in f:
                rows.append(dict(zip(header, line.strip().split(","))))
    except OSError:
        pass
    steps = [int(r["step"]) for r in rows]
    duplicates = len(steps) - len(set(steps))
    decreasing = sum(1 for a, b in zip(steps, steps[1:]) if b <= a)
    gaps = sum(b - a - 1 for a, b in zip(steps, steps[1:]) if b > a + 1)
    walls = [float(r["wall_s"]) for r in rows]
    stall = max((b - a for a, b in zip(walls, walls[1:])), default=None)
    rate = step_s = None
    tail = rows[5:]
    if len(tail) >= 2:
        span = float(tail[-1]["wall_s"]) - float(tail[0]["wall_s"])
        if span > 0:
            rate = (int(tail[-1]["step"]) - int(tail[0]["step"])) * 60 / span
        step_s = statistics.median(float(r["step_s"]) for r in tail)
    return {"rows": len(rows), "first": steps[0] if steps else None,
            "last": steps[-1] if steps else None, "duplicates": duplicates,
            "not_increasing": decreasing, "gaps": gaps, "rate": rate, "step_s": step_s,
            "stall": stall}


def main():
    folder, run, seconds, workers = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
    samples = metrics(f"{folder}/{run}.metrics")
    name = lambda w: f"{run}_{w}"
    missed = by_label(samples, "demod_missed_contributions_total", "worker")
    late = by_label(samples, "demod_late_contributions_total", "worker")
    evicted = by_label(samples, "demod_worker_evictions_total", "worker")
    joins = samples.get(("demod_joins_total", ()), 0)
    leaves = {k: int(v) for k, v in by_label(samples, "demod_leaves_total", "reason").items() if v}
    evictions_by_reason = {k: int(v) for k, v in
                           by_label(samples, "demod_evictions_total", "reason").items() if v}
    evictions = sum(evictions_by_reason.values())
    per_worker = {}
    for w in workers:
        figures = worker_csv(f"{folder}/{name(w)}.csv")
        figures["missed"] = int(missed.get(name(w), 0))
        figures["late"] = int(late.get(name(w), 0))
        figures["evictions"] = int(evicted.get(name(w), 0))
        try:
            summary = json.load(open(f"{folder}/{name(w)}.summary.json"))
        except (OSError, ValueError):
            summary = {}
        figures["finished"] = bool(summary.get("run_finished"))
        figures["fingerprint"] = summary.get("fingerprint", "")
        figures["last_step"] = summary.get("last_step")
        figures["skipped"] = summary.get("steps_skipped", 0)
        per_worker[w] = figures
    fastest = max(workers, key=lambda w: per_worker[w]["rate"] or 0)

    def mean(histogram):
        count = samples.get((histogram + "_count", ()), 0)
        return samples.get((histogram + "_sum", ()), 0) / count if count else None

    result = {
        "run": run, "seconds": seconds,
        "steps": int(samples.get(("demod_current_step", ()), 0)),
        "rate": per_worker[fastest]["rate"], "step_s": per_worker[fastest]["step_s"],
        "stall": per_worker[fastest]["stall"],
        "step_duration": mean("demod_step_duration_seconds"),
        "barrier_wait": mean("demod_barrier_wait_seconds"),
        "missed": sum(f["missed"] for f in per_worker.values()),
        "late": sum(f["late"] for f in per_worker.values()),
        "joins": int(joins), "reconnects": int(joins) - len(workers),
        "evictions": int(evictions), "evictions_by_reason": evictions_by_reason,
        "leaves": leaves, "workers": per_worker,
    }
    with open(f"{folder}/{run}.figures.json", "w") as f:
        json.dump(result, f, indent=1)
    fmt = lambda v, spec: "-" if v is None else format(v, spec)
    print(f"{run}: {result['steps']} steps in {seconds:.1f} s, "
          f"{fmt(result['rate'], '.0f')} steps/min, step {fmt(result['step_s'], '.3f')} s (median), "
          f"longest stall {fmt(result['stall'], '.1f')} s, coordinator's step "
          f"{fmt(result['step_duration'], '.3f')} s and barrier wait "
          f"{fmt(result['barrier_wait'], '.3f')} s (means), "
          f"contributions missed {result['missed']} "
          f"({', '.join(w + ' ' + str(per_worker[w]['missed']) for w in workers)}), "
          f"late {result['late']}, reconnects {result['reconnects']}, "
          f"evictions {result['evictions']} {evictions_by_reason or ''}, "
          f"leaves {leaves or '{}'}, steps computed / skipped "
          f"({', '.join(w + ' ' + str(per_worker[w]['rows']) + ' / ' + str(per_worker[w]['skipped']) for w in workers)})")


if __name__ == "__main__":
    main()
