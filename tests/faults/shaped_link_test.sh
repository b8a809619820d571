#!/usr/bin/env bash
# scripts/shaped_link.sh in small (docs/benchmarks.md, "On a slow link"): the link alone
# (MODE=link: 20 Mbit/s by tbf, 10 ms each way through demod-link-bridge), whose round trip and
# TCP rate must be what was asked, then 2 workers training the process tests' small GPT for 12
# DeMo steps over it, which must finish with one fingerprint while the bridge counts at least
# the workers' payloads and aggregates on the wire. Afterwards none of the script's namespaces
# may remain.
# Usage: shaped_link_test.sh <bin dir> <data dir>
# Exits 77 (skipped) with one line when this machine cannot make network namespaces (not root,
# no /dev/net/tun, no ip or tc).
set -u
bin="$1"
data="$2"
here="$(cd "$(dirname "$0")" && pwd)"
script="$here/../../scripts/shaped_link.sh"
if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: not root (network namespaces and TAP devices need it)"
  exit 77
fi
for tool in ip tc python3; do
  command -v "$tool" >/dev/null || { echo "SKIP: no '$tool'"; exit 77; }
done
[ -c /dev/net/tun ] || { echo "SKIP: no /dev/net/tun"; exit 77; }
probe="demod-probe-$$"
ip netns add "$probe" 2>/dev/null || { echo "SKIP: 'ip netns add' fails here"; exit 77; }
ip netns del "$probe"
source "$here/../support/process_test_lib.sh"
require_sotu

rate=20mbit delay_ms=10
script_pid=""
# shaped LOG [VAR=VALUE...]: the script with these settings, stopped with SIGTERM (its own
# cleanup) after 120 s; its exit code. $script_pid: its PID, which names its namespaces.
shaped() {
  local log="$1"
  shift
  env RATE="$rate" DELAY_MS="$delay_ms" OUT="$work/out" "$@" "$script" "$bin" "$data" \
    >"$work/$log" 2>&1 &
  script_pid=$!
  local waited=0
  while kill -0 "$script_pid" 2>/dev/null && [ "$waited" -lt 1200 ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  kill -TERM "$script_pid" 2>/dev/null
  wait "$script_pid"
}
check_no_namespaces() {
  check "$1: its namespaces are gone" \
    "! ip netns list | grep -qE '^demod-[cw]-$script_pid( |\$)'"
}

shaped link.log MODE=link
code=$?
check "the link check ran (exit $code)" "[ $code -eq 0 ]"
check_no_namespaces "the link check"
cat "$work/link.log"
rtt=$(sed -n 's/.*rtt min [0-9.]* median \([0-9.]*\).*/\1/p' "$work/link.log")
check "round trip ${rtt:-none} ms, 2 x $delay_ms ms and at most 15 ms more" \
  "awk -v r='${rtt:-0}' -v d=$delay_ms 'BEGIN { exit !(r >= 2 * d && r <= 2 * d + 15) }'"
for way in "workers -> coordinator" "coordinator -> workers"; do
  mbit=$(grep "^$way" "$work/link.log" | sed -n 's/.*: \([0-9.]*\) Mbit\/s.*/\1/p')
  check "$way: ${mbit:-none} Mbit/s, 60 to 100% of 20 Mbit/s" \
    "awk -v m='${mbit:-0}' 'BEGIN { exit !(m >= 12 && m <= 20) }'"
done

steps=12
shaped train.log MODE=demo-bf16 WORKERS=2 STEPS="$steps" TARGET_LOSS=6 \
  MODEL_FLAGS="--gpt_layers 2 --gpt_d_model 64 --gpt_heads 4 --context 64"
code=$?
check "the training run trained every step to one fingerprint (exit $code)" "[ $code -eq 0 ]"
check_no_namespaces "the training run"
cat "$work/train.log"
run="$work/out/demo-bf16-$rate-${delay_ms}ms"
if [ "$code" -ne 0 ]; then
  for f in "$run"/*.log; do echo "== $f"; tail -n 15 "$f"; done
fi
figure() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
    "$run/figures.json" "$1" 2>/dev/null
}
check "all $steps steps done" "[ \"\$(figure steps_done)\" = $steps ]"
check "the bridge wrote its final counters" \
  "python3 -c 'import json, sys; sys.exit(not json.load(open(\"$run/link.json\"))[\"final\"])'"
# With the joins, every byte the workers sent is on the wire; the steady state's figure (from a
# snapshot taken while steps go on, so a step may fall on either side) is near the payload.
for way in up:payload_up_B down:aggregate_down_B; do
  all="$(figure "wire_${way%%:*}_B_per_worker_step_with_joins")" sent="$(figure "${way##*:}")"
  steady="$(figure "wire_${way%%:*}_B_per_worker_step")"
  check "on the wire ${way%%:*}: $all B per worker-step with the joins, at least the $sent B sent" \
    "awk -v w='$all' -v s='$sent' 'BEGIN { exit !(s > 0 && w >= s) }'"
  check "on the wire ${way%%:*}: $steady B per worker-step once joined, 0.7 to 2 times that" \
    "awk -v w='$steady' -v s='$sent' 'BEGIN { exit !(w >= 0.7 * s && w <= 2 * s) }'"
done
finish
