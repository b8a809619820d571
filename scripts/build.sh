#!/usr/bin/env bash
# Configures (once) and builds demod into ${BUILD_DIR:-build}; programs land in build/bin/.
# CMAKE_ARGS adds configure options (e.g. -DCMAKE_PREFIX_PATH=/opt/libtorch for an upstream
# LibTorch); BUILD_TARGETS builds only these targets (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${BUILD_DIR:-build}"
werror=OFF
if [ "${CI:-}" = "true" ]; then werror=ON; fi
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
if [ ! -f "$build_dir/build.ninja" ]; then
  cmake -S . -B "$build_dir" -G Ninja -DDEMOD_WERROR="$werror" ${CMAKE_ARGS:-}
fi
# Two cores and up to ~1 GB per LibTorch translation unit: two jobs at most.
targets=()
for t in ${BUILD_TARGETS:-}; do targets+=(--target "$t"); done
cmake --build "$build_dir" -j"${BUILD_JOBS:-2}" "${targets[@]}"
