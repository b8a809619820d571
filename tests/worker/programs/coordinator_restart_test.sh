#!/usr/bin/env bash
# Real processes on loopback: a coordinator with a state directory and 2 demod-workers train a
# small GPT on the SOTU text for 60 steps. Near step 20 the coordinator is killed with SIGKILL
# and started again on the same port and state directory. The workers must reconnect by
# themselves and finish the run: every worker's steps increase up to the last (one may repeat:
# docs/coordinator.md, --state_dir), both end with one fingerprint, the loss fell, and the state
# directory says the run is done.
# Usage: coordinator_restart_test.sh <bin dir> <data dir>
set -u
bin="$1"
data="$2"
source "$(dirname "$0")/../../support/process_test_lib.sh"
require_sotu

steps=60
# coordinator LOG [run flags]: started on the state directory (and, the second time, on the
# first one's port); tried again while it exits at once (after a SIGKILL the port may take a
# moment to come free).
coordinator() {
  for _ in $(seq 50); do
    start_coordinator "$@" --state_dir "$work/state" && return 0
    sleep 0.2
  done
  fail "the coordinator ($1) did not start"
}
worker() {
  local name="$1"
  "$bin/demod-worker" --coordinator "127.0.0.1:$port" --name "$name" --data_dir "$data" \
    --gpt_layers 2 --gpt_d_model 64 --gpt_heads 4 --context 64 --batch_size 8 \
    --validation_interval 10 --csv "$work/$name.csv" --threads 1 \
    --summary_json "$work/$name.summary.json" >>"$work/$name.log" 2>&1 &
  pids+=($!)
}

coordinator coordinator1.log --run_id restart-test --min_workers 2 --total_steps "$steps" \
  --lr 2e-3 --warmup_steps 4 --step_deadline_s 60
worker a
worker b
wait_for_step a 20
kill -KILL "$coordinator_pid"
wait "$coordinator_pid" 2>/dev/null
echo "killed the coordinator at worker a's step $(csv_step a)"
coordinator coordinator2.log  # the run's configuration comes from the state directory
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done

check "the second coordinator resumed the run" \
  "grep -q 'resuming run restart-test after step' '$work/coordinator2.log'"
grep -h "resuming run\|between a step's save" "$work/coordinator2.log"
for w in a b; do
  check "worker $w reconnected" "grep -q 'reconnecting in' '$work/$w.log'"
  check_finished "$w"
  # A worker may run one step twice: the one it applied just before the kill, when the seed
  # had not applied it and the run goes on from the seed's parameters (which it receives).
  check "worker $w's steps increase to $steps, one repeated at most" \
    "tail -n +2 '$work/$w.csv' | cut -d, -f1 | awk -v last=$steps \
       'NR > 1 && \$1 < prev { exit 1 } NR > 1 && \$1 == prev { repeats++ } { prev = \$1 }
        END { exit !(prev == last && repeats <= 1) }'"
done
check_one_fingerprint "both workers end with one fingerprint" a b
check_loss_fell a "$steps"
check "the state directory holds the finished run" \
  "grep -q '\"completed_steps\": *$steps' '$work/state/run.json'"
finish
