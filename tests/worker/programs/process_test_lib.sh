# What the real-process tests share (training_process_test.sh, coordinator_restart_test.sh,
# dense_baseline_test.sh). Source it after setting `bin` and `data`. It gives:
#   $work           a folder removed on exit, with every process in `pids` and every job killed
#   fail MSG        prints MSG and the logs' ends, exits 1
#   free_port       a free TCP port on 127.0.0.1
#   require_sotu    fails unless the SOTU text is in $data
#   wait_for_step W N   until worker W's CSV ($work/W.csv) reaches step N
#   check NAME CMD  evaluates CMD and prints ok/FAIL NAME, counting failures
#   check_one_fingerprint NAME W...   each worker W logged a final fingerprint, all the same
#   check_loss_fell W STEPS   the loss in W's CSV fell by at least 1.0 from step 1 to STEPS
#   finish          exits 1 with the logs if a check failed, else prints "all passed"
work="$(mktemp -d)"
pids=()
failures=0
cleanup() {
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  kill -KILL $(jobs -p) 2>/dev/null
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
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
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
check() {
  if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; failures=$((failures + 1)); fi
}
check_one_fingerprint() {
  local name="$1"
  shift
  local logs=()
  for w in "$@"; do logs+=("$work/$w.log"); done
  check "$name" "[ \"\$(grep -ho 'fingerprint [0-9a-f]*' ${logs[*]} | sort -u | wc -l)\" -eq 1 ] &&
    [ \"\$(grep -ho 'fingerprint [0-9a-f]*' ${logs[*]} | wc -l)\" -eq $# ]"
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
