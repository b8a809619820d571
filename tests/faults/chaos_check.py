#!/usr/bin/env python3
"""Checks the chaos run of chaos_test.sh from typed records only: each worker's CSV (one row per
step it applied: `step`, `wall_s`, `contributors`, the size of the step aggregate's contributor
list, which the coordinator wrote into the aggregate), each surviving worker's --summary_json,
the coordinator's state directory (run.json) and the test's own record of what it did
(events.jsonl: when each coordinator started, which faults it injected).

The CSV of a worker name holds the rows of all its processes (a restarted worker appends). Rows
are split into coordinator epochs by the start times of the coordinators: an aggregate comes
from the coordinator serving when it was written, and a row is written after its aggregate.

Checks:
1. Within an epoch, every row of a step has the same contributor count (one aggregate per step,
   the same bytes for everyone), and no worker name has two rows of one step (a step applied
   twice). Across a coordinator restart a step may run again (docs/coordinator.md, --state_dir).
2. No contribution counted twice: a step's contributor count is at most the number of distinct
   worker names that can have sent a payload for it. Those are the names with a row of the step,
   and the names whose row of the step before is there but not this one: a process killed, or
   whose stream ended, after the step closed and before it wrote its row. A name in the count
   twice (a dead process's stream and its successor's, or one payload counted twice) makes the
   count exceed them at the steps where it happens: every other present worker sends too.
3. Every surviving worker's summary says it finished the run at its last step, with the
   validation loss of that step; all of them the same loss (they hold the same parameters).
4. The state directory holds the finished run.
5. The final validation loss is within --margin of the undisturbed baseline's.
Prints ok/FAIL per check and a line of figures; exit status 1 when a check fails.
"""
import argparse
import collections
import csv
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from checks import Checks  # noqa: E402


def read_rows(path):
    with open(path, newline="") as f:
        return [(int(r["step"]), float(r["wall_s"]), int(r["contributors"]))
                for r in csv.DictReader(f)]


def read_summary(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", required=True, help="the test's folder: RUN-NAME.csv, "
                        "RUN-NAME.summary.json, RUN-events.jsonl, RUN-state/run.json")
    parser.add_argument("--run", required=True, help="the chaos run's prefix")
    parser.add_argument("--names", required=True, help="every worker name of the chaos run")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--baseline", required=True, help="the undisturbed run's prefix")
    parser.add_argument("--baseline_names", required=True)
    parser.add_argument("--margin", type=float, required=True)
    args = parser.parse_args()
    checks = Checks()
    names = args.names.split(",")

    def path(run, suffix):
        return os.path.join(args.work, f"{run}-{suffix}")

    with open(path(args.run, "events.jsonl")) as f:
        events = [json.loads(line) for line in f if line.strip()]
    epoch_starts = sorted(e["t"] for e in events if e["event"] == "coordinator_start")

    def epoch_of(wall_s):
        return sum(1 for t in epoch_starts if t <= wall_s) - 1

    # (epoch, step) -> {name: [contributors, ...]}
    rows = collections.defaultdict(lambda: collections.defaultdict(list))
    for name in names:
        csv_path = path(args.run, f"{name}.csv")
        if not os.path.exists(csv_path):
            checks.check(f"worker {name} wrote a CSV", False)
            continue
        for step, wall_s, contributors in read_rows(csv_path):
            rows[(epoch_of(wall_s), step)][name].append(contributors)

    disagree, doubled, overcounted = [], [], []
    late_steps = 0  # steps a worker applied without its payload in them
    repeated = collections.Counter()  # steps recorded in more than one epoch
    epochs_of_step = collections.defaultdict(set)
    for (epoch, step), by_name in sorted(rows.items()):
        epochs_of_step[step].add(epoch)
        counts = {c for values in by_name.values() for c in values}
        if len(counts) != 1:
            disagree.append(f"epoch {epoch} step {step}: {dict(by_name)}")
        for name, values in by_name.items():
            if len(values) > 1:
                doubled.append(f"{name}: epoch {epoch} step {step} x{len(values)}")
        before = rows.get((epoch, step - 1), {})
        senders = set(by_name) | {n for n in before if n not in by_name}
        contributors = max(counts)
        if contributors > len(senders) or contributors < 1:
            overcounted.append(f"epoch {epoch} step {step}: {contributors} contributors, "
                               f"senders {sorted(senders)}")
        if contributors < len(by_name):
            late_steps += 1
    for step, epochs in epochs_of_step.items():
        if len(epochs) > 1:
            repeated[step] = len(epochs)
    recorded = len(epochs_of_step)
    checks.check("every row of a step has the step aggregate's one contributor count",
                 not disagree, "; ".join(disagree[:5]))
    checks.check("no worker applied a step twice under one coordinator", not doubled,
                 "; ".join(doubled[:5]))
    checks.check("no contribution counted twice: contributors <= workers that can have sent",
                 not overcounted and recorded > 0,
                 f"{len(rows)} (epoch, step) pairs over {len(epoch_starts)} coordinators; "
                 + "; ".join(overcounted[:5]))
    missing = [s for s in range(1, args.steps + 1) if s not in epochs_of_step]
    print(f"steps recorded by some worker: {recorded} of {args.steps}"
          f"{' (none of: ' + ','.join(map(str, missing[:10])) + ')' if missing else ''}; "
          f"run again after a coordinator restart: {sorted(repeated)}")

    def final_losses(run, which):
        losses = {}
        for name in which:
            s = read_summary(path(run, f"{name}.summary.json"))
            finished = s.get("run_finished") is True and s.get("last_step") == args.steps
            checks.check(f"{run}-{name} finished at step {args.steps}",
                         finished, f"run_finished {s.get('run_finished')}, last_step "
                                   f"{s.get('last_step')}")
            loss = s.get("last_validation_loss")
            if finished and isinstance(loss, (int, float)):
                losses[name] = loss
        checks.check(f"{run}: one final validation loss",
                     len(losses) == len(which) and len(set(losses.values())) == 1, str(losses))
        return next(iter(losses.values()), math.nan)

    chaos_loss = final_losses(args.run, names)
    baseline_loss = final_losses(args.baseline, args.baseline_names.split(","))

    try:
        with open(os.path.join(path(args.run, "state"), "run.json")) as f:
            state = json.load(f)
    except (OSError, ValueError) as e:
        state = {"error": str(e)}
    checks.check("the state directory holds the finished run",
                 state.get("completed_steps") == args.steps, f"completed_steps "
                                                           f"{state.get('completed_steps')}")
    history = collections.Counter(e.get("event") for e in state.get("history", []))

    diff = chaos_loss - baseline_loss
    checks.check(f"the final validation loss is within {args.margin} of the undisturbed run's",
                 abs(diff) <= args.margin,
                 f"chaos {chaos_loss:.4f}, baseline {baseline_loss:.4f}, difference {diff:+.4f}")
    # For chaos_test.sh's summary line.
    print(f"figures: chaos_val_loss={chaos_loss:.4f} baseline_val_loss={baseline_loss:.4f} "
          f"diff={diff:+.4f} late_steps={late_steps} repeated_steps={len(repeated)} "
          f"saved_joins={history['join']} saved_leaves={history['leave']} "
          f"saved_evictions={history['evict']}")
    return 1 if checks.failures else 0


if __name__ == "__main__":
    sys.exit(main())
