// What every kernel file shares: the storage-type conversions (every kernel computes in fp32; the
// storage type T is a template parameter so that bf16 activations can follow with fp32 statistics),
// warp reductions, and the launch-size helpers of the grid-stride loops.
//
// Every kernel is a template (on its storage type at least): templates may be defined in headers
// included from several translation units of one program without duplicate symbols.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/launch.cuh"
#include "shortcut/cuda/check.hpp"

namespace shortcut::kernels {

inline constexpr int kThreads = 256;
// Grid-stride loops launch at most this many blocks: several times what any current GPU keeps
// resident, so the cap costs nothing and a loop needs no 64-bit grid.
inline constexpr size_t kMaxBlocks = 4096;

inline unsigned blocks_for(size_t n, int threads = kThreads) {
  size_t b = (n + threads - 1) / threads;
  return static_cast<unsigned>(b < 1 ? 1 : (b > kMaxBlocks ? kMaxBlocks : b));
}
inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

// The index type of a grid-stride loop that divides its index (row = i / n, column = i % n): on the
// GPU a 64-bit division is a long software routine, which can make a memory-bound kernel ALU-bound,
// so such loops run on 32-bit indices whenever the extent (plus one grid's stride, so that the
// counter cannot wrap) fits. by_index_width(total, f) calls f(uint32_t{}) or f(uint64_t{}).
inline constexpr size_t kIndex32Max = 0xffffffffu - kMaxBlocks * 1024;
template <class F>
void by_index_width(size_t total, F&& f) {
  if (total <= kIndex32Max) f(uint32_t{});
  else f(uint64_t{});
}

// ---- storage <-> fp32 --------------------------------------------------------------------------
template <class T>
__device__ __forceinline__ float to_f32(T x) {
  return static_cast<float>(x);
}
template <>
__device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <class T>
__device__ __forceinline__ T from_f32(float x) {
  return static_cast<T>(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}

// ---- vector access: packs of N elements read or written by one instruction -----------------------
// Memory-bound kernels move 16 bytes per access where every pointer allows it (one 128-bit load
// instead of four 32-bit ones: fewer instructions and memory transactions in flight per byte), and
// fall back to scalars for a misaligned pointer and for the tail. The address must be a multiple of
// the pack's size: the emulation faults otherwise (cudaErrorMisalignedAddress), as a GPU does.
template <class T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};
template <class T>
inline constexpr int kPack16 = int(16 / sizeof(T));  // elements in 16 bytes

template <int N, class T>
__host__ __device__ __forceinline__ bool pack_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % (sizeof(T) * N) == 0;
}
template <int N, class T>
__device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
  static_assert(sizeof(Pack<T, N>) == 8 || sizeof(Pack<T, N>) == 16, "packs are 8 or 16 bytes");
  Pack<T, N> r;
#if defined(SHORTCUT_CUDA_EMULATION)
  if (!pack_aligned<N>(p)) ::emu::misaligned("vector load at an address that is not a multiple of its width");
  std::memcpy(&r, p, sizeof r);
#else
  if constexpr (sizeof(r) == 16) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    memcpy(&r, &u, sizeof r);
  } else {
    const uint2 u = *reinterpret_cast<const uint2*>(p);
    memcpy(&r, &u, sizeof r);
  }
#endif
  return r;
}
template <int N, class T>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& r) {
  static_assert(sizeof(Pack<T, N>) == 8 || sizeof(Pack<T, N>) == 16, "packs are 8 or 16 bytes");
#if defined(SHORTCUT_CUDA_EMULATION)
  if (!pack_aligned<N>(p)) ::emu::misaligned("vector store at an address that is not a multiple of its width");
  std::memcpy(p, &r, sizeof r);
#else
  if constexpr (sizeof(r) == 16) {
    uint4 u;
    memcpy(&u, &r, sizeof r);
    *reinterpret_cast<uint4*>(p) = u;
  } else {
    uint2 u;
    memcpy(&u, &r, sizeof r);
    *reinterpret_cast<uint2*>(p) = u;
  }
#endif
}

// ---- indexing ----------------------------------------------------------------------------------
__device__ __forceinline__ size_t global_thread() { return size_t(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ __forceinline__ size_t grid_threads() { return size_t(gridDim.x) * blockDim.x; }

// out[i] = op(a) with a[j] = in[j][i] in fp32, for i < n over the whole grid: in packs of 16 bytes
// where out and every in[j] are aligned for them, then the tail (or everything) element by element.
// out may be one of the inputs (each element is read before the same thread writes it).
template <int K, class T, class Op>
__device__ __forceinline__ void map_elements(T* out, const T* const (&in)[K], size_t n, Op op) {
  constexpr int V = kPack16<T>;
  bool vec = pack_aligned<V>(out);
#pragma unroll
  for (int j = 0; j < K; ++j) vec = vec && pack_aligned<V>(in[j]);
  const size_t packs = vec ? n / V : 0;
  for (size_t p = global_thread(); p < packs; p += grid_threads()) {
    Pack<T, V> x[K], r;
#pragma unroll
    for (int j = 0; j < K; ++j) x[j] = load_pack<V>(in[j] + p * V);
#pragma unroll
    for (int e = 0; e < V; ++e) {
      float a[K];
#pragma unroll
      for (int j = 0; j < K; ++j) a[j] = to_f32(x[j].v[e]);
      r.v[e] = from_f32<T>(op(a));
    }
    store_pack<V>(out + p * V, r);
  }
  for (size_t i = packs * V + global_thread(); i < n; i += grid_threads()) {
    float a[K];
#pragma unroll
    for (int j = 0; j < K; ++j) a[j] = to_f32(in[j][i]);
    out[i] = from_f32<T>(op(a));
  }
}
// Threads for a loop over n elements in packs of V.
inline unsigned blocks_for_packs(size_t n, int V) { return blocks_for((n + size_t(V) - 1) / size_t(V)); }

// ---- reductions --------------------------------------------------------------------------------
// Sum over the 32 lanes of a warp; every lane gets the result. All lanes must call it.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
// Sum / max over each aligned group of 16 lanes (lanes 0-15 and 16-31 separately).
__device__ __forceinline__ float half_warp_sum(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float half_warp_max(float v) {
#pragma unroll
  for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
// Sum over the block; every thread gets the result. `scratch` holds blockDim.x / 32 floats; the
// block size must be a multiple of 32. Ends with a barrier, so scratch may be reused afterwards.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = blockDim.x / 32;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float t = 0.f;
  for (int w = 0; w < nwarps; ++w) t += scratch[w];
  __syncthreads();
  return t;
}

// Clamp with std::clamp's rule, so that NaN passes through as it does on the CPU backend
// (fminf/fmaxf would turn a NaN into a bound and hide it).
__device__ __forceinline__ float clampf(float v, float lo, float hi) { return v < lo ? lo : (hi < v ? hi : v); }

}  // namespace shortcut::kernels
