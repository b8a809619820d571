#!/usr/bin/env bash
# The main job: a local DeMo training run. Installs and builds what is missing, fetches the
# data, then starts a coordinator and N CPU workers (separate processes, real gRPC on
# loopback) training the default small byte-level GPT on the SOTU text. Shows a live progress
# line, ends with a summary (validation loss, bytes per worker per step against an fp32
# all-reduce, wall time), and leaves a CSV of every step and a PNG plot in the run folder
# (loss, bandwidth, and the straggler view: each worker's step time and contributors per step).
# Every process it started is stopped on exit and on Ctrl-C.
#
#   scripts/run.sh [--workers 3] [--steps 600] [--model gpt|cnn] [--device cpu|cuda|auto]
#                  [--value-encoding f32|bf16|f16|sign] [--batch-size 8] [--out runs/NAME]
#                  [--optimizer demo|adamw] [--lr X]   (adamw: the dense baseline, f32/bf16)
#   The value encoding defaults to sign with demo and bf16 with adamw (docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."

workers=3
steps=600
model=gpt
device=cpu
encoding=""
batch_size=8
lr=""
optimizer=demo
out=""
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --device) device="$2"; shift 2 ;;
    --value-encoding) encoding="$2"; shift 2 ;;
    --batch-size) batch_size="$2"; shift 2 ;;
    --lr) lr="$2"; shift 2 ;;
    --optimizer) optimizer="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$workers" =~ ^[1-9][0-9]*$ ]] || { echo "run: --workers must be a positive integer" >&2; exit 2; }
[[ "$steps" =~ ^[1-9][0-9]*$ ]] || { echo "run: --steps must be a positive integer" >&2; exit 2; }
case "$optimizer" in
  demo) lr="${lr:-1e-3}" encoding="${encoding:-sign}" ;;
  adamw)
    lr="${lr:-3e-3}" encoding="${encoding:-bf16}"
    [ "$encoding" = bf16 ] || [ "$encoding" = f32 ] ||
      { echo "run: --optimizer adamw sends f32 or bf16 gradients" >&2; exit 2; } ;;
  *) echo "run: --optimizer must be demo or adamw" >&2; exit 2 ;;
esac
case "$model" in
  gpt) data=sotu ;;
  cnn) data=fashion-mnist ;;
  *) echo "run: --model must be gpt or cnn" >&2; exit 2 ;;
esac

bash scripts/setup.sh
# A first build takes minutes: its progress shows as one line that updates ("build: 12/127
# cpu_kernels.cc") on a terminal, and its output only when it fails.
show_build_progress() {
  local line shown=0
  if [ ! -t 2 ]; then
    cat >/dev/null
    return 0
  fi
  while IFS= read -r line; do
    if [[ "$line" =~ ^\[([0-9]+)/([0-9]+)\]\ .*\ ([^ ]+)$ ]]; then
      local what="${BASH_REMATCH[3]##*/}"
      printf '\rbuild: %s/%s %s\033[K' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${what%.o}" >&2
      shown=1
    elif [[ "$line" == "-- "* && "$shown" -eq 0 ]]; then
      printf '\rbuild: configuring\033[K' >&2
      shown=1
    fi
  done
  [ "$shown" -eq 0 ] || printf '\r\033[K' >&2
}
build_log=$(mktemp)
trap 'rm -f "$build_log"' EXIT
if ! bash scripts/build.sh 2>&1 | tee "$build_log" | show_build_progress; then
  echo "run: the build failed; its last lines:" >&2
  tail -n 30 "$build_log" >&2
  rm -f "$build_log"
  exit 1
fi
rm -f "$build_log"
bash scripts/fetch_data.sh data
bin="${BUILD_DIR:-build}/bin"

out="${out:-runs/$(date -u +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
# A run folder may be used again (its state and checkpoints resume the run): what the last
# run's processes wrote for this one to read must not be mistaken for this run's.
rm -f "$out/coordinator.port" "$out"/worker-*.json
pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'echo; echo "run: interrupted; stopping every process" >&2; exit 130' INT TERM

"$bin/demod-coordinator" --listen 127.0.0.1:0 --port_file "$out/coordinator.port" --metrics "" \
  --run_id "$(basename "$out")" --min_workers "$workers" --total_steps "$steps" --lr "$lr" \
  --optimizer "$optimizer" --warmup_steps $((steps / 10)) --value_encoding "$encoding" \
  --state_dir "$out/state" >"$out/coordinator.log" 2>&1 &
pids+=($!)
# It writes its port once it serves.
for _ in $(seq 200); do
  [ -s "$out/coordinator.port" ] || ! kill -0 "${pids[0]}" 2>/dev/null && break
  sleep 0.05
done
[ -s "$out/coordinator.port" ] || { cat "$out/coordinator.log" >&2; exit 1; }
port=$(cat "$out/coordinator.port")

# Workers share the machine's cores.
threads=$(( $(nproc) / workers )); [ "$threads" -ge 1 ] || threads=1
for i in $(seq 1 "$workers"); do
  "$bin/demod-worker" --coordinator "127.0.0.1:$port" --name "worker-$i" --device "$device" \
    --model "$model" --data "$data" --data_dir data --batch_size "$batch_size" \
    --threads "$threads" --csv "$out/worker-$i.csv" --checkpoint_dir "$out/checkpoint-$i" \
    --summary_json "$out/worker-$i.json" --progress=false >"$out/worker-$i.log" 2>&1 &
  pids+=($!)
done
echo "run: coordinator on 127.0.0.1:$port, $workers workers ($model on $data, $device," \
  "$optimizer, $encoding values, $steps steps); logs and results in $out"

started=$(date +%s)
last_val="-"
orphaned=0  # seconds the workers have outlived the coordinator
while true; do
  alive=0
  for pid in "${pids[@]:1}"; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done
  if [ -s "$out/worker-1.csv" ]; then
    line=$(tail -n 1 "$out/worker-1.csv")
    IFS=, read -r step _ loss _ _ tps _ _ up down dense _ _ <<<"$line"
    if [[ "$step" =~ ^[0-9]+$ ]]; then
      # Validation rows come every few steps; the last line sampled each second rarely has one.
      val=$(awk -F, 'NR > 1 && $4 != "" { v = $4 } END { print v }' "$out/worker-1.csv")
      [ -n "$val" ] && last_val="$val"
      printf '\rstep %d/%d  loss %.4f  val %s  %.0f tok/s  up %s B  down %s B per step  (%ds)\033[K' \
        "$step" "$steps" "$loss" "$last_val" "$tps" "$up" "$down" $(( $(date +%s) - started ))
    fi
  fi
  [ "$alive" -eq 0 ] && break
  # Workers outlive the coordinator only briefly when the run finished; otherwise (it failed,
  # or the run in this folder had finished before: a resumed finished run exits at once) they
  # would retry for minutes.
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    orphaned=$((orphaned + 1))
    if [ "$orphaned" -eq 20 ]; then
      echo
      echo "run: the coordinator has exited (see $out/coordinator.log; a run folder whose run" \
        "finished before is done); stopping the workers" >&2
      for pid in "${pids[@]:1}"; do kill -TERM "$pid" 2>/dev/null || true; done
    fi
  fi
  sleep 1
done
echo
wall=$(( $(date +%s) - started ))

# Each worker's outcome (--summary_json): it finished the run, and every final fingerprint
# agrees.
summary_field() {
  python3 -c 'import json, sys
v = json.load(open(sys.argv[1])).get(sys.argv[2], "")
print(str(v).lower() if isinstance(v, bool) else v)' "$out/worker-$1.json" "$2" 2>/dev/null || true
}
status=0
for i in $(seq 1 "$workers"); do
  if [ "$(summary_field "$i" run_finished)" != true ]; then
    echo "run: worker-$i did not finish the run; last lines of $out/worker-$i.log:" >&2
    tail -n 5 "$out/worker-$i.log" >&2
    status=1
  fi
done
fingerprints=$(for i in $(seq 1 "$workers"); do summary_field "$i" fingerprint; done |
  sort -u | { grep -c . || true; })
summary=$(awk -F, 'NR > 1 { n++; up += $9; down += $10; dense += $11; if ($4 != "") val = $4; loss = $3 }
  END { if (n) printf "%d %.4f %s %.0f %.0f %.0f", n, loss, val == "" ? "n/a" : val, up / n,
                      down / n, dense / n }' "$out/worker-1.csv" 2>/dev/null || true)
read -r n loss val up down dense <<<"$summary"
echo "summary:"
echo "  steps: $n (worker-1), wall time ${wall}s"
echo "  final loss ${loss:-n/a}, final validation loss ${val:-n/a}"
echo "  bytes per worker per step: ${up} up, ${down} down; an fp32 all-reduce sends ${dense}" \
  "($(awk -v d="$dense" -v u="$up" 'BEGIN { if (u > 0) printf "%.0fx", d / u }') less upload)"
if [ "$status" -ne 0 ]; then
  echo "  not every worker finished: see the lines above" >&2
elif [ "$fingerprints" -eq 1 ]; then
  echo "  parameters identical on all $workers workers (one fingerprint)"
else
  echo "  parameters DIFFER between workers ($fingerprints fingerprints)" >&2
  status=1
fi

if command -v gnuplot >/dev/null; then
  gnuplot <<EOF
set terminal pngcairo size 1100,1150 noenhanced
set output "$out/training.png"
set datafile separator ","
set key autotitle columnhead
set multiplot layout 3,1 title "demod: $workers workers, $model on $data, $optimizer, $encoding values"
set xlabel "step"; set ylabel "loss"; set grid
plot "$out/worker-1.csv" using 1:3 with lines title "training loss (worker-1)", \
     "$out/worker-1.csv" using 1:4 with points pointtype 7 title "validation loss"
set ylabel "bytes per step (log)"; set logscale y
plot "$out/worker-1.csv" using 1:9 with lines title "sent (payload)", \
     "$out/worker-1.csv" using 1:10 with lines title "received (aggregate)", \
     "$out/worker-1.csv" using 1:11 with lines title "fp32 all-reduce (dense)"
# Stragglers: each worker's step time (compute plus waiting for the others' payloads) and how
# many workers the step's aggregate included.
unset logscale y
set ylabel "step time (s)"; set y2label "contributors"; set y2tics 1; set ytics nomirror
set yrange [0:*]; set y2range [0:$workers + 1]
plot for [i=1:$workers] sprintf("$out/worker-%d.csv", i) using 1:7 with lines \
       title sprintf("step time, worker-%d", i), \
     "$out/worker-1.csv" using 1:13 axes x1y2 with steps linewidth 2 title "contributors"
unset multiplot
EOF
  echo "  plot: $out/training.png; per-step CSV: $out/worker-*.csv"
fi
exit "$status"
