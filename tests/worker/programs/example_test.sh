#!/usr/bin/env bash
# demod-example (docs/worker.md) as a user runs it: a coordinator and two example workers
# finish a 40-step run, both exiting 0.
# Usage: example_test.sh <bin dir>
set -u
bin="$1"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin/demod-coordinator" --listen "127.0.0.1:$port" --metrics "" --min_workers 2 \
  --total_steps 40 --lr 3e-3 --warmup_steps 4 >"$work/coordinator.log" 2>&1 &
for _ in $(seq 100); do grep -q listening "$work/coordinator.log" && break; sleep 0.1; done
timeout 120 "$bin/demod-example" --coordinator "127.0.0.1:$port" --name a >"$work/a.log" 2>&1 &
a=$!
timeout 120 "$bin/demod-example" --coordinator "127.0.0.1:$port" --name b >"$work/b.log" 2>&1
b_rc=$?
wait "$a"
a_rc=$?
if [ "$a_rc" -ne 0 ] || [ "$b_rc" -ne 0 ] || ! grep -q "run finished" "$work/a.log" ||
   ! grep -q "run finished" "$work/b.log"; then
  echo "FAIL: exit codes $a_rc $b_rc"
  tail -n 5 "$work"/*.log
  exit 1
fi
echo "ok: both example workers finished the run"
