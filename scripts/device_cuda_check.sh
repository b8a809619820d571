#!/usr/bin/env bash
# Issue 17 on the GPU machine in one prepared run (docs/benchmarks.md, "A GPU worker's step";
# docs/optimizer.md, "CUDA workers"): the CUDA kernels against the CPU routines bit for bit,
# a worker's step phase by phase at 125M and 1B parameters with and without them, and a CPU
# worker beside a CUDA worker through a real coordinator.
#
#   here:   scripts/device_cuda_check.sh pack
#             .debs/     the Debian packages the device build needs (apt-get download)
#             .devcuda/  the CUDA kernels compiled here by nvcc (all architectures of
#                        CMakeLists.txt) and CUDA's top-level headers, for a GPU machine without
#                        nvcc (linked there against the CUDA runtime of the PyTorch wheel)
#             .golden/   the reference runs of ../shared/golden
#           (all ignored by git through .git/info/exclude)
#   there:  the device tool's run of `scripts/device_cuda_check.sh run [PART...]`, carrying
#           .debs, .devcuda, .golden and data/sotu. PARTs: kernels, profile, workers, 1b (all by
#           default). A device call lasts 600 s at most and the first one also builds (a few
#           minutes on 16 cores), so: `run kernels profile`, then `run workers 1b` on the warm
#           machine, whose build folder is kept. It writes to $OUT:
#             machine.txt   the GPU, its driver, torch and its CUDA, nvcc
#             kernels.log   demod-device-check --require-cuda: golden runs on CUDA, CPU and
#                           CUDA workers side by side, the kernels bit for bit and timed
#             profile.csv   demod-step-profile lines: label, device, parameters, batch, context,
#                           forward+backward, encode, exchange, decode+apply, step (ms)
#             profile.log   the same, readable
#             workers.log   scripts/device_worker_check.sh for DeMo bf16 and sign and AdamW,
#                           STEPS (120) steps each
#           in that order of priority, so a run cut short still reports the first parts.
# Exit codes: 0 every check passed; 1 a check failed; 2 bad usage, nothing packed or a build
# that failed.
set -uo pipefail
cd "$(dirname "$0")/.."

debian_packages=(civetweb libabsl-dev libabsl20220623 libbrotli1 libc-ares-dev libc-ares2
  libcivetweb-dev libcivetweb1 libcurl4 libcurl4-openssl-dev libgrpc++-dev libgrpc++1.51
  libgrpc-dev libgrpc29 libgssapi-krb5-2 libldap-2.5-0 libnghttp2-14 libpkgconf3
  libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0
  libprotobuf-dev libprotobuf-lite32 libprotobuf32 libprotoc32 libpsl5 libre2-9 libre2-dev
  librtmp1 libsasl2-2 libsasl2-modules-db libssh2-1 libssl-dev libssl3 libyaml-cpp-dev
  libyaml-cpp0.7 nlohmann-json3-dev pkgconf pkgconf-bin prometheus-cpp-dev protobuf-compiler
  protobuf-compiler-grpc rpcsvc-proto zlib1g zlib1g-dev)

pack() {
  mkdir -p .git/info
  for d in .debs .devcuda .golden; do
    grep -qx "$d/" .git/info/exclude 2>/dev/null || echo "$d/" >>.git/info/exclude
  done
  if [ ! -d .debs ] || [ -z "$(ls .debs 2>/dev/null)" ]; then
    mkdir -p .debs && (cd .debs && apt-get download "${debian_packages[@]}") || return 2
  fi
  local kernels=build/worker/optimizer/libdemod_cuda_kernels.a cuda=/usr/local/cuda
  if [ ! -x "$cuda/bin/nvcc" ]; then
    echo "pack: no $cuda/bin/nvcc to compile the kernels" >&2
    return 2
  fi
  # A build folder configured before nvcc was there has no kernels target: configure again.
  if [ -f build/CMakeCache.txt ] &&
    ! grep -q '^CMAKE_CUDA_COMPILER:.*nvcc' build/CMakeCache.txt; then
    cmake build >/dev/null || return 2
  fi
  BUILD_TARGETS=demod_cuda_kernels scripts/build.sh || return 2
  [ -f "$kernels" ] || { echo "pack: no $kernels after the build" >&2; return 2; }
  rm -rf .devcuda && mkdir -p .devcuda/include
  cp "$kernels" .devcuda/
  cp "$cuda"/include/*.h "$cuda"/include/*.hpp .devcuda/include/ &&
    cp -r "$cuda/include/crt" .devcuda/include/
  mkdir -p .golden && cp ../shared/golden/*.json .golden/ 2>/dev/null
  du -sh .debs .devcuda .golden data/sotu
  echo "carry: .debs .devcuda .golden data/sotu"
}

run() {
  local out="${OUT:-/tmp/device-cuda-check}" failed=0 parts=" ${*:-kernels profile workers 1b} "
  shopt -s nullglob
  mkdir -p "$out"
  {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
    command -v nvcc >/dev/null && nvcc --version | tail -2 || echo "nvcc: none (.devcuda is used)"
    nproc
  } >"$out/machine.txt" 2>&1
  cat "$out/machine.txt"
  . scripts/device_build.sh || return 2
  device_build demod-device-check demod-step-profile demod-coordinator demod-worker \
    >"$out/build.log" 2>&1 || { tail -n 40 "$out/build.log"; return 2; }
  grep -m1 "CUDA kernels" "$device_build_dir/CMakeCache.txt" "$out/build.log" || true
  local bin="$device_build_dir/bin"

  # 1. The kernels, bit for bit (and the golden runs and mixed workers on the new path).
  if [[ "$parts" == *" kernels "* ]]; then
    "$bin/demod-device-check" --require-cuda --steps 30 --kernel-cases 300 .golden/*.json \
      >"$out/kernels.log" 2>&1 || failed=1
  fi
  [ -s "$out/kernels.log" ] &&
    grep -E "^golden|differ|kernels|125M|AdamW|PASS|FAIL|ERROR" "$out/kernels.log" | tail -n 30

  # 2. The step, phase by phase: after (kernels) and before (decode and update on the CPU).
  local gpt125=(--d_model 768 --layers 18 --heads 12 --context 1024 --batch 8)
  local gpt1b=(--d_model 2048 --layers 20 --heads 16 --context 1024 --batch 4)
  profile() {
    "$bin/demod-step-profile" --device cuda --csv "$out/profile.csv" "$@" \
      >>"$out/profile.log" 2>&1 || failed=1
  }
  for updates in true false; do
    [[ "$parts" == *" profile "* ]] || break
    profile "${gpt125[@]}" --optimizer demo --encoding bf16 --device_updates=$updates \
      --label "125M demo-bf16 device_updates=$updates"
    profile "${gpt125[@]}" --optimizer demo --encoding sign --device_updates=$updates \
      --label "125M demo-sign device_updates=$updates"
    profile "${gpt125[@]}" --optimizer adamw --encoding f32 --device_updates=$updates \
      --steps 5 --label "125M adamw-f32 device_updates=$updates"
  done
  [ -s "$out/profile.log" ] && cat "$out/profile.log"

  # 3. A real CPU worker and CUDA worker through a coordinator.
  for setting in "demo bf16" "demo sign" "adamw f32"; do
    [[ "$parts" == *" workers "* ]] || break
    set -- $setting
    echo "== $1 $2" >>"$out/workers.log"
    OPTIMIZER=$1 ENCODING=$2 STEPS="${STEPS:-120}" scripts/device_worker_check.sh \
      >>"$out/workers.log" 2>&1 || failed=1
  done
  [ -s "$out/workers.log" ] && grep -E "^== |PASS|FAIL" "$out/workers.log"

  # 4. The 1B model, DeMo with and without the kernels.
  for updates in true false; do
    [[ "$parts" == *" 1b "* ]] || break
    profile "${gpt1b[@]}" --optimizer demo --encoding bf16 --device_updates=$updates \
      --steps 3 --warmup 1 --label "1B demo-bf16 device_updates=$updates"
  done
  [[ "$parts" == *" 1b "* ]] && tail -n 4 "$out/profile.log"
  return "$failed"
}

case "${1:-}" in
  pack) pack ;;
  run) shift; run "$@" ;;
  *) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 2 ;;
esac
