# Sourced by the GPU machine's scripts (device_worker_check.sh, device_cuda_check.sh): that
# machine has a pip PyTorch with CUDA but none of Debian's dev packages. Unpacks the packages
# carried in .debs/ into /tmp/deps, exports the paths to build and run against them and the
# wheel's LibTorch, and defines
#   device_build TARGET...   configures build-device-full/ (once) and builds the targets
# The CUDA kernels come from the machine's nvcc when it has one, else from .devcuda/ (compiled
# here by `scripts/device_cuda_check.sh pack`); without either the build has no CUDA kernels.
deps=/tmp/deps
device_build_dir=build-device-full
mkdir -p "$deps"
for f in .debs/*.deb; do dpkg -x "$f" "$deps" || return 2; done
torch_cmake=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
torch_dir=$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')
deps_lib="$deps/usr/lib/x86_64-linux-gnu"
LD_LIBRARY_PATH="$deps_lib:$deps/lib/x86_64-linux-gnu:$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
export PATH="$deps/usr/bin:$PATH:/usr/local/cuda/bin"
# gRPC's CMake config asks for -lre2 with Debian's /usr/lib folder: look in ours too.
export LIBRARY_PATH="$deps_lib${LIBRARY_PATH:+:$LIBRARY_PATH}"

device_build() {
  local generator=Ninja cuda=()
  command -v ninja >/dev/null || generator="Unix Makefiles"
  if ! command -v nvcc >/dev/null && [ -f .devcuda/libdemod_cuda_kernels.a ]; then
    # The CUDA runtime the wheel's LibTorch loads (nvidia/*/lib in site-packages).
    local cudart
    cudart=$(find "$(dirname "$torch_dir")/nvidia" -name 'libcudart.so.[0-9]*' 2>/dev/null |
      head -n 1)
    if [ -n "$cudart" ]; then
      cuda=(-DDEMOD_CUDA_PREBUILT="$PWD/.devcuda" -DDEMOD_CUDART="$cudart")
      export LD_LIBRARY_PATH="$(dirname "$cudart"):$LD_LIBRARY_PATH"
    else
      echo "device_build: no libcudart.so in the wheel's nvidia/ folder: no CUDA kernels" >&2
    fi
  fi
  if [ ! -f "$device_build_dir/CMakeCache.txt" ]; then
    cmake -S . -B "$device_build_dir" -G "$generator" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DDEMOD_BUILD_TESTS=OFF -DDEMOD_BUILD_BENCHMARKS=OFF -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
      "-DCMAKE_CXX_FLAGS=-include cstdint" -DCMAKE_PREFIX_PATH="$deps/usr;$torch_cmake" \
      -DProtobuf_PROTOC_EXECUTABLE="$deps/usr/bin/protoc" \
      -DProtobuf_INCLUDE_DIR="$deps/usr/include" -DProtobuf_LIBRARY="$deps_lib/libprotobuf.so" \
      -DCMAKE_CUDA_ARCHITECTURES=90 "${cuda[@]}" || return 2
  fi
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  cmake --build "$device_build_dir" -j"$(nproc)" "${targets[@]}" || return 2
}
