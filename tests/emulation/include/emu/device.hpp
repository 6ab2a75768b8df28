// The device side of the emulation: the built-in indices, __syncthreads, warp collectives, atomics
// and the integer min/max of device code. Everything here runs on a fiber of the emulator
// (src/scheduler.cpp) while a kernel executes.
#pragma once
#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "emu/bf16.hpp"

namespace emu {

struct ThreadState {
  uint3 tid, bid;
  dim3 bdim, gdim;
};
// The CUDA thread running on this host thread (set by the scheduler before it switches to a fiber).
const ThreadState& self();

// Blocks until every thread of the block has arrived (a fault if one exits instead).
void syncthreads();

enum class WarpOp : int { Shfl, ShflUp, ShflDown, ShflXor, Ballot, Any, All, Sync, MmaBf16, LdMatrix };
// One warp collective: waits for every lane of `mask` (which must include the caller and name only
// lanes that exist and take part with the same op and mask), then returns this lane's result.
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width);

// One lane's registers of mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (PTX ISA, "Matrix
// Fragments for mma.m16n8k16 with floating point type"): A 16x16 row-major in 4 registers of two bf16
// (low half first), B 16x8 column-major in 2, C and D 16x8 fp32 in 4. The instruction is a warp
// collective of all 32 lanes; the last lane to arrive computes every lane's D from every lane's
// fragments (src/scheduler.cpp, an implementation of the ISA's layout tables written apart from the
// kernels' loaders, so that a wrong loader shows as a wrong product).
struct MmaBf16Fragments {
  uint32_t a[4];
  uint32_t b[2];
  float c[4];
  float d[4];
};
inline void mma_m16n8k16_bf16(MmaBf16Fragments* f) {
  warp_collective(WarpOp::MmaBf16, 0xffffffffu, reinterpret_cast<uint64_t>(f), 0, 32);
}

// ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{.trans}.shared.b16, a warp collective of all 32 lanes: lane
// 8 m + i gives the address of row i of matrix m (16 bytes, 16-byte aligned, in the block's dynamic
// shared memory); lane 4 r + w receives, of each matrix, row r's elements 2w, 2w + 1 (low half
// first), or with .trans those of column r: rows 2w, 2w + 1 (PTX ISA, "Warp-level matrix load
// instruction: ldmatrix").
struct LdMatrixCall {
  const void* row;
  int num;
  bool trans;
  uint32_t r[4];
};
inline void ldmatrix(LdMatrixCall* c) {
  warp_collective(WarpOp::LdMatrix, 0xffffffffu, reinterpret_cast<uint64_t>(c), 0, 32);
}

// cp.async.cg.shared.global (sm_80), per thread: copy `bytes` (4, 8 or 16; both addresses aligned
// to it) from global memory into the block's dynamic shared memory, reading src_bytes of them and
// zero-filling the rest. The emulation makes the copy as late as the ISA allows — at the
// cp.async.wait_group that retires its group — and fills the destination with NaN (0xFF bytes) when
// the copy is issued, so that a read before the wait (or a missing wait) shows; commit closes the
// thread's current group; wait(n) completes all but the n most recent groups.
void cp_async(void* dst, const void* src, int bytes, int src_bytes);
void cp_async_commit();
void cp_async_wait(int pending);

void* dynamic_smem_ptr();
// A device-side fault (as __trap or a failed device assert): the block stops, the launch's error is
// cudaErrorLaunchFailure / cudaErrorAssert and sticky, and `why` is printed.
[[noreturn]] void trap(const char* why);
// A vector access at an address its width does not divide: on a GPU a misaligned-address fault
// (cudaErrorMisalignedAddress, sticky); the host would tolerate it silently.
[[noreturn]] void misaligned(const char* why);

template <class T>
T* dynamic_shared_memory() {
  return static_cast<T*>(dynamic_smem_ptr());
}

template <class T>
uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp shuffles move values of up to 8 bytes");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <class T>
T from_bits(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}

}  // namespace emu

#define threadIdx (::emu::self().tid)
#define blockIdx (::emu::self().bid)
#define blockDim (::emu::self().bdim)
#define gridDim (::emu::self().gdim)
inline constexpr int warpSize = 32;

inline void __syncthreads() { ::emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { ::emu::warp_collective(::emu::WarpOp::Sync, mask, 0, 0, 32); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
[[noreturn]] inline void __trap() { ::emu::trap("__trap() called"); }

template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return ::emu::from_bits<T>(::emu::warp_collective(::emu::WarpOp::Shfl, mask, ::emu::to_bits(v), src, width));
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::emu::from_bits<T>(::emu::warp_collective(::emu::WarpOp::ShflUp, mask, ::emu::to_bits(v), int(delta), width));
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::emu::from_bits<T>(
      ::emu::warp_collective(::emu::WarpOp::ShflDown, mask, ::emu::to_bits(v), int(delta), width));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::emu::from_bits<T>(::emu::warp_collective(::emu::WarpOp::ShflXor, mask, ::emu::to_bits(v), lane_mask, width));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return unsigned(::emu::warp_collective(::emu::WarpOp::Ballot, mask, pred != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) {
  return int(::emu::warp_collective(::emu::WarpOp::Any, mask, pred != 0, 0, 32));
}
inline int __all_sync(unsigned mask, int pred) {
  return int(::emu::warp_collective(::emu::WarpOp::All, mask, pred != 0, 0, 32));
}

// ---- atomics: real host atomics, since blocks run on several host threads --------------------------
template <class T>
  requires std::is_arithmetic_v<T>
T atomicAdd(T* p, T v) {
  return std::atomic_ref<T>(*p).fetch_add(v);
}
inline __nv_bfloat16 atomicAdd(__nv_bfloat16* p, __nv_bfloat16 v) {
  std::atomic_ref<uint16_t> a(p->bits);
  uint16_t old = a.load();
  for (;;) {
    __nv_bfloat16 o, n;
    o.bits = old;
    n = __float2bfloat16(__bfloat162float(o) + __bfloat162float(v));
    if (a.compare_exchange_weak(old, n.bits)) return o;
  }
}
template <class T>
  requires std::is_integral_v<T>
T atomicMax(T* p, T v) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (old < v && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
template <class T>
  requires std::is_integral_v<T>
T atomicMin(T* p, T v) {
  std::atomic_ref<T> a(*p);
  T old = a.load();
  while (v < old && !a.compare_exchange_weak(old, v)) {
  }
  return old;
}
template <class T>
  requires std::is_integral_v<T>
T atomicCAS(T* p, T expected, T desired) {
  std::atomic_ref<T>(*p).compare_exchange_strong(expected, desired);
  return expected;  // the old value, whether or not it was swapped
}
template <class T>
  requires std::is_arithmetic_v<T>
T atomicExch(T* p, T v) {
  return std::atomic_ref<T>(*p).exchange(v);
}

// ---- the integer and float min/max of device code ----------------------------------------------
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a < b ? b : a; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a < b ? b : a; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a < b ? b : a; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a < b ? b : a; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
