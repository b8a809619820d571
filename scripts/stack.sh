#!/usr/bin/env bash
# The local stack in one command: builds the images (scripts/images.sh) and fetches the data,
# brings up deploy/compose.yaml (a coordinator, 3 CPU workers on the default GPT, Prometheus
# scraping the coordinator), waits until every worker has finished the run, checks through
# Prometheus's HTTP API that it holds the run's loss and bytes series, and tears it down.
#   scripts/stack.sh [--steps 60] [--keep]     (--keep: leave it up; Prometheus on
#                                               127.0.0.1:${DEMOD_PROMETHEUS_PORT:-9091})
# Exit 0 when the run finished and Prometheus holds its series; 1 with the reason otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=60
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "stack: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[[ "$steps" =~ ^[1-9][0-9]*$ ]] || { echo "stack: --steps must be a positive integer" >&2; exit 2; }

bash scripts/images.sh coordinator worker-cpu prometheus
bash scripts/fetch_data.sh data
export CONTAINERS_CONF="$PWD/${BUILD_DIR:-build}/images/containers.conf"
export DEMOD_STEPS="$steps"
port="${DEMOD_PROMETHEUS_PORT:-9091}"
compose=(podman-compose --project-name demod -f deploy/compose.yaml)
down() { "${compose[@]}" down -v >/dev/null 2>&1 || true; }
fail() {
  echo "stack: $*" >&2
  for c in coordinator worker-1 worker-2 worker-3 prometheus; do
    echo "== $c" >&2
    podman logs "demod_${c}_1" 2>&1 | tail -n 5 >&2
  done
  [ "$keep" -eq 1 ] || down
  exit 1
}
down
"${compose[@]}" up -d >"${BUILD_DIR:-build}/images/compose.log" 2>&1 ||
  fail "podman-compose up failed: $(tail -n 3 "${BUILD_DIR:-build}/images/compose.log")"

for w in 1 2 3; do
  code=$(timeout 900 podman wait "demod_worker-${w}_1") || fail "worker-$w did not end in 15 minutes"
  [ "$code" = 0 ] || fail "worker-$w exited with $code"
  summary=$(podman run --rm -v "demod_worker-$w:/w:ro" --entrypoint cat \
    localhost/demod-coordinator:latest /w/summary.json) || fail "no summary from worker-$w"
  grep -q '"run_finished": true' <<<"$summary" || fail "worker-$w did not finish the run"
done
echo "stack: 3 workers finished the run's $steps steps"

# query PROMQL: the value of its first result, or nothing.
query() {
  curl -sf "http://127.0.0.1:$port/api/v1/query" --data-urlencode "query=$1" |
    node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      const r = JSON.parse(s).data.result; if (r.length) console.log(r[0].value[1]); })'
}
# Prometheus scrapes every second; the last step's values arrive within a few scrapes.
for _ in $(seq 30); do
  [ "$(query demod_current_step)" = "$steps" ] && break
  sleep 1
done
step=$(query demod_current_step)
loss=$(query 'max_over_time(demod_training_loss_mean[1h])')
bytes=$(query 'sum(demod_sent_bytes_total)')
# Per-worker series end when a worker leaves: look back over the run.
workers=$(query 'count(count by (worker) (max_over_time(demod_training_loss[1h])))')
echo "stack: Prometheus: step $step, mean training loss up to $loss, $bytes bytes sent," \
  "loss series of ${workers:-0} workers"
[ "$step" = "$steps" ] || fail "Prometheus says step ${step:-none}, not $steps"
[ -n "$loss" ] && [ -n "$bytes" ] && [ "${bytes%.*}" -gt 0 ] || fail "no loss or bytes series"
[ "$workers" = 3 ] || fail "loss series of ${workers:-no} workers, not 3"
if [ "$keep" -eq 1 ]; then
  echo "stack: still up (--keep): Prometheus on 127.0.0.1:$port;" \
    "podman-compose --project-name demod -f deploy/compose.yaml down -v stops it"
else
  down
fi
