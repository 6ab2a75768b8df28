// DeviceBuffer<T>: a cudaMalloc'd array that behaves like the std::vector the CPU backend uses as
// its Buffer, as far as the networks rely on it: default-constructible, resize(n) keeping the
// first min(old, n) values and zeroing new ones, data(), size(), deep copy and cheap move.
//
// Ordering: the copies and zero fills here run on the legacy default stream (cudaStreamLegacy named
// explicitly, so that --default-stream per-thread does not change it), which waits for all earlier
// work of the backend's blocking stream and is waited for by all later work; memory is freed only
// after the device is idle. Resizing or copying a buffer is therefore safe at any point between
// ops, and costs a device-wide synchronization, which is why networks size their buffers once per
// batch shape (nn::ensure) rather than per call.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "shortcut/cuda/check.hpp"

namespace shortcut::cuda {

// How many DeviceBuffers (and PinnedBuffers) the process has freed so far. Recorded work (a CUDA
// graph, graphs.hpp) holds raw device pointers, and pinned host pointers where it uploads staged
// values (core/staged.hpp): it stays valid while this count stands.
inline std::atomic<uint64_t>& device_buffers_freed() {
  static std::atomic<uint64_t> n{0};
  return n;
}

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
    if (ptr_) {
      // Kernels queued on any stream may still read or write the memory: wait for the device before
      // freeing it. An error here is a sticky fault that the next checked call reports.
      cudaDeviceSynchronize();
      cudaFree(ptr_);
      device_buffers_freed().fetch_add(1, std::memory_order_relaxed);
    }
    ptr_ = nullptr;
    n_ = 0;
  }
};

// PinnedBuffer<T>: page-locked host memory (cudaMallocHost), where the device's copy engines read and
// write directly: the staging area of a gradient all-reduce over an MPI that cannot take device
// pointers, and of the values a recorded training step uploads. resize() does not keep the contents.
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
    if (ptr_) {
      cudaDeviceSynchronize();  // a copy from or into it may still be queued
      cudaFreeHost(ptr_);
      device_buffers_freed().fetch_add(1, std::memory_order_relaxed);
    }
    ptr_ = nullptr;
    n_ = 0;
  }
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

}  // namespace shortcut::cuda
