#!/usr/bin/env bash
# Chaos over real processes (issue 14): a coordinator with a state directory and demod-workers
# on loopback train the small GPT of the process tests on the SOTU text while faults arrive at
# random times (chaos_plan.py: a Poisson process drawn from a seeded RNG):
#   - a worker SIGKILL'd and started again under its name, from its checkpoint directory or
#     wiped (it then joins with no trained parameters and receives the run's);
#   - the coordinator SIGKILL'd and started again on the same port and state directory (the
#     workers reconnect by themselves; the first back is the seed);
#   - a worker SIGSTOP'd for 3-10 s, then SIGCONT'd (steps close without it at the adaptive
#     deadline; after 3 missed steps it is evicted and rejoins);
#   - an extra worker joining mid-run (once).
# Each kind happens at least once. Then an undisturbed run of the same steps (all 4 workers
# from the first step, no faults) is the baseline: what the chaos run would have done had its
# workers been there throughout. Checks (chaos_check.py says how, from typed records
# only: the workers' CSVs and summaries, the state directory, this script's events file):
# every coordinator and worker process that was not killed exits 0; every surviving worker
# finished the run with one fingerprint; within a coordinator's life every row of a step has
# the same contributor count and no worker applies a step twice; no step counts more
# contributors than workers that can have sent a payload for it; the final validation loss is
# within CHAOS_LOSS_MARGIN of the baseline's.
#
# Environment:
#   CHAOS_SECONDS       the chaos run's length (default 120, at least 60): the steps are sized
#                       from a short calibration run so that the run lasts about that long
#   CHAOS_MTBF_SECONDS  mean time between faults (default 15)
#   CHAOS_SEED          the fault plan's seed (default: random; printed, so a plan replays;
#                       the processes' timing does not)
#   CHAOS_STEPS         the run's steps, instead of sizing them (a multiple of 25)
#   CHAOS_LOSS_MARGIN   the largest difference of final validation losses (default 0.10)
#   CHAOS_KEEP          a folder to copy the logs, CSVs and state to at the end
# The run ends with a line of figures: the seed, the faults injected, steps, both losses.
# Usage: chaos_test.sh <bin dir> <data dir>
set -u
bin="$1"
data="$2"
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../support/process_test_lib.sh"
require_sotu
keep_work() {
  if [ -n "${CHAOS_KEEP:-}" ]; then
    mkdir -p "$CHAOS_KEEP" && cp -r "$work"/. "$CHAOS_KEEP"/ && echo "kept in $CHAOS_KEEP"
  fi
}
trap 'keep_work; cleanup' EXIT
# reaped PID: waits for the process PID (which has ended or been killed) and returns its status.
# The cleanup kills only jobs still running, so a reaped PID, perhaps reused, is never hit.
reaped() { wait "$1" 2>/dev/null; }

seconds="${CHAOS_SECONDS:-120}"
mtbf="${CHAOS_MTBF_SECONDS:-15}"
seed="${CHAOS_SEED:-$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')}"
margin="${CHAOS_LOSS_MARGIN:-0.10}"
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -ge 60 ] ||
  fail "CHAOS_SECONDS=$seconds: 60 or more, please (faults stop 20 s before the end)"
validation_interval=25
base_names=(a b c)
joiner=d
echo "chaos: seed $seed (CHAOS_SEED=$seed replays the plan), $seconds s," \
  "a fault every $mtbf s on average"

now() { date +%s.%N; }
# calc EXPR: floating-point arithmetic (awk); comparisons print 1 or 0.
calc() { awk "BEGIN { printf \"%.3f\n\", ($1) }" | sed 's/\.000$//'; }
# worker RUN NAME [flags]: a small GPT worker in the background, logging to RUN-NAME.log.
worker() {
  local run="$1" name="$2"
  shift 2
  "$bin/demod-worker" --coordinator "127.0.0.1:$port" --name "$name" --data_dir "$data" \
    --gpt_layers 2 --gpt_d_model 64 --gpt_heads 4 --context 64 --batch_size 16 \
    --validation_interval "$validation_interval" --threads 1 --reconnect_for 2m \
    --csv "$work/$run-$name.csv" --summary_json "$work/$run-$name.summary.json" "$@" \
    >>"$work/$run-$name.log" 2>&1 &
  pids+=($!)
  last_pid=$!
}
run_flags=(--min_workers 2 --lr 2e-3 --warmup_steps 20)
# wait_exit DEADLINE PID...: until every PID has exited; fails past DEADLINE (unix s).
wait_exit() {
  local deadline="$1" pid
  shift
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null; do
      [ "$(calc "$(now) > $deadline")" = 1 ] && fail "still running at the deadline: pid $pid"
      sleep 0.2
    done
  done
}
# undisturbed RUN STEPS DEADLINE: a coordinator and workers a, b, c, d for STEPS steps, all
# four from the first step.
undisturbed() {
  local run="$1" steps="$2" deadline="$3" name rc ws=()
  port=""
  start_coordinator "$run-coordinator.log" --run_id "chaos-$run" "${run_flags[@]}" \
    --min_workers 4 --total_steps "$steps" || fail "the $run coordinator did not start"
  local coordinator="$coordinator_pid"
  for name in "${base_names[@]}" "$joiner"; do
    worker "$run" "$name"
    ws+=("$last_pid")
  done
  wait_exit "$deadline" "${ws[@]}" "$coordinator"
  for pid in "${ws[@]}" "$coordinator"; do
    reaped "$pid"
    rc=$?
    [ "$rc" -eq 0 ] || fail "a process of the $run run exited $rc"
  done
}

# 1. Calibration: seconds per step of the undisturbed run, to size the chaos run.
if [ -n "${CHAOS_STEPS:-}" ]; then
  steps="$CHAOS_STEPS"
  # The last step must measure the validation loss.
  if ! [[ "$steps" =~ ^[0-9]+$ ]] || [ $((steps % validation_interval)) -ne 0 ] ||
    [ "$steps" -eq 0 ]; then
    fail "CHAOS_STEPS=$steps: a positive multiple of $validation_interval, please"
  fi
else
  undisturbed calibration 60 "$(calc "$(now) + 120")"
  per_step=$(awk -F, 'NR == 12 { t0 = $2 } NR == 61 { print ($2 - t0) / 50 }' \
    "$work/calibration-a.csv")
  [ -n "$per_step" ] || fail "the calibration run did not record steps 11 to 60"
  # Each fault costs about 3 s (reconnections; a stopped worker's steps wait for their
  # deadline), a fault every $mtbf s over 80% of the run.
  fraction=$(calc "(1 - 2.4 / $mtbf < 0.3) ? 0.3 : 1 - 2.4 / $mtbf")
  steps=$(calc "int($seconds * $fraction / $per_step / $validation_interval)")
  steps=$((steps * validation_interval))
  [ "$steps" -ge 100 ] || steps=100
  echo "calibration: $per_step s per step undisturbed: $steps steps"
fi

# 2. The chaos run.
run=chaos
names=("${base_names[@]}" "$joiner")
events="$work/$run-events.jsonl"
event() {  # event KIND [TARGET [ARG]]: the test's own record, for chaos_check.py
  printf '{"t": %s, "event": "%s", "target": "%s", "arg": "%s"}\n' "$(now)" "$1" "${2:-}" \
    "${3:-}" >>"$events"
}
coordinators=0
# chaos_coordinator: started (again) on the state directory and, after the first, the same
# port; tried again while it exits at once (after a SIGKILL the port may take a moment).
chaos_coordinator() {
  coordinators=$((coordinators + 1))
  event coordinator_start
  for _ in $(seq 50); do
    start_coordinator "$run-coordinator$coordinators.log" --state_dir "$work/$run-state" \
      --run_id chaos "${run_flags[@]}" --total_steps "$steps" && return 0
    reaped "$coordinator_pid"
    sleep 0.2
  done
  fail "coordinator $coordinators did not start"
}
declare -A wpid
chaos_worker() {
  worker "$run" "$1" --checkpoint_dir "$work/$run-checkpoint-$1" --checkpoint_interval 10
  wpid[$1]=$last_pid
  event worker_start "$1"
}
leading=""  # the worker furthest on, set by leading_step
leading_step() {
  local name s max=0
  for name in "${names[@]}"; do
    s=$(csv_step "$run-$name")
    [[ "$s" =~ ^[0-9]+$ ]] && [ "$s" -gt "$max" ] && max=$s && leading=$name
  done
  echo "$max"
}
# seconds_left STEP: how long the run has to go from STEP, at the median step time (step_s,
# the CSV's 7th column) of the leading worker's last 50 steps or the calibration's, the longer:
# with 2 workers left a step may take a third of what it takes with 4.
seconds_left() {
  [ -n "$leading" ] || { echo 1000000; return; }
  tail -n 50 "$work/$run-$leading.csv" | cut -d, -f7 | grep -E '^[0-9.]+$' | sort -g |
    awk -v left=$((steps - $1)) -v calibrated="${per_step:-0}" '{ v[NR] = $1 }
      END { m = NR ? v[int((NR + 1) / 2)] : 1000; if (calibrated > m) m = calibrated
            print int(left * m) }'
}
python3 "$here/chaos_plan.py" --seed "$seed" --horizon "$(calc "$seconds * 0.8")" --mtbf "$mtbf" \
  --workers "$(IFS=,; echo "${base_names[*]}")" --joiner "$joiner" >"$work/$run-plan.txt" ||
  fail "no plan"
echo "plan ($(wc -l <"$work/$run-plan.txt") faults; offset s, kind, target," \
  "delay or pause s, keep the checkpoint):"
sed 's/^/  /' "$work/$run-plan.txt"

# No fault in the last 15% of the steps, nor when the run has less than 20 s to go: a worker
# started again after the last step would find the run finished (with --exit_when_finished,
# the coordinator gone), holding the parameters it had.
quiet_from=$((steps * 85 / 100))
quiet_seconds=20
deadline=$(calc "$(now) + 2.5 * $seconds + 120")
port=""
chaos_coordinator
for name in "${base_names[@]}"; do chaos_worker "$name"; done
started=$(now)
declare -A injected=([kill_worker]=0 [kill_coordinator]=0 [stop_worker]=0 [join]=0)
while read -r -u 3 offset kind target arg keep; do
  # A fault comes at its time, or earlier when the run goes faster than its calibration said:
  # when the steps reach the same fraction of the run as its time is of CHAOS_SECONDS.
  due_step=$(calc "int($steps * $offset / $seconds)")
  while [ "$(calc "$(now) < $started + $offset")" = 1 ] &&
    [ "$(leading_step)" -lt "$due_step" ]; do
    sleep 0.2
  done
  leading_step >/dev/null  # sets $leading (a command substitution would not)
  at=$(csv_step "$run-$leading")
  left=$(seconds_left "$at")
  if [ "$at" -ge "$quiet_from" ] || [ "$left" -lt "$quiet_seconds" ]; then
    echo "step $at: no more faults (from step $quiet_from on, or under $quiet_seconds s to" \
      "go: about $left s)"
    break
  fi
  t=$(calc "$(now) - $started")
  case "$kind" in
    kill_worker)
      pid=${wpid[$target]}
      kill -KILL "$pid" 2>/dev/null
      reaped "$pid"
      event kill_worker "$target"
      [ "$keep" = 1 ] || rm -rf "$work/$run-checkpoint-$target"
      how="from its checkpoint"
      [ "$keep" = 1 ] || how="wiped"
      echo "$t s, step $at: SIGKILL worker $target; again in $arg s ($how)"
      sleep "$arg"
      chaos_worker "$target"
      ;;
    kill_coordinator)
      kill -KILL "$coordinator_pid"
      reaped "$coordinator_pid"
      event kill_coordinator
      echo "$t s, step $at: SIGKILL the coordinator; again in $arg s"
      sleep "$arg"
      chaos_coordinator
      ;;
    stop_worker)
      pid=${wpid[$target]}
      kill -STOP "$pid" 2>/dev/null || { echo "worker $target is not running"; continue; }
      event stop_worker "$target" "$arg"
      echo "$t s, step $at: SIGSTOP worker $target for $arg s"
      sleep "$arg"
      kill -CONT "$pid"
      event cont_worker "$target"
      ;;
    join)
      echo "$t s, step $at: worker $target joins"
      chaos_worker "$target"
      ;;
  esac
  injected[$kind]=$((injected[$kind] + 1))
done 3<"$work/$run-plan.txt"
final=()
for name in "${names[@]}"; do [ -n "${wpid[$name]:-}" ] && final+=("${wpid[$name]}"); done
wait_exit "$deadline" "${final[@]}" "$coordinator_pid"
chaos_seconds=$(calc "$(now) - $started")
echo "the chaos run ended after $chaos_seconds s"
for name in "${names[@]}"; do
  [ -n "${wpid[$name]:-}" ] || continue
  reaped "${wpid[$name]}"
  check "worker $name's last process exited 0" "[ $? -eq 0 ]"
done
reaped "$coordinator_pid"
check "the last coordinator exited 0" "[ $? -eq 0 ]"
for kind in kill_worker kill_coordinator stop_worker join; do
  check "$kind injected" "[ ${injected[$kind]} -ge 1 ]"
done
survivors=()
for name in "${names[@]}"; do [ -n "${wpid[$name]:-}" ] && survivors+=("$run-$name"); done
check_finished "${survivors[@]}"
check_one_fingerprint "every surviving worker ends with one fingerprint" "${survivors[@]}"

# 3. The baseline: the same steps, undisturbed.
started=$(now)
undisturbed baseline "$steps" "$(calc "$(now) + 2 * $chaos_seconds + 120")"
baseline_seconds=$(calc "$(now) - $started")
echo "the baseline ran $steps steps in $baseline_seconds s"

python3 "$here/chaos_check.py" --work "$work" --run "$run" \
  --names "$(IFS=,; echo "${names[*]}")" --steps "$steps" --baseline baseline \
  --baseline_names "$(IFS=,; echo "${names[*]}")" --margin "$margin" |
  tee "$work/check.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || failures=$((failures + 1))
figures=$(sed -n 's/^figures: //p' "$work/check.txt")
line="chaos summary: seed=$seed seconds=$(printf %.0f "$chaos_seconds") steps=$steps"
line+=" worker_kills=${injected[kill_worker]} coordinator_kills=${injected[kill_coordinator]}"
line+=" stops=${injected[stop_worker]} joins=${injected[join]} $figures"
echo "$line baseline_seconds=$(printf %.0f "$baseline_seconds")"
finish
