// The tensor table of the benchmark GPT of docs/benchmarks.md, shared by
// demod-bench-optimizer and demod-loadgen: d_model 256, 6 layers, vocabulary 256, context 256.
//   tok_emb [256, 256], pos_emb [256, 256]
//   per layer h.<l>.: ln1.weight/bias [256], attn.qkv.weight [768, 256], attn.qkv.bias [768],
//     attn.proj.weight [256, 256], attn.proj.bias [256], ln2.weight/bias [256],
//     mlp.fc.weight [1024, 256], mlp.fc.bias [1024], mlp.proj.weight [256, 1024],
//     mlp.proj.bias [256]
//   ln_f.weight/bias [256], head.weight [256, 256]
// 77 tensors, 4,935,680 parameters; with chunk 64: 1,200 chunks of 64 x 64 and 320 of 1 x 64.
#ifndef DEMOD_BENCH_BENCHMARK_GPT_H_
#define DEMOD_BENCH_BENCHMARK_GPT_H_

#include <vector>

#include "common/layout_table.h"

namespace demod {

std::vector<TensorShape> BenchmarkGptShapes();

}  // namespace demod

#endif  // DEMOD_BENCH_BENCHMARK_GPT_H_
