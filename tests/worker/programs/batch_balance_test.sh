#!/usr/bin/env bash
# Batch balancing with real processes on loopback: a run with `batch: {global: 24, balance:
# true}` and two demod-workers, b made three times slower (--compute_slowdown 3). Every step
# both contribute to, their samples (the CSVs' tokens over the context) add up to the global
# batch; once the shares have settled, b computes fewer samples than a; both finish with one
# fingerprint.
# Usage: batch_balance_test.sh <bin dir> <data dir>
set -u
bin="$1"
data="$2"
source "$(dirname "$0")/../../support/process_test_lib.sh"
require_sotu
steps=60
context=32
printf 'batch: {global: 24, balance: true}\n' >"$work/run.yaml"
start_coordinator coordinator.log --config "$work/run.yaml" --min_workers 2 \
  --total_steps "$steps" --lr 2e-3 --warmup_steps 5 --step_deadline_s 60 ||
  fail "the coordinator did not start"
worker() {
  "$bin/demod-worker" --coordinator "127.0.0.1:$port" --name "$1" --data_dir "$data" \
    --gpt_layers 1 --gpt_d_model 32 --gpt_heads 2 --context "$context" --batch_size 8 \
    --threads 1 --validation_interval 20 --compute_slowdown "$2" --csv "$work/$1.csv" \
    --summary_json "$work/$1.summary.json" >"$work/$1.log" 2>&1 &
}
worker a 1
worker b 3
wait $(jobs -p | tail -n 2)

check_finished a b
check_one_fingerprint "one fingerprint on both" a b
# step -> samples, for the steps both contributed to (contributors = 2 in both CSVs). A new
# share reaches both workers before the aggregate of the step before the one it is for; only
# the seed's first step may be computed before b's arrival set the first shares.
samples_of() {
  awk -F, -v c="$context" 'NR > 2 && $13 == 2 { print $1, int($5 / c) }' "$work/$1.csv"
}
sums=$(join <(samples_of a | sort) <(samples_of b | sort) | awk '{ print $2 + $3 }' | sort -u)
echo "samples a step, a + b: $(echo $sums)"
join <(samples_of a | sort) <(samples_of b | sort) | awk '$2 + $3 != 24 { print "step " $1 ": a " $2 ", b " $3 }' | sort -n -k2
check "every step both contributed to has the 24 samples of the global batch" "[ '$sums' = 24 ]"
late_a=$(samples_of a | awk -v s="$steps" '$1 > s - 20 { n++; t += $2 } END { print n ? t / n : 0 }')
late_b=$(samples_of b | awk -v s="$steps" '$1 > s - 20 { n++; t += $2 } END { print n ? t / n : 0 }')
echo "mean samples over the last 20 steps: a $late_a, b $late_b"
check "the slower worker computes fewer samples" "awk -v a='$late_a' -v b='$late_b' 'BEGIN { exit !(b < a && b > 0) }'"
check "the coordinator sent shares" "grep -q 'batch share' '$work/a.log'"
finish
