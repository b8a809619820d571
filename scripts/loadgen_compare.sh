#!/usr/bin/env bash
# Two builds of the coordinator side by side: alternates their demod-loadgen runs (each build
# with its own load generator, since the wire format may differ) and prints each one's medians
# of step wall, coordinator CPU per step and latency over the rounds. On a shared machine,
# interleaving is what makes the comparison fair.
#
#   scripts/loadgen_compare.sh N ROUNDS BUILD_A BUILD_B     (BUILD_x: a build folder with bin/)
#   e.g. git worktree add /tmp/old <commit> && (cd /tmp/old && cmake -S . -B build -G Ninja \
#          -DDEMOD_BUILD_TESTS=OFF && cmake --build build --target demod-coordinator demod-loadgen)
#        scripts/loadgen_compare.sh 8 4 /tmp/old/build build
set -euo pipefail
if [[ $# -ne 4 ]]; then
  echo "usage: $0 N ROUNDS BUILD_A BUILD_B" >&2
  exit 2
fi
n=$1 rounds=$2
results=$(mktemp)
trap 'rm -f "$results"' EXIT
for ((r = 1; r <= rounds; r++)); do
  for build in "$3" "$4"; do
    "$build/bin/demod-loadgen" --coordinator="$build/bin/demod-coordinator" --workers="$n" \
      --steps=100 --warmup=5 --tcp_repeats=1 --tcp_bytes=268435456 2>/dev/null |
      awk -F'|' -v b="$build" -v n="$n" '$2 + 0 == n && $3 ~ /KB/ {
        gsub(/ ms/, ""); print b, $10 + 0, $14 + 0, $6 + 0 }' >>"$results"
  done
done
for build in "$3" "$4"; do
  awk -v b="$build" '
    $1 == b { k++; wall[k] = $2; cpu[k] = $3; lat[k] = $4 }
    function median(a, k,   i, j, t) {
      for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
    }
    END { printf "%s: step wall %.2f ms, coordinator CPU %.2f ms/step, latency %.2f ms (medians of %d)\n",
          b, median(wall, k), median(cpu, k), median(lat, k), k }' "$results"
done
