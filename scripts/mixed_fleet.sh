#!/usr/bin/env bash
# A mixed fleet on this machine (issue 16, docs/benchmarks.md "Heterogeneous workers"): workers
# with one thread each, some made slower (demod-worker --compute_slowdown, which sleeps in
# proportion to its compute), train the process tests' small GPT on the SOTU text for the same
# wall time in these modes:
#   adaptive   every worker computes its own batch (BATCH), the default adaptive deadline
#   fixed      the same with a fixed deadline of FIXED_S seconds (slow workers are left out of
#              most steps)
#   balanced   batch: {global: GLOBAL, balance: true}: the coordinator shares the batch by
#              measured throughput, and weighs each contribution by its samples (the default
#              with balance)
#   balanced-equal   the same with batch.weighting equal: contributions averaged equally
# First one worker of each speed trains alone for the same time, for its solo throughput.
# Prints one line per run: steps per minute (the fastest worker's), samples per second of the
# fleet (computed, from the CSVs) against the sum of the workers' solo throughputs, the share of
# contributions left out of aggregates (from the CSVs' contributor counts), the final
# validation loss (the workers' last measured, every 10 steps), and the mean validation loss
# over the steps VAL_STEPS (from, to; "500 800" by default), which compares the training of
# modes at equal steps rather than at equal time.
# Usage: scripts/mixed_fleet.sh [bin dir] [data dir]
# Environment: FLEET (workers as name:slowdown, default "a:1 b:1 c:3"), MODES (default
# "adaptive fixed balanced"), VAL_STEPS, SECONDS_PER_RUN (30), BATCH (16), GLOBAL (BATCH x workers),
# FIXED_S (0.05), SEED (the workers' --seed; default: from the name), KEEP (a folder for the logs and CSVs).
set -euo pipefail
bin="${1:-build/bin}"
data="${2:-data}"
seconds="${SECONDS_PER_RUN:-30}"
read -r -a fleet <<<"${FLEET:-a:1 b:1 c:3}"
modes="${MODES:-adaptive fixed balanced}"
batch="${BATCH:-16}"
global="${GLOBAL:-$((batch * ${#fleet[@]}))}"
val_steps="${VAL_STEPS:-500 800}"
seed_flag=()
[ -z "${SEED:-}" ] || seed_flag=(--seed "$SEED")
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
      --validation_interval 10 --threads 1 "${seed_flag[@]}" --compute_slowdown "$s" --csv "$dir/$w.csv" \
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
  python3 - "$work/$1" "$context" "$val_steps" "${@:2}" <<'PY'
import csv, json, statistics, sys
folder, context, workers = sys.argv[1], int(sys.argv[2]), sys.argv[4:]
val_from, val_to = (int(x) for x in sys.argv[3].split())
at_steps = []
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
    at_steps += [float(r["validation_loss"]) for r in csv.DictReader(open(f"{folder}/{w}.csv"))
                 if r["validation_loss"] not in ("", "nan") and val_from <= int(r["step"]) <= val_to]
    summary = json.load(open(f"{folder}/{w}.json"))
    fig["workers"][w] = {"samples": n, "steps": len(rows), "val": summary.get("last_validation_loss")}
fig["seconds"] = stop - start
fig["samples_per_s"] = samples / (stop - start)
fig["steps_per_min"] = max(rates) if rates else 0
fig["left_out"] = 1 - statistics.mean(contributors) / len(workers) if contributors else 0
vals = [v["val"] for v in fig["workers"].values() if v["val"] is not None]
fig["val"] = statistics.mean(vals) if vals else None
fig["val_at_steps"] = statistics.mean(at_steps) if at_steps else None
print(json.dumps(fig))
PY
}

names=()
for spec in "${fleet[@]}"; do names+=("${spec%%:*}"); done
echo "mixed fleet: ${fleet[*]} (name:slowdown); batch $batch, global $global; ${seconds} s per run"
# Solo throughput of each speed, once.
declare -A solo
for spec in "${fleet[@]}"; do
  s="${spec##*:}"
  [ -n "${solo[$s]:-}" ] && continue
  run "solo-$s" "" "solo:$s"
  solo[$s]=$(report "solo-$s" solo | python3 -c 'import json,sys; print(json.load(sys.stdin)["samples_per_s"])')
  printf 'solo, slowdown %s: %.0f samples/s\n' "$s" "${solo[$s]}"
done
sum=0
for spec in "${fleet[@]}"; do sum=$(python3 -c "print($sum + ${solo[${spec##*:}]})"); done
printf 'sum of solo throughputs: %.0f samples/s\n' "$sum"
for mode in $modes; do
  case "$mode" in
    adaptive) config="" ;;
    fixed) config="deadline: {kind: fixed, fixed_s: $fixed_s}" ;;
    balanced) config="batch: {global: $global, balance: true}" ;;
    balanced-equal) config="batch: {global: $global, balance: true, weighting: equal}" ;;
    *) echo "unknown mode '$mode'" >&2; exit 2 ;;
  esac
  run "$mode" "$config" "${fleet[@]}"
  report "$mode" "${names[@]}" | python3 -c "
import json, sys
f = json.load(sys.stdin)
val = '-' if f['val'] is None else format(f['val'], '.4f')
at = '-' if f['val_at_steps'] is None else format(f['val_at_steps'], '.4f')
samples = '/'.join(str(w['samples']) for w in f['workers'].values())
print(f\"$mode: {f['steps_per_min']:.0f} steps/min, fleet {f['samples_per_s']:.0f} samples/s = \"
      f\"{100 * f['samples_per_s'] / $sum:.0f}% of the solo sum, contributions left out \"
      f\"{100 * f['left_out']:.0f}%, validation loss {val} after {f['seconds']:.0f} s, \"
      f\"{at} over steps $val_steps \"
      f\"(samples ${names[*]}: {samples})\")"
done
