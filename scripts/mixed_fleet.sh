#!/usr/bin/env bash
# A mixed fleet on this machine (issue 16, docs/benchmarks.md "Heterogeneous workers"): workers a
# and b at full speed and c made SLOWDOWN times slower (demod-worker --compute_slowdown), each
# with one thread, train the process tests' small GPT on the SOTU text for the same wall time in
# three modes:
#   adaptive   every worker computes its own batch (BATCH), the default adaptive deadline
#   fixed      the same with a fixed deadline of FIXED_S seconds (c is left out of most steps)
#   balanced   batch: {global: 3 x BATCH, balance: true}: the coordinator shares the batch by
#              measured throughput
# First each kind of worker trains alone for the same time, for its solo throughput.
# Prints one line per run: steps per minute (the fastest worker's), samples per second of the
# fleet (computed, from the CSVs) against the sum of solo throughputs (a + b + c), the share of
# contributions left out of aggregates (from the CSVs' contributor counts), and the final
# validation loss (the workers' last measured, every 10 steps).
# Usage: scripts/mixed_fleet.sh [bin dir] [data dir]
# Environment: SECONDS_PER_RUN (default 30), SLOWDOWN (3), BATCH (16), FIXED_S (0.05),
# KEEP (a folder for the logs and CSVs).
set -euo pipefail
bin="${1:-build/bin}"
data="${2:-data}"
seconds="${SECONDS_PER_RUN:-30}"
slowdown="${SLOWDOWN:-3}"
batch="${BATCH:-16}"
fixed_s="${FIXED_S:-0.05}"
work="$(mktemp -d)"
cleanup() {
  local running
  running="$(jobs -rp)"
  [ -z "$running" ] || kill -KILL $running 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp -r "$work"/. "$KEEP"/; fi
  rm -rf "$work"
}
trap cleanup EXIT
context=64

# run NAME CONFIG_YAML WORKER:SLOWDOWN...: a coordinator and the workers, stopped (SIGTERM, a
# clean stop) SECONDS_PER_RUN after every worker wrote its first CSV line.
run() {
  local name="$1" config="$2" dir="$work/$1" pids=() spec w s port
  shift 2
  mkdir -p "$dir"
  printf '%s\n' "$config" >"$dir/run.yaml"
  "$bin/demod-coordinator" --listen 127.0.0.1:0 --metrics "" --port_file "$dir/port" \
    --config "$dir/run.yaml" --run_id "$name" --min_workers "$#" --total_steps 1000000 \
    --lr 2e-3 --warmup_steps 10 >"$dir/coordinator.log" 2>&1 &
  local coordinator=$!
  for _ in $(seq 200); do [ -s "$dir/port" ] && break; sleep 0.05; done
  port="$(cat "$dir/port")"
  for spec in "$@"; do
    w="${spec%%:*}" s="${spec##*:}"
    "$bin/demod-worker" --coordinator "127.0.0.1:$port" --name "$w" --data_dir "$data" \
      --gpt_layers 2 --gpt_d_model 64 --gpt_heads 4 --context "$context" --batch_size "$batch" \
      --validation_interval 10 --threads 1 --compute_slowdown "$s" --csv "$dir/$w.csv" \
      --summary_json "$dir/$w.json" >"$dir/$w.log" 2>&1 &
    pids+=($!)
  done
  for spec in "$@"; do
    w="${spec%%:*}"
    for _ in $(seq 600); do
      [ -f "$dir/$w.csv" ] && [ "$(wc -l <"$dir/$w.csv")" -ge 2 ] && break
      sleep 0.1
    done
  done
  date +%s.%N >"$dir/started"
  sleep "$seconds"
  date +%s.%N >"$dir/stopped"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  for p in "${pids[@]}"; do wait "$p" || true; done
  kill -TERM "$coordinator" 2>/dev/null || true
  wait "$coordinator" || true
}

# report NAME WORKER...: the figures of a run (JSON), from its CSVs and summaries.
report() {
  python3 - "$work/$1" "$context" "${@:2}" <<'PY'
import csv, json, statistics, sys
folder, context, workers = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
start, stop = (float(open(f"{folder}/{n}").read()) for n in ("started", "stopped"))
fig = {"workers": {}}
samples = 0
rates, contributors = [], []
for w in workers:
    rows = [r for r in csv.DictReader(open(f"{folder}/{w}.csv")) if start <= float(r["wall_s"]) <= stop]
    n = sum(int(r["tokens"]) // context for r in rows)
    samples += n
    if len(rows) > 1:
        rates.append(60 * (len(rows) - 1) / (float(rows[-1]["wall_s"]) - float(rows[0]["wall_s"])))
    contributors += [int(r["contributors"]) for r in rows]
    summary = json.load(open(f"{folder}/{w}.json"))
    fig["workers"][w] = {"samples": n, "steps": len(rows), "val": summary.get("last_validation_loss")}
fig["seconds"] = stop - start
fig["samples_per_s"] = samples / (stop - start)
fig["steps_per_min"] = max(rates) if rates else 0
fig["left_out"] = 1 - statistics.mean(contributors) / len(workers) if contributors else 0
vals = [v["val"] for v in fig["workers"].values() if v["val"] is not None]
fig["val"] = statistics.mean(vals) if vals else None
print(json.dumps(fig))
PY
}

echo "mixed fleet: a, b at full speed, c ${slowdown}x slower; batch $batch; ${seconds} s per run"
run solo-fast "" a:1
run solo-slow "" c:"$slowdown"
fast=$(report solo-fast a | python3 -c 'import json,sys; print(json.load(sys.stdin)["samples_per_s"])')
slow=$(report solo-slow c | python3 -c 'import json,sys; print(json.load(sys.stdin)["samples_per_s"])')
sum=$(python3 -c "print($fast * 2 + $slow)")
printf 'solo: a %.0f, c %.0f samples/s; a + b + c = %.0f\n' "$fast" "$slow" "$sum"
for mode in adaptive fixed balanced; do
  case "$mode" in
    adaptive) config="" ;;
    fixed) config="deadline: {kind: fixed, fixed_s: $fixed_s}" ;;
    balanced) config="batch: {global: $((3 * batch)), balance: true}" ;;
  esac
  run "$mode" "$config" a:1 b:1 c:"$slowdown"
  report "$mode" a b c | python3 -c "
import json, sys
f = json.load(sys.stdin)
val = '-' if f['val'] is None else format(f['val'], '.4f')
print(f\"$mode: {f['steps_per_min']:.0f} steps/min, fleet {f['samples_per_s']:.0f} samples/s = \"
      f\"{100 * f['samples_per_s'] / $sum:.0f}% of the solo sum, contributions left out \"
      f\"{100 * f['left_out']:.0f}%, validation loss {val} after {f['seconds']:.0f} s \"
      f\"(samples a/b/c {f['workers']['a']['samples']}/{f['workers']['b']['samples']}/{f['workers']['c']['samples']})\")"
done
