#!/usr/bin/env bash
# demod-worker as a program: --help, exit code 2 and a one-line reason for an unknown flag or a
# bad value, and --reconnect_for bounding how long it retries an unreachable coordinator
# (then exit 1, saying it gave up and why).
# Usage: worker_cli_test.sh <bin dir> <data dir>
set -u
bin="$1"
data="$2"
source "$(dirname "$0")/../../support/process_test_lib.sh"
require_sotu

"$bin/demod-worker" --help >"$work/help.out" 2>"$work/help.log"
help_exit=$?
check "--help exits 0 (got $help_exit) and lists the worker's flags, not absl's" \
  "[ $help_exit -eq 0 ] && grep -q -- '--reconnect_for' '$work/help.out' &&
   grep -q -- '--coordinator' '$work/help.out' && ! grep -q -- '--flagfile' '$work/help.out'"

# one_line_exit NAME CODE PATTERN ARGS...: the worker exits CODE with PATTERN on one stderr line.
one_line_exit() {
  local name="$1" code="$2" pattern="$3"
  shift 3
  timeout 60 "$bin/demod-worker" --data_dir "$data" "$@" >/dev/null 2>"$work/$name.log"
  local got=$?
  check "$name: exit $got (want $code), stderr says '$pattern'" \
    "[ $got -eq $code ] && grep -q -- '$pattern' '$work/$name.log'"
}
one_line_exit unknown 2 "unknown flag --coordinater" --coordinater 127.0.0.1:1
one_line_exit bad_value 2 "--batch_size=big: " --batch_size big
one_line_exit bad_duration 2 "--reconnect_for=soon: " --reconnect_for soon
one_line_exit negative 2 "--reconnect_for must be >= 0" --reconnect_for=-1s
one_line_exit no_validation 2 "--validation_samples must be >= 1" --validation_samples 0
# Nothing listens on port 1: the worker retries for 2 s, says how long it has left, gives up.
one_line_exit gives_up 1 "giving up after .* reconnection attempts in 2s (--reconnect_for)" \
  --coordinator 127.0.0.1:1 --reconnect_for 2s --gpt_layers 1 --gpt_d_model 32 --context 32
check "each retry warning says how long is left" \
  "grep -q 'giving up in [0-9]*s (--reconnect_for)' '$work/gives_up.log'"
finish
