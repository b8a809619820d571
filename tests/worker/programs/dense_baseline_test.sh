#!/usr/bin/env bash
# The dense AdamW baseline through the same coordinator, real processes on loopback: 3 workers
# (a GPT of 0.4M parameters: its state for a joiner, parameters and two moments, is 5 MB)
# train it for 120 steps and a 4th, started at step 8, joins mid-run (receiving parameters and
# AdamW's moments). The steps after the 8th must outlast the joiner's start: with 30 steps in
# all they did not on a loaded CI machine, and the joiner kept waiting for a coordinator that
# had finished. All end identical, the loss falls, and each step uploads the whole f32 gradient
# (4 bytes a parameter, no indices).
# Usage: dense_baseline_test.sh <bin dir> <data dir>
set -u
bin="$1"
data="$2"
source "$(dirname "$0")/../../support/process_test_lib.sh"
steps=120
start_coordinator coordinator.log --optimizer adamw --value_encoding f32 --min_workers 3 \
  --total_steps "$steps" --lr 3e-3 --warmup_steps 3 --step_deadline_s 60 ||
  fail "the coordinator did not start"
# worker NAME: a worker that gives up after a minute without its coordinator, so that a run
# that ended without it fails the test instead of outlasting its timeout.
worker() {
  "$bin/demod-worker" --coordinator "127.0.0.1:$port" --name "$1" --data_dir "$data" \
    --gpt_layers 2 --gpt_d_model 128 --gpt_heads 4 --context 64 --batch_size 8 --threads 1 \
    --validation_interval 10 --csv "$work/$1.csv" --summary_json "$work/$1.summary.json" \
    --reconnect_for 1m >"$work/$1.log" 2>&1 &
}
worker a
worker b
worker c
wait_for_step a 8
worker d
wait $(jobs -p | tail -n 4)

check_finished a b c d
check "worker d joined mid-run" "grep -q 'receiving the parameters' '$work/d.log'"
check_one_fingerprint "one fingerprint on all four" a b c d
check_loss_fell a "$steps"
up=$(awk -F, 'NR == 2 { print $9 }' "$work/a.csv")
dense=$(awk -F, 'NR == 2 { print $11 }' "$work/a.csv")
check "a step uploads the whole f32 gradient ($up bytes for $dense bytes of fp32)" \
  "[ '$up' -ge '$dense' ] && [ \$(( up - dense )) -lt 2000 ]"
finish
