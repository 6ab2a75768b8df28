// What the emulator's sources share: a grid to run (scheduler.cpp runs it; runtime.cpp queues it)
// and the sanitizer hooks of fiber switches.
#pragma once
#include <cuda_runtime.h>
#include <cublas_v2.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) || defined(EMU_TSAN_HOOKS)
#include <sanitizer/tsan_interface.h>
#define EMU_TSAN 1
#endif

namespace emu {

struct GridJob {
  const char* name;
  std::shared_ptr<const Kernel> kernel;
  dim3 grid, block;
  size_t smem;
  // set by the first block that faults
  std::atomic<bool> faulted{false};
  cudaError_t fault_code = cudaSuccess;
  std::string fault;
};

// Runs every block of the grid (on the pool of host threads) and returns once all have finished or
// one has faulted (job.faulted, job.fault_code, job.fault).
void run_grid(GridJob& job);

// What a piece of stream work is, as a graph node (cudaGraphExecUpdate compares captured graphs by it)
enum class NodeKind { kernel, memcpy, memset, event, graph };
// cudaGraphInstantiate calls so far (under the API lock)
uint64_t& instantiations();

// runtime.cpp's queue, memory map and sticky faults, for the libraries' sources (cublas.cpp, cublaslt.cpp)
cudaError_t enqueue(cudaStream_t s, std::function<void()> work);
bool device_range(const void* p, size_t bytes);
void fault(cudaError_t e, const std::string& what);

// The libraries' reference computations are the emulator's inside, not code under test:
// AddressSanitizer does not instrument them (their ranges were checked against the allocations
// before they were queued).
#if defined(__SANITIZE_ADDRESS__)
#define EMU_UNCHECKED __attribute__((no_sanitize_address))
#else
#define EMU_UNCHECKED
#endif

// cublas.cpp's reference product, shared with cublaslt.cpp: C = al op(A) op(B) + be C for each of
// `batch` matrices, in double (TF32-rounded inputs where asked); and element access by data type.
void product(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, double al, const void* A,
             cudaDataType_t at, int lda, long long sA, const void* B, cudaDataType_t bt, int ldb, long long sB,
             double be, void* C, cudaDataType_t ct, int ldc, long long sC, int batch, bool round_tf32);
size_t type_size(cudaDataType_t t);
double load(const void* p, cudaDataType_t t, size_t i);
void store(void* p, cudaDataType_t t, size_t i, double v);

// Environment knobs, read once.
int env_int(const char* name, int fallback);

}  // namespace emu
