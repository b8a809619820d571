#!/usr/bin/env bash
# The Helm chart (helm/demod), checked with the real Helm (scripts/tools.sh installs it):
# - `helm lint --strict` and `helm template` pass for the default values and each example in
#   helm/demod/ci/ (a CPU and a GPU pool with operator objects, TLS with mTLS, an existing
#   token Secret), and every rendered object passes the Kubernetes schemas (1.27's, from
#   kubernetes-models; the Prometheus Operator's for its objects) and a TypeScript check that
#   catches misspelled keys (tests/deploy/manifest_check, installed by scripts/tools.sh);
# - values with a wrong type or an unknown key fail with the schema's message, and TLS
#   without its Secret fails with the chart's;
# - the Grafana dashboards' ConfigMaps (on in ci/mixed-values.yaml) carry the committed JSON
#   untouched;
# - the PrometheusRule (on in ci/mixed-values.yaml) holds exactly the rule groups of
#   deploy/prometheus/alerts.yaml, their Prometheus templates unexpanded;
# - the rendered run configuration (the ConfigMap) is one demod-coordinator accepts: it starts
#   serving with it.
# Usage: helm_chart_test.sh <repository root> <bin dir>
set -u
root="$1"
bin="$2"
data=""
source "$(dirname "$0")/../support/process_test_lib.sh"
chart="$root/helm/demod"
helm="$root/tools/helm/helm"
checker="$root/tools/manifest-check/check.mjs"
(cd "$root" && bash scripts/tools.sh) || { echo "FAIL: scripts/tools.sh failed"; exit 1; }
[ -x "$helm" ] || { echo "FAIL: no Helm at $helm (scripts/tools.sh installs it)"; exit 1; }
[ -f "$checker" ] || { echo "FAIL: no $checker (scripts/tools.sh installs it)"; exit 1; }
export HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config"
export HELM_DATA_HOME="$work/helm/data"

# render NAME [helm flags]: the chart's manifests into $work/NAME.yaml; its errors in NAME.err.
render() {
  local name="$1"
  shift
  "$helm" template demod "$chart" --namespace training --kube-version 1.29.0 "$@" \
    >"$work/$name.yaml" 2>"$work/$name.err"
}

for values in default "$chart"/ci/*.yaml; do
  flags=()
  [ "$values" = default ] || flags=(-f "$values")
  name=$(basename "$values" .yaml)
  check "$name: helm lint --strict" "'$helm' lint --strict '$chart' ${flags[*]} >'$work/lint.out' 2>&1 ||
    { cat '$work/lint.out'; false; }"
  check "$name: helm template" "render '$name' ${flags[*]} || { cat '$work/$name.err'; false; }"
  check "$name: every object passes the Kubernetes schemas, no misspelled key" \
    "node '$checker' '$work/$name.yaml' >'$work/check-$name.out' ||
     { cut -c1-300 '$work/check-$name.out'; false; }"
done
# The checker itself: a misspelled key and a wrong type must be caught.
sed 's/^\( *\)imagePullPolicy:/\1imagePulPolicy:/' "$work/default.yaml" >"$work/misspelled.yaml"
sed 's/^  replicas: 2$/  replicas: "two"/' "$work/default.yaml" >"$work/wrong-type-manifest.yaml"
check "the schema check catches a misspelled key" \
  "! node '$checker' '$work/misspelled.yaml' >'$work/misspelled.out' &&
   grep -q \"'\\\"imagePulPolicy\\\"' does not exist\" '$work/misspelled.out'"
check "the schema check catches a wrong type" \
  "! node '$checker' '$work/wrong-type-manifest.yaml' >'$work/type.out' &&
   grep -q 'replicas must be integer' '$work/type.out'"
check "default: a coordinator StatefulSet, its Services, a worker pool, the run ConfigMap, the token" \
  "[ \$(grep -c '^kind: StatefulSet' '$work/default.yaml') -eq 2 ] &&
   [ \$(grep -c '^kind: Service$' '$work/default.yaml') -eq 3 ] &&
   grep -q '^kind: ConfigMap' '$work/default.yaml' && grep -q '^kind: Secret' '$work/default.yaml'"
check "mixed: a GPU pool asks for a GPU, and the operator objects are there" \
  "grep -q 'nvidia.com/gpu: 1' '$work/mixed-values.yaml' &&
   grep -q '^kind: ServiceMonitor' '$work/mixed-values.yaml' &&
   grep -q '^kind: PrometheusRule' '$work/mixed-values.yaml'"
# configmap_data FILE KEY: a ConfigMap's data entry KEY (a `KEY: |-` block) in a rendered FILE.
configmap_data() {
  awk -v key="  $2: |-" '$0 == key { on = 1; next } on && /^    / { print substr($0, 5); next }
    { on = 0 }' "$1"
}
dashboards_same() {
  local f
  for f in "$root"/deploy/grafana/dashboards/*.json; do
    configmap_data "$work/mixed-values.yaml" "$(basename "$f")" | cmp -s - "$f" ||
      { echo "$(basename "$f") differs from its ConfigMap's"; return 1; }
  done
}
check "mixed: a ConfigMap per Grafana dashboard for the sidecar, their JSON untouched" \
  "[ \$(grep -c '^    grafana_dashboard: \"1\"$' '$work/mixed-values.yaml') -eq 4 ] &&
   grep -q '^    grafana_folder: demod$' '$work/mixed-values.yaml' && dashboards_same &&
   ! grep -q 'grafana_dashboard' '$work/default.yaml'"
check "tls: the coordinator serves TLS with client certificates, workers present theirs" \
  "grep -q -- '--tls_client_ca=/etc/demod/tls/ca.crt' '$work/tls-values.yaml' &&
   grep -q -- '--tls_cert=/etc/demod/tls/tls.crt' '$work/tls-values.yaml'"
check "existing secret: no Secret is made, the named one is mounted" \
  "! grep -q '^kind: Secret' '$work/existing-secret-values.yaml' &&
   grep -q 'secretName: demod-token' '$work/existing-secret-values.yaml'"

# The alert rules have one copy, deploy/prometheus/alerts.yaml (helm/demod/files/alerts.yaml
# links to it); the PrometheusRule must render exactly its groups, and a changed rule must be
# caught.
rule_groups="$root/tools/manifest-check/rule_groups.mjs"
check "mixed: the PrometheusRule holds exactly the groups of deploy/prometheus/alerts.yaml" \
  "node '$rule_groups' '$work/mixed-values.yaml' '$root/deploy/prometheus/alerts.yaml'"
sed 's/^        for: 2m$/        for: 3m/' "$work/mixed-values.yaml" >"$work/changed-rule.yaml"
check "the rule comparison catches a changed rule" \
  "! node '$rule_groups' '$work/changed-rule.yaml' '$root/deploy/prometheus/alerts.yaml' \
     >'$work/changed-rule.out' && grep -q 'DemodCoordinatorDown: for' '$work/changed-rule.out'"

# Values the schema must refuse, with its message.
printf 'workerPools:\n  - name: cpu\n    device: cpu\n    replicas: "two"\n    image: {repository: x}\n    model: {kind: gpt, data: sotu, batchSize: 8}\n    dataVolume: {emptyDir: {}}\n    checkpoints: {enabled: false}\n' \
  >"$work/wrong-type.values.yaml"
printf 'coordinator:\n  persistance:\n    enabled: false\n' >"$work/unknown-key.values.yaml"
printf 'tls:\n  enabled: true\n' >"$work/tls-without-secret.values.yaml"
check "a wrong type fails with the schema's message" \
  "! render wrong-type -f '$work/wrong-type.values.yaml' &&
   grep -q 'workerPools.0.replicas: Invalid type. Expected: integer, given: string' '$work/wrong-type.err'"
check "lint --strict refuses it too" \
  "! '$helm' lint --strict '$chart' -f '$work/wrong-type.values.yaml' >/dev/null 2>&1"
check "an unknown key fails with the schema's message" \
  "! render unknown-key -f '$work/unknown-key.values.yaml' &&
   grep -q 'Additional property persistance is not allowed' '$work/unknown-key.err'"
check "TLS without its Secret fails with the chart's message" \
  "! render tls-without-secret -f '$work/tls-without-secret.values.yaml' &&
   grep -q 'tls.existingSecret: name the kubernetes.io/tls Secret' '$work/tls-without-secret.err'"

# The ConfigMap's run.yaml, as the coordinator reads it from its mount.
"$helm" template demod "$chart" --show-only templates/configmap-run.yaml |
  sed -n '/^  run.yaml: |$/,$p' | tail -n +2 | sed 's/^    //' >"$work/run.yaml"
check "demod-coordinator serves with the chart's run configuration" \
  "start_coordinator coordinator.log --config '$work/run.yaml' || { cat '$work/run.yaml'; false; }"
finish
