#!/usr/bin/env bash
# Real network faults between test hosts (docs/reliability.md, "Network faults between test
# hosts"): the coordinator and 3 demod-workers (a, b, c), each in a network namespace of its
# own and linked to the coordinator's through tests/faults/netlab.py (rate by tbf, loss by
# iptables, delay by its user-space TAP bridge), train a small GPT on the SOTU text. Scenarios:
#   rtt40         a 40 ms round trip (20 ms each way) on every worker's link, no loss: the
#                 reference for the next two
#   loss1, loss5  the same with 1% (5%) of the packets lost each way: every worker applies
#                 every step once, and all end with one fingerprint
#   linkdown      40 ms round trip; the coordinator's end of every link goes down for 15 s
#                 mid-run, then up: the workers reconnect, every worker applies the last step,
#                 none applies a step twice, all end with one fingerprint
#   linkcut       (not in the default list) the same with iptables dropping everything instead
#   slow          fast links (veth) three times: all fast; worker c on a 5 Mbit/s link under
#                 the default deadline (all must finish with one fingerprint); and c on that
#                 link with the deadline's floor at 0.05 s, below c's step time: the run must
#                 finish with nothing applied twice and no eviction for missed steps (c, left
#                 out of steps, sends late payloads and skips the steps that closed meanwhile),
#                 and every worker, c too, must apply the last step with one fingerprint
# One line of figures per run: steps, steps per minute, step time, longest stall, contributions
# missed and late, reconnects, evictions, steps computed and skipped per worker, duration, from the
# workers' CSVs and summaries and the coordinator's /metrics (never from log text).
# Usage: wan_test.sh <bin dir> <data dir>
# Environment: REPEATS (runs of each scenario, default 1), WAN_SCENARIOS (default
# "rtt40 loss1 loss5 linkdown slow"), WAN_OUTAGE_S (default 15), WAN_SLOW_RATE (default 5mbit),
# WAN_TIGHT_FLOOR_S (default 0.05), WAN_KEEP (a folder to copy the logs, CSVs, metrics and
# figures to).
# Exits 77 (skipped) with one line when this machine cannot build the lab (not root, no
# /dev/net/tun, no ip/tc/iptables).
set -u
bin="$1"
data="$2"
here="$(cd "$(dirname "$0")" && pwd)"
command -v python3 >/dev/null || { echo "SKIP: no python3 (tests/faults/netlab.py needs it)"; exit 77; }
if ! reason=$(python3 "$here/netlab.py" probe); then
  echo "SKIP: $reason"
  exit 77
fi
source "$here/../support/process_test_lib.sh"
require_sotu

repeats="${REPEATS:-1}"
scenarios="${WAN_SCENARIOS:-rtt40 loss1 loss5 linkdown slow}"
outage_s="${WAN_OUTAGE_S:-15}"
slow_rate="${WAN_SLOW_RATE:-5mbit}"
tight_floor_s="${WAN_TIGHT_FLOOR_S:-0.05}"
workers=(a b c)
summaries=()
coordinator_flags=()

# --- the lab ----------------------------------------------------------------------------------
lab_pid=""
lab_state="$work/lab.json"
# lab_up SPEC_A SPEC_B SPEC_C: the hub "coord" and one leaf per worker, each link as netlab's
# key=value list; sets hub_ns, and ns_<w> and addr_<w> (the coordinator's address from w).
lab_up() {
  local args=()
  for w in "${workers[@]}"; do
    args+=("--leaf=$w:$1")
    shift
  done
  rm -f "$lab_state"
  python3 "$here/netlab.py" up --state "$lab_state" --hub coord "${args[@]}" \
    >>"$work/netlab.log" 2>&1 &
  lab_pid=$!
  for _ in $(seq 300); do
    [ -s "$lab_state" ] && break
    kill -0 "$lab_pid" 2>/dev/null || fail "netlab up failed: $(tail -n 1 "$work/netlab.log")"
    sleep 0.1
  done
  [ -s "$lab_state" ] || fail "the lab was not ready within 30 s"
  eval "$(python3 -c 'import json, sys
s = json.load(open(sys.argv[1]))
print("hub_ns=" + s["hub"]["netns"])
for l in s["leaves"]:
    print("ns_%s=%s addr_%s=%s" % (l["name"], l["netns"], l["name"], l["hub_addr"]))' "$lab_state")"
}
lab_down() {
  [ -n "$lab_pid" ] || return 0
  kill -TERM "$lab_pid" 2>/dev/null
  wait "$lab_pid" 2>/dev/null
  lab_pid=""
  python3 "$here/netlab.py" down --state "$lab_state" 2>/dev/null  # in case it died
}
# Processes first (the lab would kill them too, but they are ours), then the lab, then the
# rest of process_test_lib's cleanup.
wan_cleanup() {
  kill_our_processes
  lab_down
  if [ -n "${WAN_KEEP:-}" ]; then mkdir -p "$WAN_KEEP" && cp -r "$work"/. "$WAN_KEEP"/; fi
  cleanup
}
trap wan_cleanup EXIT

# --- one training run -------------------------------------------------------------------------
# train RUN STEPS MIN_WORKERS SPEC_A SPEC_B SPEC_C [HOOK]: a coordinator in the hub (with
# $coordinator_flags) and the workers in their leaves train STEPS steps; HOOK (a command) runs
# once they have started.
# Then the coordinator's /metrics is scraped (it stays up after the run for that), the
# figures are written and printed, and the lab is removed. $run_seconds: the workers' wall time.
train() {
  local run="$1" steps="$2" min_workers="$3" specs=("$4" "$5" "$6") hook="${7:-}"
  lab_up "${specs[@]}"
  rm -f "$work/$run.port"
  ip netns exec "$hub_ns" nice -n 10 "$bin/demod-coordinator" "${coordinator_flags[@]}" \
    --listen 0.0.0.0:7070 --metrics 127.0.0.1:9090 --port_file "$work/$run.port" \
    --exit_when_finished=false --run_id "$run" --min_workers "$min_workers" \
    --total_steps "$steps" --lr 2e-3 --warmup_steps 4 >"$work/$run.coordinator.log" 2>&1 &
  coordinator_pid=$!
  pids+=($!)
  for _ in $(seq 200); do
    [ -s "$work/$run.port" ] && break
    kill -0 "$coordinator_pid" 2>/dev/null || fail "the coordinator ($run) exited at start"
    sleep 0.05
  done
  [ -s "$work/$run.port" ] || fail "the coordinator ($run) did not start serving"
  local started ended worker_pids=() w ns addr
  started=$(date +%s.%N)
  for w in "${workers[@]}"; do
    ns="ns_$w" addr="addr_$w"
    ip netns exec "${!ns}" nice -n 10 "$bin/demod-worker" --coordinator "${!addr}:7070" \
      --name "${run}_$w" --data_dir "$data" --gpt_layers 2 --gpt_d_model 64 --gpt_heads 4 \
      --context 64 --batch_size 8 --validation_interval 10 --threads 1 \
      --csv "$work/${run}_$w.csv" --summary_json "$work/${run}_$w.summary.json" \
      >>"$work/${run}_$w.log" 2>&1 &
    pids+=($!)
    worker_pids+=($!)
  done
  [ -z "$hook" ] || eval "$hook"
  for pid in "${worker_pids[@]}"; do
    for _ in $(seq 3000); do  # 5 minutes at most
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && fail "a worker of $run was still running after 5 minutes"
    wait "$pid" 2>/dev/null
  done
  ended=$(date +%s.%N)
  run_seconds=$(awk -v a="$started" -v b="$ended" 'BEGIN { printf "%.1f", b - a }')
  ip netns exec "$hub_ns" python3 -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:9090/metrics", timeout=10).read().decode())' \
    >"$work/$run.metrics" 2>>"$work/$run.coordinator.log" ||
    echo "could not scrape the coordinator's /metrics ($run)"
  kill -TERM "$coordinator_pid" 2>/dev/null
  wait "$coordinator_pid" 2>/dev/null
  lab_down
  local line
  line=$(python3 "$here/wan_report.py" "$work" "$run" "$run_seconds" "${workers[@]}")
  echo "$line"
  summaries+=("$line")
}
# fig RUN KEY [WORKER]: a figure of RUN (wan_report.py), of WORKER's when given.
fig() {
  python3 -c 'import json, sys
f = json.load(open(sys.argv[1]))
if len(sys.argv) > 3: f = f["workers"][sys.argv[3]]
v = f.get(sys.argv[2])
print("" if v is None else str(v).lower() if isinstance(v, bool) else v)' \
    "$work/$1.figures.json" "${@:2}"
}
# steps_of RUN W: worker W's CSV steps, one a line.
steps_of() { tail -n +2 "$work/${1}_$2.csv" | cut -d, -f1; }
check_every_step() {
  local run="$1" steps="$2" w
  for w in "${workers[@]}"; do
    check "$run: worker $w has every step 1..$steps once" \
      "[ \"\$(steps_of $run $w | tr '\n' ' ')\" = \"\$(seq -s ' ' 1 $steps) \" ]"
  done
}
check_no_step_twice() {
  local run="$1" w
  for w in "${workers[@]}"; do
    check "$run: worker $w's steps strictly increase (nothing applied twice)" \
      "steps_of $run $w | awk 'NR > 1 && \$1 <= prev { exit 1 } { prev = \$1 }'"
  done
}
check_reached() {
  local run="$1" steps="$2" w
  for w in "${workers[@]}"; do
    check "$run: worker $w applied step $steps" "[ \"\$(steps_of $run $w | tail -n 1)\" = $steps ]"
  done
}
check_run() {  # every worker finished the run, all with one fingerprint
  local run="$1" w names=()
  for w in "${workers[@]}"; do names+=("${run}_$w"); done
  check_finished "${names[@]}"
  check_one_fingerprint "$run: the workers end with one fingerprint" "${names[@]}"
}

# --- the scenarios ----------------------------------------------------------------------------
wan="delay_ms=20"  # 20 ms each way: a 40 ms round trip between each worker and the coordinator

# rtt40: the WAN link without loss, for reference. loss1, loss5: 1% (5%) of the packets lost
# each way, on every worker's link.
scenario_loss() {
  local percent="$1" rep="$2" run="loss$1-$2" steps=120
  local spec="$wan"
  [ "$percent" = 0 ] && run="rtt40-$rep"
  [ "$percent" = 0 ] || spec+=",loss=$(awk -v p="$percent" 'BEGIN { print p / 100 }')"
  train "$run" "$steps" 3 "$spec" "$spec" "$spec"
  check_every_step "$run" "$steps"
  check_run "$run"
}

# linkdown (linkcut): the coordinator's end of every link goes down (linkcut: iptables drops
# everything on them, a black hole neither end notices) once worker a has trained 20 steps,
# for $outage_s seconds, then comes back.
outage() {
  local action="$1" undo="$2"
  wait_for_step "${run}_a" 20
  python3 "$here/netlab.py" link --state "$lab_state" coord "$action" || fail "netlab: $action"
  echo "$run: the coordinator's links $action at worker a's step $(csv_step "${run}_a") for ${outage_s} s"
  sleep "$outage_s"
  python3 "$here/netlab.py" link --state "$lab_state" coord "$undo" || fail "netlab: $undo"
}
scenario_outage() {
  local name="$1" action="$2" undo="$3" rep="$4" steps=80
  local run="$name-$rep"
  train "$run" "$steps" 3 "$wan" "$wan" "$wan" "outage $action $undo"
  check_no_step_twice "$run"
  check_reached "$run" "$steps"
  check_run "$run"
  check "$run: the workers reconnected (joins beyond the first 3)" \
    "[ \"\$(fig $run reconnects)\" -ge 1 ]"
}

# slow: the same run with every link fast (slowref), with worker c on a $slow_rate link under
# the coordinator's default deadline (adaptive: median + 5 MAD of recent steps, at least 2 s),
# and with c on that link and the deadline's floor at $tight_floor_s (slowtight), below c's
# step time and above the others'. Steps per minute are the fastest worker's.
scenario_slow() {
  local rep="$1" steps=150 ref="slowref-$1" slow="slow-$1" tight="slowtight-$1" run w
  train "$ref" "$steps" 2 "" "" ""
  train "$slow" "$steps" 2 "" "" "rate=$slow_rate"
  for run in "$ref" "$slow"; do
    check_no_step_twice "$run"
    check_reached "$run" "$steps"
    check_run "$run"
  done
  printf 'deadline: {kind: adaptive, floor_s: %s}\n' "$tight_floor_s" >"$work/$tight.yaml"
  coordinator_flags=(--config "$work/$tight.yaml")
  train "$tight" "$steps" 2 "" "" "rate=$slow_rate"
  coordinator_flags=()
  # The others must not stall: the run finishes. c is left out of steps but stays a member: it
  # is late, not silent, so it is never evicted for missed steps, and applies the last step.
  check_no_step_twice "$tight"
  check "$tight: the run finished all $steps steps" "[ \"\$(fig $tight steps)\" = $steps ]"
  check "$tight: no worker was evicted for missed steps" \
    "! grep -q missed_steps <<<\"\$(fig $tight evictions_by_reason)\""
  local w
  for w in "${workers[@]}"; do  # computed or skipped: its summary's last step
    check "$tight: worker $w applied step $steps" "[ \"\$(fig $tight last_step $w)\" = $steps ]"
  done
  check_run "$tight"
  local line
  line="$slow: steps/min $(fig "$ref" rate | cut -d. -f1) with every link fast,"
  line+=" $(fig "$slow" rate | cut -d. -f1) with c at $slow_rate (c missed $(fig "$slow" missed c)),"
  line+=" $(fig "$tight" rate | cut -d. -f1) with c at $slow_rate and a ${tight_floor_s} s floor"
  line+=" (c missed $(fig "$tight" missed c), late $(fig "$tight" late c), evicted"
  line+=" $(fig "$tight" evictions c) times, computed $(fig "$tight" rows c) and skipped"
  line+=" $(fig "$tight" skipped c) of $steps steps, ended at step $(fig "$tight" last_step c))"
  echo "$line"
  summaries+=("$line")
}

for scenario in $scenarios; do
  for rep in $(seq "$repeats"); do
    case "$scenario" in
      rtt40) scenario_loss 0 "$rep" ;;
      loss1) scenario_loss 1 "$rep" ;;
      loss5) scenario_loss 5 "$rep" ;;
      linkdown) scenario_outage linkdown down up "$rep" ;;
      linkcut) scenario_outage linkcut cut heal "$rep" ;;
      slow) scenario_slow "$rep" ;;
      *) fail "unknown scenario '$scenario' (rtt40 loss1 loss5 linkdown linkcut slow)" ;;
    esac
  done
done
echo "== summary"
printf '%s\n' "${summaries[@]}"
finish
