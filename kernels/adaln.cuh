// adaLN kernels and their launchers: LayerNorm (no affine) fused with the modulation
// h = LN(x) (1 + scale) + shift, its backward and its tangent (forward mode), and the gated residual
// x += gate y with its backward.
// Shapes: x, h [B, T, D]; shift/scale/gate are rows of the modulation output, row b at
// ptr + b * mod_stride. Statistics (mean, rstd [B*T]) are fp32 whatever the storage type T.
//
// Forward: one warp per token row, two passes over the row for the mean and the variance (the CPU
// backend's two-pass formula; the second and third reads of the row hit L1). The tangent likewise,
// from the forward's saved statistics.
// Backward: blocks own (sample b, chunk of tokens). A warp per row first reduces the two row sums of
// the LayerNorm backward into shared memory; then each thread owns columns j and walks the chunk's
// rows, writing dx (coalesced across the warp) and summing dshift/dscale (or dgate) for its columns
// in registers. The per-chunk sums are added to the modulation gradient with atomics when a sample
// is split over several chunks (plain adds otherwise), so no shared-memory array of size D exists.
#pragma once
#include "kernels/common.cuh"

namespace shortcut::kernels {

inline constexpr int kAdaWarps = kThreads / 32;
inline constexpr int kAdaMaxRowsPerChunk = 1024;  // bounds the backward's shared memory at 16 KB

// h = (x - mean) rstd (1 + scale[b]) + shift[b]
template <class T>
__global__ void ln_modulate_forward_kernel(T* out, float* mean, float* rstd, const T* x, const T* shift, const T* scale,
                                           int mod_stride, size_t rows, int Tn, int D, float eps) {
  const int lane = threadIdx.x % 32;
  const size_t r = size_t(blockIdx.x) * kAdaWarps + threadIdx.x / 32;
  if (r >= rows) return;  // the whole warp leaves together
  const T* xr = x + r * D;
  float s = 0.f;
  for (int j = lane; j < D; j += 32) s += to_f32(xr[j]);
  const float m = warp_sum(s) / float(D);
  float v = 0.f;
  for (int j = lane; j < D; j += 32) {
    const float d = to_f32(xr[j]) - m;
    v += d * d;
  }
  v = warp_sum(v) / float(D);
  const float rs = 1.f / sqrtf(v + eps);
  if (lane == 0) {
    mean[r] = m;
    rstd[r] = rs;
  }
  const size_t b = r / Tn;
  const T* sh = shift + b * mod_stride;
  const T* sc = scale + b * mod_stride;
  T* o = out + r * D;
  for (int j = lane; j < D; j += 32) o[j] = from_f32<T>((to_f32(xr[j]) - m) * rs * (1.f + to_f32(sc[j])) + to_f32(sh[j]));
}

// The tangent of ln_modulate_forward (forward mode): with n = (x - mean) rstd from the forward's
// statistics, h_dot = rstd (x_dot - mean_j x_dot - n mean_j(n x_dot)) (1 + scale) + n scale_dot
// + shift_dot. One warp per row, as the forward: two row sums, then the row.
template <class T>
__global__ void ln_modulate_tangent_kernel(T* h_dot, const T* x, const T* x_dot, const float* mean, const float* rstd,
                                           const T* scale, const T* shift_dot, const T* scale_dot, int mod_stride,
                                           size_t rows, int Tn, int D) {
  const int lane = threadIdx.x % 32;
  const size_t r = size_t(blockIdx.x) * kAdaWarps + threadIdx.x / 32;
  if (r >= rows) return;  // the whole warp leaves together
  const T* xr = x + r * D;
  const T* xd = x_dot + r * D;
  const float m = mean[r], rs = rstd[r];
  float s1 = 0.f, s2 = 0.f;
  for (int j = lane; j < D; j += 32) {
    const float d = to_f32(xd[j]);
    s1 += d;
    s2 += (to_f32(xr[j]) - m) * rs * d;
  }
  s1 = warp_sum(s1) / float(D);
  s2 = warp_sum(s2) / float(D);
  const size_t b = r / Tn;
  const T* sc = scale + b * mod_stride;
  const T* shd = shift_dot + b * mod_stride;
  const T* scd = scale_dot + b * mod_stride;
  T* o = h_dot + r * D;
  for (int j = lane; j < D; j += 32) {
    const float n = (to_f32(xr[j]) - m) * rs;
    o[j] = from_f32<T>(rs * (to_f32(xd[j]) - s1 - n * s2) * (1.f + to_f32(sc[j])) + n * to_f32(scd[j]) +
                       to_f32(shd[j]));
  }
}

// dx += rstd (dxh - mean_j(dxh) - xhat mean_j(dxh xhat)), dxh = dout (1 + scale);
// dshift[b] += sum_t dout; dscale[b] += sum_t dout xhat. Block = (sample b, token chunk).
template <class T>
__global__ void ln_modulate_backward_kernel(T* dx, T* dshift, T* dscale, const T* dout, const T* x, const float* mean,
                                            const float* rstd, const T* scale, int mod_stride, int Tn, int D,
                                            int chunks, int rows_per_chunk) {
  SHORTCUT_DYNAMIC_SMEM(float, sm);  // [4][rows_per_chunk]: mean, rstd, mean_j(dxh), mean_j(dxh xhat)
  float* s_mean = sm;
  float* s_rstd = sm + rows_per_chunk;
  float* s_a = sm + 2 * rows_per_chunk;
  float* s_b = sm + 3 * rows_per_chunk;
  const int b = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const int t0 = chunk * rows_per_chunk;
  const int nrows = min(rows_per_chunk, Tn - t0);
  const size_t row0 = size_t(b) * Tn + t0;
  const T* sc = scale + size_t(b) * mod_stride;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;

  // phase 1: the two row sums, one warp per row
  for (int i = warp; i < nrows; i += kAdaWarps) {
    const size_t r = row0 + i;
    const float m = mean[r], rs = rstd[r];
    const T* xr = x + r * D;
    const T* g = dout + r * D;
    float a = 0.f, c = 0.f;
    for (int j = lane; j < D; j += 32) {
      const float xh = (to_f32(xr[j]) - m) * rs;
      const float dxh = to_f32(g[j]) * (1.f + to_f32(sc[j]));
      a += dxh;
      c += dxh * xh;
    }
    a = warp_sum(a);
    c = warp_sum(c);
    if (lane == 0) {
      s_mean[i] = m;
      s_rstd[i] = rs;
      s_a[i] = a / float(D);
      s_b[i] = c / float(D);
    }
  }
  __syncthreads();

  // phase 2: columns per thread, rows in order
  T* dsh = dshift + size_t(b) * mod_stride;
  T* dsc = dscale + size_t(b) * mod_stride;
  for (int j = threadIdx.x; j < D; j += blockDim.x) {
    const float scj = 1.f + to_f32(sc[j]);
    float ash = 0.f, asc = 0.f;
    for (int i = 0; i < nrows; ++i) {
      const size_t idx = (row0 + i) * D + j;
      const float rs = s_rstd[i];
      const float xh = (to_f32(x[idx]) - s_mean[i]) * rs;
      const float g = to_f32(dout[idx]);
      dx[idx] = from_f32<T>(to_f32(dx[idx]) + rs * (g * scj - s_a[i] - xh * s_b[i]));
      ash += g;
      asc += g * xh;
    }
    if (chunks > 1) {
      atomicAdd(dsh + j, from_f32<T>(ash));
      atomicAdd(dsc + j, from_f32<T>(asc));
    } else {
      dsh[j] = from_f32<T>(to_f32(dsh[j]) + ash);
      dsc[j] = from_f32<T>(to_f32(dsc[j]) + asc);
    }
  }
}

// x[b, t, :] += gate[b] * y[b, t, :]
template <class I, class T>
__global__ void gated_residual_forward_kernel(T* x, const T* gate, const T* y, int mod_stride, int Tn, int D,
                                              I total) {
  for (I i = I(global_thread()); i < total; i += I(grid_threads())) {
    const I r = i / I(D), j = i % I(D);
    const float g = to_f32(gate[size_t(r / I(Tn)) * mod_stride + j]);
    x[i] = from_f32<T>(to_f32(x[i]) + g * to_f32(y[i]));
  }
}

// dy = gate[b] * dx (overwrite); dgate[b] += sum_t dx * y. Block = (sample b, token chunk).
template <class T>
__global__ void gated_residual_backward_kernel(T* dy, T* dgate, const T* dx, const T* gate, const T* y, int mod_stride,
                                               int Tn, int D, int chunks, int rows_per_chunk) {
  const int b = blockIdx.x / chunks, chunk = blockIdx.x % chunks;
  const int t0 = chunk * rows_per_chunk;
  const int nrows = min(rows_per_chunk, Tn - t0);
  const size_t row0 = size_t(b) * Tn + t0;
  const T* g = gate + size_t(b) * mod_stride;
  T* dg = dgate + size_t(b) * mod_stride;
  for (int j = threadIdx.x; j < D; j += blockDim.x) {
    const float gj = to_f32(g[j]);
    float acc = 0.f;
    for (int i = 0; i < nrows; ++i) {
      const size_t idx = (row0 + i) * D + j;
      const float d = to_f32(dx[idx]);
      acc += d * to_f32(y[idx]);
      dy[idx] = from_f32<T>(gj * d);
    }
    if (chunks > 1) atomicAdd(dg + j, from_f32<T>(acc));
    else dg[j] = from_f32<T>(to_f32(dg[j]) + acc);
  }
}

// Splits each sample's Tn tokens into chunks so that about four blocks per multiprocessor exist.
struct TokenChunks {
  int chunks, rows_per_chunk;
};
inline TokenChunks token_chunks(int B, int Tn, int num_sms) {
  int chunks = ceil_div(4 * num_sms, B);
  chunks = chunks < 1 ? 1 : chunks;
  const int most = ceil_div(Tn, kAdaWarps);  // at least one row per warp in the first phase
  if (chunks > most) chunks = most;
  int rpc = ceil_div(Tn, chunks);
  if (rpc > kAdaMaxRowsPerChunk) rpc = kAdaMaxRowsPerChunk;
  return {ceil_div(Tn, rpc), rpc};
}

// ---- launchers ---------------------------------------------------------------------------------
template <class T>
void ln_modulate_forward(T* out, float* mean, float* rstd, const T* x, const T* shift, const T* scale, int mod_stride,
                         int B, int Tn, int D, float eps, cudaStream_t s) {
  const size_t rows = size_t(B) * Tn;
  if (!rows || D <= 0) return;
  const size_t blocks = (rows + kAdaWarps - 1) / kAdaWarps;
  launch("ln_modulate_forward_kernel", ln_modulate_forward_kernel<T>, unsigned(blocks), kThreads, 0, s, out, mean, rstd, x, shift, scale, mod_stride, rows, Tn, D, eps);
}
template <class T>
void ln_modulate_backward(T* dx, T* dshift, T* dscale, const T* dout, const T* x, const float* mean, const float* rstd,
                          const T* scale, int mod_stride, int B, int Tn, int D, int num_sms, cudaStream_t s) {
  if (B <= 0 || Tn <= 0 || D <= 0) return;
  const TokenChunks c = token_chunks(B, Tn, num_sms);
  const size_t smem = 4 * size_t(c.rows_per_chunk) * sizeof(float);
  launch("ln_modulate_backward_kernel", ln_modulate_backward_kernel<T>, unsigned(size_t(B) * c.chunks), kThreads, smem, s, dx, dshift, dscale, dout, x, mean, rstd, scale, mod_stride, Tn, D, c.chunks, c.rows_per_chunk);
}
template <class T>
void ln_modulate_tangent(T* h_dot, const T* x, const T* x_dot, const float* mean, const float* rstd, const T* scale,
                         const T* shift_dot, const T* scale_dot, int mod_stride, int B, int Tn, int D, cudaStream_t s) {
  const size_t rows = size_t(B > 0 ? B : 0) * size_t(Tn > 0 ? Tn : 0);
  if (!rows || D <= 0) return;
  const size_t blocks = (rows + kAdaWarps - 1) / kAdaWarps;
  launch("ln_modulate_tangent_kernel", ln_modulate_tangent_kernel<T>, unsigned(blocks), kThreads, 0, s, h_dot, x,
         x_dot, mean, rstd, scale, shift_dot, scale_dot, mod_stride, rows, Tn, D);
}
template <class T>
void gated_residual_forward(T* x, const T* gate, const T* y, int mod_stride, int B, int Tn, int D, cudaStream_t s) {
  const size_t total = size_t(B) * Tn * D;
  if (!total) return;
  by_index_width(total, [&](auto i) {
    using I = decltype(i);
    launch("gated_residual_forward_kernel", gated_residual_forward_kernel<I, T>, blocks_for(total), kThreads, 0, s, x,
           gate, y, mod_stride, Tn, D, I(total));
  });
}
template <class T>
void gated_residual_backward(T* dy, T* dgate, const T* dx, const T* gate, const T* y, int mod_stride, int B, int Tn,
                             int D, int num_sms, cudaStream_t s) {
  if (B <= 0 || Tn <= 0 || D <= 0) return;
  const TokenChunks c = token_chunks(B, Tn, num_sms);
  launch("gated_residual_backward_kernel", gated_residual_backward_kernel<T>, unsigned(size_t(B) * c.chunks), kThreads, 0, s, dy, dgate, dx, gate, y, mod_stride, Tn, D, c.chunks, c.rows_per_chunk);
}

}  // namespace shortcut::kernels
