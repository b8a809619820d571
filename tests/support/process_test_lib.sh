# What the tests that run demod's programs as processes share (tests/worker/programs/*.sh,
# tests/deploy/helm_chart_test.sh). Source it after setting `bin` and `data`. It gives:
#   $work           a folder removed on exit, with every process this shell started and still
#                   runs killed (`pids` lists them for the tests' own waits)
#   kill_our_processes   SIGKILLs this shell's running background jobs: only those, since the
#                   PID of one already reaped may by now be another program's
#   fail MSG        prints MSG and the logs' ends, exits 1
#   start_coordinator LOG [flags]   a coordinator on 127.0.0.1 (on $port when it is set, else on
#                   a free port), logging to $work/LOG; returns once it serves (it writes its
#                   --port_file), with $port and $coordinator_pid set; 1 if it exited first
#   require_sotu    fails unless the SOTU text is in $data
#   wait_for_step W N   until worker W's CSV ($work/W.csv) reaches step N
#   summary W KEY   a field of worker W's summary, $work/W.summary.json (demod-worker
#                   --summary_json); booleans print as true/false; empty without one
#   check NAME CMD  evaluates CMD and prints ok/FAIL NAME, counting failures
#   check_finished W...   each worker W's summary says the run finished
#   check_one_fingerprint NAME W...   each worker W's summary has a fingerprint, all the same
#   check_loss_fell W STEPS   the loss in W's CSV fell by at least 1.0 from step 1 to STEPS
#   finish          exits 1 with the logs if a check failed, else prints "all passed"
work="$(mktemp -d)"
pids=()
port=""
failures=0
kill_our_processes() {
  local running
  running="$(jobs -rp)"
  [ -z "$running" ] || kill -KILL $running 2>/dev/null
}
cleanup() {
  kill_our_processes
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

dump_logs() {
  for f in "$work"/*.log; do echo "== $f"; head -n 8 "$f"; echo ...; tail -n 12 "$f"; done
}
fail() {
  echo "FAIL: $*"
  dump_logs
  exit 1
}
start_coordinator() {
  local log="$1"
  shift
  rm -f "$work/$log.port"
  "$bin/demod-coordinator" --listen "127.0.0.1:${port:-0}" --metrics "" \
    --port_file "$work/$log.port" "$@" >"$work/$log" 2>&1 &
  coordinator_pid=$!
  pids+=($!)
  for _ in $(seq 400); do
    if [ -s "$work/$log.port" ]; then
      port=$(cat "$work/$log.port")
      return 0
    fi
    kill -0 "$coordinator_pid" 2>/dev/null || return 1
    sleep 0.05
  done
  fail "the coordinator ($log) did not start serving"
}
require_sotu() {
  [ -n "$(ls "$data"/sotu/*.txt 2>/dev/null)" ] ||
    fail "no SOTU text in $data (scripts/fetch_data.sh fetches it)"
}
csv_step() { tail -n 1 "$work/$1.csv" 2>/dev/null | cut -d, -f1; }
wait_for_step() {
  for _ in $(seq 600); do
    local step
    step=$(csv_step "$1")
    [[ "$step" =~ ^[0-9]+$ ]] && [ "$step" -ge "$2" ] && return 0
    sleep 0.1
  done
  fail "worker $1 never reached step $2"
}
summary() {
  python3 -c 'import json, sys
v = json.load(open(sys.argv[1])).get(sys.argv[2], "")
print(str(v).lower() if isinstance(v, bool) else v)' "$work/$1.summary.json" "$2" 2>/dev/null
}
check() {
  if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi
}
check_finished() {
  local w
  for w in "$@"; do
    check "worker $w finished the run" "[ \"\$(summary $w run_finished)\" = true ]"
  done
}
check_one_fingerprint() {
  local name="$1" all=() w f missing=0 distinct
  shift
  for w in "$@"; do all+=("$(summary "$w" fingerprint)"); done
  echo "fingerprints: ${all[*]}"
  for f in "${all[@]}"; do [ -n "$f" ] || missing=1; done
  distinct=$(printf '%s\n' "${all[@]}" | sort -u | wc -l)
  check "$name" "[ $missing -eq 0 ] && [ $distinct -eq 1 ]"
}
check_loss_fell() {
  local first last
  first=$(awk -F, 'NR == 2 { print $3 }' "$work/$1.csv")
  last=$(tail -n 1 "$work/$1.csv" | cut -d, -f3)
  echo "worker $1: loss $first at step 1, $last at step $2"
  check "the loss fell by at least 1.0" "awk -v f='$first' -v l='$last' 'BEGIN { exit !(f - l >= 1.0) }'"
}
finish() {
  if [ "$failures" -ne 0 ]; then
    dump_logs
    exit 1
  fi
  echo "all passed"
}
