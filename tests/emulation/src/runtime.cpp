// The emulated runtime API: one device (an sm_90 part with 132 multiprocessors, as an H100 SXM), its
// memory as host allocations in a registry, streams whose work is queued and run when the host
// waits, events, launch checks, and the error state (the last error, and the sticky fault that a
// failed kernel leaves).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "internal.hpp"

namespace emu {
namespace {

constexpr int kSms = 132;
constexpr int kStaticSmemLimit = 48 * 1024;         // without opting in
constexpr int kOptinSmemLimit = 227 * 1024;         // sm_90: 232448 bytes per block with the opt-in
constexpr size_t kDefaultDeviceMiB = 8192;

struct Alloc {
  size_t bytes;
  cudaMemoryType type;
};

struct State {
  std::recursive_mutex m;  // API calls; flush() runs work under it
  std::map<uintptr_t, Alloc> allocs;
  size_t device_bytes = 0, device_limit = 0;
  std::set<const Stream*> streams;
  std::set<const Event*> events;
  std::map<const void*, int> max_dynamic_smem;
  std::deque<std::function<void()>> queue;  // work of every stream, in the order it was queued
  cudaError_t sticky = cudaSuccess;
  std::string sticky_what;
  int device = 0;
  // the stream being captured (one at a time), by which thread in which mode, what it recorded (node
  // kinds beside the work: cudaGraphExecUpdate compares them), and why the capture broke if it did
  const Stream* capturing = nullptr;
  std::thread::id capture_thread;
  cudaStreamCaptureMode capture_mode = cudaStreamCaptureModeGlobal;
  std::vector<std::function<void()>> captured;
  std::vector<NodeKind> captured_kinds;
  std::string capture_broken;
  uint64_t queued = 0;  // pieces of work queued (emu::queued_work)
  int cc = 90;                      // compute capability (set_compute_capability)
  int kernel_sass = 90, kernel_ptx = 90;  // what the kernels count as compiled for (set_kernel_arch)
};
State& st() {
  static State* s = [] {
    auto* p = new State;  // never destroyed: buffers freed by static destructors still find it
    p->device_limit = size_t(env_int("SHORTCUT_EMU_DEVICE_MB", int(kDefaultDeviceMiB))) << 20;
    return p;
  }();
  return *s;
}
thread_local cudaError_t tl_last = cudaSuccess;

cudaError_t fail(cudaError_t e) {
  tl_last = e;
  return e;
}
cudaError_t fail(cudaError_t e, const std::string& why) {
  std::fprintf(stderr, "emulated CUDA: %s\n", why.c_str());
  return fail(e);
}

// The allocation that contains [p, p + bytes), or null.
const Alloc* find(const void* p, size_t bytes, uintptr_t* base = nullptr) {
  auto& s = st();
  const auto u = reinterpret_cast<uintptr_t>(p);
  auto it = s.allocs.upper_bound(u);
  if (it == s.allocs.begin()) return nullptr;
  --it;
  if (u < it->first || u + bytes > it->first + it->second.bytes) return nullptr;
  if (base) *base = it->first;
  return &it->second;
}
bool is_device(const void* p, size_t bytes) {
  const Alloc* a = find(p, bytes);
  return a && a->type == cudaMemoryTypeDevice;
}
bool is_pinned(const void* p, size_t bytes) {
  const Alloc* a = find(p, bytes);
  return a && a->type == cudaMemoryTypeHost;
}
bool device_visible(const void* p) {
  const Alloc* a = find(p, 0);
  return a != nullptr;
}

bool valid_stream(cudaStream_t s) {
  return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread || st().streams.count(s);
}

// Breaks the capture in progress (its end reports the first reason) and returns e.
cudaError_t break_capture(cudaError_t e, const std::string& why) {
  auto& s = st();
  if (s.capture_broken.empty()) s.capture_broken = why;
  return fail(e, "stream capture: " + why);
}
// Calls that wait for the device, or allocate or free its memory ("potentially unsafe" in the runtime's
// words), are not allowed while a stream captures: in global mode from any thread, in thread-local
// mode only from the thread that captures (relaxed mode is treated as thread-local). Such a call
// breaks the capture. From another thread during a thread-local capture they go ahead: the other
// thread's own work runs (what a GPU does for a device-wide synchronization there is not verified).
cudaError_t refuse_while_capturing(const char* fn) {
  auto& s = st();
  if (!s.capturing) return cudaSuccess;
  if (s.capture_mode != cudaStreamCaptureModeGlobal && std::this_thread::get_id() != s.capture_thread)
    return cudaSuccess;
  return break_capture(cudaErrorStreamCaptureUnsupported,
                       std::string(fn) + " while a stream is capturing (it waits for or changes the device outside "
                                         "the captured work)");
}
// Queues work on a stream, or records it where the stream captures. The legacy stream synchronizes
// with every blocking stream, the capturing one too: not allowed during a capture.
cudaError_t put(cudaStream_t stream, std::function<void()> work, NodeKind kind) {
  auto& s = st();
  if (s.capturing) {
    if (stream == s.capturing) {
      if (s.capture_broken.empty()) {
        s.captured.push_back(std::move(work));
        s.captured_kinds.push_back(kind);
      }
      return cudaSuccess;
    }
    if (stream == nullptr || stream == cudaStreamLegacy)
      return break_capture(cudaErrorStreamCaptureImplicit, "work queued on the legacy default stream, which would "
                                                           "wait for the capturing stream");
  }
  s.queue.push_back(std::move(work));
  ++s.queued;
  return cudaSuccess;
}

// Runs every queued piece of work, in order. A kernel fault makes the error sticky and drops the
// rest (a faulted context runs nothing more).
void flush() {
  auto& s = st();
  while (!s.queue.empty()) {
    auto work = std::move(s.queue.front());
    s.queue.pop_front();
    if (s.sticky == cudaSuccess) work();
  }
}

void set_sticky(cudaError_t e, const std::string& what) {
  auto& s = st();
  if (s.sticky != cudaSuccess) return;
  s.sticky = e;
  s.sticky_what = what;
  std::fprintf(stderr, "emulated CUDA fault (%s): %s\n", cudaGetErrorName(e), what.c_str());
}

// Runs everything queued; the sticky fault, if a kernel left one.
cudaError_t wait_all() {
  flush();
  return st().sticky ? fail(st().sticky) : cudaSuccess;
}

std::string hex(const void* p) {
  char b[32];
  std::snprintf(b, sizeof b, "%p", p);
  return b;
}

}  // namespace

cudaError_t set_max_dynamic_smem(const void* kernel, int bytes) {
  std::lock_guard<std::recursive_mutex> l(st().m);
  if (st().sticky) return fail(st().sticky);
  if (bytes < 0 || bytes > kOptinSmemLimit)
    return fail(cudaErrorInvalidValue, "cudaFuncSetAttribute: MaxDynamicSharedMemorySize " + std::to_string(bytes) +
                                           " bytes is above the sm_90 limit of " + std::to_string(kOptinSmemLimit));
  st().max_dynamic_smem[kernel] = bytes;
  return cudaSuccess;
}

void set_compute_capability(int cc) {
  std::lock_guard<std::recursive_mutex> l(st().m);
  st().cc = cc;
}
void set_kernel_arch(int sass, int ptx) {
  std::lock_guard<std::recursive_mutex> l(st().m);
  st().kernel_sass = sass;
  st().kernel_ptx = ptx;
}
cudaError_t func_attributes(cudaFuncAttributes* a, const void* kernel) {
  auto& s = st();
  std::lock_guard<std::recursive_mutex> l(s.m);
  if (s.sticky) return fail(s.sticky);
  if (!a || !kernel) return fail(cudaErrorInvalidValue);
  *a = cudaFuncAttributes{};
  // machine code runs on devices of its major version that are not older; PTX on any device not older
  if (s.kernel_sass && s.kernel_sass / 10 == s.cc / 10 && s.kernel_sass <= s.cc) {
    a->binaryVersion = a->ptxVersion = s.kernel_sass;
  } else if (s.kernel_ptx && s.kernel_ptx <= s.cc) {
    a->binaryVersion = s.cc;
    a->ptxVersion = s.kernel_ptx;
  } else {
    return fail(cudaErrorNoKernelImageForDevice,
                "cudaFuncGetAttributes: no code for compute capability " + std::to_string(s.cc / 10) + "." +
                    std::to_string(s.cc % 10) + " (kernels built for sm_" + std::to_string(s.kernel_sass) +
                    " and compute_" + std::to_string(s.kernel_ptx) + ")");
  }
  a->maxThreadsPerBlock = 1024;
  auto it = s.max_dynamic_smem.find(kernel);
  a->maxDynamicSharedSizeBytes = it == s.max_dynamic_smem.end() ? kStaticSmemLimit : it->second;
  return cudaSuccess;
}

void submit(const LaunchRequest& r, std::shared_ptr<const Kernel> k) {
  auto& s = st();
  std::lock_guard<std::recursive_mutex> l(s.m);
  if (s.sticky) {
    fail(s.sticky);
    return;
  }
  const dim3 b = r.block, g = r.grid;
  const uint64_t threads = uint64_t(b.x) * b.y * b.z;
  auto bad = [&](cudaError_t e, const std::string& why) { fail(e, std::string("launch of ") + r.name + ": " + why); };
  if (!b.x || !b.y || !b.z || b.x > 1024 || b.y > 1024 || b.z > 64 || threads > 1024)
    return bad(cudaErrorInvalidConfiguration, "block (" + std::to_string(b.x) + "," + std::to_string(b.y) + "," +
                                                  std::to_string(b.z) + ") exceeds the limits (x, y <= 1024, z <= 64, " +
                                                  "at most 1024 threads)");
  if (!g.x || !g.y || !g.z || g.x > 2147483647u || g.y > 65535 || g.z > 65535)
    return bad(cudaErrorInvalidConfiguration, "grid (" + std::to_string(g.x) + "," + std::to_string(g.y) + "," +
                                                  std::to_string(g.z) + ") exceeds the limits (x < 2^31, y, z <= 65535)");
  if (r.smem > size_t(kStaticSmemLimit)) {
    auto it = s.max_dynamic_smem.find(r.fn);
    const int allowed = it == s.max_dynamic_smem.end() ? kStaticSmemLimit : std::max(it->second, kStaticSmemLimit);
    if (r.smem > size_t(allowed))
      return bad(cudaErrorInvalidValue, std::to_string(r.smem) + " bytes of dynamic shared memory, but the kernel's " +
                                            "limit is " + std::to_string(allowed) +
                                            " (above 48 KB, raise it first with cudaFuncSetAttribute)");
  }
  if (!valid_stream(r.stream)) return bad(cudaErrorInvalidResourceHandle, "not a live stream");
  std::string bad_pointer;
  for (auto [i, p] : r.pointers)
    if (p && !device_visible(p) && bad_pointer.empty())
      bad_pointer = std::string("kernel ") + r.name + ": argument " + std::to_string(i) + " is " + hex(p) +
                    ", which is not device (or pinned host) memory; on a GPU the kernel faults when it uses it";
  auto job = std::make_shared<GridJob>();
  job->name = r.name;
  job->kernel = std::move(k);
  job->grid = g;
  job->block = b;
  job->smem = r.smem;
  put(
      r.stream,
      [job, bad_pointer] {
        if (!bad_pointer.empty()) return set_sticky(cudaErrorIllegalAddress, bad_pointer);
        job->faulted = false;  // a graph runs the same grid again
        run_grid(*job);
        if (job->faulted) set_sticky(job->fault_code, job->fault);
      },
      NodeKind::kernel);
}

}  // namespace emu

using emu::fail;
using emu::st;

#define EMU_API_BEGIN                               \
  auto& s = st();                                   \
  std::lock_guard<std::recursive_mutex> lock_(s.m); \
  if (s.sticky) return fail(s.sticky)

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return fail(cudaErrorInvalidValue);
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  EMU_API_BEGIN;
  if (device != 0) return fail(cudaErrorInvalidDevice, "cudaSetDevice: the emulation has one device, 0");
  s.device = device;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  EMU_API_BEGIN;
  if (!device) return fail(cudaErrorInvalidValue);
  *device = s.device;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  EMU_API_BEGIN;
  if (!value) return fail(cudaErrorInvalidValue);
  if (device != 0) return fail(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = emu::kStaticSmemLimit; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = emu::env_int("SHORTCUT_EMU_SMS", emu::kSms); break;
    case cudaDevAttrComputeCapabilityMajor: *value = s.cc / 10; break;
    case cudaDevAttrComputeCapabilityMinor: *value = s.cc % 10; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = emu::kOptinSmemLimit; break;
    default: return fail(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() {
  EMU_API_BEGIN;
  if (auto e = emu::refuse_while_capturing("cudaDeviceSynchronize")) return e;
  return emu::wait_all();
}
cudaError_t cudaGetLastError() {
  auto& s = st();
  std::lock_guard<std::recursive_mutex> l(s.m);
  const cudaError_t e = emu::tl_last;
  emu::tl_last = cudaSuccess;
  return s.sticky ? s.sticky : e;
}
cudaError_t cudaPeekAtLastError() {
  auto& s = st();
  std::lock_guard<std::recursive_mutex> l(s.m);
  return s.sticky ? s.sticky : emu::tl_last;
}

const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
#define EMU_NAME(x) \
  case x: return #x;
    EMU_NAME(cudaSuccess)
    EMU_NAME(cudaErrorInvalidValue)
    EMU_NAME(cudaErrorMemoryAllocation)
    EMU_NAME(cudaErrorInitializationError)
    EMU_NAME(cudaErrorInvalidConfiguration)
    EMU_NAME(cudaErrorInvalidDevicePointer)
    EMU_NAME(cudaErrorInvalidMemcpyDirection)
    EMU_NAME(cudaErrorInvalidDeviceFunction)
    EMU_NAME(cudaErrorNoDevice)
    EMU_NAME(cudaErrorNoKernelImageForDevice)
    EMU_NAME(cudaErrorInvalidDevice)
    EMU_NAME(cudaErrorInvalidResourceHandle)
    EMU_NAME(cudaErrorNotReady)
    EMU_NAME(cudaErrorIllegalAddress)
    EMU_NAME(cudaErrorLaunchOutOfResources)
    EMU_NAME(cudaErrorLaunchTimeout)
    EMU_NAME(cudaErrorAssert)
    EMU_NAME(cudaErrorHardwareStackError)
    EMU_NAME(cudaErrorIllegalInstruction)
    EMU_NAME(cudaErrorMisalignedAddress)
    EMU_NAME(cudaErrorInvalidAddressSpace)
    EMU_NAME(cudaErrorInvalidPc)
    EMU_NAME(cudaErrorLaunchFailure)
    EMU_NAME(cudaErrorIllegalState)
    EMU_NAME(cudaErrorStreamCaptureUnsupported)
    EMU_NAME(cudaErrorStreamCaptureInvalidated)
    EMU_NAME(cudaErrorStreamCaptureUnmatched)
    EMU_NAME(cudaErrorStreamCaptureImplicit)
    EMU_NAME(cudaErrorStreamCaptureWrongThread)
    EMU_NAME(cudaErrorGraphExecUpdateFailure)
#undef EMU_NAME
  }
  return "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorNoKernelImageForDevice: return "no kernel image is available for execution on the device";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorIllegalInstruction: return "an illegal instruction was encountered";
    case cudaErrorAssert: return "device-side assert triggered";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureWrongThread:
      return "attempt to terminate a thread-local capture sequence from another thread";
    case cudaErrorGraphExecUpdateFailure:
      return "the graph update was not performed because it included changes which violated constraints "
             "specific to instantiated graph update";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit:
      return "operation would make the legacy stream depend on a capturing blocking stream";
    default: return cudaGetErrorName(e);
  }
}

// ---- memory ------------------------------------------------------------------------------------
static cudaError_t allocate(void** p, size_t bytes, cudaMemoryType type) {
  EMU_API_BEGIN;
  if (!p) return fail(cudaErrorInvalidValue);
  if (auto e = emu::refuse_while_capturing(type == cudaMemoryTypeDevice ? "cudaMalloc" : "cudaMallocHost")) return e;
  *p = nullptr;
  if (!bytes) return cudaSuccess;
  if (type == cudaMemoryTypeDevice && (bytes > s.device_limit || s.device_bytes + bytes > s.device_limit))
    return fail(cudaErrorMemoryAllocation);
  void* q = nullptr;
  if (posix_memalign(&q, 256, bytes) != 0) return fail(cudaErrorMemoryAllocation);
  std::memset(q, 0xFF, bytes);  // never-written device memory reads as NaN
  s.allocs[reinterpret_cast<uintptr_t>(q)] = emu::Alloc{bytes, type};
  if (type == cudaMemoryTypeDevice) s.device_bytes += bytes;
  *p = q;
  return cudaSuccess;
}
static cudaError_t release(void* p, cudaMemoryType type, const char* fn) {
  EMU_API_BEGIN;
  if (!p) return cudaSuccess;
  if (auto e = emu::refuse_while_capturing(fn)) return e;
  emu::flush();  // freeing waits for the device, as cudaFree does
  auto it = s.allocs.find(reinterpret_cast<uintptr_t>(p));
  if (it == s.allocs.end() || it->second.type != type)
    return fail(cudaErrorInvalidValue, std::string(fn) + "(" + emu::hex(p) + "): not the start of a live " +
                                           (type == cudaMemoryTypeDevice ? "device" : "pinned host") + " allocation");
  std::memset(p, 0xFF, it->second.bytes);
  if (type == cudaMemoryTypeDevice) s.device_bytes -= it->second.bytes;
  s.allocs.erase(it);
  std::free(p);
  return s.sticky ? fail(s.sticky) : cudaSuccess;
}
cudaError_t cudaMalloc(void** p, size_t bytes) { return allocate(p, bytes, cudaMemoryTypeDevice); }
cudaError_t cudaMallocHost(void** p, size_t bytes) { return allocate(p, bytes, cudaMemoryTypeHost); }
cudaError_t cudaFree(void* p) { return release(p, cudaMemoryTypeDevice, "cudaFree"); }
cudaError_t cudaFreeHost(void* p) { return release(p, cudaMemoryTypeHost, "cudaFreeHost"); }
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  EMU_API_BEGIN;
  if (!free_bytes || !total_bytes) return fail(cudaErrorInvalidValue);
  *total_bytes = s.device_limit;
  *free_bytes = s.device_limit - s.device_bytes;
  return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void* p) {
  EMU_API_BEGIN;
  if (!a) return fail(cudaErrorInvalidValue);
  const emu::Alloc* al = emu::find(p, 0);
  a->type = al ? al->type : cudaMemoryTypeUnregistered;
  a->device = al ? 0 : -2;
  a->devicePointer = al ? const_cast<void*>(p) : nullptr;
  a->hostPointer = al && al->type == cudaMemoryTypeHost ? const_cast<void*>(p) : nullptr;
  return cudaSuccess;
}

namespace {
// Checks a copy's direction against where its pointers lie (with unified addressing the driver
// knows), and that device ranges lie inside one allocation.
cudaError_t check_copy(const char* fn, void* dst, const void* src, size_t bytes, cudaMemcpyKind& kind) {
  using emu::is_device;
  const bool dd = is_device(dst, bytes), sd = is_device(src, bytes);
  if (kind == cudaMemcpyDefault)
    kind = dd ? (sd ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
              : (sd ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  const bool want_dd = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool want_sd = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDefault) return fail(cudaErrorInvalidMemcpyDirection);
  if (want_dd != dd || want_sd != sd) {
    auto where = [&](const void* p, bool dev) {
      if (dev) return std::string("device memory");
      const char* kind = !emu::find(p, 0) ? "host memory" : emu::is_pinned(p, 0) ? "pinned host memory"
                                                                                  : "a range past its device allocation";
      return std::string(kind) + " at " + emu::hex(p);
    };
    return fail(cudaErrorInvalidValue, std::string(fn) + " of " + std::to_string(bytes) + " bytes: the kind says " +
                                           (want_sd ? "device" : "host") + " to " + (want_dd ? "device" : "host") +
                                           ", but the source is " + where(src, sd) + " and the destination " +
                                           where(dst, dd));
  }
  return cudaSuccess;
}
}  // namespace

cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t stream) {
  EMU_API_BEGIN;
  if (!bytes) return cudaSuccess;
  if (!dst || !src) return fail(cudaErrorInvalidValue, "cudaMemcpyAsync with a null pointer");
  if (!emu::valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (auto e = check_copy("cudaMemcpyAsync", dst, src, bytes, kind)) return e;
  const bool pageable = (kind == cudaMemcpyHostToDevice && !emu::is_pinned(src, bytes)) ||
                        ((kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyHostToHost) && !emu::is_pinned(dst, bytes));
  // on the capturing stream (or from the capturing thread): a graph cannot hold it; another thread's
  // copy on its own stream during a thread-local capture goes ahead
  const bool capturing_here = s.capturing && (stream == s.capturing || s.capture_mode == cudaStreamCaptureModeGlobal ||
                                              std::this_thread::get_id() == s.capture_thread);
  if (pageable && capturing_here)
    return emu::break_capture(cudaErrorStreamCaptureUnsupported,
                              "cudaMemcpyAsync with pageable host memory while a stream is capturing (a replay of the "
                              "graph would read or write host memory the caller has reused since)");
  if (kind == cudaMemcpyHostToDevice && !emu::is_pinned(src, bytes)) {
    // pageable source: staged now, so the caller may reuse it at once; lands when the stream runs
    auto staged = std::make_shared<std::vector<unsigned char>>(static_cast<const unsigned char*>(src),
                                                               static_cast<const unsigned char*>(src) + bytes);
    return emu::put(stream, [dst, staged] { std::memcpy(dst, staged->data(), staged->size()); }, emu::NodeKind::memcpy);
  }
  if ((kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyHostToHost) && !emu::is_pinned(dst, bytes)) {
    // pageable destination: returns once the copy is done, which waits for the stream's earlier work
    ++s.queued;
    emu::flush();
    if (s.sticky) return fail(s.sticky);
    std::memmove(dst, src, bytes);
    return cudaSuccess;
  }
  // device to device, and pinned host memory: the copy happens when the stream gets to it
  return emu::put(stream, [dst, src, bytes] { std::memmove(dst, src, bytes); }, emu::NodeKind::memcpy);
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  EMU_API_BEGIN;
  if (auto e = emu::refuse_while_capturing("cudaMemcpy")) return e;
  if (auto e = cudaMemcpyAsync(dst, src, bytes, kind, nullptr)) return e;
  return emu::wait_all();
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t stream) {
  EMU_API_BEGIN;
  if (!bytes) return cudaSuccess;
  if (!emu::valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (!emu::is_device(p, bytes))
    return fail(cudaErrorInvalidValue, "cudaMemsetAsync of " + std::to_string(bytes) + " bytes at " + emu::hex(p) +
                                           ": not inside one device allocation");
  return emu::put(stream, [p, value, bytes] { std::memset(p, value, bytes); }, emu::NodeKind::memset);
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  EMU_API_BEGIN;
  if (auto e = emu::refuse_while_capturing("cudaMemset")) return e;
  if (auto e = cudaMemsetAsync(p, value, bytes, nullptr)) return e;
  return emu::wait_all();
}

// ---- streams and events ------------------------------------------------------------------------
namespace emu {
struct Stream {};
struct Event {
  bool recorded = false, done = false;
  std::chrono::steady_clock::time_point at;
};
}  // namespace emu

cudaError_t cudaStreamCreate(cudaStream_t* out) {
  EMU_API_BEGIN;
  if (!out) return fail(cudaErrorInvalidValue);
  *out = new emu::Stream;
  s.streams.insert(*out);
  return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  EMU_API_BEGIN;
  if (!s.streams.count(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (auto e = emu::refuse_while_capturing("cudaStreamDestroy")) return e;
  emu::flush();  // its queued work still runs
  s.streams.erase(stream);
  delete stream;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  EMU_API_BEGIN;
  if (!emu::valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
  if (s.capturing && stream == s.capturing)  // whichever thread asks: its work is being recorded, not run
    return emu::break_capture(cudaErrorStreamCaptureUnsupported, "cudaStreamSynchronize of the capturing stream");
  if (auto e = emu::refuse_while_capturing("cudaStreamSynchronize")) return e;
  return emu::wait_all();
}
cudaError_t cudaEventCreate(cudaEvent_t* out) {
  EMU_API_BEGIN;
  if (!out) return fail(cudaErrorInvalidValue);
  *out = new emu::Event;
  s.events.insert(*out);
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  EMU_API_BEGIN;
  if (!s.events.count(e)) return fail(cudaErrorInvalidResourceHandle);
  if (auto r = emu::refuse_while_capturing("cudaEventDestroy")) return r;
  emu::flush();
  s.events.erase(e);
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t stream) {
  EMU_API_BEGIN;
  if (!s.events.count(e) || !emu::valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
  e->recorded = true;
  e->done = false;
  return emu::put(
      stream,
      [e] {
        e->at = std::chrono::steady_clock::now();
        e->done = true;
      },
      emu::NodeKind::event);
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  EMU_API_BEGIN;
  if (!s.events.count(e)) return fail(cudaErrorInvalidResourceHandle);
  if (auto r = emu::refuse_while_capturing("cudaEventSynchronize")) return r;
  return emu::wait_all();
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  EMU_API_BEGIN;
  if (!ms || !s.events.count(a) || !s.events.count(b)) return fail(cudaErrorInvalidResourceHandle);
  if (!a->recorded || !b->recorded) return fail(cudaErrorInvalidResourceHandle);
  if (!a->done || !b->done) return fail(cudaErrorNotReady);
  *ms = std::chrono::duration<float, std::milli>(b->at - a->at).count();
  return cudaSuccess;
}

// ---- stream capture and graphs -------------------------------------------------------------------
namespace emu {
struct Graph {
  std::vector<std::function<void()>> work;
  std::vector<NodeKind> kinds;
};
struct GraphExec {
  std::shared_ptr<const std::vector<std::function<void()>>> work;
  std::vector<NodeKind> kinds;
};
std::set<const Graph*>& graphs() {
  static auto* g = new std::set<const Graph*>;
  return *g;
}
std::set<const GraphExec*>& execs() {
  static auto* g = new std::set<const GraphExec*>;
  return *g;
}
}  // namespace emu

cudaError_t cudaStreamBeginCapture(cudaStream_t stream, cudaStreamCaptureMode mode) {
  EMU_API_BEGIN;
  if (!s.streams.count(stream))
    return fail(cudaErrorInvalidValue, "cudaStreamBeginCapture: only a created stream can capture (not the legacy "
                                       "or per-thread default stream)");
  if (mode != cudaStreamCaptureModeGlobal && mode != cudaStreamCaptureModeThreadLocal &&
      mode != cudaStreamCaptureModeRelaxed)
    return fail(cudaErrorInvalidValue);
  if (s.capturing)
    return fail(cudaErrorIllegalState, "cudaStreamBeginCapture: a stream is capturing already (the emulation "
                                        "captures one stream at a time)");
  s.capturing = stream;
  s.capture_thread = std::this_thread::get_id();
  s.capture_mode = mode;
  s.captured.clear();
  s.captured_kinds.clear();
  s.capture_broken.clear();
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t stream, cudaGraph_t* graph) {
  EMU_API_BEGIN;
  if (!graph) return fail(cudaErrorInvalidValue);
  *graph = nullptr;
  if (!s.capturing || s.capturing != stream)
    return fail(cudaErrorStreamCaptureUnmatched, "cudaStreamEndCapture: the stream is not capturing");
  if (std::this_thread::get_id() != s.capture_thread)
    return fail(cudaErrorStreamCaptureWrongThread, "cudaStreamEndCapture: not the thread that began the capture");
  s.capturing = nullptr;
  auto work = std::move(s.captured);
  auto kinds = std::move(s.captured_kinds);
  s.captured.clear();
  s.captured_kinds.clear();
  if (!s.capture_broken.empty()) {
    const std::string why = std::move(s.capture_broken);
    s.capture_broken.clear();
    return fail(cudaErrorStreamCaptureInvalidated, "cudaStreamEndCapture: the capture was invalidated by " + why);
  }
  *graph = new emu::Graph{std::move(work), std::move(kinds)};
  emu::graphs().insert(*graph);
  return cudaSuccess;
}
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status) {
  EMU_API_BEGIN;
  if (!status || !emu::valid_stream(stream)) return fail(cudaErrorInvalidValue);
  *status = s.capturing != stream ? cudaStreamCaptureStatusNone
            : s.capture_broken.empty() ? cudaStreamCaptureStatusActive
                                       : cudaStreamCaptureStatusInvalidated;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  EMU_API_BEGIN;
  if (!exec || !emu::graphs().count(graph)) return fail(cudaErrorInvalidValue);
  *exec = new emu::GraphExec{std::make_shared<const std::vector<std::function<void()>>>(graph->work), graph->kinds};
  emu::execs().insert(*exec);
  ++emu::instantiations();
  return cudaSuccess;
}
// A stream-captured graph is a chain, so its topology is its node count and each node's kind (a
// kernel's function may change, as CUDA 12 allows; a memcpy's or memset's parameters may change).
// Where both match, the executable graph takes the new graph's parameters (all of its work: the
// emulation's nodes are closures of their parameters); launches already queued keep the old ones.
cudaError_t cudaGraphExecUpdate(cudaGraphExec_t exec, cudaGraph_t graph, cudaGraphExecUpdateResultInfo* info) {
  EMU_API_BEGIN;
  if (!emu::execs().count(exec) || !emu::graphs().count(graph)) return fail(cudaErrorInvalidValue);
  cudaGraphExecUpdateResult r = cudaGraphExecUpdateSuccess;
  if (exec->kinds.size() != graph->kinds.size())
    r = cudaGraphExecUpdateErrorTopologyChanged;
  else if (exec->kinds != graph->kinds)
    r = cudaGraphExecUpdateErrorNodeTypeChanged;
  if (info) *info = cudaGraphExecUpdateResultInfo{r, nullptr, nullptr};
  if (r != cudaGraphExecUpdateSuccess)
    return fail(cudaErrorGraphExecUpdateFailure);  // not sticky; the executable graph is unchanged
  exec->work = std::make_shared<const std::vector<std::function<void()>>>(graph->work);
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  EMU_API_BEGIN;
  if (!emu::execs().count(exec)) return fail(cudaErrorInvalidResourceHandle);
  if (!emu::valid_stream(stream)) return fail(cudaErrorInvalidResourceHandle);
  // the graph's work runs in the order it was captured; a kernel fault stops it, as it stops a stream
  return emu::put(
      stream,
      [work = exec->work, &s] {
        for (const auto& w : *work)
          if (s.sticky == cudaSuccess) w();
      },
      emu::NodeKind::graph);
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  EMU_API_BEGIN;
  if (!emu::execs().erase(exec)) return fail(cudaErrorInvalidValue);
  delete exec;  // a launch still queued holds its own reference to the work
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  EMU_API_BEGIN;
  if (!emu::graphs().erase(graph)) return fail(cudaErrorInvalidValue);
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaGraphGetNodes(cudaGraph_t graph, void* nodes, size_t* count) {
  EMU_API_BEGIN;
  if (!count || nodes || !emu::graphs().count(graph)) return fail(cudaErrorInvalidValue);
  *count = graph->work.size();
  return cudaSuccess;
}

namespace emu {
// For cuBLAS (cublas.cpp): queue (or capture) work on a stream / check device ranges.
cudaError_t enqueue(cudaStream_t stream, std::function<void()> work) {
  std::lock_guard<std::recursive_mutex> l(st().m);
  return put(stream, std::move(work), NodeKind::kernel);  // a library call: kernels on a GPU
}
uint64_t& instantiations() {
  static uint64_t n = 0;  // under the API lock
  return n;
}
uint64_t graph_instantiations() {
  std::lock_guard<std::recursive_mutex> l(st().m);
  return instantiations();
}
bool device_range(const void* p, size_t bytes) {
  std::lock_guard<std::recursive_mutex> l(st().m);
  return is_device(p, bytes);
}
void fault(cudaError_t e, const std::string& what) {
  std::lock_guard<std::recursive_mutex> l(st().m);
  set_sticky(e, what);
}
uint64_t queued_work() {
  std::lock_guard<std::recursive_mutex> l(st().m);
  return st().queued;
}
std::string sticky_fault() {
  std::lock_guard<std::recursive_mutex> l(st().m);
  return st().sticky ? st().sticky_what : std::string();
}
}  // namespace emu
