// A model's tensor with its name, as torch::nn::Module::named_parameters() gives it: the unit
// the optimizer, the models and the parameter state all speak in. A worker's tensors are
// always passed as an ordered list of these, and the order is the tensor table's.
#ifndef DEMOD_WORKER_OPTIMIZER_NAMED_TENSOR_H_
#define DEMOD_WORKER_OPTIMIZER_NAMED_TENSOR_H_

#include <ATen/core/Tensor.h>

#include <string>
#include <utility>

namespace demod {

using NamedTensor = std::pair<std::string, at::Tensor>;

}  // namespace demod

#endif  // DEMOD_WORKER_OPTIMIZER_NAMED_TENSOR_H_
