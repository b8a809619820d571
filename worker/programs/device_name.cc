#include "worker/programs/device_name.h"

#include <dlfcn.h>

#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace demod {

std::string LabelSafeDeviceName(std::string_view name) {
  std::string out;
  bool pending_space = false;
  for (char c : name) {
    if (!absl::ascii_isgraph(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c);
  }
  if (out.size() > kMaxDeviceNameBytes) {
    out.resize(kMaxDeviceNameBytes);
    while (!out.empty() && out.back() == ' ') out.pop_back();
  }
  return out;
}

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "model name") && line.find(':') != std::string::npos) {
      std::string name = LabelSafeDeviceName(line.substr(line.find(':') + 1));
      if (!name.empty()) return name;
    }
  }
  return "cpu";
}

std::string CudaDeviceName(int index) {
  const std::string fallback = absl::StrCat("cuda:", index);
  // The driver API's three calls, by their stable C ABI (cuda.h): 0 is CUDA_SUCCESS.
  using InitFn = int (*)(unsigned int);
  using DeviceGetFn = int (*)(int*, int);
  using DeviceGetNameFn = int (*)(char*, int, int);
  void* driver = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (driver == nullptr) return fallback;
  auto init = reinterpret_cast<InitFn>(dlsym(driver, "cuInit"));
  auto device_get = reinterpret_cast<DeviceGetFn>(dlsym(driver, "cuDeviceGet"));
  auto device_get_name = reinterpret_cast<DeviceGetNameFn>(dlsym(driver, "cuDeviceGetName"));
  std::string name;
  int device = 0;
  char buffer[256] = {};
  if (init != nullptr && device_get != nullptr && device_get_name != nullptr && init(0) == 0 &&
      device_get(&device, index) == 0 &&
      device_get_name(buffer, static_cast<int>(sizeof(buffer) - 1), device) == 0) {
    name = LabelSafeDeviceName(buffer);
  }
  // The driver stays loaded: LibTorch's CUDA runtime uses it too, and unloading it is unsafe.
  return name.empty() ? fallback : name;
}

}  // namespace demod
