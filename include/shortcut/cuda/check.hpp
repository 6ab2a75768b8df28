// Error checking for every CUDA runtime and cuBLAS call of the CUDA backend: a failed call throws
// shortcut::Error naming the call, the file and line, and the API's own error name and text. The
// library never aborts; the caller decides what a failed kernel means.
//
// Which kernel failed? Launches are asynchronous. A bad launch configuration is reported at once,
// under the kernel's name (check_launch). A fault *inside* a kernel (an illegal address, a failed
// device assert) is sticky: it surfaces at some later call — the next synchronizing call, or even the
// next launch — and every call after it fails the same way. So the call that reports a fault is
// usually not the kernel that caused it, and the report says so: it lists the kernels launched on
// this thread since the last successful synchronization (one of them faulted). To name the culprit,
// define SHORTCUT_CUDA_SYNC_CHECK: every launch is then followed by a synchronization, so a fault is
// reported under the kernel that caused it (slow; for debugging).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "shortcut/core/error.hpp"

namespace shortcut::cuda {

// The kernels launched on this thread since the last successful synchronization (the last few by
// name, and how many in all), for fault reports.
struct LaunchLog {
  static constexpr int kKept = 6;
  const char* names[kKept] = {};
  uint64_t count = 0;
  void add(const char* name) { names[count++ % kKept] = name; }
  void clear() { count = 0; }
  std::string describe() const {
    if (count == 0) return "no kernel was launched on this thread since the last successful synchronization";
    std::string s = cat(count, " kernel(s) were launched on this thread since the last successful synchronization");
    const uint64_t first = count > kKept ? count - kKept : 0;
    s += first ? cat(", the last ", kKept, ": ") : ": ";
    for (uint64_t i = first; i < count; ++i) s += cat(i > first ? ", " : "", names[i % kKept]);
    return s + " (most recent last)";
  }
};
inline LaunchLog& launch_log() {
  static thread_local LaunchLog log;
  return log;
}
inline void note_launch(const char* kernel) { launch_log().add(kernel); }
// Called after a synchronization that succeeded: every kernel launched before it ran without fault.
inline void note_synchronized() { launch_log().clear(); }

// Errors that a fault inside a kernel leaves behind (the context is unusable afterwards).
inline bool is_kernel_fault(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorAssert:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorHardwareStackError:
    case cudaErrorLaunchTimeout:
      return true;
    default:
      return false;
  }
}

inline std::string fault_origin() {
  return cat("; this is a fault inside a kernel, reported late because kernels run asynchronously: it happened in "
             "one of the kernels launched before this call (",
             launch_log().describe(),
             "). Define SHORTCUT_CUDA_SYNC_CHECK to synchronize after every launch and name the faulting kernel");
}

[[noreturn]] inline void throw_cuda_error(cudaError_t e, const char* what, const char* file, int line) {
  throw Error(cat("CUDA error at ", file, ":", line, ": ", what, " failed with ", cudaGetErrorName(e), " (",
                  cudaGetErrorString(e), ")", is_kernel_fault(e) ? fault_origin() : std::string()));
}

inline void check_cuda(cudaError_t e, const char* what, const char* file, int line) {
  if (e != cudaSuccess) throw_cuda_error(e, what, file, line);
}

inline void check_cublas(cublasStatus_t s, const char* what, const char* file, int line) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw Error(cat("cuBLAS error at ", file, ":", line, ": ", what, " failed with ", cublasGetStatusName(s), " (",
                    cublasGetStatusString(s), ")"));
}

// Right after a kernel launch. A launch error (bad grid, too much shared memory, no binary for this
// GPU) belongs to this kernel and is reported under its name; a sticky fault found here belongs to an
// earlier kernel, and the report says so.
inline void check_launch(const char* kernel) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    if (is_kernel_fault(e))
      throw Error(cat("CUDA kernel fault ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ") found at the launch of ",
                      kernel, fault_origin()));
    throw Error(cat("CUDA error: the launch of ", kernel, " failed with ", cudaGetErrorName(e), " (",
                    cudaGetErrorString(e), ")"));
  }
#ifdef SHORTCUT_CUDA_SYNC_CHECK
  e = cudaDeviceSynchronize();
  if (e != cudaSuccess)
    throw Error(cat("CUDA error: kernel ", kernel, " failed with ", cudaGetErrorName(e), " (", cudaGetErrorString(e),
                    ") (SHORTCUT_CUDA_SYNC_CHECK: every earlier kernel had completed without error)"));
  note_synchronized();
#endif
}
// The form for launches written with <<<>>> outside kernels/ (launch() in kernels/launch.cuh checks
// by itself): records the launch, then checks it.
inline void check_launch_site(const char* kernel) {
  note_launch(kernel);
  check_launch(kernel);
}

}  // namespace shortcut::cuda

#define SHORTCUT_CUDA_CHECK(call) ::shortcut::cuda::check_cuda((call), #call, __FILE__, __LINE__)
#define SHORTCUT_CUBLAS_CHECK(call) ::shortcut::cuda::check_cublas((call), #call, __FILE__, __LINE__)
#define SHORTCUT_CUDA_CHECK_LAUNCH(kernel) ::shortcut::cuda::check_launch_site(kernel)
