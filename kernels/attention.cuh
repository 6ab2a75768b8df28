// Fused multi-head attention, forward, backward and tangent (forward mode), flash-attention style on
// fp32 CUDA cores: nothing of size T x T ever reaches device memory. qkv [B,T,3D] (q | k | v, head h
// at columns h*hd of each), out [B,T,D], lse [B,H,T] (the row log-sum-exp of the scaled logits, saved
// by the forward for the backward and the tangent), dqkv [B,T,3D] (overwritten), qkv_dot [B,T,3D]
// and out_dot [B,T,D] (overwritten). Logits are q.k * scale, scale as passed.
//
// Tiling (per block of 256 threads laid out 16 x 16 as (ty, tx)):
//  - forward: a block owns BR query rows of one (b, h); it walks the keys in tiles of BC rows kept in
//    shared memory, computes the BR x BC logits, updates the running row max m and sum l (online
//    softmax: o and l are rescaled by exp(m_old - m_new)), stores the tile's probabilities in shared
//    memory and accumulates o += P V. Thread (ty, tx) owns rows ty + 16 i, logit columns tx + 16 j and
//    output dims tx + 16 j, so a row's max and sum are reductions over the 16 lanes of a half-warp.
//  - backward: a block owns BC keys of one (b, h) and walks the queries in tiles of BR rows; per tile
//    it recomputes P = exp(S - lse), dP = dO V^T and dS = P (dP - D_i) with D_i = dO_i . O_i (computed
//    on the fly from dout and out), accumulates dV += P^T dO and dK += dS^T Q in registers, and adds
//    dQ += dS K into device memory with atomics (its rows are shared by all key blocks; the q part of
//    dqkv is zeroed first by a small kernel).
//  - tangent: the forward's layout with every operand and its tangent side by side; P comes back from
//    lse as in the backward, so one pass over the keys, no rescaling (attention_tangent_kernel).
//  - Shared arrays are stored transposed ([hd][rows + 1]) where the inner loops run over hd, and the
//    +1 padding makes both the transposing stores and the inner-loop loads free of bank conflicts.
//  - Rows past the end of the sequence are loaded as zeros and masked (logit -inf, probability 0),
//    so any T works, T = 1 included.
// Head dims 32, 64, 72 (DiT-XL) and 128 are compiled (AttnTiles below); others raise ShapeError.
// Precision: everything fp32 (logits, exp, sums, accumulators), whatever the storage type T.
#pragma once
#include <cmath>

#include "kernels/common.cuh"

namespace shortcut::kernels {

// Tile sizes per head dim (rows of queries BR and keys BC, multiples of 16): chosen so that the
// shared memory of a block stays under about 100 KB and two or more blocks fit a Hopper SM. The
// tangent (kTan*) holds every operand twice (x and x_dot), hence its smaller key tiles: 83-109 KB.
template <int HD>
struct AttnTiles;
template <>
struct AttnTiles<32> {
  static constexpr int kFwdBR = 64, kFwdBC = 64, kBwdBR = 64, kBwdBC = 64;
  static constexpr int kTanBR = 64, kTanBC = 64;
};
template <>
struct AttnTiles<64> {
  static constexpr int kFwdBR = 64, kFwdBC = 64, kBwdBR = 64, kBwdBC = 64;
  static constexpr int kTanBR = 64, kTanBC = 32;
};
template <>
struct AttnTiles<72> {
  static constexpr int kFwdBR = 64, kFwdBC = 64, kBwdBR = 64, kBwdBC = 64;
  static constexpr int kTanBR = 64, kTanBC = 32;
};
template <>
struct AttnTiles<128> {
  static constexpr int kFwdBR = 64, kFwdBC = 32, kBwdBR = 32, kBwdBC = 32;
  static constexpr int kTanBR = 32, kTanBC = 32;
};

inline bool attention_head_dim_supported(int hd) { return hd == 32 || hd == 64 || hd == 72 || hd == 128; }

template <int HD, int BR, int BC>
inline constexpr size_t kAttnFwdSmemFloats = size_t(HD) * (BR + 1) + size_t(HD) * (BC + 1) + size_t(BC) * HD +
                                             size_t(BR) * (BC + 1);
template <int HD, int BR, int BC>
inline constexpr size_t kAttnBwdSmemFloats = 2 * size_t(HD) * (BC + 1) + 2 * size_t(HD) * (BR + 1) +
                                             size_t(BR) * (BC + 1) + 2 * size_t(BR);
template <int HD, int BR, int BC>
inline constexpr size_t kAttnTanSmemFloats = 2 * size_t(HD) * (BR + 1) + 2 * size_t(HD) * (BC + 1) +
                                             2 * size_t(BC) * HD + 2 * size_t(BR) * (BC + 1) + size_t(BR);

// Whether head dim tx + 16 j exists (a head dim that is not a multiple of 16 leaves the last j partial).
template <int HD>
__device__ __forceinline__ bool attn_dim_ok(int tx, int j) {
  return HD % 16 == 0 || tx + 16 * j < HD;
}

template <int HD, int BR, int BC, class T>
__global__ void __launch_bounds__(kThreads)
    attention_forward_kernel(T* out, float* lse, const T* qkv, int Tn, int H, float scale, int qtiles) {
  static_assert(BR % 16 == 0 && BC % 16 == 0, "tiles are multiples of the 16 x 16 thread grid");
  constexpr int RI = BR / 16, CJ = BC / 16, DJ = (HD + 15) / 16;
  SHORTCUT_DYNAMIC_SMEM(float, smem);
  float* Qt = smem;                // [HD][BR+1]  queries of this block, transposed
  float* Kt = Qt + HD * (BR + 1);  // [HD][BC+1]  current key tile, transposed
  float* Vs = Kt + HD * (BC + 1);  // [BC][HD]    current value tile
  float* Ps = Vs + BC * HD;        // [BR][BC+1]  probabilities of the current tile

  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int qt = blockIdx.x % qtiles, bh = blockIdx.x / qtiles, b = bh / H, h = bh % H;
  const int D = H * HD;
  const size_t ld = 3 * size_t(D);
  const T* qbase = qkv + size_t(b) * Tn * ld + size_t(h) * HD;
  const T* kbase = qbase + D;
  const T* vbase = qbase + 2 * D;
  const int q0 = qt * BR;

  for (int idx = tid; idx < BR * HD; idx += kThreads) {
    const int r = idx / HD, d = idx % HD, q = q0 + r;
    Qt[d * (BR + 1) + r] = q < Tn ? to_f32(qbase[size_t(q) * ld + d]) : 0.f;
  }

  float o[RI][DJ], m[RI], l[RI];
#pragma unroll
  for (int i = 0; i < RI; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int j = 0; j < DJ; ++j) o[i][j] = 0.f;
  }

  for (int k0 = 0; k0 < Tn; k0 += BC) {
    __syncthreads();  // the previous tile's Kt, Vs and Ps are no longer read (and Qt is complete)
    for (int idx = tid; idx < BC * HD; idx += kThreads) {
      const int c = idx / HD, d = idx % HD, k = k0 + c;
      const bool ok = k < Tn;
      Kt[d * (BC + 1) + c] = ok ? to_f32(kbase[size_t(k) * ld + d]) : 0.f;
      Vs[c * HD + d] = ok ? to_f32(vbase[size_t(k) * ld + d]) : 0.f;
    }
    __syncthreads();

    float s[RI][CJ];
#pragma unroll
    for (int i = 0; i < RI; ++i)
#pragma unroll
      for (int j = 0; j < CJ; ++j) s[i][j] = 0.f;
#pragma unroll 8
    for (int d = 0; d < HD; ++d) {
      float a[RI], kb[CJ];
#pragma unroll
      for (int i = 0; i < RI; ++i) a[i] = Qt[d * (BR + 1) + ty + 16 * i];
#pragma unroll
      for (int j = 0; j < CJ; ++j) kb[j] = Kt[d * (BC + 1) + tx + 16 * j];
#pragma unroll
      for (int i = 0; i < RI; ++i)
#pragma unroll
        for (int j = 0; j < CJ; ++j) s[i][j] = fmaf(a[i], kb[j], s[i][j]);
    }

    // online softmax; every row has a valid key in every tile (k0 < Tn), so the new max is finite
#pragma unroll
    for (int i = 0; i < RI; ++i) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < CJ; ++j) {
        s[i][j] = (k0 + tx + 16 * j < Tn) ? s[i][j] * scale : -INFINITY;
        mx = fmaxf(mx, s[i][j]);
      }
      mx = half_warp_max(mx);
      const float mn = fmaxf(m[i], mx);
      const float corr = expf(m[i] - mn);  // 0 on the first tile (m = -inf)
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < CJ; ++j) {
        s[i][j] = expf(s[i][j] - mn);
        sum += s[i][j];
      }
      sum = half_warp_sum(sum);
      l[i] = l[i] * corr + sum;
      m[i] = mn;
#pragma unroll
      for (int j = 0; j < DJ; ++j) o[i][j] *= corr;
#pragma unroll
      for (int j = 0; j < CJ; ++j) Ps[(ty + 16 * i) * (BC + 1) + tx + 16 * j] = s[i][j];
    }
    __syncthreads();

#pragma unroll 4
    for (int c = 0; c < BC; ++c) {
      float vb[DJ];
#pragma unroll
      for (int j = 0; j < DJ; ++j) vb[j] = attn_dim_ok<HD>(tx, j) ? Vs[c * HD + tx + 16 * j] : 0.f;
#pragma unroll
      for (int i = 0; i < RI; ++i) {
        const float p = Ps[(ty + 16 * i) * (BC + 1) + c];
#pragma unroll
        for (int j = 0; j < DJ; ++j) o[i][j] = fmaf(p, vb[j], o[i][j]);
      }
    }
  }

#pragma unroll
  for (int i = 0; i < RI; ++i) {
    const int q = q0 + ty + 16 * i;
    if (q >= Tn) continue;
    const float inv = 1.f / l[i];
    T* orow = out + (size_t(b) * Tn + q) * D + size_t(h) * HD;
#pragma unroll
    for (int j = 0; j < DJ; ++j)
      if (attn_dim_ok<HD>(tx, j)) orow[tx + 16 * j] = from_f32<T>(o[i][j] * inv);
    if (tx == 0) lse[size_t(bh) * Tn + q] = m[i] + logf(l[i]);
  }
}

// dqkv[:, :, 0:D] = 0 before the backward's dQ atomics
template <class I, class T>
__global__ void zero_q_columns_kernel(T* dqkv, I total, int D) {
  for (I i = I(global_thread()); i < total; i += I(grid_threads()))
    dqkv[size_t(i / I(D)) * 3 * D + i % I(D)] = from_f32<T>(0.f);
}

template <int HD, int BR, int BC, class T>
__global__ void __launch_bounds__(kThreads)
    attention_backward_kernel(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse, int Tn, int H,
                              float scale, int ktiles) {
  static_assert(BR % 16 == 0 && BC % 16 == 0, "tiles are multiples of the 16 x 16 thread grid");
  // RI: query rows per thread; CJ: keys per thread as columns of S; CI: keys per thread as rows of dK, dV
  constexpr int RI = BR / 16, CI = BC / 16, CJ = BC / 16, DJ = (HD + 15) / 16, NW = kThreads / 32;
  SHORTCUT_DYNAMIC_SMEM(float, smem);
  float* Kt = smem;                 // [HD][BC+1]  this block's keys, transposed
  float* Vt = Kt + HD * (BC + 1);   // [HD][BC+1]  this block's values, transposed
  float* Qt = Vt + HD * (BC + 1);   // [HD][BR+1]  current query tile, transposed
  float* Gt = Qt + HD * (BR + 1);   // [HD][BR+1]  current dout tile, transposed
  float* Ps = Gt + HD * (BR + 1);   // [BR][BC+1]  P, then dS, of the current tile
  float* s_lse = Ps + BR * (BC + 1);  // [BR]
  float* s_di = s_lse + BR;           // [BR]  D_i = dO_i . O_i

  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16, lane = tid % 32, warp = tid / 32;
  const int kt = blockIdx.x % ktiles, bh = blockIdx.x / ktiles, b = bh / H, h = bh % H;
  const int D = H * HD;
  const size_t ld = 3 * size_t(D);
  const T* qbase = qkv + size_t(b) * Tn * ld + size_t(h) * HD;
  const T* kbase = qbase + D;
  const T* vbase = qbase + 2 * D;
  const T* obase = out + size_t(b) * Tn * D + size_t(h) * HD;
  const T* gbase = dout + size_t(b) * Tn * D + size_t(h) * HD;
  T* dqbase = dqkv + size_t(b) * Tn * ld + size_t(h) * HD;
  const int k0 = kt * BC;

  for (int idx = tid; idx < BC * HD; idx += kThreads) {
    const int c = idx / HD, d = idx % HD, k = k0 + c;
    const bool ok = k < Tn;
    Kt[d * (BC + 1) + c] = ok ? to_f32(kbase[size_t(k) * ld + d]) : 0.f;
    Vt[d * (BC + 1) + c] = ok ? to_f32(vbase[size_t(k) * ld + d]) : 0.f;
  }

  float dk[CI][DJ], dv[CI][DJ];
#pragma unroll
  for (int i = 0; i < CI; ++i)
#pragma unroll
    for (int j = 0; j < DJ; ++j) dk[i][j] = dv[i][j] = 0.f;

  for (int q0 = 0; q0 < Tn; q0 += BR) {
    __syncthreads();  // the previous tile's Qt, Gt and Ps are no longer read (and Kt, Vt are complete)
    for (int idx = tid; idx < BR * HD; idx += kThreads) {
      const int r = idx / HD, d = idx % HD, q = q0 + r;
      const bool ok = q < Tn;
      Qt[d * (BR + 1) + r] = ok ? to_f32(qbase[size_t(q) * ld + d]) : 0.f;
      Gt[d * (BR + 1) + r] = ok ? to_f32(gbase[size_t(q) * D + d]) : 0.f;
    }
    for (int r = warp; r < BR; r += NW) {  // one warp per row; q < Tn is the same for the whole warp
      const int q = q0 + r;
      float acc = 0.f;
      if (q < Tn)
        for (int d = lane; d < HD; d += 32) acc += to_f32(gbase[size_t(q) * D + d]) * to_f32(obase[size_t(q) * D + d]);
      acc = warp_sum(acc);
      if (lane == 0) {
        s_di[r] = acc;
        s_lse[r] = q < Tn ? lse[size_t(bh) * Tn + q] : 0.f;
      }
    }
    __syncthreads();

    // S = Q K^T and dP = dO V^T for this thread's (rows ty + 16 i, keys tx + 16 j)
    float p[RI][CJ], dp[RI][CJ];
#pragma unroll
    for (int i = 0; i < RI; ++i)
#pragma unroll
      for (int j = 0; j < CJ; ++j) p[i][j] = dp[i][j] = 0.f;
#pragma unroll 8
    for (int d = 0; d < HD; ++d) {
      float a[RI], g[RI], kb[CJ], vb[CJ];
#pragma unroll
      for (int i = 0; i < RI; ++i) {
        a[i] = Qt[d * (BR + 1) + ty + 16 * i];
        g[i] = Gt[d * (BR + 1) + ty + 16 * i];
      }
#pragma unroll
      for (int j = 0; j < CJ; ++j) {
        kb[j] = Kt[d * (BC + 1) + tx + 16 * j];
        vb[j] = Vt[d * (BC + 1) + tx + 16 * j];
      }
#pragma unroll
      for (int i = 0; i < RI; ++i)
#pragma unroll
        for (int j = 0; j < CJ; ++j) {
          p[i][j] = fmaf(a[i], kb[j], p[i][j]);
          dp[i][j] = fmaf(g[i], vb[j], dp[i][j]);
        }
    }
    // P = exp(S scale - lse) (0 outside the sequence), dS = P (dP - D_i)
#pragma unroll
    for (int i = 0; i < RI; ++i) {
      const int r = ty + 16 * i;
      const bool row_ok = q0 + r < Tn;
#pragma unroll
      for (int j = 0; j < CJ; ++j) {
        const bool ok = row_ok && k0 + tx + 16 * j < Tn;
        p[i][j] = ok ? expf(p[i][j] * scale - s_lse[r]) : 0.f;
        dp[i][j] = p[i][j] * (dp[i][j] - s_di[r]);
        Ps[r * (BC + 1) + tx + 16 * j] = p[i][j];
      }
    }
    __syncthreads();

    // dV += P^T dO for this thread's (keys ty + 16 i, dims tx + 16 j)
#pragma unroll 4
    for (int r = 0; r < BR; ++r) {
      float pc[CI], gd[DJ];
#pragma unroll
      for (int i = 0; i < CI; ++i) pc[i] = Ps[r * (BC + 1) + ty + 16 * i];
#pragma unroll
      for (int j = 0; j < DJ; ++j) gd[j] = attn_dim_ok<HD>(tx, j) ? Gt[(tx + 16 * j) * (BR + 1) + r] : 0.f;
#pragma unroll
      for (int i = 0; i < CI; ++i)
#pragma unroll
        for (int j = 0; j < DJ; ++j) dv[i][j] = fmaf(pc[i], gd[j], dv[i][j]);
    }
    __syncthreads();  // P is read by all; now replace it with dS
#pragma unroll
    for (int i = 0; i < RI; ++i)
#pragma unroll
      for (int j = 0; j < CJ; ++j) Ps[(ty + 16 * i) * (BC + 1) + tx + 16 * j] = dp[i][j];
    __syncthreads();

    // dK += dS^T Q for (keys ty + 16 i, dims tx + 16 j)
#pragma unroll 4
    for (int r = 0; r < BR; ++r) {
      float dsc[CI], qd[DJ];
#pragma unroll
      for (int i = 0; i < CI; ++i) dsc[i] = Ps[r * (BC + 1) + ty + 16 * i];
#pragma unroll
      for (int j = 0; j < DJ; ++j) qd[j] = attn_dim_ok<HD>(tx, j) ? Qt[(tx + 16 * j) * (BR + 1) + r] : 0.f;
#pragma unroll
      for (int i = 0; i < CI; ++i)
#pragma unroll
        for (int j = 0; j < DJ; ++j) dk[i][j] = fmaf(dsc[i], qd[j], dk[i][j]);
    }

    // dQ += scale dS K for (queries ty + 16 i, dims tx + 16 j), added into device memory
    float dq[RI][DJ];
#pragma unroll
    for (int i = 0; i < RI; ++i)
#pragma unroll
      for (int j = 0; j < DJ; ++j) dq[i][j] = 0.f;
#pragma unroll 4
    for (int c = 0; c < BC; ++c) {
      float kd[DJ];
#pragma unroll
      for (int j = 0; j < DJ; ++j) kd[j] = attn_dim_ok<HD>(tx, j) ? Kt[(tx + 16 * j) * (BC + 1) + c] : 0.f;
#pragma unroll
      for (int i = 0; i < RI; ++i) {
        const float a = Ps[(ty + 16 * i) * (BC + 1) + c];
#pragma unroll
        for (int j = 0; j < DJ; ++j) dq[i][j] = fmaf(a, kd[j], dq[i][j]);
      }
    }
#pragma unroll
    for (int i = 0; i < RI; ++i) {
      const int q = q0 + ty + 16 * i;
      if (q >= Tn) continue;
#pragma unroll
      for (int j = 0; j < DJ; ++j)
        if (attn_dim_ok<HD>(tx, j)) atomicAdd(dqbase + size_t(q) * ld + tx + 16 * j, from_f32<T>(scale * dq[i][j]));
    }
  }

#pragma unroll
  for (int i = 0; i < CI; ++i) {
    const int k = k0 + ty + 16 * i;
    if (k >= Tn) continue;
    T* dkrow = dqbase + size_t(k) * ld + D;
    T* dvrow = dkrow + D;
#pragma unroll
    for (int j = 0; j < DJ; ++j)
      if (attn_dim_ok<HD>(tx, j)) {
        dkrow[tx + 16 * j] = from_f32<T>(scale * dk[i][j]);
        dvrow[tx + 16 * j] = from_f32<T>(dv[i][j]);
      }
  }
}

// The tangent of the forward (forward mode, DESIGN.md section 8): out_dot = P V_dot + (P o S_dot) V
// - rowsum(P o S_dot) o O with S_dot = scale (Q_dot K^T + Q K_dot^T). The forward's layout: a block
// owns BR queries of one (b, h) and walks the keys once; P comes back from the forward's lse (no
// online softmax, no rescaling), S and S_dot are one pass over the head dim, P and P o S_dot go
// through shared memory into one accumulator, and the row sums of P o S_dot stay in registers until
// the end, where O is read once per row.
template <int HD, int BR, int BC, class T>
__global__ void __launch_bounds__(kThreads)
    attention_tangent_kernel(T* out_dot, const T* qkv, const T* qkv_dot, const T* out, const float* lse, int Tn,
                             int H, float scale, int qtiles) {
  static_assert(BR % 16 == 0 && BC % 16 == 0, "tiles are multiples of the 16 x 16 thread grid");
  constexpr int RI = BR / 16, CJ = BC / 16, DJ = (HD + 15) / 16;
  SHORTCUT_DYNAMIC_SMEM(float, smem);
  float* Qt = smem;                  // [HD][BR+1]  queries of this block, transposed
  float* Qdt = Qt + HD * (BR + 1);   // [HD][BR+1]  their tangents
  float* Kt = Qdt + HD * (BR + 1);   // [HD][BC+1]  current key tile, transposed
  float* Kdt = Kt + HD * (BC + 1);   // [HD][BC+1]  its tangents
  float* Vs = Kdt + HD * (BC + 1);   // [BC][HD]    current value tile
  float* Vds = Vs + BC * HD;         // [BC][HD]    its tangents
  float* Ps = Vds + BC * HD;         // [BR][BC+1]  P of the current tile
  float* PSs = Ps + BR * (BC + 1);   // [BR][BC+1]  P o S_dot of the current tile
  float* s_lse = PSs + BR * (BC + 1);  // [BR]

  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  const int qt = blockIdx.x % qtiles, bh = blockIdx.x / qtiles, b = bh / H, h = bh % H;
  const int D = H * HD;
  const size_t ld = 3 * size_t(D);
  const size_t head = size_t(b) * Tn * ld + size_t(h) * HD;
  const T* qbase = qkv + head;
  const T* qdbase = qkv_dot + head;
  const int q0 = qt * BR;

  for (int idx = tid; idx < BR * HD; idx += kThreads) {
    const int r = idx / HD, d = idx % HD, q = q0 + r;
    const bool ok = q < Tn;
    Qt[d * (BR + 1) + r] = ok ? to_f32(qbase[size_t(q) * ld + d]) : 0.f;
    Qdt[d * (BR + 1) + r] = ok ? to_f32(qdbase[size_t(q) * ld + d]) : 0.f;
  }
  for (int r = tid; r < BR; r += kThreads) s_lse[r] = q0 + r < Tn ? lse[size_t(bh) * Tn + q0 + r] : 0.f;

  float o[RI][DJ], rsum[RI];
#pragma unroll
  for (int i = 0; i < RI; ++i) {
    rsum[i] = 0.f;
#pragma unroll
    for (int j = 0; j < DJ; ++j) o[i][j] = 0.f;
  }

  for (int k0 = 0; k0 < Tn; k0 += BC) {
    __syncthreads();  // the previous tile's K, V and P arrays are no longer read (and Qt, Qdt are complete)
    for (int idx = tid; idx < BC * HD; idx += kThreads) {
      const int c = idx / HD, d = idx % HD, k = k0 + c;
      const bool ok = k < Tn;
      const size_t at = size_t(k) * ld + d;
      Kt[d * (BC + 1) + c] = ok ? to_f32(qbase[at + D]) : 0.f;
      Kdt[d * (BC + 1) + c] = ok ? to_f32(qdbase[at + D]) : 0.f;
      Vs[c * HD + d] = ok ? to_f32(qbase[at + 2 * D]) : 0.f;
      Vds[c * HD + d] = ok ? to_f32(qdbase[at + 2 * D]) : 0.f;
    }
    __syncthreads();

    // S = Q K^T and S_dot / scale = Q_dot K^T + Q K_dot^T for (rows ty + 16 i, keys tx + 16 j)
    float s[RI][CJ], sd[RI][CJ];
#pragma unroll
    for (int i = 0; i < RI; ++i)
#pragma unroll
      for (int j = 0; j < CJ; ++j) s[i][j] = sd[i][j] = 0.f;
#pragma unroll 4
    for (int d = 0; d < HD; ++d) {
      float a[RI], ad[RI], kb[CJ], kdb[CJ];
#pragma unroll
      for (int i = 0; i < RI; ++i) {
        a[i] = Qt[d * (BR + 1) + ty + 16 * i];
        ad[i] = Qdt[d * (BR + 1) + ty + 16 * i];
      }
#pragma unroll
      for (int j = 0; j < CJ; ++j) {
        kb[j] = Kt[d * (BC + 1) + tx + 16 * j];
        kdb[j] = Kdt[d * (BC + 1) + tx + 16 * j];
      }
#pragma unroll
      for (int i = 0; i < RI; ++i)
#pragma unroll
        for (int j = 0; j < CJ; ++j) {
          s[i][j] = fmaf(a[i], kb[j], s[i][j]);
          sd[i][j] = fmaf(ad[i], kb[j], fmaf(a[i], kdb[j], sd[i][j]));
        }
    }
    // P = exp(S scale - lse) (0 outside the sequence) and P o S_dot
#pragma unroll
    for (int i = 0; i < RI; ++i) {
      const int r = ty + 16 * i;
      const bool row_ok = q0 + r < Tn;
#pragma unroll
      for (int j = 0; j < CJ; ++j) {
        const bool ok = row_ok && k0 + tx + 16 * j < Tn;
        const float p = ok ? expf(s[i][j] * scale - s_lse[r]) : 0.f;
        const float ps = p * (sd[i][j] * scale);
        rsum[i] += ps;
        Ps[r * (BC + 1) + tx + 16 * j] = p;
        PSs[r * (BC + 1) + tx + 16 * j] = ps;
      }
    }
    __syncthreads();

    // o += P V_dot + (P o S_dot) V for (rows ty + 16 i, dims tx + 16 j)
#pragma unroll 4
    for (int c = 0; c < BC; ++c) {
      float vb[DJ], vdb[DJ];
#pragma unroll
      for (int j = 0; j < DJ; ++j) {
        const bool ok = attn_dim_ok<HD>(tx, j);
        vb[j] = ok ? Vs[c * HD + tx + 16 * j] : 0.f;
        vdb[j] = ok ? Vds[c * HD + tx + 16 * j] : 0.f;
      }
#pragma unroll
      for (int i = 0; i < RI; ++i) {
        const float p = Ps[(ty + 16 * i) * (BC + 1) + c], ps = PSs[(ty + 16 * i) * (BC + 1) + c];
#pragma unroll
        for (int j = 0; j < DJ; ++j) o[i][j] = fmaf(p, vdb[j], fmaf(ps, vb[j], o[i][j]));
      }
    }
  }

#pragma unroll
  for (int i = 0; i < RI; ++i) {
    const float rs = half_warp_sum(rsum[i]);  // the row's 16 lanes hold its keys tx + 16 j
    const int q = q0 + ty + 16 * i;
    if (q >= Tn) continue;
    const size_t row = (size_t(b) * Tn + q) * D + size_t(h) * HD;
#pragma unroll
    for (int j = 0; j < DJ; ++j)
      if (attn_dim_ok<HD>(tx, j))
        out_dot[row + tx + 16 * j] = from_f32<T>(o[i][j] - rs * to_f32(out[row + tx + 16 * j]));
  }
}

// ---- launchers ---------------------------------------------------------------------------------
template <class Kernel>
void attention_allow_smem(Kernel kernel, size_t bytes) {
  // above 48 KB a kernel must opt in to its dynamic shared memory; a device with less fails here
  SHORTCUT_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
}

template <int HD, class T>
void attention_forward_hd(T* out, float* lse, const T* qkv, int B, int Tn, int H, float scale, cudaStream_t s) {
  constexpr int BR = AttnTiles<HD>::kFwdBR, BC = AttnTiles<HD>::kFwdBC;
  constexpr size_t smem = kAttnFwdSmemFloats<HD, BR, BC> * sizeof(float);
  auto kernel = attention_forward_kernel<HD, BR, BC, T>;
  attention_allow_smem(kernel, smem);
  const int qtiles = ceil_div(Tn, BR);
  launch("attention_forward_kernel", kernel, unsigned(size_t(B) * H * qtiles), kThreads, smem, s, out, lse, qkv, Tn, H, scale, qtiles);
}

template <int HD, class T>
void attention_backward_hd(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse, int B, int Tn, int H,
                           float scale, cudaStream_t s) {
  constexpr int BR = AttnTiles<HD>::kBwdBR, BC = AttnTiles<HD>::kBwdBC;
  constexpr size_t smem = kAttnBwdSmemFloats<HD, BR, BC> * sizeof(float);
  const size_t rows = size_t(B) * Tn;
  by_index_width(rows * H * HD, [&](auto i) {
    using I = decltype(i);
    launch("zero_q_columns_kernel", zero_q_columns_kernel<I, T>, blocks_for(rows * H * HD), kThreads, 0, s, dqkv,
           I(rows * H * HD), H * HD);
  });
  auto kernel = attention_backward_kernel<HD, BR, BC, T>;
  attention_allow_smem(kernel, smem);
  const int ktiles = ceil_div(Tn, BC);
  launch("attention_backward_kernel", kernel, unsigned(size_t(B) * H * ktiles), kThreads, smem, s, dqkv, dout, qkv, out, lse, Tn, H, scale, ktiles);
}

template <int HD, class T>
void attention_tangent_hd(T* out_dot, const T* qkv, const T* qkv_dot, const T* out, const float* lse, int B, int Tn,
                          int H, float scale, cudaStream_t s) {
  constexpr int BR = AttnTiles<HD>::kTanBR, BC = AttnTiles<HD>::kTanBC;
  constexpr size_t smem = kAttnTanSmemFloats<HD, BR, BC> * sizeof(float);
  auto kernel = attention_tangent_kernel<HD, BR, BC, T>;
  attention_allow_smem(kernel, smem);
  const int qtiles = ceil_div(Tn, BR);
  launch("attention_tangent_kernel", kernel, unsigned(size_t(B) * H * qtiles), kThreads, smem, s, out_dot, qkv,
         qkv_dot, out, lse, Tn, H, scale, qtiles);
}

inline void attention_check_head_dim(int hd) {
  if (!attention_head_dim_supported(hd))
    throw ShapeError(
        cat("attention: head dim ", hd, " is not supported by the CUDA kernels (supported: 32, 64, 72, 128)"));
}

// The runtime head dim picks one compiled kernel.
template <class T>
void attention_forward(T* out, float* lse, const T* qkv, int B, int Tn, int H, int hd, float scale, cudaStream_t s) {
  attention_check_head_dim(hd);
  if (B <= 0 || Tn <= 0 || H <= 0) return;
  switch (hd) {
    case 32: return attention_forward_hd<32>(out, lse, qkv, B, Tn, H, scale, s);
    case 64: return attention_forward_hd<64>(out, lse, qkv, B, Tn, H, scale, s);
    case 72: return attention_forward_hd<72>(out, lse, qkv, B, Tn, H, scale, s);
    default: return attention_forward_hd<128>(out, lse, qkv, B, Tn, H, scale, s);
  }
}

template <class T>
void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const float* lse, int B, int Tn, int H,
                        int hd, float scale, cudaStream_t s) {
  attention_check_head_dim(hd);
  if (B <= 0 || Tn <= 0 || H <= 0) return;
  switch (hd) {
    case 32: return attention_backward_hd<32>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, s);
    case 64: return attention_backward_hd<64>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, s);
    case 72: return attention_backward_hd<72>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, s);
    default: return attention_backward_hd<128>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, s);
  }
}

// out_dot [B,T,D] (overwritten) from qkv, qkv_dot [B,T,3D] and the forward's out and lse.
template <class T>
void attention_tangent(T* out_dot, const T* qkv, const T* qkv_dot, const T* out, const float* lse, int B, int Tn,
                       int H, int hd, float scale, cudaStream_t s) {
  attention_check_head_dim(hd);
  if (B <= 0 || Tn <= 0 || H <= 0) return;
  switch (hd) {
    case 32: return attention_tangent_hd<32>(out_dot, qkv, qkv_dot, out, lse, B, Tn, H, scale, s);
    case 64: return attention_tangent_hd<64>(out_dot, qkv, qkv_dot, out, lse, B, Tn, H, scale, s);
    case 72: return attention_tangent_hd<72>(out_dot, qkv, qkv_dot, out, lse, B, Tn, H, scale, s);
    default: return attention_tangent_hd<128>(out_dot, qkv, qkv_dot, out, lse, B, Tn, H, scale, s);
  }
}

}  // namespace shortcut::kernels
