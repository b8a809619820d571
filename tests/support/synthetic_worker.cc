#include "tests/support/synthetic_worker.h"

#include "tests/support/synthetic_payload.h"

namespace demod {

ClientOptions SyntheticWorkerOptions(
    const std::string& target, const std::string& name,
    const std::vector<std::pair<std::string, std::vector<int64_t>>>& shapes) {
  ClientOptions options;
  options.target = target;
  options.join.set_worker_name(name);
  options.join.mutable_hardware()->set_device_kind(v1::DEVICE_KIND_CPU);
  options.join.mutable_hardware()->set_device_name("test cpu");
  *options.join.mutable_tensors() = TensorSpecsOf(shapes);
  options.connect_timeout = absl::Seconds(5);
  return options;
}

}  // namespace demod
