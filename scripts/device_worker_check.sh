#!/usr/bin/env bash
# A CPU worker and a CUDA worker in one run, through a real coordinator over gRPC, on a GPU
# machine that has a pip PyTorch with CUDA but none of Debian's dev packages. Unpacks the
# Debian packages carried in .debs/ (Abseil, gRPC, protobuf, prometheus-cpp, yaml-cpp,
# nlohmann-json and what they need; `apt-get download` them on a Debian 12 machine) into
# /tmp/deps, builds demod-coordinator and demod-worker against the wheel's LibTorch into
# build-device-full/, trains the small GPT on data/sotu (carried) for 40 steps with one worker
# on each device, and checks both end with one fingerprint and no resync was needed.
# ENCODING (bf16) and OPTIMIZER (demo, or adamw for the dense baseline) choose the run; with
# BALANCE=N the run shares a global batch of N samples by measured throughput (issue 16:
# batch: {global: N, balance: true}), and the workers' last shares are printed.
#
# The packages (22 MB; on a Debian 12 machine, in the repository's root, with .debs/ listed in
# .git/info/exclude), then carry .debs and data/sotu:
#   mkdir -p .debs && (cd .debs && apt-get download civetweb libabsl-dev libabsl20220623 \
#     libbrotli1 libc-ares-dev libc-ares2 libcivetweb-dev libcivetweb1 libcurl4 \
#     libcurl4-openssl-dev libgrpc++-dev libgrpc++1.51 libgrpc-dev libgrpc29 libgssapi-krb5-2 \
#     libldap-2.5-0 libnghttp2-14 libpkgconf3 libprometheus-cpp-core1.0 \
#     libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0 libprotobuf-dev libprotobuf-lite32 \
#     libprotobuf32 libprotoc32 libpsl5 libre2-9 libre2-dev librtmp1 libsasl2-2 \
#     libsasl2-modules-db libssh2-1 libssl-dev libssl3 libyaml-cpp-dev libyaml-cpp0.7 \
#     nlohmann-json3-dev pkgconf pkgconf-bin prometheus-cpp-dev protobuf-compiler \
#     protobuf-compiler-grpc rpcsvc-proto zlib1g zlib1g-dev)
set -uo pipefail
cd "$(dirname "$0")/.."
deps=/tmp/deps
build=build-device-full
mkdir -p "$deps"
for f in .debs/*.deb; do dpkg -x "$f" "$deps" || exit 2; done
torch_cmake=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
torch_dir=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')
lib="$deps/usr/lib/x86_64-linux-gnu"
export LD_LIBRARY_PATH="$lib:$deps/lib/x86_64-linux-gnu:$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$deps/usr/bin:$PATH"
# gRPC's CMake config asks for -lre2 with Debian's /usr/lib folder: look in ours too.
export LIBRARY_PATH="$lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
generator=Ninja
command -v ninja >/dev/null || generator="Unix Makefiles"
cmake -S . -B "$build" -G "$generator" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DDEMOD_BUILD_TESTS=OFF -DDEMOD_BUILD_BENCHMARKS=OFF -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
  "-DCMAKE_CXX_FLAGS=-include cstdint" -DCMAKE_PREFIX_PATH="$deps/usr;$torch_cmake" \
  -DProtobuf_PROTOC_EXECUTABLE="$deps/usr/bin/protoc" -DProtobuf_INCLUDE_DIR="$deps/usr/include" \
  -DProtobuf_LIBRARY="$lib/libprotobuf.so" || exit 2
cmake --build "$build" -j"$(nproc)" --target demod-coordinator demod-worker || exit 2
bin="$build/bin"
work=$(mktemp -d)
config=()
if [ -n "${BALANCE:-}" ]; then
  printf 'batch: {global: %s, balance: true}\n' "$BALANCE" >"$work/run.yaml"
  config=(--config "$work/run.yaml")
fi
"$bin/demod-coordinator" "${config[@]}" --listen 127.0.0.1:0 --port_file "$work/port" --metrics "" \
  --min_workers 2 --total_steps 40 --lr 2e-3 --warmup_steps 4 --fingerprint_interval 10 \
  --value_encoding "${ENCODING:-bf16}" --optimizer "${OPTIMIZER:-demo}" \
  >"$work/coordinator.log" 2>&1 &
coordinator=$!
for _ in $(seq 200); do
  [ -s "$work/port" ] || ! kill -0 "$coordinator" 2>/dev/null && break
  sleep 0.05
done
[ -s "$work/port" ] || { echo "FAIL: the coordinator did not start"; cat "$work/coordinator.log"; exit 1; }
common=(--coordinator "127.0.0.1:$(cat "$work/port")" --data_dir data --gpt_layers 2
        --gpt_d_model 64 --gpt_heads 4 --context 64 --batch_size 8 --validation_interval 10)
"$bin/demod-worker" "${common[@]}" --name cpu --device cpu --threads 4 \
  --summary_json "$work/cpu.json" >"$work/cpu.log" 2>&1 &
"$bin/demod-worker" "${common[@]}" --name gpu --device cuda --summary_json "$work/gpu.json" \
  >"$work/gpu.log" 2>&1
wait
for f in coordinator cpu gpu; do echo "== $f"; grep -v " step [0-9]*/" "$work/$f.log" | tail -n 8; done
if [ -n "${BALANCE:-}" ]; then
  for f in cpu gpu; do echo "$f: last $(grep 'batch share' "$work/$f.log" | tail -n 1)"; done
fi
n=$(python3 -c 'import json, sys; print(len({json.load(open(f))["fingerprint"] for f in sys.argv[1:]}))' \
  "$work/cpu.json" "$work/gpu.json" 2>/dev/null || echo 0)
if [ "$n" -eq 1 ] && ! grep -q diverged "$work/coordinator.log"; then
  echo "PASS: CPU and CUDA workers end identical, no resync"
else
  echo "FAIL: $n distinct fingerprints; resyncs: $(grep -c diverged "$work/coordinator.log")"
  exit 1
fi
