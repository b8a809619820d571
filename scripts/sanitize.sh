#!/usr/bin/env bash
# The coordinator's suites under AddressSanitizer and UndefinedBehaviorSanitizer: common/'s and
# server/'s unit tests, the gRPC tests and the fault suite, built into
# ${SANITIZE_DIR:-build-sanitize} (about 5 minutes from scratch on 2 cores, then incremental).
# No LibTorch code is built. Leak checking is off: gRPC keeps process-lifetime allocations by
# design.
#   scripts/sanitize.sh            all four suites
#   DEMOD_FAULT_SECONDS=60 ...     a longer fault run
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build_dir="${SANITIZE_DIR:-build-sanitize}"
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
if [ ! -f "$build_dir/build.ninja" ]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDEMOD_BUILD_BENCHMARKS=OFF \
    -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" ${CMAKE_ARGS:-}
fi
suites=(common_test server_test coordinator_service_test coordinator_fault_test)
cmake --build "$build_dir" -j"${BUILD_JOBS:-2}" --target "${suites[@]}"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
for suite in "${suites[@]}"; do
  echo "sanitize: $suite"
  "$build_dir/tests/$suite" --gtest_brief=1
done
echo "sanitize: all suites passed under ASan and UBSan"
