// Elementwise kernels and their launchers: fill, GELU (tanh form) and SiLU forward/backward,
// y += x, y += a x, the row broadcast add (position embedding, linear bias), forward mode's row
// scaling and the classifier-free guidance combination. One grid-stride loop each, fp32 arithmetic
// on storage type T, 16 bytes per access where the pointers allow (map_elements, kernels/common.cuh).
//
// In-place use is allowed wherever the CPU backend allows it (the networks call
// gelu_backward(d, d, x) and silu_backward(s, s, h)): each element is read before it is written by
// the same thread, and no pointer is declared __restrict__.
#pragma once
#include "kernels/common.cuh"

namespace shortcut::kernels {

inline constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
inline constexpr float kGeluA = 0.044715f;
inline constexpr float kGeluA3 = float(3 * 0.044715);  // as the CPU backend rounds it

template <class T>
__global__ void fill_kernel(T* p, T v, size_t n) {
  constexpr int V = kPack16<T>;
  const size_t packs = pack_aligned<V>(p) ? n / V : 0;
  Pack<T, V> r;
#pragma unroll
  for (int e = 0; e < V; ++e) r.v[e] = v;
  for (size_t i = global_thread(); i < packs; i += grid_threads()) store_pack<V>(p + i * V, r);
  for (size_t i = packs * V + global_thread(); i < n; i += grid_threads()) p[i] = v;
}

template <class T>
__global__ void gelu_forward_kernel(T* out, const T* in, size_t n) {
  map_elements<1>(out, {in}, n, [](const float* a) {
    const float x = a[0];
    return 0.5f * x * (1.f + tanhf(kGeluC * (x + kGeluA * x * x * x)));
  });
}

template <class T>
__global__ void gelu_backward_kernel(T* din, const T* dout, const T* in, size_t n) {
  map_elements<2>(din, {dout, in}, n, [](const float* a) {
    const float x = a[1];
    const float th = tanhf(kGeluC * (x + kGeluA * x * x * x));
    const float d = 0.5f * (1.f + th) + 0.5f * x * (1.f - th * th) * kGeluC * (1.f + kGeluA3 * x * x);
    return a[0] * d;
  });
}

template <class T>
__global__ void silu_forward_kernel(T* out, const T* in, size_t n) {
  map_elements<1>(out, {in}, n, [](const float* a) { return a[0] / (1.f + expf(-a[0])); });
}

template <class T>
__global__ void silu_backward_kernel(T* din, const T* dout, const T* in, size_t n) {
  map_elements<2>(din, {dout, in}, n, [](const float* a) {
    const float x = a[1];
    const float s = 1.f / (1.f + expf(-x));
    return a[0] * s * (1.f + x * (1.f - s));
  });
}

// y += a x  (add_inplace is a = 1)
template <class T>
__global__ void axpy_kernel(T* y, float a, const T* x, size_t n) {
  map_elements<2>(y, {y, x}, n, [a](const float* v) { return v[0] + a * v[1]; });
}

template <class T>
__global__ void add_inplace_kernel(T* y, const T* x, size_t n) {
  map_elements<2>(y, {y, x}, n, [](const float* v) { return v[0] + v[1]; });
}

// x[b, j] += row[j] for x [B, R]
template <class I, class T>
__global__ void add_rows_kernel(T* x, const T* row, I total, I R) {
  for (I i = I(global_thread()); i < total; i += I(grid_threads()))
    x[i] = from_f32<T>(to_f32(x[i]) + to_f32(row[i % R]));
}

// x[r, :] *= s[r] for x [rows, n] (forward mode: a per-row factor's tangent)
template <class I, class T>
__global__ void scale_rows_kernel(T* x, const T* s, I total, I n) {
  for (I i = I(global_thread()); i < total; i += I(grid_threads()))
    x[i] = from_f32<T>(to_f32(x[i]) * to_f32(s[i / n]));
}

// out = vu + w (vc - vu)
template <class T>
__global__ void cfg_combine_kernel(T* out, const T* vc, const T* vu, float w, size_t n) {
  map_elements<2>(out, {vc, vu}, n, [w](const float* v) { return v[1] + w * (v[0] - v[1]); });
}

// dst = src in another storage type (fp32 -> bf16 rounds to nearest even; bf16 -> fp32 is exact), in
// packs of 4 (16 bytes of fp32, 8 of bf16) where both pointers allow
template <class D, class S>
__global__ void convert_kernel(D* dst, const S* src, size_t n) {
  constexpr int V = 4;
  const size_t packs = pack_aligned<V>(dst) && pack_aligned<V>(src) ? n / V : 0;
  for (size_t p = global_thread(); p < packs; p += grid_threads()) {
    const Pack<S, V> x = load_pack<V>(src + p * V);
    Pack<D, V> r;
#pragma unroll
    for (int e = 0; e < V; ++e) r.v[e] = from_f32<D>(to_f32(x.v[e]));
    store_pack<V>(dst + p * V, r);
  }
  for (size_t i = packs * V + global_thread(); i < n; i += grid_threads()) dst[i] = from_f32<D>(to_f32(src[i]));
}

// ---- launchers ---------------------------------------------------------------------------------
template <class D, class S>
void convert(D* dst, const S* src, size_t n, cudaStream_t s) {
  if (!n) return;
  launch("convert_kernel", convert_kernel<D, S>, blocks_for_packs(n, 4), kThreads, 0, s, dst, src, n);
}
template <class T>
void fill(T* p, T v, size_t n, cudaStream_t s) {
  if (!n) return;
  launch("fill_kernel", fill_kernel<T>, blocks_for_packs(n, kPack16<T>), kThreads, 0, s, p, v, n);
}
template <class T>
void gelu_forward(T* out, const T* in, size_t n, cudaStream_t s) {
  if (!n) return;
  launch("gelu_forward_kernel", gelu_forward_kernel<T>, blocks_for_packs(n, kPack16<T>), kThreads, 0, s, out, in, n);
}
template <class T>
void gelu_backward(T* din, const T* dout, const T* in, size_t n, cudaStream_t s) {
  if (!n) return;
  launch("gelu_backward_kernel", gelu_backward_kernel<T>, blocks_for_packs(n, kPack16<T>), kThreads, 0, s, din, dout,
         in, n);
}
template <class T>
void silu_forward(T* out, const T* in, size_t n, cudaStream_t s) {
  if (!n) return;
  launch("silu_forward_kernel", silu_forward_kernel<T>, blocks_for_packs(n, kPack16<T>), kThreads, 0, s, out, in, n);
}
template <class T>
void silu_backward(T* din, const T* dout, const T* in, size_t n, cudaStream_t s) {
  if (!n) return;
  launch("silu_backward_kernel", silu_backward_kernel<T>, blocks_for_packs(n, kPack16<T>), kThreads, 0, s, din, dout, in, n);
}
template <class T>
void add_inplace(T* y, const T* x, size_t n, cudaStream_t s) {
  if (!n) return;
  launch("add_inplace_kernel", add_inplace_kernel<T>, blocks_for_packs(n, kPack16<T>), kThreads, 0, s, y, x, n);
}
template <class T>
void axpy(T* y, float a, const T* x, size_t n, cudaStream_t s) {
  if (!n) return;
  launch("axpy_kernel", axpy_kernel<T>, blocks_for_packs(n, kPack16<T>), kThreads, 0, s, y, a, x, n);
}
template <class T>
void add_rows(T* x, const T* row, int B, int R, cudaStream_t s) {
  const size_t total = size_t(B) * size_t(R);
  if (!total) return;
  by_index_width(total, [&](auto i) {
    using I = decltype(i);
    launch("add_rows_kernel", add_rows_kernel<I, T>, blocks_for(total), kThreads, 0, s, x, row, I(total), I(R));
  });
}
template <class T>
void scale_rows(T* x, const T* s, int rows, int n, cudaStream_t st) {
  const size_t total = size_t(rows > 0 ? rows : 0) * size_t(n > 0 ? n : 0);
  if (!total) return;
  by_index_width(total, [&](auto i) {
    using I = decltype(i);
    launch("scale_rows_kernel", scale_rows_kernel<I, T>, blocks_for(total), kThreads, 0, st, x, s, I(total), I(n));
  });
}
template <class T>
void cfg_combine(T* out, const T* vc, const T* vu, float w, size_t n, cudaStream_t s) {
  if (!n) return;
  launch("cfg_combine_kernel", cfg_combine_kernel<T>, blocks_for_packs(n, kPack16<T>), kThreads, 0, s, out, vc, vu, w, n);
}

}  // namespace shortcut::kernels
