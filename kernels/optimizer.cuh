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
__device__ __forceinline__ float adamw_element(float& p, float g, float& m, float& v, float lr, float b1, float b2,
                                              float eps, float wd, float c1, float c2) {
  float pi = p;
  pi -= lr * wd * pi;
  m = b1 * m + (1.f - b1) * g;
  v = b2 * v + (1.f - b2) * g * g;
  p = pi - lr * (m / c1) / (sqrtf(v / c2) + eps);
  return p;
}

// In packs of 4 (16 bytes of fp32, 8 of the bf16 copy) where every pointer allows: arena offsets are
// multiples of 16 elements, so whole weight sets always do.
template <class Unused = void>
__global__ void adamw_step_kernel(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2,
                                  float eps, float wd, float c1, float c2, __nv_bfloat16* copy) {
  constexpr int V = 4;
  const bool vec = pack_aligned<V>(p) && pack_aligned<V>(g) && pack_aligned<V>(m) && pack_aligned<V>(v) &&
                   (!copy || pack_aligned<V>(copy));
  const size_t packs = vec ? n / V : 0;
  for (size_t q = global_thread(); q < packs; q += grid_threads()) {
    const size_t i = q * V;
    Pack<float, V> pp = load_pack<V>(p + i), mm = load_pack<V>(m + i), vv = load_pack<V>(v + i);
    const Pack<float, V> gg = load_pack<V>(g + i);
    Pack<__nv_bfloat16, V> cc;
#pragma unroll
    for (int e = 0; e < V; ++e)
      cc.v[e] = __float2bfloat16(adamw_element(pp.v[e], gg.v[e], mm.v[e], vv.v[e], lr, b1, b2, eps, wd, c1, c2));
    store_pack<V>(p + i, pp);
    store_pack<V>(m + i, mm);
    store_pack<V>(v + i, vv);
    if (copy) store_pack<V>(copy + i, cc);
  }
  for (size_t i = packs * V + global_thread(); i < n; i += grid_threads()) {
    float pi = p[i], mi = m[i], vi = v[i];
    const float pn = adamw_element(pi, g[i], mi, vi, lr, b1, b2, eps, wd, c1, c2);
    m[i] = mi;
    v[i] = vi;
    p[i] = pn;
    if (copy) copy[i] = __float2bfloat16(pn);
  }
}

// ema = tau ema + (1 - tau) p
template <class Unused = void>
__global__ void ema_update_kernel(float* ema, const float* p, float tau, size_t n, __nv_bfloat16* copy) {
  constexpr int V = 4;
  const bool vec = pack_aligned<V>(ema) && pack_aligned<V>(p) && (!copy || pack_aligned<V>(copy));
  const size_t packs = vec ? n / V : 0;
  for (size_t q = global_thread(); q < packs; q += grid_threads()) {
    const size_t i = q * V;
    Pack<float, V> ee = load_pack<V>(ema + i);
    const Pack<float, V> pp = load_pack<V>(p + i);
    Pack<__nv_bfloat16, V> cc;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      ee.v[e] = tau * ee.v[e] + (1.f - tau) * pp.v[e];
      cc.v[e] = __float2bfloat16(ee.v[e]);
    }
    store_pack<V>(ema + i, ee);
    if (copy) store_pack<V>(copy + i, cc);
  }
  for (size_t i = packs * V + global_thread(); i < n; i += grid_threads()) {
    const float e = tau * ema[i] + (1.f - tau) * p[i];
    ema[i] = e;
    if (copy) copy[i] = __float2bfloat16(e);
  }
}

// ---- launchers ---------------------------------------------------------------------------------
inline void adamw_step(float* p, const float* g, float* m, float* v, size_t n, float lr, float b1, float b2, float eps,
                       float wd, float c1, float c2, cudaStream_t s, __nv_bfloat16* copy = nullptr) {
  if (!n) return;
  launch("adamw_step_kernel", adamw_step_kernel<>, blocks_for_packs(n, 4), kThreads, 0, s, p, g, m, v, n, lr, b1, b2,
         eps, wd, c1, c2, copy);
}
inline void ema_update(float* ema, const float* p, float tau, size_t n, cudaStream_t s, __nv_bfloat16* copy = nullptr) {
  if (!n) return;
  launch("ema_update_kernel", ema_update_kernel<>, blocks_for_packs(n, 4), kThreads, 0, s, ema, p, tau, n, copy);
}

}  // namespace shortcut::kernels
