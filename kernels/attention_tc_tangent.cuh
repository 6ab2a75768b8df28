// The tangent of attention (forward mode, DESIGN.md section 8) on the bf16 tensor cores (mma.sync
// m16n8k16, fp32 accumulation): the contract of attention_tangent in attention.cuh, out_dot =
// P V_dot + (P o S_dot) V - rowsum(P o S_dot) o O with S_dot = scale (Q_dot K^T + Q K_dot^T), from bf16
// qkv, qkv_dot and out and the forward's fp32 lse; out_dot [B,T,D] is written in fp32. Nothing T x T
// reaches memory.
//
// The forward's structure (attention_tc.cuh): a block of 4 warps owns 64 queries of one (b, h), warp w
// 16 of them, their Q and Q_dot as A fragments in registers for the whole walk over the keys. Tiles of
// keys of K, K_dot, V and V_dot land in shared memory by cp.async, double-buffered, row-major as in
// memory. Per warp and tile: S = Q K^T (one chain of products) and S_dot / scale = Q_dot K^T + Q K_dot^T
// (two chains into one accumulator), both with K's and K_dot's rows as 4-byte B fragment loads; P =
// exp(scale S - lse) in fp32 from the forward's lse (no online softmax: one pass, nothing rescaled);
// P o S_dot in fp32, rounded to bf16, its row sum (of the rounded values) kept in fp32 registers; P
// and P o S_dot as bf16 straight from the D tiles into A fragments for O_dot += P V_dot + (P o S_dot) V, V's and V_dot's B fragments
// through ldmatrix.trans. At the end each row takes its sum across the 4 lanes that hold it and
// subtracts sum o O, O read once.
//
// Precision: bf16 inputs; logits, P, P o S_dot, the row sums and the accumulation in fp32; P and
// P o S_dot rounded to bf16 once each for their products (as the forward rounds P), the row sum taken
// over the rounded P o S_dot (rounding it apart from the sum left an error of bf16's step times
// |S_dot| |V| where the terms cancel, e.g. at T = 1, whose exact tangent is V_dot). Head dims 32, 64,
// 72 and 128, as the forward; at 128 the key tile is 32 (every operand is held twice: 68 KB of shared
// memory for two stages, the forward's at that head dim).
#pragma once
#include "kernels/attention_tc.cuh"

namespace shortcut::kernels {

template <int HD>
struct TcTan {
  static constexpr int kBC = HD >= 128 ? 32 : 64;  // keys per tile
  static constexpr int kK = TcHeadDim<HD>::kK;     // the q.k contraction, zero-padded to 16
  static constexpr int kKs = TcHeadDim<HD>::kKs;   // K and K_dot row stride in shared memory (bf16)
  static constexpr int kVs = TcHeadDim<HD>::kVs;   // V and V_dot row stride
  // one stage: K, K_dot, V, V_dot of a key tile; two stages
  static constexpr size_t kStage = 2 * size_t(kBC) * kKs + 2 * size_t(kBC) * kVs;
  static constexpr size_t kSmemBytes = 2 * kStage * sizeof(__nv_bfloat16);
};

template <int HD>
__global__ void __launch_bounds__(kTcThreads)
    attention_tangent_tc_kernel(float* out_dot, const __nv_bfloat16* qkv, const __nv_bfloat16* qkv_dot,
                                const __nv_bfloat16* out, const float* lse, int Tn, int H, float scale) {
  using P = TcTan<HD>;
  constexpr int BC = P::kBC, KS = P::kK / 16, NT = BC / 8, DT = HD / 8;
  SHORTCUT_DYNAMIC_SMEM(__nv_bfloat16, tct_smem);  // its own name: extern __shared__ arrays of one name share a type
  // stage i at tct_smem + i * kStage: K [BC][kKs], K_dot [BC][kKs], V [BC][kVs], V_dot [BC][kVs]
  const int D = H * HD, row_stride = 3 * D;
  const int bh = blockIdx.x, b = bh / H, h = bh % H;  // (b, h) in grid.x, query tile in y, as the forward's
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q4 = lane & 3;
  const size_t head = size_t(b) * Tn * row_stride + size_t(h) * HD;
  const __nv_bfloat16* base = qkv + head;
  const __nv_bfloat16* dbase = qkv_dot + head;
  const int r0 = blockIdx.y * kTcBR + warp * 16 + g, r1 = r0 + 8;  // this lane's two query rows
  const int rows[2] = {r0, r1};
  auto stage_k = [&](int st, int tangent) { return tct_smem + size_t(st) * P::kStage + size_t(tangent) * BC * P::kKs; };
  auto stage_v = [&](int st, int tangent) {
    return tct_smem + size_t(st) * P::kStage + 2 * size_t(BC) * P::kKs + size_t(tangent) * BC * P::kVs;
  };
  // the padding columns [HD, kK) of K and K_dot are zeros for the whole walk (copies write [0, HD))
  if constexpr (P::kK > HD) {
    constexpr int pad = P::kK - HD;
    for (int i = tid; i < 4 * BC * pad; i += kTcThreads) {
      const int which = i / (BC * pad), j = i % (BC * pad);  // (stage, tangent) = (which / 2, which % 2)
      stage_k(which / 2, which % 2)[(j / pad) * P::kKs + HD + j % pad] = __float2bfloat16(0.f);
    }
  }
  auto issue = [&](int k0, int st) {
    tc_issue_rows(stage_k(st, 0), P::kKs, base + D, row_stride, k0, BC, Tn, HD);
    tc_issue_rows(stage_k(st, 1), P::kKs, dbase + D, row_stride, k0, BC, Tn, HD);
    tc_issue_rows(stage_v(st, 0), P::kVs, base + 2 * D, row_stride, k0, BC, Tn, HD);
    tc_issue_rows(stage_v(st, 1), P::kVs, dbase + 2 * D, row_stride, k0, BC, Tn, HD);
    cp_async_commit();
  };
  issue(0, 0);

  uint32_t qf[KS][4], qdf[KS][4];
  tc_load_a<KS>(qf, base, row_stride, r0, Tn, HD);
  tc_load_a<KS>(qdf, dbase, row_stride, r0, Tn, HD);
  float lse_r[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) lse_r[r] = rows[r] < Tn ? lse[size_t(bh) * Tn + rows[r]] : 0.f;
  float od[DT][4];
#pragma unroll
  for (int dt = 0; dt < DT; ++dt)
#pragma unroll
    for (int i = 0; i < 4; ++i) od[dt][i] = 0.f;
  float rsum[2] = {0.f, 0.f};  // this lane's part of the row sums of P o S_dot

  for (int k0 = 0, st = 0; k0 < Tn; k0 += BC, st ^= 1) {
    // the next tile into the other stage (its readers finished at the end of the last iteration),
    // then wait for this one: every thread's copies of it, made visible to all by the barrier
    tc_next_tile(k0 + BC < Tn, [&] { issue(k0 + BC, st ^ 1); });
    __syncthreads();
    const __nv_bfloat16* Ks = stage_k(st, 0);
    const __nv_bfloat16* Kds = stage_k(st, 1);
    const __nv_bfloat16* Vs = stage_v(st, 0);
    const __nv_bfloat16* Vds = stage_v(st, 1);

    float s[NT][4], sd[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) s[nt][i] = sd[nt][i] = 0.f;
      const int at = (nt * 8 + g) * P::kKs + 2 * q4;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        const uint32_t bk[2] = {load_bf16x2(Ks + at + ks * 16), load_bf16x2(Ks + at + ks * 16 + 8)};
        const uint32_t bkd[2] = {load_bf16x2(Kds + at + ks * 16), load_bf16x2(Kds + at + ks * 16 + 8)};
        mma_bf16_16816(s[nt], qf[ks], bk, s[nt]);
        mma_bf16_16816(sd[nt], qdf[ks], bk, sd[nt]);
        mma_bf16_16816(sd[nt], qf[ks], bkd, sd[nt]);
      }
    }
    // P and P o S_dot in fp32 (rows r0: i = 0, 1; r1: i = 2, 3), 0 outside the sequence
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int key = k0 + nt * 8 + 2 * q4 + (i % 2);
        const bool ok = key < Tn && rows[i / 2] < Tn;
        const float p = ok ? expf(s[nt][i] * scale - lse_r[i / 2]) : 0.f;
        // rounded here, so that the row sum is of the very values the product with V reads: then
        // sum_j ps_j (V_j - O) stays consistent, and at T = 1 (O = V) the two terms cancel exactly
        const float ps = __bfloat162float(__float2bfloat16(p * (sd[nt][i] * scale)));
        rsum[i / 2] += ps;
        s[nt][i] = p;
        sd[nt][i] = ps;
      }
    // O_dot += P V_dot + (P o S_dot) V: k runs over the tile's keys, 16 at a time; lane l addresses
    // key row kk * 16 + l % 16
#pragma unroll
    for (int kk = 0; kk < NT / 2; ++kk) {
      uint32_t pa[4], psa[4];
      pack_a_from_d(pa, s[2 * kk], s[2 * kk + 1]);
      pack_a_from_d(psa, sd[2 * kk], sd[2 * kk + 1]);
      const int vr = (kk * 16 + (lane & 15)) * P::kVs;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        uint32_t bv[2], bvd[2];
        ldmatrix_x2_trans(bvd, Vds + vr + dt * 8);
        ldmatrix_x2_trans(bv, Vs + vr + dt * 8);
        mma_bf16_16816(od[dt], pa, bvd, od[dt]);
        mma_bf16_16816(od[dt], psa, bv, od[dt]);
      }
    }
    __syncthreads();  // every warp is done with this stage before the next iteration refills it
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    rsum[r] += __shfl_xor_sync(0xffffffffu, rsum[r], 1);
    rsum[r] += __shfl_xor_sync(0xffffffffu, rsum[r], 2);
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (rows[r] >= Tn) continue;
    const size_t at = (size_t(b) * Tn + rows[r]) * D + size_t(h) * HD + 2 * q4;
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) {
      const uint32_t o2 = load_bf16x2(out + at + dt * 8);
      __nv_bfloat16 o[2];
      memcpy(o, &o2, 4);
      out_dot[at + dt * 8] = od[dt][2 * r] - rsum[r] * __bfloat162float(o[0]);
      out_dot[at + dt * 8 + 1] = od[dt][2 * r + 1] - rsum[r] * __bfloat162float(o[1]);
    }
  }
}

template <int HD>
void attention_tangent_tc_hd(float* out_dot, const __nv_bfloat16* qkv, const __nv_bfloat16* qkv_dot,
                             const __nv_bfloat16* out, const float* lse, int B, int Tn, int H, float scale,
                             cudaStream_t s) {
  const dim3 grid = tc_grid(B, H, Tn, kTcBR, "bf16 attention tangent");
  constexpr size_t smem = TcTan<HD>::kSmemBytes;  // 40 KB (head dim 32) to 90 KB (72)
  auto kernel = attention_tangent_tc_kernel<HD>;
  if (smem > 48 * 1024) attention_allow_smem(kernel, smem);
  launch("attention_tangent_tc", kernel, grid, dim3(kTcThreads), smem, s, out_dot, qkv, qkv_dot, out, lse, Tn, H,
         scale);
}

// The bf16 tensor-core tangent; the arguments of attention_tangent with qkv, qkv_dot and out in bf16,
// out_dot fp32. Needs sm_80 or later.
inline void attention_tangent_tc(float* out_dot, const __nv_bfloat16* qkv, const __nv_bfloat16* qkv_dot,
                                 const __nv_bfloat16* out, const float* lse, int B, int Tn, int H, int hd, float scale,
                                 cudaStream_t s) {
  attention_check_head_dim(hd);
  if (B <= 0 || Tn <= 0 || H <= 0) return;
  tc_check_aligned(qkv, "qkv");
  tc_check_aligned(qkv_dot, "qkv_dot");
  switch (hd) {
    case 32: attention_tangent_tc_hd<32>(out_dot, qkv, qkv_dot, out, lse, B, Tn, H, scale, s); break;
    case 64: attention_tangent_tc_hd<64>(out_dot, qkv, qkv_dot, out, lse, B, Tn, H, scale, s); break;
    case 72: attention_tangent_tc_hd<72>(out_dot, qkv, qkv_dot, out, lse, B, Tn, H, scale, s); break;
    default: attention_tangent_tc_hd<128>(out_dot, qkv, qkv_dot, out, lse, B, Tn, H, scale, s); break;
  }
}

}  // namespace shortcut::kernels
