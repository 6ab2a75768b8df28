// Unfused GPU references for kernels_bench.cu: the same ops as shortcut::cuda::Backend, written the
// textbook way, as a framework without fusion would run them: cuBLAS for every product and one
// simple one-purpose kernel per elementwise step or reduction, with every intermediate (the T x T
// attention matrices, LayerNorm's x-hat, gate * y, ...) written to and read back from device memory.
// The benchmark times them against the fused kernels of kernels/*.cuh; tests/gpu/
// unfused_reference_test.cu checks them against the CPU backend, so that the comparison is against
// something correct.
//
// Conventions: fp32 storage and arithmetic (products with CUBLAS_COMPUTE_32F, no TF32). Every
// function takes the op's arguments in the order and with the meaning of the cuda::Backend op of the
// same name (read include/shortcut/cpu/backend.hpp for the contracts), preceded by the stream (and
// the cuBLAS handle, which must be bound to that stream) and followed by a device workspace of at
// least the size the matching *_workspace() function returns, so that nothing is allocated while
// timing. Everything is queued on the stream; nothing waits.
//
// Linear layer: kernels/matmul.cuh is already unfused (cuBLAS GEMM without a bias epilogue, then a
// broadcast bias-add kernel; the backward's bias gradient is a separate column-sum kernel), so no
// second copy is written here: the benchmark compares linear against the CPU backend only.
#pragma once
#include <cublas_v2.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/optimizer.cuh"
#include "shortcut/core/param_layout.hpp"

namespace shortcut::bench::unfused {

using kernels::blocks_for;
using kernels::launch;
using kernels::global_thread;
using kernels::grid_threads;
using kernels::kThreads;
using kernels::warp_sum;

inline constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Blocks for one warp per row.
inline unsigned warp_row_blocks(size_t rows) { return unsigned((rows + kWarps - 1) / kWarps); }

// ==== one-purpose kernels (templates only so that the header can be included from several TUs) ====

// ---- elementwise ----
// out = a * b
template <class T>
__global__ void mul_kernel(T* out, const T* a, const T* b, size_t n) {
  for (size_t i = global_thread(); i < n; i += grid_threads()) out[i] = a[i] * b[i];
}
// y += x
template <class T>
__global__ void add_kernel(T* y, const T* x, size_t n) {
  for (size_t i = global_thread(); i < n; i += grid_threads()) y[i] = y[i] + x[i];
}
// y = a y + b x
template <class T>
__global__ void axpby_kernel(T* y, float a, float b, const T* x, size_t n) {
  for (size_t i = global_thread(); i < n; i += grid_threads()) y[i] = a * y[i] + b * x[i];
}
// out[r, :] = x[r, :] + a[r] v[r, :]  for out, x, v [rows, n]
template <class T>
__global__ void row_axpy_kernel(T* out, const T* x, const T* a, const T* v, size_t total, int n) {
  for (size_t i = global_thread(); i < total; i += grid_threads()) out[i] = x[i] + a[i / n] * v[i];
}
// x = clamp(x, -c, c) with std::clamp's NaN rule (as kernels::clampf)
template <class T>
__global__ void clamp_kernel(T* x, float c, size_t n) {
  for (size_t i = global_thread(); i < n; i += grid_threads()) x[i] = kernels::clampf(x[i], -c, c);
}
// out = vu + w (vc - vu)
template <class T>
__global__ void cfg_combine_kernel(T* out, const T* vc, const T* vu, float w, size_t n) {
  for (size_t i = global_thread(); i < n; i += grid_threads()) out[i] = vu[i] + w * (vc[i] - vu[i]);
}
// out[b, t, j] = m[b * mod_stride + j] * a[b, t, j]   (a per-sample row broadcast over tokens)
template <class T>
__global__ void mul_rows_kernel(T* out, const T* m, const T* a, int mod_stride, int Tn, int D, size_t total) {
  for (size_t i = global_thread(); i < total; i += grid_threads()) {
    const size_t r = i / D, j = i % D;
    out[i] = m[(r / Tn) * mod_stride + j] * a[i];
  }
}
// out[b, t, j] = xhat (1 + scale[b, j]) + shift[b, j]   (adaLN modulate)
template <class T>
__global__ void modulate_kernel(T* out, const T* xhat, const T* shift, const T* scale, int mod_stride, int Tn, int D,
                                size_t total) {
  for (size_t i = global_thread(); i < total; i += grid_threads()) {
    const size_t r = i / D, j = i % D, m = (r / Tn) * mod_stride + j;
    out[i] = xhat[i] * (1.f + scale[m]) + shift[m];
  }
}
// out[b, t, j] = g (1 + scale[b, j])   (the modulate's gradient w.r.t. xhat)
template <class T>
__global__ void modulate_grad_kernel(T* out, const T* g, const T* scale, int mod_stride, int Tn, int D, size_t total) {
  for (size_t i = global_thread(); i < total; i += grid_threads()) {
    const size_t r = i / D, j = i % D;
    out[i] = g[i] * (1.f + scale[(r / Tn) * mod_stride + j]);
  }
}
// xhat = (x - mean[r]) rstd[r]
template <class T>
__global__ void normalize_kernel(T* xhat, const T* x, const float* mean, const float* rstd, int D, size_t total) {
  for (size_t i = global_thread(); i < total; i += grid_threads()) {
    const size_t r = i / D;
    xhat[i] = (x[i] - mean[r]) * rstd[r];
  }
}
// dx += rstd[r] (dxhat - s1[r] - xhat s2[r])   (LayerNorm backward, given the row means s1, s2)
template <class T>
__global__ void layernorm_dx_kernel(T* dx, const T* dxhat, const T* xhat, const float* rstd, const float* s1,
                                    const float* s2, int D, size_t total) {
  for (size_t i = global_thread(); i < total; i += grid_threads()) {
    const size_t r = i / D;
    dx[i] = dx[i] + rstd[r] * (dxhat[i] - s1[r] - xhat[i] * s2[r]);
  }
}
// S = exp(S - lse[row]) in place, rows of n   (the attention backward's recomputed probabilities)
template <class T>
__global__ void exp_sub_rows_kernel(T* S, const float* lse, size_t total, int n) {
  for (size_t i = global_thread(); i < total; i += grid_threads()) S[i] = expf(S[i] - lse[i / n]);
}
// dP = P (dP - d[row]) in place, rows of n   (softmax backward, given d = rowsum(dO * O))
template <class T>
__global__ void softmax_grad_kernel(T* dP, const T* P, const float* d, size_t total, int n) {
  for (size_t i = global_thread(); i < total; i += grid_threads()) dP[i] = P[i] * (dP[i] - d[i / n]);
}

// ---- reductions ----
// One warp per row of S [rows, n]: P = softmax(S) in place, lse[r] = max + log(sum exp(S - max)).
template <class T>
__global__ void softmax_rows_kernel(T* S, float* lse, size_t rows, int n) {
  const int lane = threadIdx.x % 32;
  const size_t r = size_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (r >= rows) return;  // the whole warp leaves together
  T* s = S + r * n;
  float mx = -INFINITY;
  for (int j = lane; j < n; j += 32) mx = fmaxf(mx, s[j]);
  mx = warp_max(mx);
  float sum = 0.f;
  for (int j = lane; j < n; j += 32) sum += expf(s[j] - mx);
  sum = warp_sum(sum);
  const float inv = 1.f / sum;
  for (int j = lane; j < n; j += 32) s[j] = expf(s[j] - mx) * inv;
  if (lane == 0) lse[r] = mx + logf(sum);
}
// One warp per row r of x [rows, D]: mean, rstd (two passes, as the CPU backend) and xhat.
template <class T>
__global__ void layernorm_kernel(T* xhat, float* mean, float* rstd, const T* x, size_t rows, int D, float eps) {
  const int lane = threadIdx.x % 32;
  const size_t r = size_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (r >= rows) return;
  const T* xr = x + r * D;
  float s = 0.f;
  for (int j = lane; j < D; j += 32) s += xr[j];
  const float m = warp_sum(s) / float(D);
  float v = 0.f;
  for (int j = lane; j < D; j += 32) v += (xr[j] - m) * (xr[j] - m);
  const float rs = 1.f / sqrtf(warp_sum(v) / float(D) + eps);
  for (int j = lane; j < D; j += 32) xhat[r * D + j] = (xr[j] - m) * rs;
  if (lane == 0) {
    mean[r] = m;
    rstd[r] = rs;
  }
}
// One warp per row: s1[r] = mean_j dxhat, s2[r] = mean_j dxhat xhat   (LayerNorm backward's row sums)
template <class T>
__global__ void layernorm_row_sums_kernel(float* s1, float* s2, const T* dxhat, const T* xhat, size_t rows, int D) {
  const int lane = threadIdx.x % 32;
  const size_t r = size_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (r >= rows) return;
  float a = 0.f, c = 0.f;
  for (int j = lane; j < D; j += 32) {
    const float g = dxhat[r * D + j];
    a += g;
    c += g * xhat[r * D + j];
  }
  a = warp_sum(a);
  c = warp_sum(c);
  if (lane == 0) {
    s1[r] = a / float(D);
    s2[r] = c / float(D);
  }
}
// One warp per (b, h, i): d[(b H + h) Tn + i] = dO[b, i, h] . O[b, i, h]   (head slices of [B, Tn, H hd])
template <class T>
__global__ void head_row_dot_kernel(float* d, const T* dout, const T* out, size_t rows, int Tn, int H, int hd) {
  const int lane = threadIdx.x % 32;
  const size_t r = size_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (r >= rows) return;
  const size_t i = r % Tn, bh = r / Tn, b = bh / H, h = bh % H;
  const size_t base = (b * Tn + i) * size_t(H) * hd + h * hd;
  float s = 0.f;
  for (int j = lane; j < hd; j += 32) s += dout[base + j] * out[base + j];
  s = warp_sum(s);
  if (lane == 0) d[r] = s;
}
// dst[b * mod_stride + j] += sum_t a[b, t, j]: the reduction over tokens. Grid (column blocks, B);
// a thread owns one column of one sample and walks its tokens (coalesced across the warp).
template <class T>
__global__ void token_sum_add_kernel(T* dst, const T* a, int mod_stride, int Tn, int D) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
  if (j >= D) return;
  const T* p = a + size_t(b) * Tn * D + j;
  float s = 0.f;
  for (int t = 0; t < Tn; ++t) s += p[size_t(t) * D];
  dst[size_t(b) * mod_stride + j] += s;
}

// ==== launch helpers ==============================================================================
inline void token_sum_add(float* dst, const float* a, int mod_stride, int B, int Tn, int D, cudaStream_t s) {
  const dim3 grid(unsigned(kernels::ceil_div(D, kThreads)), unsigned(B));
  launch("token_sum_add_kernel", token_sum_add_kernel<float>, grid, kThreads, 0, s, dst, a, mod_stride, Tn, D);
}

// C = alpha op(A) op(B) + beta C for `batch` column-major matrices at the given strides (full fp32).
inline void gemm_strided(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                         const float* A, int lda, long long sA, const float* B, int ldb, long long sB, float beta,
                         float* C, int ldc, long long sC, int batch) {
  SHORTCUT_CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, ta, tb, m, n, k, &alpha, A, CUDA_R_32F, lda, sA, B, CUDA_R_32F,
                                                   ldb, sB, &beta, C, CUDA_R_32F, ldc, sC, batch, CUBLAS_COMPUTE_32F,
                                                   CUBLAS_GEMM_DEFAULT));
}

// ==== attention ====================================================================================
// qkv [B,T,3D] (q | k | v, head h at columns h*hd of each), out [B,T,D], lse [B,H,T], dqkv [B,T,3D].
// Row-major [R,C] is column-major [C,R]; the products are issued per head (H calls), each a batch of
// B matrices: a head's q, k, v of sample b start at qkv + b T 3D + h hd with leading dimension 3D,
// so one stride (T 3D) covers the batch over samples but not over heads. The probabilities live in
// a [B, H, T, T] buffer, (b, h) at (b H + h) T^2, whose row (b, h, i) is lse's entry (b H + h) T + i.

// workspace floats: forward P [B,H,T,T]; backward P and dS [B,H,T,T] each plus rowsum(dO * O) [B,H,T]
inline size_t attention_forward_workspace(int B, int Tn, int H) { return size_t(B) * H * Tn * Tn; }
inline size_t attention_backward_workspace(int B, int Tn, int H) {
  return 2 * size_t(B) * H * Tn * Tn + size_t(B) * H * Tn;
}

// S[b,h] = scale Q K^T  (S^T = K Q^T in column-major terms) for every head, into P
inline void attention_logits(cublasHandle_t cb, float* P, const float* qkv, float scale, int B, int Tn, int H, int hd) {
  const int D = H * hd;
  const long long sx = 3LL * Tn * D, sp = (long long)H * Tn * Tn;
  for (int h = 0; h < H; ++h) {
    const float* q = qkv + size_t(h) * hd;
    gemm_strided(cb, CUBLAS_OP_T, CUBLAS_OP_N, Tn, Tn, hd, scale, q + D, 3 * D, sx, q, 3 * D, sx, 0.f,
                 P + size_t(h) * Tn * Tn, Tn, sp, B);
  }
}

// work: attention_forward_workspace(B, Tn, H) floats
inline void attention_forward(cublasHandle_t cb, cudaStream_t s, float* out, float* lse, const float* qkv, int B,
                              int Tn, int H, int hd, float scale, float* work) {
  if (B <= 0 || Tn <= 0 || H <= 0 || hd <= 0) return;
  const int D = H * hd;
  const size_t rows = size_t(B) * H * Tn;
  attention_logits(cb, work, qkv, scale, B, Tn, H, hd);
  launch("softmax_rows_kernel", softmax_rows_kernel<float>, warp_row_blocks(rows), kThreads, 0, s, work, lse, rows, Tn);
  // O = P V  (O^T = V^T P^T)
  const long long sx = 3LL * Tn * D, sp = (long long)H * Tn * Tn, so = (long long)Tn * D;
  for (int h = 0; h < H; ++h)
    gemm_strided(cb, CUBLAS_OP_N, CUBLAS_OP_N, hd, Tn, Tn, 1.f, qkv + 2 * D + size_t(h) * hd, 3 * D, sx,
                 work + size_t(h) * Tn * Tn, Tn, sp, 0.f, out + size_t(h) * hd, D, so, B);
}

// dqkv overwritten. work: attention_backward_workspace(B, Tn, H) floats. P is recomputed from lse (the
// backend's contract passes lse, not P): S = scale Q K^T, P = exp(S - lse); then dV = P^T dO,
// dP = dO V^T, d = rowsum(dO * O), dS = P (dP - d), dQ = scale dS K, dK = scale dS^T Q.
inline void attention_backward(cublasHandle_t cb, cudaStream_t s, float* dqkv, const float* dout, const float* qkv,
                               const float* out, const float* lse, int B, int Tn, int H, int hd, float scale,
                               float* work) {
  if (B <= 0 || Tn <= 0 || H <= 0 || hd <= 0) return;
  const int D = H * hd;
  const size_t rows = size_t(B) * H * Tn, total = rows * Tn;
  float* P = work;
  float* dS = work + total;
  float* d = dS + total;
  const long long sx = 3LL * Tn * D, sp = (long long)H * Tn * Tn, so = (long long)Tn * D;
  attention_logits(cb, P, qkv, scale, B, Tn, H, hd);
  launch("exp_sub_rows_kernel", exp_sub_rows_kernel<float>, blocks_for(total), kThreads, 0, s, P, lse, total, Tn);
  for (int h = 0; h < H; ++h) {  // dV = P^T dO  (dV^T = dO^T P)
    const size_t c = size_t(h) * hd;
    gemm_strided(cb, CUBLAS_OP_N, CUBLAS_OP_T, hd, Tn, Tn, 1.f, dout + c, D, so, P + size_t(h) * Tn * Tn, Tn, sp, 0.f,
                 dqkv + 2 * D + c, 3 * D, sx, B);
  }
  for (int h = 0; h < H; ++h) {  // dP = dO V^T  (dP^T = V dO^T)
    const size_t c = size_t(h) * hd;
    gemm_strided(cb, CUBLAS_OP_T, CUBLAS_OP_N, Tn, Tn, hd, 1.f, qkv + 2 * D + c, 3 * D, sx, dout + c, D, so, 0.f,
                 dS + size_t(h) * Tn * Tn, Tn, sp, B);
  }
  launch("head_row_dot_kernel", head_row_dot_kernel<float>, warp_row_blocks(rows), kThreads, 0, s, d, dout, out, rows, Tn, H, hd);
  launch("softmax_grad_kernel", softmax_grad_kernel<float>, blocks_for(total), kThreads, 0, s, dS, P, d, total, Tn);
  for (int h = 0; h < H; ++h) {  // dQ = scale dS K  (dQ^T = scale K^T dS^T)
    const size_t c = size_t(h) * hd;
    gemm_strided(cb, CUBLAS_OP_N, CUBLAS_OP_N, hd, Tn, Tn, scale, qkv + D + c, 3 * D, sx, dS + size_t(h) * Tn * Tn, Tn,
                 sp, 0.f, dqkv + c, 3 * D, sx, B);
  }
  for (int h = 0; h < H; ++h) {  // dK = scale dS^T Q  (dK^T = scale Q^T dS)
    const size_t c = size_t(h) * hd;
    gemm_strided(cb, CUBLAS_OP_N, CUBLAS_OP_T, hd, Tn, Tn, scale, qkv + c, 3 * D, sx, dS + size_t(h) * Tn * Tn, Tn, sp,
                 0.f, dqkv + D + c, 3 * D, sx, B);
  }
}

// ==== LayerNorm + adaLN modulate, gated residual ======================================================
// x, out [B,T,D]; mean, rstd [B*T]; shift/scale/gate: row b at ptr + b * mod_stride.

// workspace floats: forward xhat [B,T,D]; backward xhat and one [B,T,D] temporary, two [B*T] row sums
inline size_t ln_modulate_forward_workspace(int B, int Tn, int D) { return size_t(B) * Tn * D; }
inline size_t ln_modulate_backward_workspace(int B, int Tn, int D) {
  return 2 * size_t(B) * Tn * D + 2 * size_t(B) * Tn;
}

// xhat = LayerNorm(x) to device memory, then out = xhat (1 + scale) + shift: two kernels
inline void ln_modulate_forward(cudaStream_t s, float* out, float* mean, float* rstd, const float* x,
                                const float* shift, const float* scale, int mod_stride, int B, int Tn, int D,
                                float eps, float* work) {
  const size_t rows = size_t(B) * Tn, total = rows * D;
  if (!total) return;
  launch("layernorm_kernel", layernorm_kernel<float>, warp_row_blocks(rows), kThreads, 0, s, work, mean, rstd, x, rows, D, eps);
  launch("modulate_kernel", modulate_kernel<float>, blocks_for(total), kThreads, 0, s, out, work, shift, scale, mod_stride, Tn, D, total);
}

// dx += d/dx; dshift += sum_t dout; dscale += sum_t dout xhat. Seven kernels: xhat recomputed from
// (mean, rstd), dshift's token sum, dout * xhat and its token sum, dxhat = dout (1 + scale), the
// two row means of LayerNorm's backward, and the dx update.
inline void ln_modulate_backward(cudaStream_t s, float* dx, float* dshift, float* dscale, const float* dout,
                                 const float* x, const float* mean, const float* rstd, const float* scale,
                                 int mod_stride, int B, int Tn, int D, float* work) {
  const size_t rows = size_t(B) * Tn, total = rows * D;
  if (!total) return;
  float* xhat = work;
  float* tmp = work + total;
  float* s1 = tmp + total;
  float* s2 = s1 + rows;
  launch("normalize_kernel", normalize_kernel<float>, blocks_for(total), kThreads, 0, s, xhat, x, mean, rstd, D, total);
  token_sum_add(dshift, dout, mod_stride, B, Tn, D, s);
  launch("mul_kernel", mul_kernel<float>, blocks_for(total), kThreads, 0, s, tmp, dout, xhat, total);
  token_sum_add(dscale, tmp, mod_stride, B, Tn, D, s);
  launch("modulate_grad_kernel", modulate_grad_kernel<float>, blocks_for(total), kThreads, 0, s, tmp, dout, scale, mod_stride, Tn, D, total);
  launch("layernorm_row_sums_kernel", layernorm_row_sums_kernel<float>, warp_row_blocks(rows), kThreads, 0, s, s1, s2, tmp, xhat, rows, D);
  launch("layernorm_dx_kernel", layernorm_dx_kernel<float>, blocks_for(total), kThreads, 0, s, dx, tmp, xhat, rstd, s1, s2, D, total);
}

// workspace floats (forward and backward): one [B,T,D] temporary
inline size_t gated_residual_workspace(int B, int Tn, int D) { return size_t(B) * Tn * D; }

// x += gate y: tmp = gate * y, then x += tmp
inline void gated_residual_forward(cudaStream_t s, float* x, const float* gate, const float* y, int mod_stride, int B,
                                   int Tn, int D, float* work) {
  const size_t total = size_t(B) * Tn * D;
  if (!total) return;
  launch("mul_rows_kernel", mul_rows_kernel<float>, blocks_for(total), kThreads, 0, s, work, gate, y, mod_stride, Tn, D, total);
  launch("add_kernel", add_kernel<float>, blocks_for(total), kThreads, 0, s, x, work, total);
}

// dy = gate dx (overwrite); dgate += sum_t dx y: three kernels (gate * dx, dx * y, token sum)
inline void gated_residual_backward(cudaStream_t s, float* dy, float* dgate, const float* dx, const float* gate,
                                    const float* y, int mod_stride, int B, int Tn, int D, float* work) {
  const size_t total = size_t(B) * Tn * D;
  if (!total) return;
  launch("mul_rows_kernel", mul_rows_kernel<float>, blocks_for(total), kThreads, 0, s, dy, gate, dx, mod_stride, Tn, D, total);
  launch("mul_kernel", mul_kernel<float>, blocks_for(total), kThreads, 0, s, work, dx, y, total);
  token_sum_add(dgate, work, mod_stride, B, Tn, D, s);
}

// ==== bootstrap targets (kernels/targets.cuh) =========================================================
// [rows, n] arrays; the first n_cfg rows are guided (vu is read only for those, so it may be null
// when n_cfg is 0). No workspace: the intermediates live in the outputs.

// v1 = rows < n_cfg ? cfg_combine(vc, vu) : vc; x2 = clamp(x + hd[r] v1): cfg_combine, a copy of the
// unguided rows, the row-scaled axpy and the clamp as separate launches
inline void bootstrap_half_step(cudaStream_t s, float* x2, float* v1, const float* x, const float* vc, const float* vu,
                                int n_cfg, float w, const float* hd, int rows, int n, float clip) {
  const size_t total = size_t(rows) * n, guided = size_t(n_cfg) * n;
  if (!total) return;
  if (guided) {
    launch("cfg_combine_kernel", cfg_combine_kernel<float>, blocks_for(guided), kThreads, 0, s, v1, vc, vu, w, guided);
  }
  if (total > guided)
    SHORTCUT_CUDA_CHECK(cudaMemcpyAsync(v1 + guided, vc + guided, (total - guided) * sizeof(float),
                                        cudaMemcpyDeviceToDevice, s));
  launch("row_axpy_kernel", row_axpy_kernel<float>, blocks_for(total), kThreads, 0, s, x2, x, hd, v1, total, n);
  launch("clamp_kernel", clamp_kernel<float>, blocks_for(total), kThreads, 0, s, x2, clip, total);
}

// target = clamp((v1 + guided(vc, vu)) / 2): cfg_combine (or a copy) into target, target =
// 0.5 target + 0.5 v1, clamp
inline void bootstrap_target(cudaStream_t s, float* target, const float* v1, const float* vc, const float* vu,
                             int n_cfg, float w, int rows, int n, float clip) {
  const size_t total = size_t(rows) * n, guided = size_t(n_cfg) * n;
  if (!total) return;
  if (guided) {
    launch("cfg_combine_kernel", cfg_combine_kernel<float>, blocks_for(guided), kThreads, 0, s, target, vc, vu, w, guided);
  }
  if (total > guided)
    SHORTCUT_CUDA_CHECK(cudaMemcpyAsync(target + guided, vc + guided, (total - guided) * sizeof(float),
                                        cudaMemcpyDeviceToDevice, s));
  launch("axpby_kernel", axpby_kernel<float>, blocks_for(total), kThreads, 0, s, target, 0.5f, 0.5f, v1, total);
  launch("clamp_kernel", clamp_kernel<float>, blocks_for(total), kThreads, 0, s, target, clip, total);
}

// ==== optimizer: one launch per parameter tensor ======================================================
// The per-element math is the fused op's (kernels/optimizer.cuh); what differs is the launch
// pattern: a loop over the tensors of a model's layout (a DiT has about 10 per block), as a
// per-parameter optimizer runs, instead of one launch over the whole flat arena.
struct Span {
  size_t offset, size;
};
// The tensors of a layout, in arena order (the 16-element alignment gaps between them are skipped).
inline std::vector<Span> spans_of(const ParamLayout& layout) {
  std::vector<Span> r;
  for (const auto& p : layout.entries()) r.push_back({p.offset, p.size});
  return r;
}

// The elements inside the spans take the step of cuda::Backend::adamw_step (bias corrections as it
// computes them); the rest of the arrays is not touched.
inline void adamw_step(cudaStream_t s, float* p, const float* g, float* m, float* v, const std::vector<Span>& spans,
                       float lr, float b1, float b2, float eps, float wd, int64_t step) {
  const float c1 = 1.f - std::pow(b1, float(step)), c2 = 1.f - std::pow(b2, float(step));
  for (const Span& t : spans)
    kernels::adamw_step(p + t.offset, g + t.offset, m + t.offset, v + t.offset, t.size, lr, b1, b2, eps, wd, c1, c2, s);
}
inline void ema_update(cudaStream_t s, float* ema, const float* p, float tau, const std::vector<Span>& spans) {
  for (const Span& t : spans) kernels::ema_update(ema + t.offset, p + t.offset, tau, t.size, s);
}

}  // namespace shortcut::bench::unfused
