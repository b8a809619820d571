#!/usr/bin/env bash
# The optimizer's CUDA check on a GPU machine that has a pip PyTorch with CUDA but none of
# Debian's dev packages: unpacks the Debian packages carried in .debs/ (libabsl-dev,
# libabsl20220623, libyaml-cpp-dev, libyaml-cpp0.7, nlohmann-json3-dev; `apt-get download`
# them on a Debian 12 machine) into /tmp/deps, builds the optimizer-only tree
# (DEMOD_OPTIMIZER_ONLY) against the wheel's LibTorch into build-device/, and runs
# demod-device-check --require-cuda on the golden files given (default: .golden/*.json).
# If the wheel's TorchConfig.cmake cannot be used, it retries with DEMOD_TORCH_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
deps=/tmp/deps
build=build-device
mkdir -p "$deps"
for f in .debs/*.deb; do dpkg -x "$f" "$deps" || exit 2; done
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
  "cxx11abi", torch.compiled_with_cxx11_abi(),
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'
torch_cmake=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
torch_dir=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')
c++ --version | head -1; cmake --version | head -1; nvcc --version | tail -1
generator=Ninja
command -v ninja >/dev/null || generator="Unix Makefiles"
# -include cstdint: Abseil 20220623's headers predate GCC 13's leaner <string>.
common=(-G "$generator" -DDEMOD_OPTIMIZER_ONLY=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
        -DCMAKE_POLICY_VERSION_MINIMUM=3.5 "-DCMAKE_CXX_FLAGS=-include cstdint")
if ! cmake -S . -B "$build" "${common[@]}" -DCMAKE_PREFIX_PATH="$deps/usr;$torch_cmake"; then
  echo "== TorchConfig.cmake failed; retrying with DEMOD_TORCH_DIR=$torch_dir"
  rm -rf "$build"
  cmake -S . -B "$build" "${common[@]}" -DCMAKE_PREFIX_PATH="$deps/usr" \
    -DDEMOD_TORCH_DIR="$torch_dir" || exit 2
fi
cmake --build "$build" -j"$(nproc)" --target demod-device-check || exit 2
ldd "$build/bin/demod-device-check" | grep -E "torch|c10|absl_status\.|yaml" || true
export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ $# -eq 0 ]; then set -- .golden/*.json; fi
"$build/bin/demod-device-check" --require-cuda --steps "${STEPS:-50}" "$@"
