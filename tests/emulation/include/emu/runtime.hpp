// A CPU emulation of the CUDA subset that kernels/*.cuh and shortcut::cuda::Backend use, so that the
// unchanged kernel sources and the backend's ops run (and are tested) on a machine without a GPU.
// Compiled by g++ for the host: the shim headers beside emu/ (cuda_runtime.h, cuda_bf16.h,
// cublas_v2.h) take the place of the CUDA toolkit's, and SHORTCUT_CUDA_EMULATION is defined.
//
// What it runs as a GPU would:
//  - A thread block is a set of fibers on one host thread: every CUDA thread has its own stack and
//    runs until it blocks (__syncthreads, a warp collective) or exits, so a thread that runs ahead of
//    a missing barrier reads what the others have not written yet. __syncthreads is a real barrier
//    (every thread of the block must reach it; one that exits instead is a divergent-barrier fault);
//    warps of 32 exchange values through __shfl*_sync, __ballot_sync, __any_sync, __all_sync and
//    __syncwarp, with the mask checked (every lane named must take part, with the same mask);
//    mma.sync and ldmatrix are full-warp collectives computed from the PTX ISA's layout tables;
//    cp.async copies land at the wait_group that retires their group, NaN until then (emu/device.hpp).
//    Blocks of a grid run in parallel on a pool of host threads (SHORTCUT_EMU_THREADS, default: all
//    cores), so atomics from different blocks really race.
//  - Launch checks a device makes: block size at most 1024 (x, y <= 1024, z <= 64), grid limits,
//    dynamic shared memory above 48 KB only after cudaFuncSetAttribute raised the kernel's limit, and
//    never above the sm_90 opt-in limit of 227 KB; a kernel argument that is a host pointer (not device
//    or pinned memory) is a fault, reported like an illegal address.
//  - Device memory is its own allocations, filled with 0xFF bytes (NaN in fp32 and bf16) when
//    allocated, and dynamic shared memory is poisoned the same way at every block start: a read of a
//    value nobody wrote shows. Work on streams is deferred until the host waits (a stream or device
//    synchronization, an event, a copy to pageable host memory), as on a GPU; a copy to pinned host
//    memory read before its stream was waited for shows stale data. Faults are sticky: every later
//    call returns the error, as on a GPU.
//  - Stream capture and graphs: work queued on a capturing stream is recorded, not run, and each
//    launch of the instantiated graph runs all of it again, in order. Capture refuses what a GPU
//    refuses — synchronizing calls, cudaMalloc / cudaFree (from any thread in global mode, from the
//    capturing thread in thread-local mode), work on the legacy stream — and copies from pageable
//    host memory (a replay would read memory the caller has reused); a refused call returns its
//    error and invalidates the capture, which cudaStreamEndCapture reports. cudaGraphExecUpdate
//    patches an executable graph from another capture with the same sequence of node kinds (kernel,
//    copy, fill, ...) and refuses any other (TopologyChanged for another node count, NodeTypeChanged
//    for another kind). One stream captures at a time.
//  - cuBLAS: cublasGemmEx and cublasGemmStridedBatchedEx check every argument as the library
//    documents (handle, operations, sizes, leading dimensions, alpha/beta, type and compute-type
//    combinations, device pointers) and compute in double; the TF32 compute type rounds its inputs to
//    TF32 first. cuBLASLt (emu/cublaslt.hpp): descriptors, the heuristic and cublasLtMatmul with the
//    DEFAULT, BIAS and BGRADB epilogues, checked likewise (layouts against the product, the operands'
//    alignment against what the heuristic was told, the workspace) and computed in double.
//
// What it cannot show (only a GPU run can): races between blocks that the host threads happen not to
// interleave, and any race inside a warp (lanes run one after another between collectives);
// timing and occupancy; register limits and __launch_bounds__; the real libraries' numerics (cuBLAS
// algorithms, the device's expf/tanhf ulps) — the emulation's fp32 math is the host's; memory
// coalescing and bank conflicts; misaligned vector accesses the host tolerates (the kernels' packs,
// kernels::load_pack / store_pack, check their alignment and fault as a GPU would); static __shared__
// arrays are not poisoned (only the dynamic ones are); ThreadSanitizer (scripts/emulation-tsan.sh) sees
// races between the threads of a block only where no barrier or warp collective orders them.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>

#include "emu/bf16.hpp"

#define SHORTCUT_CUDA_EMULATION 1

// ---- qualifiers: host functions in the emulation --------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
// static __shared__ arrays: one per host thread, and a block runs on one host thread from start to end
#define __shared__ static thread_local

// ---- types -------------------------------------------------------------------------------------
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInitializationError = 3,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
  cudaErrorInvalidMemcpyDirection = 21,
  cudaErrorInvalidDeviceFunction = 98,
  cudaErrorNoDevice = 100,
  cudaErrorNoKernelImageForDevice = 209,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorIllegalState = 401,
  cudaErrorNotReady = 600,
  cudaErrorIllegalAddress = 700,
  cudaErrorLaunchOutOfResources = 701,
  cudaErrorLaunchTimeout = 702,
  cudaErrorAssert = 710,
  cudaErrorHardwareStackError = 714,
  cudaErrorIllegalInstruction = 715,
  cudaErrorMisalignedAddress = 716,
  cudaErrorInvalidAddressSpace = 717,
  cudaErrorInvalidPc = 718,
  cudaErrorLaunchFailure = 719,
  cudaErrorStreamCaptureUnsupported = 900,
  cudaErrorStreamCaptureInvalidated = 901,
  cudaErrorStreamCaptureUnmatched = 903,
  cudaErrorStreamCaptureImplicit = 906,
  cudaErrorStreamCaptureWrongThread = 908,
  cudaErrorGraphExecUpdateFailure = 910,
};
enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4
};
enum cudaMemoryType { cudaMemoryTypeUnregistered = 0, cudaMemoryTypeHost = 1, cudaMemoryTypeDevice = 2 };
struct cudaPointerAttributes {
  cudaMemoryType type;
  int device;
  void* devicePointer;
  void* hostPointer;
};
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
// cudaFuncGetAttributes' answer; the fields the emulation fills (the others are zero)
struct cudaFuncAttributes {
  size_t sharedSizeBytes, constSizeBytes, localSizeBytes;
  int maxThreadsPerBlock, numRegs;
  int ptxVersion;     // the virtual architecture the kernel's code was compiled from (major * 10 + minor)
  int binaryVersion;  // the architecture of the machine code that runs (JIT-compiled from PTX: the device's)
  int cacheModeCA, maxDynamicSharedSizeBytes, preferredShmemCarveout;
};

enum cudaStreamCaptureStatus {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
  cudaStreamCaptureStatusInvalidated = 2
};
enum cudaStreamCaptureMode {
  cudaStreamCaptureModeGlobal = 0,
  cudaStreamCaptureModeThreadLocal = 1,
  cudaStreamCaptureModeRelaxed = 2
};

namespace emu {
struct Stream;
struct Event;
struct Graph;
struct GraphExec;
struct GraphNode;
}  // namespace emu
using cudaStream_t = emu::Stream*;
using cudaEvent_t = emu::Event*;
using cudaGraph_t = emu::Graph*;
using cudaGraphExec_t = emu::GraphExec*;
using cudaGraphNode_t = emu::GraphNode*;
enum cudaGraphExecUpdateResult {
  cudaGraphExecUpdateSuccess = 0,
  cudaGraphExecUpdateError = 1,
  cudaGraphExecUpdateErrorTopologyChanged = 2,
  cudaGraphExecUpdateErrorNodeTypeChanged = 3,
  cudaGraphExecUpdateErrorFunctionChanged = 4,
  cudaGraphExecUpdateErrorParametersChanged = 5,
  cudaGraphExecUpdateErrorNotSupported = 6,
};
struct cudaGraphExecUpdateResultInfo {
  cudaGraphExecUpdateResult result;
  cudaGraphNode_t errorNode, errorFromNode;  // always null in the emulation
};
#define cudaStreamLegacy ((cudaStream_t)0x1)
#define cudaStreamPerThread ((cudaStream_t)0x2)

// ---- the runtime API (src/runtime.cpp) ----------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t e);
const char* cudaGetErrorString(cudaError_t e);

cudaError_t cudaMalloc(void** p, size_t bytes);
cudaError_t cudaFree(void* p);
cudaError_t cudaMallocHost(void** p, size_t bytes);
cudaError_t cudaFreeHost(void* p);
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t s = nullptr);
cudaError_t cudaMemset(void* p, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t s = nullptr);

cudaError_t cudaStreamCreate(cudaStream_t* s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreate(cudaEvent_t* e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

// Stream capture and graphs of the work captured; see src/runtime.cpp for what capture refuses in
// each mode (Global: from every thread; ThreadLocal, and Relaxed treated as it: from the capturing
// thread) and what cudaGraphExecUpdate accepts (the same sequence of node kinds).
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t* graph);
cudaError_t cudaStreamIsCapturing(cudaStream_t s, cudaStreamCaptureStatus* status);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long flags = 0);
cudaError_t cudaGraphExecUpdate(cudaGraphExec_t exec, cudaGraph_t graph, cudaGraphExecUpdateResultInfo* info);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cudaGraphDestroy(cudaGraph_t graph);
cudaError_t cudaGraphGetNodes(cudaGraph_t graph, void* nodes, size_t* count);  // count only (nodes must be null)

template <class T>
cudaError_t cudaMalloc(T** p, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
template <class T>
cudaError_t cudaMallocHost(T** p, size_t bytes) {
  return cudaMallocHost(reinterpret_cast<void**>(p), bytes);
}

namespace emu {
// The kernel-function side of cudaFuncSetAttribute: raises a kernel's dynamic shared memory limit.
cudaError_t set_max_dynamic_smem(const void* kernel, int bytes);
cudaError_t func_attributes(cudaFuncAttributes* a, const void* kernel);
// Emulation only, for tests of what a host does on other hardware or other builds (both apply to the
// whole process until changed back; the defaults are an sm_90 device and code built for 90):
//  - set_compute_capability(cc): the device's compute capability, major * 10 + minor (default 90),
//    as cudaDeviceGetAttribute reports it;
//  - set_kernel_arch(sass, ptx): what every kernel was compiled into, as nvcc's -gencode says it:
//    machine code for sm_<sass> (0: none) and PTX for compute_<ptx> (0: none); default (90, 90), what
//    CMAKE_CUDA_ARCHITECTURES=90 builds. cudaFuncGetAttributes then answers as a driver would: the
//    machine code where its major version is the device's and it is not newer (binaryVersion = sass,
//    ptxVersion = sass), else the PTX JIT-compiled for the device where it is not newer than the
//    device (binaryVersion = the device's, ptxVersion = ptx), else cudaErrorNoKernelImageForDevice.
void set_compute_capability(int cc);
void set_kernel_arch(int sass, int ptx);
// Emulation only: how many pieces of work the host has put on streams so far — a kernel, a copy (one
// to pageable host memory too, which waits), a fill, a library call, a graph launch: one each (work a
// capture records is not put on a stream) — so that a test can count what a step costs in launches.
uint64_t queued_work();
// Emulation only: what the sticky fault says (the line printed to stderr), empty while none is set.
std::string sticky_fault();
// Emulation only: how many executable graphs cudaGraphInstantiate has built so far.
uint64_t graph_instantiations();
}  // namespace emu
template <class... P>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* a, void (*kernel)(P...)) {
  return emu::func_attributes(a, reinterpret_cast<const void*>(kernel));
}
template <class... P>
cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorInvalidValue;
  return emu::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), value);
}

#include "emu/device.hpp"
#include "emu/launch.hpp"
