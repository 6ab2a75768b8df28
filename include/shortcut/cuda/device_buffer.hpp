// DeviceBuffer<T>: a cudaMalloc'd array that behaves like the std::vector the CPU backend uses as
// its Buffer, as far as the networks rely on it: default-constructible, resize(n) keeping the
// first min(old, n) values and zeroing new ones, data(), size(), deep copy and cheap move.
//
// Ordering: the copies and zero fills here run on the legacy default stream (cudaStreamLegacy named
// explicitly, so that --default-stream per-thread does not change it), which waits for all earlier
// work of the backend's blocking stream and is waited for by all later work; memory is freed only
// after the device is idle. Resizing or copying a buffer is therefore safe at any point between
// ops, and costs a device-wide synchronization, which is why networks size their buffers once per
// batch shape (nn::ensure) rather than per call. A buffer freed while this thread captures a CUDA
// graph (graphs.hpp) is freed once the captured work has run (detail::free_or_defer).
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "shortcut/cuda/check.hpp"

namespace shortcut::cuda {

namespace detail {
// Stream capture on this thread (graphs.hpp, CaptureScope): while it lasts, a freed buffer cannot be
// freed at once (cudaDeviceSynchronize and cudaFree are not allowed during a capture: they would
// fail and the memory would leak), and the graph being captured may still read it. Its memory waits
// in this thread's list until the capture's graph has run (free_deferred).
inline int& capture_depth() {
  thread_local int depth = 0;
  return depth;
}
struct DeferredFree {
  void* p;
  bool pinned;  // cudaFreeHost, not cudaFree
};
inline std::vector<DeferredFree>& deferred_frees() {
  thread_local std::vector<DeferredFree> list;
  return list;
}
struct CaptureScope {
  CaptureScope() { ++capture_depth(); }
  ~CaptureScope() { --capture_depth(); }
  CaptureScope(const CaptureScope&) = delete;
  CaptureScope& operator=(const CaptureScope&) = delete;
};
// Frees what was freed during a capture, after the captured graph has run (it waits for the device).
inline void free_deferred() noexcept {
  auto& list = deferred_frees();
  if (list.empty()) return;
  cudaDeviceSynchronize();  // as release() does: nothing queued on any stream may still use it
  for (const DeferredFree& d : list) d.pinned ? cudaFreeHost(d.p) : cudaFree(d.p);
  list.clear();
}
// Frees p (device or pinned memory) now, or after the capture in progress on this thread.
inline void free_or_defer(void* p, bool pinned) noexcept {
  if (capture_depth() > 0) {
    try {
      deferred_frees().push_back({p, pinned});
      return;
    } catch (...) {  // no host memory for the list: try to free it now (refused, it breaks the capture)
    }
  }
  // Kernels queued on any stream may still read or write the memory: wait for the device before
  // freeing it. An error here is a sticky fault that the next checked call reports.
  cudaDeviceSynchronize();
  pinned ? cudaFreeHost(p) : cudaFree(p);
}
}  // namespace detail

template <class T>
class DeviceBuffer {
 public:
  using value_type = T;

  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) { resize(n); }
  ~DeviceBuffer() { release(); }

  DeviceBuffer(const DeviceBuffer& o) {
    if (!o.n_) return;
    T* p = allocate(o.n_);
    cudaError_t e = cudaMemcpyAsync(p, o.ptr_, o.bytes(), cudaMemcpyDeviceToDevice, cudaStreamLegacy);
    if (e != cudaSuccess) {
      cudaFree(p);
      throw_cuda_error(e, "DeviceBuffer copy", __FILE__, __LINE__);
    }
    ptr_ = p;
    n_ = o.n_;
  }
  DeviceBuffer& operator=(const DeviceBuffer& o) {
    if (this != &o) {
      DeviceBuffer tmp(o);
      swap(tmp);
    }
    return *this;
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }
  void swap(DeviceBuffer& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(n_, o.n_);
  }

  // Keeps the first min(size(), n) elements; new elements are zero (as std::vector's resize).
  void resize(size_t n) {
    if (n == n_) return;
    if (n == 0) {
      release();
      return;
    }
    T* p = allocate(n);
    const size_t keep = n < n_ ? n : n_;
    cudaError_t e = cudaSuccess;
    if (keep) e = cudaMemcpyAsync(p, ptr_, keep * sizeof(T), cudaMemcpyDeviceToDevice, cudaStreamLegacy);
    if (e == cudaSuccess && n > keep) e = cudaMemsetAsync(p + keep, 0, (n - keep) * sizeof(T), cudaStreamLegacy);
    if (e != cudaSuccess) {
      cudaFree(p);
      throw_cuda_error(e, "DeviceBuffer::resize", __FILE__, __LINE__);
    }
    release();
    ptr_ = p;
    n_ = n;
  }
  void clear() { release(); }

  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  size_t bytes() const { return n_ * sizeof(T); }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;

  static T* allocate(size_t n) {
    if (n > SIZE_MAX / sizeof(T))
      throw Error(cat("CUDA out of memory: ", n, " elements of ", sizeof(T), " bytes overflow the address space"));
    void* p = nullptr;
    const size_t bytes = n * sizeof(T);
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // an allocation failure is not sticky: clear it so later checks start clean
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw Error(cat("CUDA out of memory: could not allocate ", bytes, " bytes (", bytes >> 20, " MiB) for ", n,
                      " elements of ", sizeof(T), " bytes; the device has ", free_b >> 20, " MiB free of ",
                      total_b >> 20, " MiB"));
    }
    check_cuda(e, "cudaMalloc", __FILE__, __LINE__);
    return static_cast<T*>(p);
  }
  void release() noexcept {
    if (ptr_) detail::free_or_defer(ptr_, false);
    ptr_ = nullptr;
    n_ = 0;
  }
};

// PinnedBuffer<T>: page-locked host memory (cudaMallocHost), where the device's copy engines read and
// write directly: the staging area of a gradient all-reduce over an MPI that cannot take device
// pointers (dist/reduce_buffer.hpp). resize() does not keep the contents.
template <class T>
class PinnedBuffer {
 public:
  using value_type = T;
  PinnedBuffer() = default;
  ~PinnedBuffer() { release(); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    if (this != &o) {
      release();
      ptr_ = std::exchange(o.ptr_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  void resize(size_t n) {
    if (n == n_) return;
    release();
    if (!n) return;
    if (n > SIZE_MAX / sizeof(T)) throw Error(cat("pinned host memory: ", n, " elements overflow the address space"));
    void* p = nullptr;
    check_cuda(cudaMallocHost(&p, n * sizeof(T)), "cudaMallocHost", __FILE__, __LINE__);
    ptr_ = static_cast<T*>(p);
    n_ = n;
  }
  T* data() { return ptr_; }
  const T* data() const { return ptr_; }
  size_t size() const { return n_; }

 private:
  void release() noexcept {
    if (ptr_) detail::free_or_defer(ptr_, true);  // a copy from or into it may still be queued
    ptr_ = nullptr;
    n_ = 0;
  }
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

}  // namespace shortcut::cuda
