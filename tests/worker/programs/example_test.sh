#!/usr/bin/env bash
# demod-example (docs/worker.md) as a user runs it: a coordinator and two example workers
# finish a 40-step run, both exiting 0 (its exit code for a finished run).
# Usage: example_test.sh <bin dir>
set -u
bin="$1"
data=""
source "$(dirname "$0")/../../support/process_test_lib.sh"
start_coordinator coordinator.log --min_workers 2 --total_steps 40 --lr 3e-3 --warmup_steps 4 ||
  fail "the coordinator did not start"
timeout 120 "$bin/demod-example" --coordinator "127.0.0.1:$port" --name a >"$work/a.log" 2>&1 &
a=$!
timeout 120 "$bin/demod-example" --coordinator "127.0.0.1:$port" --name b >"$work/b.log" 2>&1
b_rc=$?
wait "$a"
a_rc=$?
check "both example workers finished the run (exit codes $a_rc and $b_rc)" \
  "[ $a_rc -eq 0 ] && [ $b_rc -eq 0 ]"
finish
