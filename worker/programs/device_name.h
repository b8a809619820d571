// The names a worker reports for its hardware when it joins (v1::Hardware.device_name), which
// the coordinator exports as demod_worker_info's device_name label: the CPU's model or the
// GPU's model ("NVIDIA H200"), so dashboards can group workers by what they run on.
//
// The coordinator refuses names that are not printable ASCII or longer than
// kMaxDeviceNameBytes; every function here returns a name it accepts.
#ifndef DEMOD_WORKER_PROGRAMS_DEVICE_NAME_H_
#define DEMOD_WORKER_PROGRAMS_DEVICE_NAME_H_

#include <cstddef>
#include <string>
#include <string_view>

namespace demod {

inline constexpr size_t kMaxDeviceNameBytes = 128;

// `name` as the coordinator accepts it: runs of whitespace and unprintable bytes become one
// space, the ends are trimmed, and it is cut to kMaxDeviceNameBytes. Empty stays empty.
std::string LabelSafeDeviceName(std::string_view name);

// The CPU's model from /proc/cpuinfo ("AMD EPYC 9654 96-Core Processor"); "cpu" when unknown.
std::string CpuModelName();

// The model of CUDA device `index` from the CUDA driver (libcuda.so.1, opened at run time, so
// CPU-only builds and machines need nothing); "cuda:<index>" when the driver cannot say.
std::string CudaDeviceName(int index);

}  // namespace demod

#endif  // DEMOD_WORKER_PROGRAMS_DEVICE_NAME_H_
