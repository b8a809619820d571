// DEMOD_HOST_DEVICE marks small inline functions that the CPU kernels and the CUDA kernels
// share, so both compute with one definition: __host__ __device__ under nvcc, plain inline in
// the host compiler.
#ifndef DEMOD_WORKER_OPTIMIZER_HOST_DEVICE_H_
#define DEMOD_WORKER_OPTIMIZER_HOST_DEVICE_H_

#if defined(__CUDACC__)
#define DEMOD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define DEMOD_HOST_DEVICE inline __attribute__((always_inline))
#endif

#endif  // DEMOD_WORKER_OPTIMIZER_HOST_DEVICE_H_
