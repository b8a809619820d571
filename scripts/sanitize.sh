#!/usr/bin/env bash
# The coordinator's suites under the sanitizers: common/'s and server/'s unit tests, the gRPC
# tests and the fault suite. No LibTorch code is built.
#   scripts/sanitize.sh [address]   AddressSanitizer and UndefinedBehaviorSanitizer, built into
#                                   ${SANITIZE_DIR:-build-sanitize}
#   scripts/sanitize.sh thread      ThreadSanitizer, built into ${SANITIZE_DIR:-build-tsan}
#   DEMOD_FAULT_SECONDS=60 ...      a longer fault run
# About 5 minutes from scratch on 2 cores each, then incremental. Leak checking is off: gRPC
# keeps process-lifetime allocations by design. Debian's Abseil and gRPC are not built with
# TSan: the thread build links tests/support/tsan_abseil_sync.cc into the tests so that TSan
# sees absl::Mutex (and so gRPC's locks); races inside gRPC itself stay out of its sight.
# Exit codes: 0 every suite passed; 1 a build or a suite failed; 2 bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-address}"
case "$mode" in
  address)
    build_dir="${SANITIZE_DIR:-build-sanitize}"
    flags="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
    extra_cmake=()
    export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
    names="ASan and UBSan"
    ;;
  thread)
    build_dir="${SANITIZE_DIR:-build-tsan}"
    flags="-fsanitize=thread -fno-omit-frame-pointer"
    extra_cmake=(-DDEMOD_TSAN=ON)
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 history_size=4 suppressions=$PWD/$build_dir/tsan_suppressions.txt"
    names="TSan"
    ;;
  *)
    echo "sanitize: unknown mode '$mode' (address, thread)" >&2
    exit 2
    ;;
esac
bash scripts/setup.sh
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
if [ ! -f "$build_dir/build.ninja" ]; then
  cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDEMOD_BUILD_BENCHMARKS=OFF \
    -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" "${extra_cmake[@]}" ${CMAKE_ARGS:-}
fi
suites=(common_test server_test coordinator_service_test coordinator_fault_test)
cmake --build "$build_dir" -j"${BUILD_JOBS:-2}" --target "${suites[@]}"
if [ "$mode" = thread ]; then
  # tests/support/tsan_suppressions.txt says why: the uninstrumented libraries the tests load.
  {
    cat tests/support/tsan_suppressions.txt
    for suite in "${suites[@]}"; do ldd "$build_dir/tests/$suite"; done |
      awk '{ print $1 }' | grep -E '^lib(absl_|grpc|gpr|protobuf|upb|address_sorting|re2|cares|ssl|crypto)' |
      sort -u | sed 's/^/called_from_lib:/'
  } > "$build_dir/tsan_suppressions.txt"
fi
for suite in "${suites[@]}"; do
  echo "sanitize: $suite"
  "$build_dir/tests/$suite" --gtest_brief=1
done
echo "sanitize: all suites passed under $names"
