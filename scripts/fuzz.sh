#!/usr/bin/env bash
# libFuzzer over what crosses the wire (tests/fuzz): the payload and aggregate decoders, the
# frame assembler, the state frame header reader, run configuration parsing, and the
# coordinator's handling of worker messages in process. Built with clang and AddressSanitizer
# and UndefinedBehaviorSanitizer into ${FUZZ_DIR:-build-fuzz} (no LibTorch code is built).
#   scripts/fuzz.sh build                  configure (once) and build the targets
#   scripts/fuzz.sh run TARGET SECONDS     fuzz TARGET from a copy of its seeds; prints its
#                                          executions; exit 1 with the crashing input's path
#   scripts/fuzz.sh all SECONDS            every target, SECONDS each
#   scripts/fuzz.sh seeds                  rewrite tests/fuzz/seeds from the real encoders
# A finding leaves its input in ${FUZZ_DIR}/findings/TARGET/; replay it with
#   build-fuzz/fuzz/TARGET FILE
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${FUZZ_DIR:-build-fuzz}"
targets=(payload_codec_fuzz frame_assembler_fuzz state_frame_header_fuzz run_config_fuzz
  coordinator_fuzz)

die() {
  echo "fuzz: $*" >&2
  exit 1
}

build() {
  command -v clang++ >/dev/null || die "clang++ not found (scripts/setup.sh installs clang)"
  export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
  if [ ! -f "$build_dir/build.ninja" ]; then
    # Every library the targets link is built with the sanitizers and libFuzzer's coverage.
    local flags="-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer"
    CC=clang CXX=clang++ cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DDEMOD_FUZZ=ON -DDEMOD_BUILD_TESTS=OFF -DDEMOD_BUILD_BENCHMARKS=OFF \
      -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_C_FLAGS="$flags" >/dev/null
  fi
  cmake --build "$build_dir" -j"${BUILD_JOBS:-2}" --target "${targets[@]}" demod-fuzz-seeds
}

run() {
  local target="$1" seconds="$2"
  local binary="$build_dir/fuzz/$target"
  [ -x "$binary" ] || die "$binary is not built: run scripts/fuzz.sh build (scripts/test.sh does)"
  [ -d "tests/fuzz/seeds/$target" ] || die "no seeds in tests/fuzz/seeds/$target"
  local corpus findings log
  corpus=$(mktemp -d)
  findings="$build_dir/findings/$target"
  log="$build_dir/findings/$target.log"
  mkdir -p "$findings"
  cp "tests/fuzz/seeds/$target"/* "$corpus/"
  # Leaks are checked (detect_leaks): these targets start no gRPC threads.
  if ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:quarantine_size_mb=32 UBSAN_OPTIONS=print_stacktrace=1 \
    "$binary" "$corpus" -max_total_time="$seconds" -rss_limit_mb=1024 -max_len=16384 \
    -artifact_prefix="$findings/" -print_final_stats=1 >"$log" 2>&1; then
    local runs
    runs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
    echo "fuzz: $target: ${runs:-?} executions in ${seconds}s, no finding"
    rm -rf "$corpus"
  else
    rm -rf "$corpus"
    tail -n 30 "$log" >&2
    die "$target found a failing input: $(ls -t "$findings" | head -n 1 | sed "s|^|$findings/|") (log: $log)"
  fi
}

case "${1:-}" in
  build) build ;;
  run)
    [ $# -eq 3 ] || die "usage: scripts/fuzz.sh run TARGET SECONDS"
    run "$2" "$3"
    ;;
  all)
    [ $# -eq 2 ] || die "usage: scripts/fuzz.sh all SECONDS"
    for target in "${targets[@]}"; do run "$target" "$2"; done
    ;;
  seeds)
    build
    rm -rf tests/fuzz/seeds
    "$build_dir/fuzz/demod-fuzz-seeds" tests/fuzz/seeds
    ;;
  *) die "usage: scripts/fuzz.sh build | run TARGET SECONDS | all SECONDS | seeds" ;;
esac
