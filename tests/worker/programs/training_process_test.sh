#!/usr/bin/env bash
# Real processes on loopback: a coordinator and 3 demod-workers (one with 2 threads) train a
# small GPT on the SOTU text for 80 steps. A 4th worker joins at step 10; worker b is killed
# with SIGKILL near step 20 and restarted from its checkpoint directory; worker c's parameters
# are nudged after step 25, so the fingerprint vote at step 30 must resync someone. At the
# end: the loss fell, all four workers hold identical parameters (one fingerprint), every
# step's payload has the same size and the coordinator received exactly the payload bytes.
# Usage: training_process_test.sh <bin dir> <data dir>
set -u
bin="$1"
data="$2"
source "$(dirname "$0")/../../support/process_test_lib.sh"
require_sotu

steps=80
start_coordinator coordinator.log --run_id process-test --min_workers 3 --total_steps "$steps" \
  --lr 2e-3 --warmup_steps 4 --fingerprint_interval 10 --step_deadline_s 60 ||
  fail "the coordinator did not start"

# worker NAME [extra flags]: a small GPT worker in the background, logging to NAME.log.
worker() {
  local name="$1"
  shift
  "$bin/demod-worker" --coordinator "127.0.0.1:$port" --name "$name" --data_dir "$data" \
    --gpt_layers 2 --gpt_d_model 64 --gpt_heads 4 --context 64 --batch_size 8 \
    --validation_interval 10 --csv "$work/$name.csv" --checkpoint_dir "$work/ckpt-$name" \
    --checkpoint_interval 5 --threads 1 --summary_json "$work/$name.summary.json" "$@" \
    >>"$work/$name.log" 2>&1 &
  pids+=($!)
  last_pid=$!
}

worker a
worker b
b_pid=$last_pid
# Thread counts must not change the parameters; c's are nudged after step 25, so its step-30
# fingerprint disagrees and the coordinator must resync it from the majority.
worker c --threads 2 --fault_perturb_step 25
wait_for_step a 10
worker d  # joins mid-run: receives the parameters from a donor
wait_for_step a 20
kill -KILL "$b_pid"
wait "$b_pid" 2>/dev/null
echo "killed worker b at step $(csv_step a)"
worker b  # restarts from its checkpoint directory
for pid in "${pids[@]:1}"; do wait "$pid" 2>/dev/null; done

check_finished a b c d
check "worker b resumed from its checkpoint" "grep -q 'resuming from' '$work/b.log'"
check "worker d received the parameters" "grep -q 'received .* bytes of parameters' '$work/d.log'"
check_one_fingerprint "all four workers end with one fingerprint" a b c d
check_loss_fell a "$steps"
# The vote at step 30 must see the difference. Usually c is the odd one out; a worker that
# received its parameters from c between the nudge and the vote inherits the difference, and
# in a tie the lowest worker id's parameters win, so the others may be the ones resynced.
# Either way every worker must end identical (checked above).
check "the coordinator found the difference at step 30 and resynced" \
  "grep -q 'diverged at step 30' '$work/coordinator.log' && grep -q 'resync:' '$work'/*.log"
up_sizes=$(tail -q -n +2 "$work"/{a,b,c,d}.csv | cut -d, -f9 | sort -u)
check "every payload has the same size ($up_sizes bytes)" "[ \$(echo '$up_sizes' | wc -l) -eq 1 ]"
# A step where a, c and d contributed (3 workers): the coordinator took in exactly 3 payloads.
in30=$(grep -o "step 30 closed.*contributors \[[0-9,]*\] of [0-9]*, [0-9]* bytes in" \
  "$work/coordinator.log" | sed 's/.*, \([0-9]*\) bytes in/\1/')
contributors30=$(grep -o "step 30 closed.*contributors \[[0-9,]*\]" "$work/coordinator.log" |
  sed 's/.*\[\(.*\)\]/\1/' | tr ',' '\n' | wc -l)
check "step 30: bytes in ($in30) = contributors ($contributors30) x payload ($up_sizes)" \
  "[ '$in30' = \$(( contributors30 * up_sizes )) ]"
finish
