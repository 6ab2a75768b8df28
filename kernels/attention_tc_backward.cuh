// Attention backward on the bf16 tensor cores, flash-attention 2 style: the contract of
// attention_backward in attention.cuh (dqkv [B,T,3D] overwritten, from dout, qkv, out and the
// forward's fp32 lse) on bf16 storage, plus an fp32 workspace (attention_backward_tc_workspace floats)
// for dQ and the row terms D_i = dO_i . O_i.
//
// Three launches: (1) D_i per query row and the fp32 dQ accumulator zeroed; (2) a block of 4 warps owns
// 64 keys of one (b, h), warp w owns 16 of them and keeps their K and V as A fragments in registers and
// their dK, dV as fp32 accumulators; it walks the queries in tiles of BR that land in shared memory by
// cp.async, double-buffered (tile j + 1 in flight while tile j is computed), Q and dO row-major
// [query][dim] as in memory: their B fragments are 4-byte loads where dims are the contraction and
// ldmatrix.trans where queries are (the block's K likewise, for dQ), and per tile
// computes, all transposed (keys are the rows): S^T = K Q^T, P^T = exp(scale S^T - lse) (the forward's
// lse, no second softmax), dP^T = V dO^T, dS^T = P^T (dP^T - D), dV += P^T dO and dK += dS^T Q, with P^T
// and dS^T rounded to bf16 straight from the D tiles into A fragments; dS goes through shared memory
// ([query][key], the block's 64 keys) so that dQ += dS K is one more set of products per tile, added
// into the fp32 accumulator with atomics (every key block adds to the same rows); (3) dQ to bf16 into
// dqkv's q columns. The scale of the logits multiplies dK and dQ once at the end.
//
// Precision: bf16 inputs; logits, probabilities, dP, dS, all sums and dQ's accumulation in fp32; P and
// dS rounded to bf16 for their products (as every bf16 flash attention backward does).
#pragma once
#include "kernels/attention_tc.cuh"

namespace shortcut::kernels {

template <int HD>
struct TcBwd {
  static constexpr int kBR = HD >= 128 ? 32 : 64;  // queries per tile (fewer at 128: registers)
  static constexpr int kBC = 64;                   // keys per block: 4 warps x 16
  static constexpr int kK = TcHeadDim<HD>::kK;     // contractions over dims, zero-padded to 16
  static constexpr int kRowS = kK + 8;             // [query][dim] stride of Qs, dOs, [key][dim] of Ks (bf16)
  static constexpr int kDsS = kBC + 8;             // [query][key] stride of dS
  static constexpr size_t kStage = 2 * size_t(kBR) * kRowS;  // Q and dO of one query tile; two stages
  static constexpr size_t kSmemBytes =
      (2 * kStage + size_t(kBC) * kRowS + size_t(kBR) * kDsS) * sizeof(__nv_bfloat16) + 2 * size_t(kBR) * sizeof(float);
};

// floats of workspace attention_backward_tc needs: dQ [B,T,D] and D_i [B,H,T]
inline size_t attention_backward_tc_workspace(int B, int Tn, int H, int hd) {
  return size_t(B) * Tn * H * hd + size_t(B) * H * Tn;
}

// D_i = dO_i . O_i per (b, h, query) in fp32, and dq_acc zeroed: one warp per (row, head), its lanes
// over the head's HD columns two at a time (32-bit loads of bf16 pairs, neighbouring lanes on
// neighbouring words: coalesced), then a warp sum. `items` = B T H; the division by H and Tn is one
// 32-bit pair per warp, not per element.
template <int HD>
__global__ void attention_tc_prepare_kernel(float* Dvec, float* dq_acc, const __nv_bfloat16* dout,
                                            const __nv_bfloat16* out, unsigned items, unsigned Tn, unsigned H) {
  const unsigned lane = threadIdx.x & 31, warps = gridDim.x * (blockDim.x / 32);
  for (unsigned i = (blockIdx.x * blockDim.x + threadIdx.x) / 32; i < items; i += warps) {
    const unsigned row = i / H, h = i - row * H;  // row = b * T + t
    const size_t off = size_t(row) * (size_t(H) * HD) + size_t(h) * HD;
    float acc = 0.f;
#pragma unroll
    for (unsigned c = 2 * lane; c < unsigned(HD); c += 64) {
      const uint32_t g2 = load_bf16x2(dout + off + c), o2 = load_bf16x2(out + off + c);
      __nv_bfloat16 g[2], o[2];
      memcpy(g, &g2, 4);
      memcpy(o, &o2, 4);
      acc += __bfloat162float(g[0]) * __bfloat162float(o[0]) + __bfloat162float(g[1]) * __bfloat162float(o[1]);
      dq_acc[off + c] = 0.f;
      dq_acc[off + c + 1] = 0.f;
    }
    acc = warp_sum(acc);
    const unsigned b = row / Tn, t = row - b * Tn;
    if (lane == 0) Dvec[(size_t(b) * H + h) * Tn + t] = acc;
  }
}

// dQ to bf16 into dqkv's q columns: a block per row of D = H HD columns (grid-strided over the rows),
// threads over its columns two at a time (D is a multiple of 8: rows start 16-byte aligned). No
// division per element.
template <int HD>
__global__ void attention_tc_dq_kernel(__nv_bfloat16* dqkv, const float* dq_acc, size_t rows, int D) {
  for (size_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* src = dq_acc + row * size_t(D);
    __nv_bfloat16* dst = dqkv + row * size_t(3 * D);
    for (int c = 2 * int(threadIdx.x); c < D; c += 2 * int(blockDim.x))
      store_bf16x2(dst + c, pack_bf16x2(src[c], src[c + 1]));
  }
}

template <int HD>
__global__ void __launch_bounds__(kTcThreads)
    attention_backward_tc_kernel(__nv_bfloat16* dqkv, float* dq_acc, const __nv_bfloat16* dout,
                                 const __nv_bfloat16* qkv, const float* lse, const float* Dvec, int Tn, int H,
                                 float scale) {
  using P = TcBwd<HD>;
  constexpr int BR = P::kBR, KS = P::kK / 16, NQ = BR / 8, DT = HD / 8;
  SHORTCUT_DYNAMIC_SMEM(__nv_bfloat16, tcb_smem);  // its own name: extern __shared__ arrays of one name share a type
  // stage i: Q [BR][kRowS] at tcb_smem + i * kStage, then dO [BR][kRowS]
  __nv_bfloat16* Ks = tcb_smem + 2 * P::kStage;          // [kBC][kRowS]
  __nv_bfloat16* dSs = Ks + P::kBC * P::kRowS;           // [BR][kDsS]
  float* lse_s = reinterpret_cast<float*>(dSs + BR * P::kDsS);  // [BR]
  float* D_s = lse_s + BR;                                      // [BR]

  const int D = H * HD, row_stride = 3 * D;
  const int bh = blockIdx.x, b = bh / H, h = bh % H;  // (b, h) in grid.x, as the forward's
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q4 = lane & 3;
  const int kblock = blockIdx.y * P::kBC;
  const __nv_bfloat16* base = qkv + size_t(b) * Tn * row_stride + size_t(h) * HD;
  const __nv_bfloat16* dbase = dout + size_t(b) * Tn * D + size_t(h) * HD;
  const float* lse_bh = lse + size_t(bh) * Tn;
  const float* D_bh = Dvec + size_t(bh) * Tn;
  const int key0 = kblock + warp * 16 + g, key1 = key0 + 8;  // this lane's two key rows
  auto stage_q = [&](int st) { return tcb_smem + size_t(st) * P::kStage; };
  auto stage_do = [&](int st) { return tcb_smem + size_t(st) * P::kStage + size_t(BR) * P::kRowS; };
  // the padding columns [HD, kK) of Q and dO are zeros for the whole walk (copies write [0, HD))
  if constexpr (P::kK > HD) {
    constexpr int pad = P::kK - HD;
    for (int i = tid; i < 4 * BR * pad; i += kTcThreads)
      tcb_smem[size_t(i / (BR * pad)) * BR * P::kRowS + ((i % (BR * pad)) / pad) * P::kRowS + HD + i % pad] =
          __float2bfloat16(0.f);
  }
  auto issue = [&](int q0, int st) {
    tc_issue_rows(stage_q(st), P::kRowS, base, row_stride, q0, BR, Tn, HD);
    tc_issue_rows(stage_do(st), P::kRowS, dbase, D, q0, BR, Tn, HD);
    cp_async_commit();
  };
  tc_issue_rows(Ks, P::kRowS, base + D, row_stride, kblock, P::kBC, Tn, HD);  // with the first tile's group
  issue(0, 0);
  uint32_t kf[KS][4], vf[KS][4];
  tc_load_a<KS>(kf, base + D, row_stride, key0, Tn, HD);
  tc_load_a<KS>(vf, base + 2 * D, row_stride, key0, Tn, HD);
  float dk[DT][4], dv[DT][4];
#pragma unroll
  for (int dt = 0; dt < DT; ++dt)
#pragma unroll
    for (int i = 0; i < 4; ++i) dk[dt][i] = dv[dt][i] = 0.f;

  for (int q0 = 0, st = 0; q0 < Tn; q0 += BR, st ^= 1) {
    // the next tile into the other stage: its readers (this loop's products before the dS barrier)
    // finished in the last iteration; lse and D of this tile beside it (their readers passed that
    // barrier too). Then this tile's copies, made visible to all by the barrier, which also keeps
    // the last iteration's dQ readers of dS ahead of this one's writers.
    tc_next_tile(q0 + BR < Tn, [&] { issue(q0 + BR, st ^ 1); });
    for (int r = tid; r < BR; r += kTcThreads) {
      const int query = q0 + r;
      lse_s[r] = query < Tn ? lse_bh[query] : INFINITY;  // a missing query: probability 0
      D_s[r] = query < Tn ? D_bh[query] : 0.f;
    }
    __syncthreads();
    const __nv_bfloat16* Qs = stage_q(st);
    const __nv_bfloat16* dOs = stage_do(st);

    float s[NQ][4], dp[NQ][4];
#pragma unroll
    for (int nt = 0; nt < NQ; ++nt) {
#pragma unroll
      for (int i = 0; i < 4; ++i) s[nt][i] = dp[nt][i] = 0.f;
      const __nv_bfloat16* qr = Qs + (nt * 8 + g) * P::kRowS + 2 * q4;
      const __nv_bfloat16* dr = dOs + (nt * 8 + g) * P::kRowS + 2 * q4;
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        const uint32_t bq[2] = {load_bf16x2(qr + ks * 16), load_bf16x2(qr + ks * 16 + 8)};
        const uint32_t bd[2] = {load_bf16x2(dr + ks * 16), load_bf16x2(dr + ks * 16 + 8)};
        mma_bf16_16816(s[nt], kf[ks], bq, s[nt]);
        mma_bf16_16816(dp[nt], vf[ks], bd, dp[nt]);
      }
    }
    // P^T and dS^T in fp32 (rows: keys key0 for i = 0, 1 and key1 for i = 2, 3; columns: queries)
#pragma unroll
    for (int nt = 0; nt < NQ; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int col = nt * 8 + 2 * q4 + (i % 2), key = (i / 2) ? key1 : key0;
        const float p = key < Tn ? expf(s[nt][i] * scale - lse_s[col]) : 0.f;
        s[nt][i] = p;
        dp[nt][i] = p * (dp[nt][i] - D_s[col]);
        dSs[col * P::kDsS + warp * 16 + g + 8 * (i / 2)] = __float2bfloat16(dp[nt][i]);
      }
    // dV += P^T dO and dK += dS^T Q: k runs over the tile's queries, 16 at a time
#pragma unroll
    for (int kk = 0; kk < NQ / 2; ++kk) {
      uint32_t pa[4], sa[4];
      pack_a_from_d(pa, s[2 * kk], s[2 * kk + 1]);
      pack_a_from_d(sa, dp[2 * kk], dp[2 * kk + 1]);
      // lane l addresses query row kk * 16 + l % 16 of dO and Q (the B fragments, transposed)
      const size_t row = size_t(kk * 16 + (lane & 15)) * P::kRowS;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        uint32_t bdo[2], bq[2];
        ldmatrix_x2_trans(bdo, dOs + row + dt * 8);
        ldmatrix_x2_trans(bq, Qs + row + dt * 8);
        mma_bf16_16816(dv[dt], pa, bdo, dv[dt]);
        mma_bf16_16816(dk[dt], sa, bq, dk[dt]);
      }
    }
    __syncthreads();  // dS of all four warps is in shared memory
    // dQ (BR x HD) += dS (BR x 64 keys) K: work items (16-query tile, 8-dim tile) shared out over the warps
    for (int item = warp; item < (BR / 16) * DT; item += kTcThreads / 32) {
      const int mt = item / DT, dt = item % DT;
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int kk = 0; kk < P::kBC / 16; ++kk) {
        uint32_t a[4];
#pragma unroll
        for (int j = 0; j < 4; ++j)
          a[j] = load_bf16x2(dSs + (mt * 16 + g + 8 * (j % 2)) * P::kDsS + kk * 16 + 2 * q4 + 8 * (j / 2));
        uint32_t bk[2];
        ldmatrix_x2_trans(bk, Ks + size_t(kk * 16 + (lane & 15)) * P::kRowS + dt * 8);
        mma_bf16_16816(acc, a, bk, acc);
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int query = q0 + mt * 16 + g + 8 * (i / 2);
        if (query < Tn)
          atomicAdd(dq_acc + (size_t(b) * Tn + query) * D + size_t(h) * HD + dt * 8 + 2 * q4 + (i % 2), scale * acc[i]);
      }
    }
  }
  const int keys[2] = {key0, key1};
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (keys[r] >= Tn) continue;
    __nv_bfloat16* krow = dqkv + (size_t(b) * Tn + keys[r]) * row_stride + D + size_t(h) * HD + 2 * q4;
#pragma unroll
    for (int dt = 0; dt < DT; ++dt) {
      const uint32_t k2 = pack_bf16x2(scale * dk[dt][2 * r], scale * dk[dt][2 * r + 1]);
      const uint32_t v2 = pack_bf16x2(dv[dt][2 * r], dv[dt][2 * r + 1]);
      store_bf16x2(krow + dt * 8, k2);
      store_bf16x2(krow + D + dt * 8, v2);
    }
  }
}

template <int HD>
void attention_backward_tc_hd(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                              const __nv_bfloat16* out, const float* lse, int B, int Tn, int H, float scale,
                              float* workspace, cudaStream_t s) {
  const size_t rows = size_t(B) * Tn, D = size_t(H) * HD;
  float* dq_acc = workspace;
  float* Dvec = workspace + rows * D;
  const size_t items = rows * size_t(H);  // one warp each
  if (items > kIndex32Max) throw ShapeError(cat("bf16 attention backward: B T H = ", items, " is above ", kIndex32Max));
  launch("attention_tc_prepare_kernel", attention_tc_prepare_kernel<HD>, blocks_for(items * 32), kThreads, 0, s, Dvec,
         dq_acc, dout, out, unsigned(items), unsigned(Tn), unsigned(H));
  auto kernel = attention_backward_tc_kernel<HD>;
  constexpr size_t smem = TcBwd<HD>::kSmemBytes;
  if (smem > 48 * 1024) attention_allow_smem(kernel, smem);
  const dim3 grid = tc_grid(B, H, Tn, TcBwd<HD>::kBC, "bf16 attention backward");
  launch("attention_backward_tc_kernel", kernel, grid, dim3(kTcThreads), smem, s, dqkv, dq_acc, dout, qkv, lse, Dvec,
         Tn, H, scale);
  launch("attention_tc_dq_kernel", attention_tc_dq_kernel<HD>, unsigned(rows < kMaxBlocks ? rows : kMaxBlocks), kThreads, 0, s,
         dqkv, dq_acc, rows, int(D));
}

// The bf16 tensor-core backward; the arguments of attention_backward plus `workspace`
// (attention_backward_tc_workspace(B, Tn, H, hd) floats of device memory). Needs sm_80 or later.
inline void attention_backward_tc(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv,
                                  const __nv_bfloat16* out, const float* lse, int B, int Tn, int H, int hd, float scale,
                                  float* workspace, cudaStream_t s) {
  attention_check_head_dim(hd);
  if (B <= 0 || Tn <= 0 || H <= 0) return;
  tc_check_aligned(qkv, "qkv");
  tc_check_aligned(dout, "dout");
  switch (hd) {
    case 32: attention_backward_tc_hd<32>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, workspace, s); break;
    case 64: attention_backward_tc_hd<64>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, workspace, s); break;
    case 72: attention_backward_tc_hd<72>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, workspace, s); break;
    default: attention_backward_tc_hd<128>(dqkv, dout, qkv, out, lse, B, Tn, H, scale, workspace, s); break;
  }
}

}  // namespace shortcut::kernels
