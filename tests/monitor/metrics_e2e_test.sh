#!/usr/bin/env bash
# The metrics end to end: a real Prometheus (Debian's, on loopback, scraping every second and
# evaluating deploy/prometheus/alerts.yaml) watches a live coordinator while real demod-workers
# train a short run: a, b and c start, c is killed with SIGKILL at step 30, d joins at step 60.
# The run balances its batch (`batch: {global: 64, balance: true}`), so that the batch share
# and throughput series have data.
# Then every dashboard query (deploy/grafana, listed by the dashboards check) and every alert
# expression is evaluated through Prometheus' HTTP API while all workers are present, and the
# values are checked against what the run did (metrics_e2e_check.py says what exactly).
# Usage: metrics_e2e_test.sh <source dir> <bin dir> <data dir>
set -u
source_dir="$1"
bin="$2"
data="$3"
source "$source_dir/tests/support/process_test_lib.sh"
require_sotu
prometheus=$(command -v prometheus) || fail "prometheus not found (Debian package 'prometheus'; scripts/setup.sh installs it)"
checker="$source_dir/tools/dashboards-check"
[ -d "$checker/node_modules" ] || fail "the dashboards check is not installed in $checker (run scripts/tools.sh)"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
metrics_port=$(free_port)
prometheus_port=$(free_port)
# A step takes ~0.1 s (the global batch shared, one thread each): the run lasts ~30 s or more,
# time for Prometheus, scraping every second, to see each phase.
steps=300
# Twice the workers' --batch_size, shared among those present.
global_batch=64
printf 'batch: {global: %d, balance: true}\n' "$global_batch" >"$work/run.yaml"

start_coordinator coordinator.log --config "$work/run.yaml" \
  --run_id e2e --min_workers 2 --total_steps "$steps" --lr 2e-3 \
  --warmup_steps 4 --fingerprint_interval 10 --step_deadline_s 60 --exit_when_finished=false \
  --metrics "127.0.0.1:$metrics_port" || fail "the coordinator did not start"

cat >"$work/prometheus.yml" <<CONF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["$source_dir/deploy/prometheus/alerts.yaml"]
scrape_configs:
  - job_name: demod-coordinator
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
CONF
"$prometheus" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prometheus_port" --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)
url="http://127.0.0.1:$prometheus_port"
for _ in $(seq 200); do
  curl -sf "$url/-/ready" >/dev/null && break
  sleep 0.1
done
curl -sf "$url/-/ready" >/dev/null || fail "Prometheus did not become ready"

worker() {
  local name="$1"
  shift
  "$bin/demod-worker" --coordinator "127.0.0.1:$port" --name "$name" --data_dir "$data" \
    --gpt_layers 2 --gpt_d_model 64 --gpt_heads 4 --context 64 --batch_size 32 \
    --validation_interval 5 --csv "$work/$name.csv" --threads 1 \
    --summary_json "$work/$name.summary.json" "$@" >>"$work/$name.log" 2>&1 &
  pids+=($!)
  last_pid=$!
}
worker a
a_pid=$last_pid
worker b
b_pid=$last_pid
worker c
c_pid=$last_pid
wait_for_step a 30
kill -KILL "$c_pid"
wait "$c_pid" 2>/dev/null
echo "killed worker c at step $(csv_step a)"
wait_for_step a 60
worker d
d_pid=$last_pid
wait_for_step d $(($(csv_step a) + 10))
# All of a, b and d present and training for a few scrapes: the moment the queries look at.
sleep 5
eval_time=$(date +%s.%N)
echo "evaluating at step $(csv_step a) of $steps"
[ "$(csv_step a)" -lt "$steps" ] || fail "the run ended before the evaluation time: make it longer"
wait "$a_pid" "$b_pid" "$d_pid"
sleep 3  # the last scrapes after the run's end

node "$checker/check.mjs" --list-queries "$work/queries.jsonl" >"$work/list.log" 2>&1 ||
  fail "the dashboards check could not list the queries: $(tail -n 3 "$work/list.log")"
check_finished a b d
python3 "$source_dir/tests/monitor/metrics_e2e_check.py" --prometheus "$url" --time "$eval_time" \
  --queries "$work/queries.jsonl" --csv_dir "$work" --steps "$steps" --finished a,b,d \
  --killed c --global_batch "$global_batch" || failures=$((failures + 1))
finish
