// The hardware names a worker sends are ones the coordinator accepts (printable ASCII, at most
// kMaxDeviceNameBytes), whatever /proc/cpuinfo or the CUDA driver say.
#include "worker/programs/device_name.h"

#include <gtest/gtest.h>

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace demod {
namespace {

bool CoordinatorAccepts(const std::string& name) {
  if (name.empty() || name.size() > kMaxDeviceNameBytes) return false;
  for (char c : name) {
    if (!absl::ascii_isprint(c)) return false;
  }
  return true;
}

TEST(DeviceNameTest, WhitespaceAndUnprintableBytesBecomeSingleSpaces) {
  EXPECT_EQ(LabelSafeDeviceName("  Intel(R) Xeon(R)\tCPU  @ 2.20GHz \n"),
            "Intel(R) Xeon(R) CPU @ 2.20GHz");
  EXPECT_EQ(LabelSafeDeviceName("NVIDIA\x01H200\xff"), "NVIDIA H200");
  EXPECT_EQ(LabelSafeDeviceName("\t\n"), "");
}

TEST(DeviceNameTest, LongNamesAreCutWithoutATrailingSpace) {
  const std::string cut = LabelSafeDeviceName(std::string(kMaxDeviceNameBytes - 1, 'a') + " b");
  EXPECT_EQ(cut, std::string(kMaxDeviceNameBytes - 1, 'a'));
  EXPECT_TRUE(CoordinatorAccepts(LabelSafeDeviceName(std::string(1000, 'x'))));
}

TEST(DeviceNameTest, ThisMachinesNamesAreAccepted) {
  EXPECT_TRUE(CoordinatorAccepts(CpuModelName())) << CpuModelName();
  // No CUDA driver here, or device 99 does not exist: the fallback names the device.
  EXPECT_EQ(CudaDeviceName(99), "cuda:99");
}

}  // namespace
}  // namespace demod
