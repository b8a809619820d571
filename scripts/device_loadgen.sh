#!/usr/bin/env bash
# demod-loadgen on the GPU machine (16 cores), where the coordinator and the synthetic workers
# do not have to share this machine's 2 cores. That machine has none of Debian's gRPC,
# protobuf, Abseil or prometheus-cpp, so the two programs travel with their shared libraries
# (about 23 MB). glibc stays the machine's own: Debian 12's libraries need 2.36 at most, and
# that machine's Python 3.12.3 points at Ubuntu 24.04 (2.39). It runs under gVisor, whose
# loopback TCP is its own network stack: the raw TCP reference is measured there too, so the
# ratios compare, but its absolute numbers are not this machine's.
#
#   here:   scripts/device_loadgen.sh pack
#             strips build/bin/demod-{loadgen,coordinator} into .devlibs/bin and copies the
#             libraries they load into .devlibs/lib (git ignores .devlibs)
#   there:  scripts/device_loadgen.sh run [demod-loadgen flags]
#             (the device tool's run, carrying .devlibs) writes $OUT/loadgen.md (the tables),
#             $OUT/loadgen.log (progress, the raw TCP lines) and $OUT/machine.txt
#             default flags: --workers=2,8,32 --steps=100 --warmup=5
#
# Exit codes: 0 done; 1 the load generator failed; 2 bad usage or nothing packed.
set -uo pipefail
cd "$(dirname "$0")/.."
pack=.devlibs
case "${1:-}" in
  pack)
    rm -rf "$pack" && mkdir -p "$pack/bin" "$pack/lib" || exit 2
    for program in demod-loadgen demod-coordinator; do
      [ -x "build/bin/$program" ] || { echo "build/bin/$program is missing: build first" >&2; exit 2; }
      strip -o "$pack/bin/$program" "build/bin/$program" || exit 2
    done
    ldd "$pack/bin/demod-loadgen" "$pack/bin/demod-coordinator" | awk '/=> \// { print $3 }' |
      sort -u | grep -v -E '/(libc|libm|libpthread|libdl|librt|libresolv)\.so' |
      while read -r lib; do cp -L "$lib" "$pack/lib/"; done
    du -sh "$pack"
    ;;
  run)
    shift
    [ -x "$pack/bin/demod-loadgen" ] || { echo "no $pack/bin: run '$0 pack' here first" >&2; exit 2; }
    out="${OUT:-/tmp}"
    { nproc; lscpu | grep -E 'Model name|^CPU\(s\)'; uname -a; } >"$out/machine.txt" 2>&1
    [ $# -gt 0 ] || set -- --workers=2,8,32 --steps=100 --warmup=5
    LD_LIBRARY_PATH="$PWD/$pack/lib" "$pack/bin/demod-loadgen" "$@" >"$out/loadgen.md" \
      2>"$out/loadgen.log"
    status=$?
    cat "$out/machine.txt" "$out/loadgen.md"
    tail -n 5 "$out/loadgen.log"
    [ "$status" -eq 0 ] || exit 1
    ;;
  *)
    echo "usage: $0 pack | run [demod-loadgen flags]" >&2
    exit 2
    ;;
esac
