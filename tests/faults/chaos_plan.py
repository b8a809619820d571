#!/usr/bin/env python3
"""The fault schedule of chaos_test.sh, drawn from a seeded RNG (the same seed, the same plan).

Faults arrive as a Poisson process with mean --mtbf seconds (at least --min_gap apart) over the
first --horizon seconds of the run. Every kind is in the plan: the first four faults are one of
each, all within the first 60% of the horizon (pulled closer when the draw put them later), so
a run that goes faster than expected still gets them. The kinds:

  kill_worker NAME DELAY KEEP   SIGKILL worker NAME, start it again after DELAY s under the same
                                name; KEEP 1: from its checkpoint directory, 0: wiped (a fresh
                                process with no trained parameters)
  kill_coordinator - DELAY -    SIGKILL the coordinator, start it again after DELAY s on the same
                                port and state directory
  stop_worker NAME SECONDS -    SIGSTOP worker NAME, SIGCONT it SECONDS later
  join JOINER - -               start the extra worker JOINER (once)

One fault per line: "OFFSET_S KIND TARGET ARG ARG2" (OFFSET_S from the start of the run).
"""
import argparse
import random


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--horizon", type=float, required=True, help="faults within this many s")
    parser.add_argument("--mtbf", type=float, required=True, help="mean s between faults")
    parser.add_argument("--workers", required=True, help="the workers present from the start")
    parser.add_argument("--joiner", required=True, help="the worker that joins mid-run")
    parser.add_argument("--start", type=float, default=5.0, help="no fault before this (s)")
    parser.add_argument("--min_gap", type=float, default=2.0, help="s between faults, at least")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    times = []
    t = args.start
    while True:
        t += max(args.min_gap, rng.expovariate(1.0 / args.mtbf))
        if t > args.horizon:
            break
        times.append(t)
    mandatory = ["kill_worker", "kill_coordinator", "stop_worker", "join"]
    m = len(mandatory)
    latest = args.start + 0.6 * (args.horizon - args.start)
    if len(times) < m:
        # Too few arrivals for every kind: spread the mandatory ones evenly instead.
        step = (latest - args.start) / m
        times = [args.start + step * (i + 1) for i in range(m)]
    elif times[m - 1] > latest:
        # Every kind within the first 60% of the horizon: the first arrivals, pulled closer.
        scale = (latest - args.start) / (times[m - 1] - args.start)
        times[:m] = [args.start + (t - args.start) * scale for t in times[:m]]
    # The mandatory kinds in a random order among the first faults; the rest drawn by weight.
    kinds = mandatory[:]
    rng.shuffle(kinds)
    optional = ["kill_worker", "stop_worker", "kill_coordinator"]
    weights = [0.55, 0.25, 0.20]
    kinds += rng.choices(optional, weights, k=len(times) - len(kinds))

    present = args.workers.split(",")
    for offset, kind in zip(times, kinds):
        if kind == "kill_worker":
            line = (kind, rng.choice(present), f"{rng.uniform(0.2, 3.0):.2f}",
                    str(int(rng.random() < 0.5)))
        elif kind == "kill_coordinator":
            # At least 0.5 s: a worker writes its row of a step within milliseconds of the
            # step's aggregate, so rows before the next coordinator's start are the last one's.
            line = (kind, "-", f"{rng.uniform(0.5, 2.0):.2f}", "-")
        elif kind == "stop_worker":
            line = (kind, rng.choice(present), f"{rng.uniform(3.0, 10.0):.2f}", "-")
        else:
            line = (kind, args.joiner, "-", "-")
            present.append(args.joiner)
        print(f"{offset:.2f}", *line)


if __name__ == "__main__":
    main()
