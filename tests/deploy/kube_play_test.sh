#!/usr/bin/env bash
# The chart's pods run for real: the coordinator and a pool of 2 CPU workers, exactly as
# helm/demod renders them (commands, flags, env, the run ConfigMap, the token Secret, ports,
# the restrictive securityContext), on the images scripts/images.sh builds, with
# `podman kube play`. Podman ignores StatefulSets and Services, so the test lifts the pod
# templates into Pods (tests/deploy/manifest_check/lift_pods.mjs says how). The run must
# train to its last step, and both workers end with one fingerprint.
# Takes a few minutes the first time (the images' root file systems), then about one.
# Usage: kube_play_test.sh <repository root>
set -u
root="$1"
cd "$root"
helm="$root/tools/helm/helm"
lift="$root/tools/manifest-check/lift_pods.mjs"
work="$(mktemp -d)"
# Every object, pod, volume and secret podman makes is named after this release.
release="kube-play-$$"
net="$release"
export CONTAINERS_CONF="$root/${BUILD_DIR:-build}/images/containers.conf"
cleanup() {
  [ -n "${KEEP:-}" ] && return
  podman kube down "$work/pods.yaml" >/dev/null 2>&1
  podman volume ls --quiet | grep "^$release-" | xargs -r podman volume rm -f >/dev/null 2>&1
  for s in "$work"/secret-*.yaml; do
    [ -f "$s" ] && podman secret rm "$(basename "$s" .yaml | sed 's/^secret-//')" >/dev/null 2>&1
  done
  podman network rm -f "$net" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
workers=("$release-demod-worker-cpu-0-worker" "$release-demod-worker-cpu-1-worker")
fail() {
  echo "FAIL: $*"
  for c in "$release-demod-coordinator-coordinator" "${workers[@]}"; do
    echo "== $c"
    podman logs "$c" 2>&1 | tail -n 15
  done
  exit 1
}
bash scripts/tools.sh || fail "scripts/tools.sh failed"  # the tools, with this tree's scripts
[ -n "$(ls data/sotu/*.txt 2>/dev/null)" ] || fail "no SOTU text in data/ (scripts/fetch_data.sh)"
command -v podman >/dev/null || fail "no podman (scripts/setup.sh installs it)"

bash scripts/images.sh coordinator worker-cpu || fail "scripts/images.sh failed"
"$helm" template "$release" helm/demod -f tests/deploy/kube_play_values.yaml --kube-version 1.29.0 |
  sed "s|DATA_DIR|$root/data|" >"$work/manifest.yaml" || fail "helm template failed"
node "$lift" "$work/manifest.yaml" "$work" || fail "lifting the pod templates failed"
for s in "$work"/secret-*.yaml; do
  podman secret create "$(basename "$s" .yaml | sed 's/^secret-//')" "$s" >/dev/null ||
    fail "podman secret create $s"
done
podman network create "$net" >/dev/null || fail "podman network create"
podman kube play --network "$net" "$work/pods.yaml" >"$work/play.log" 2>&1 ||
  fail "podman kube play: $(tail -n 3 "$work/play.log")"

for w in "${workers[@]}"; do
  code=$(timeout 300 podman wait "$w") || fail "worker $w did not end within 5 minutes"
  [ "$code" = 0 ] || fail "worker $w exited with $code"
  echo "ok: $w exited 0"
done
fingerprints=()
for w in "${workers[@]}"; do
  podman cp "$w:/var/lib/demod/summary.json" "$work/$w.json" || fail "no summary from $w"
  finished=$(node -e 'const s = require(process.argv[1]); console.log(s.run_finished, s.last_step, s.fingerprint)' "$work/$w.json")
  read -r done_ last fingerprint <<<"$finished"
  [ "$done_" = true ] && [ "$last" = 12 ] || fail "$w: run_finished $done_ at step $last, not 12"
  fingerprints+=("$fingerprint")
  echo "ok: $w finished the run at step 12 (fingerprint $fingerprint)"
done
[ "${fingerprints[0]}" = "${fingerprints[1]}" ] || fail "fingerprints differ: ${fingerprints[*]}"
echo "ok: one fingerprint"
podman logs "$release-demod-coordinator-coordinator" 2>&1 | grep -q "bearer token" ||
  fail "the coordinator did not take the token from its Secret"
echo "ok: the coordinator served with the token from its Secret"
echo "all passed"
