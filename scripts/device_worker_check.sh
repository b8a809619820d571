#!/usr/bin/env bash
# A CPU worker and a CUDA worker in one run, through a real coordinator over gRPC, on a GPU
# machine that has a pip PyTorch with CUDA but none of Debian's dev packages. Unpacks the
# Debian packages carried in .debs/ (Abseil, gRPC, protobuf, prometheus-cpp, yaml-cpp,
# nlohmann-json and what they need; `apt-get download` them on a Debian 12 machine) into
# /tmp/deps, builds demod-coordinator and demod-worker against the wheel's LibTorch into
# build-device-full/ (scripts/device_build.sh: with the CUDA kernels where it can), trains the
# small GPT on data/sotu (carried) for STEPS (40) steps with one worker
# on each device, and checks both end with one fingerprint and no resync was needed.
# ENCODING (bf16) and OPTIMIZER (demo, or adamw for the dense baseline) choose the run; with
# BALANCE=N the run shares a global batch of N samples by measured throughput (issue 16:
# batch: {global: N, balance: true}), and the workers' last shares are printed.
#
# The packages (22 MB): `scripts/device_cuda_check.sh pack` downloads them into .debs/ (with
# .devcuda/ for a GPU machine without nvcc); then carry .debs, .devcuda and data/sotu.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/device_build.sh || exit 2
device_build demod-coordinator demod-worker || exit 2
bin="$device_build_dir/bin"
work=$(mktemp -d)
config=()
if [ -n "${BALANCE:-}" ]; then
  printf 'batch: {global: %s, balance: true}\n' "$BALANCE" >"$work/run.yaml"
  config=(--config "$work/run.yaml")
fi
"$bin/demod-coordinator" "${config[@]}" --listen 127.0.0.1:0 --port_file "$work/port" --metrics "" \
  --min_workers 2 --total_steps "${STEPS:-40}" --lr 2e-3 --warmup_steps 4 --fingerprint_interval 10 \
  --value_encoding "${ENCODING:-bf16}" --optimizer "${OPTIMIZER:-demo}" \
  >"$work/coordinator.log" 2>&1 &
coordinator=$!
for _ in $(seq 200); do
  [ -s "$work/port" ] || ! kill -0 "$coordinator" 2>/dev/null && break
  sleep 0.05
done
[ -s "$work/port" ] || { echo "FAIL: the coordinator did not start"; cat "$work/coordinator.log"; exit 1; }
common=(--coordinator "127.0.0.1:$(cat "$work/port")" --data_dir data --gpt_layers 2
        --gpt_d_model 64 --gpt_heads 4 --context 64 --batch_size 8 --validation_interval 10)
"$bin/demod-worker" "${common[@]}" --name cpu --device cpu --threads 4 \
  --summary_json "$work/cpu.json" >"$work/cpu.log" 2>&1 &
"$bin/demod-worker" "${common[@]}" --name gpu --device cuda --summary_json "$work/gpu.json" \
  >"$work/gpu.log" 2>&1
wait
for f in coordinator cpu gpu; do echo "== $f"; grep -v " step [0-9]*/" "$work/$f.log" | tail -n 8; done
if [ -n "${BALANCE:-}" ]; then
  for f in cpu gpu; do echo "$f: last $(grep 'batch share' "$work/$f.log" | tail -n 1)"; done
fi
n=$(python3 -c 'import json, sys; print(len({json.load(open(f))["fingerprint"] for f in sys.argv[1:]}))' \
  "$work/cpu.json" "$work/gpu.json" 2>/dev/null || echo 0)
if [ "$n" -eq 1 ] && ! grep -q diverged "$work/coordinator.log"; then
  echo "PASS: CPU and CUDA workers end identical, no resync"
else
  echo "FAIL: $n distinct fingerprints; resyncs: $(grep -c diverged "$work/coordinator.log")"
  exit 1
fi
