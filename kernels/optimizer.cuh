// The optimizer kernels and their launchers: one AdamW step and one EMA update, each a single launch
// over a whole flat parameter arena (parameters, gradients, moments and EMA weights share one layout,
// see shortcut/core/arena.hpp). Master weights, gradients and moments are fp32 whatever the
// activations' storage type. The formulas are the CPU backend's, term for term. For bf16 products both
// kernels can also write a bf16 copy of what they update in the same pass (`copy`, null for none): the
// weights the products of the next step read, without a separate conversion pass over the arena.
#pragma once
#include "kernels/common.cuh"

namespace shortcut::kernels {

// torch.optim.AdamW: decoupled decay p -= lr wd p, then the bias-corrected Adam step; c1 = 1 - b1^step
// and c2 = 1 - b2^step come from the host (computed there as the CPU backend does). The kernels are
// templates only so that this header can be included from several translation units.
template <class Unused = void>
__global__ void adamw_step_kernel(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2,
                                  float eps, float wd, float c1, float c2, __nv_bfloat16* copy) {
  for (size_t i = global_thread(); i < n; i += grid_threads()) {
    float pi = p[i];
    const float gi = g[i];
    pi -= lr * wd * pi;
    const float mi = b1 * m[i] + (1.f - b1) * gi;
    const float vi = b2 * v[i] + (1.f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float pn = pi - lr * (mi / c1) / (sqrtf(vi / c2) + eps);
    p[i] = pn;
    if (copy) copy[i] = __float2bfloat16(pn);
  }
}

// ema = tau ema + (1 - tau) p
template <class Unused = void>
__global__ void ema_update_kernel(float* ema, const float* p, float tau, size_t n, __nv_bfloat16* copy) {
  for (size_t i = global_thread(); i < n; i += grid_threads()) {
    const float e = tau * ema[i] + (1.f - tau) * p[i];
    ema[i] = e;
    if (copy) copy[i] = __float2bfloat16(e);
  }
}

// ---- launchers ---------------------------------------------------------------------------------
inline void adamw_step(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2, float eps,
                       float wd, float c1, float c2, cudaStream_t s, __nv_bfloat16* copy = nullptr) {
  if (!n) return;
  launch("adamw_step_kernel", adamw_step_kernel<>, blocks_for(n), kThreads, 0, s, p, g, m, v, n, lr, b1, b2, eps, wd, c1, c2,
         copy);
}
inline void ema_update(float* ema, const float* p, float tau, size_t n, cudaStream_t s, __nv_bfloat16* copy = nullptr) {
  if (!n) return;
  launch("ema_update_kernel", ema_update_kernel<>, blocks_for(n), kThreads, 0, s, ema, p, tau, n, copy);
}

}  // namespace shortcut::kernels
