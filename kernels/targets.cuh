// The training-target kernels of DESIGN.md §1-2 and their launchers: Gaussian noise from the shared
// counter-based generator (shortcut::philox_normal, the very function the CPU backend calls, so both
// backends draw the same numbers), the flow-matching rows, the two bootstrap steps with optional
// guidance and clipping, and the MSE loss with its per-row values and gradient.
#pragma once
#include "kernels/common.cuh"
#include "shortcut/core/rng.hpp"

namespace shortcut::kernels {

// x0[i] = standard normal number first + i of (seed, rng_stream)
template <class T>
__global__ void normal_kernel(T* x0, size_t n, uint64_t seed, uint64_t rng_stream, uint64_t first) {
  for (size_t i = global_thread(); i < n; i += grid_threads())
    x0[i] = from_f32<T>(philox_normal(seed, rng_stream, first + i));
}

// xt = (1 - (1 - 1e-5) t) x0 + t x1; target (if not null) = x1 - (1 - 1e-5) x0   [rows, n]
template <class I, class T>
__global__ void flow_rows_kernel(T* xt, T* target, const T* x1, const T* x0, const T* t, I total, int n) {
  const float a = 1.f - 1e-5f;
  for (I i = I(global_thread()); i < total; i += I(grid_threads())) {
    const float tr = to_f32(t[i / I(n)]), v0 = to_f32(x0[i]), v1 = to_f32(x1[i]);
    xt[i] = from_f32<T>((1.f - a * tr) * v0 + tr * v1);
    if (target) target[i] = from_f32<T>(v1 - a * v0);
  }
}

// v1 = guided velocity (rows < n_cfg: vu + w (vc - vu); others: vc); x2 = clip(x + hd[r] v1)
// (vu is read only for rows < n_cfg, so it may be null when n_cfg is 0)
template <class I, class T>
__global__ void bootstrap_half_step_kernel(T* x2, T* v1, const T* x, const T* vc, const T* vu, int n_cfg, float w,
                                           const T* hd, I total, int n, float clip) {
  for (I i = I(global_thread()); i < total; i += I(grid_threads())) {
    const int r = int(i / I(n));
    const float c = to_f32(vc[i]);
    float v = c;
    if (r < n_cfg) {
      const float u = to_f32(vu[i]);
      v = u + w * (c - u);
    }
    v1[i] = from_f32<T>(v);
    x2[i] = from_f32<T>(clampf(to_f32(x[i]) + to_f32(hd[r]) * v, -clip, clip));
  }
}

// target = clip((v1 + guided(vc, vu)) / 2)
template <class I, class T>
__global__ void bootstrap_target_kernel(T* target, const T* v1, const T* vc, const T* vu, int n_cfg, float w, I total,
                                        int n, float clip) {
  for (I i = I(global_thread()); i < total; i += I(grid_threads())) {
    const int r = int(i / I(n));
    const float c = to_f32(vc[i]);
    float v2 = c;
    if (r < n_cfg) {
      const float u = to_f32(vu[i]);
      v2 = u + w * (c - u);
    }
    target[i] = from_f32<T>(clampf((to_f32(v1[i]) + v2) * 0.5f, -clip, clip));
  }
}

// target = (xp + (1 - tp[r]) v - xt) / (1 - t[r])   (the consistency objectives' target velocity)
template <class I, class T>
__global__ void consistency_target_kernel(T* target, const T* xt, const T* xp, const T* v, const T* t, const T* tp,
                                          I total, int n) {
  for (I i = I(global_thread()); i < total; i += I(grid_threads())) {
    const I r = i / I(n);
    const float end = to_f32(xp[i]) + (1.f - to_f32(tp[r])) * to_f32(v[i]);
    target[i] = from_f32<T>((end - to_f32(xt[i])) / (1.f - to_f32(t[r])));
  }
}

// One block per row: row_loss[r] = mean_j (pred - target)^2 (fp32 sum over the row, a fixed-order
// block reduction, so the loss is deterministic); grad = grad_scale * 2 (pred - target) / n.
template <class T>
__global__ void mse_loss_kernel(T* grad, float* row_loss, const T* pred, const T* target, int n, float grad_scale) {
  __shared__ float scratch[kThreads / 32];
  const size_t base = size_t(blockIdx.x) * n;
  float s = 0.f;
  for (int j = threadIdx.x; j < n; j += blockDim.x) {
    const float e = to_f32(pred[base + j]) - to_f32(target[base + j]);
    s += e * e;
    if (grad) grad[base + j] = from_f32<T>(grad_scale * 2.f * e / float(n));
  }
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) row_loss[blockIdx.x] = s / float(n);
}

// ---- launchers ---------------------------------------------------------------------------------
template <class T>
void normal(T* x0, size_t n, uint64_t seed, uint64_t rng_stream, uint64_t first, cudaStream_t s) {
  if (!n) return;
  launch("normal_kernel", normal_kernel<T>, blocks_for(n), kThreads, 0, s, x0, n, seed, rng_stream, first);
}
template <class T>
void flow_rows(T* xt, T* target, const T* x1, const T* x0, const T* t, int rows, int n, cudaStream_t s) {
  const size_t total = size_t(rows) * n;
  if (!total) return;
  by_index_width(total, [&](auto i) {
    using I = decltype(i);
    launch("flow_rows_kernel", flow_rows_kernel<I, T>, blocks_for(total), kThreads, 0, s, xt, target, x1, x0, t, I(total), n);
  });
}
template <class T>
void bootstrap_half_step(T* x2, T* v1, const T* x, const T* vc, const T* vu, int n_cfg, float w, const T* hd, int rows,
                         int n, float clip, cudaStream_t s) {
  const size_t total = size_t(rows) * n;
  if (!total) return;
  by_index_width(total, [&](auto i) {
    using I = decltype(i);
    launch("bootstrap_half_step_kernel", bootstrap_half_step_kernel<I, T>, blocks_for(total), kThreads, 0, s, x2, v1, x, vc, vu, n_cfg, w, hd, I(total), n, clip);
  });
}
template <class T>
void bootstrap_target(T* target, const T* v1, const T* vc, const T* vu, int n_cfg, float w, int rows, int n, float clip,
                      cudaStream_t s) {
  const size_t total = size_t(rows) * n;
  if (!total) return;
  by_index_width(total, [&](auto i) {
    using I = decltype(i);
    launch("bootstrap_target_kernel", bootstrap_target_kernel<I, T>, blocks_for(total), kThreads, 0, s, target, v1, vc, vu, n_cfg, w, I(total), n, clip);
  });
}
template <class T>
void consistency_target(T* target, const T* xt, const T* xp, const T* v, const T* t, const T* tp, int rows, int n,
                        cudaStream_t s) {
  const size_t total = size_t(rows) * n;
  if (!total) return;
  by_index_width(total, [&](auto i) {
    using I = decltype(i);
    launch("consistency_target_kernel", consistency_target_kernel<I, T>, blocks_for(total), kThreads, 0, s, target, xt, xp, v, t, tp, I(total), n);
  });
}
template <class T>
void mse_loss(T* grad, float* row_loss, const T* pred, const T* target, int rows, int n, float grad_scale,
              cudaStream_t s) {
  if (rows <= 0 || n <= 0) return;
  launch("mse_loss_kernel", mse_loss_kernel<T>, unsigned(rows), kThreads, 0, s, grad, row_loss, pred, target, n, grad_scale);
}

}  // namespace shortcut::kernels
