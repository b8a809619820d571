#!/usr/bin/env bash
# Installs the Debian packages demod needs to build and test. Idempotent: installs only
# what is missing, and does nothing (quickly) when everything is already there.
set -euo pipefail

# scripts/setup.sh --build-only [--no-libtorch]: only what scripts/build.sh needs, without
# Debian's LibTorch when an upstream one is given through CMAKE_PREFIX_PATH (the CUDA image,
# deploy/worker-cuda.Containerfile).
build_only=false
with_libtorch=true
for arg in "$@"; do
  case "$arg" in
    --build-only) build_only=true ;;
    --no-libtorch) with_libtorch=false ;;
    *)
      echo "setup: unknown option '$arg' (--build-only, --no-libtorch)" >&2
      exit 2
      ;;
  esac
done

packages=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates curl
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev prometheus-cpp-dev
  nlohmann-json3-dev libyaml-cpp-dev
)
if $with_libtorch; then packages+=(libtorch-dev libopenblas0-openmp); fi
if ! $build_only; then
  packages+=(
    clang-format
    libgtest-dev libgmock-dev libbenchmark-dev
    dataset-fashion-mnist  # real training data; scripts/fetch_data.sh decompresses it
    prometheus  # for promtool: tests/server/metrics_test lints the /metrics exposition
    python3-yaml  # tests/monitor/alert_rules_test.sh reads the alert rules and their tests
    clang libclang-rt-14-dev  # scripts/fuzz.sh: libFuzzer and the sanitizers' runtimes
    gnuplot-nox  # scripts/run.sh plots loss and bandwidth
    unzip  # scripts/tools.sh unpacks Helm
    # scripts/images.sh and the deploy checks: podman with runc (crun refuses this host's
    # cgroups), a registry-free Debian root file system, compose, container names in DNS
    podman runc catatonit uidmap mmdebstrap podman-compose
    golang-github-containernetworking-plugin-dnsname
    # tests/faults/wan_test.sh (ctest -L wan): network namespaces, veth and TAP links, tbf
    # rate limits (iproute2) and random packet loss (iptables) between test hosts
    iproute2 iptables
  )
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "setup: installing ${missing[*]}" >&2
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
