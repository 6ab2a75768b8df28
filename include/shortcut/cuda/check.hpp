// Error checking for every CUDA runtime and cuBLAS call of the CUDA backend: a failed call throws
// shortcut::Error naming the call, the file and line, and the API's own error name and text. The
// library never aborts; the caller decides what a failed kernel means.
//
// Kernel launches are asynchronous: SHORTCUT_CUDA_CHECK_LAUNCH catches a bad launch configuration at
// once, while a fault inside a kernel surfaces at the next synchronizing call (to_host, synchronize).
// Define SHORTCUT_CUDA_SYNC_CHECK to synchronize after every launch and pin a fault to its kernel.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "shortcut/core/error.hpp"

namespace shortcut::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t e, const char* what, const char* file, int line) {
  throw Error(cat("CUDA error at ", file, ":", line, ": ", what, " failed with ", cudaGetErrorName(e), " (",
                  cudaGetErrorString(e), ")"));
}

inline void check_cuda(cudaError_t e, const char* what, const char* file, int line) {
  if (e != cudaSuccess) throw_cuda_error(e, what, file, line);
}

inline void check_cublas(cublasStatus_t s, const char* what, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(cat("cuBLAS error at ", file, ":", line, ": ", what, " failed with ", cublasGetStatusName(s), " (",
                    cublasGetStatusString(s), ")"));
}

// After a kernel launch: a launch error (bad grid, too much shared memory, no binary for this GPU)
// is reported here under the kernel's name.
inline void check_launch(const char* kernel, const char* file, int line) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw_cuda_error(e, cat("launch of ", kernel).c_str(), file, line);
#ifdef SHORTCUT_CUDA_SYNC_CHECK
  e = cudaDeviceSynchronize();
  if (e != cudaSuccess) throw_cuda_error(e, cat("kernel ", kernel).c_str(), file, line);
#endif
}

}  // namespace shortcut::cuda

#define SHORTCUT_CUDA_CHECK(call) ::shortcut::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define SHORTCUT_CUBLAS_CHECK(call) ::shortcut::cuda::check_cublas((call), #call, __FILE__, __LINE__)
#define SHORTCUT_CUDA_CHECK_LAUNCH(kernel) ::shortcut::cuda::check_launch(kernel, __FILE__, __LINE__)
