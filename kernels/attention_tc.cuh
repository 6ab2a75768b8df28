// Attention forward on the bf16 tensor cores (mma.sync m16n8k16, fp32 accumulation), flash-attention
// 2 style: the same contract as attention_forward in attention.cuh (qkv [B,T,3D] with head h at
// columns h*hd of q | k | v, out [B,T,D], lse [B,H,T] fp32, logits q.k * scale, any T) on bf16
// storage. Nothing T x T reaches memory.
//
// A block of 4 warps owns 64 queries of one (b, h); warp w owns 16 of them and keeps their q
// fragments in registers for the whole walk over the keys. Tiles of 64 keys of K and V land in shared
// memory by cp.async, double-buffered: tile j + 1 is in flight while the warps compute on tile j, so
// the global loads hide behind the tensor-core work (flash-attention 2's pipeline). Both stay
// row-major [key][dim] as in memory (16-byte chunks, no transposition in flight): K's rows are the
// B fragments of Q K^T as 4-byte loads, V's B fragments of P V come through ldmatrix.trans. Per warp:
// S = Q K^T (16 x 64 in 8 fp32 D tiles), scale and mask in fp32, online softmax in registers (each
// row's max and sum across the 4 lanes that hold it: two xor shuffles), P rounded to bf16 straight
// from the D tiles into A fragments (kernels/mma.cuh) and O += P V into 16 x hd fp32 accumulators,
// rescaled by exp(m_old - m_new). The row sum l is taken over the fp32 probabilities. out = O / l in
// bf16, lse = m + log l in fp32.
//
// Precision: the inputs are bf16; the logits, softmax, row statistics and accumulation are fp32; P is
// rounded to bf16 once for the product with V, as every bf16 flash attention does. Rows past the end
// of the sequence are zeros and masked (logit -inf); head dims 32, 64, 72 and 128 (72: the q.k
// contraction runs over 80 with zero padding).
#pragma once
#include <cmath>

#include "kernels/attention.cuh"
#include "kernels/mma.cuh"

namespace shortcut::kernels {

inline constexpr int kTcBR = 64, kTcBC = 64, kTcThreads = 128;

// The row stride (in bf16) of a shared-memory tile of `cols` columns: at least 16 bytes past the row,
// rows 16-byte aligned (cp.async, ldmatrix), and an odd number of 16-byte chunks. The 8 rows one
// ldmatrix (or one K fragment load: 8 rows x 4 words) reads then start 4 x odd words apart, which is
// 8 distinct groups of 4 of the 32 banks: no bank conflict. An even count halves them: HD + 8 = 80 at
// head dim 72 is 40 words, rows 0 and 4 on the same banks, a 2-way conflict on every V fragment.
constexpr int tc_smem_stride(int cols) {
  const int chunks = (cols + 8 + 7) / 8;
  return 8 * (chunks % 2 ? chunks : chunks + 1);
}

template <int HD>
struct TcHeadDim {
  static constexpr int kK = (HD + 15) / 16 * 16;  // the q.k contraction, zero-padded
  static constexpr int kKs = tc_smem_stride(kK);  // K row stride in shared memory (bf16)
  static constexpr int kVs = tc_smem_stride(HD);  // V row stride (88 at head dim 72, not 80)
  static_assert(HD % 8 == 0, "the output tiles are 8 wide, the copies 16 bytes");
  // one stage: a K tile and a V tile; the forward keeps two
  static constexpr size_t kStage = size_t(kTcBC) * kKs + size_t(kTcBC) * kVs;
  static constexpr size_t kSmemBytes = 2 * kStage * sizeof(__nv_bfloat16);
};

// ---- staging shared by the forward and the backward ---------------------------------------------
// The operands the tiles are copied from must start on 16 bytes (cp.async copies 16-byte chunks;
// every row of a head then does too, since head dims are multiples of 8): a clear error, not a fault.
inline void tc_check_aligned(const void* p, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 16)
    throw ShapeError(cat("bf16 attention: ", what, " must start on a 16-byte boundary (got ", p, ")"));
}
// Rows [row0, row0 + rows) of a bf16 matrix (leading dimension ld, HD columns) into shared memory
// row-major (stride `stride`), by cp.async in 16-byte chunks; rows past the end of the sequence are
// zero-filled (no read: the source address is row 0's). Padding columns are not written.
__device__ __forceinline__ void tc_issue_rows(__nv_bfloat16* dst, int stride, const __nv_bfloat16* src, int ld,
                                              int row0, int rows, int Tn, int HD) {
  const int chunks = HD / 8;
  for (int i = threadIdx.x; i < rows * chunks; i += kTcThreads) {
    const int r = i / chunks, c = 8 * (i % chunks), row = row0 + r;
    const bool in = row < Tn;
    cp_async_16(dst + r * stride + c, src + size_t(in ? row : 0) * ld + c, in ? 16 : 0);
  }
}
// A step of the double-buffered walk over tiles: the next tile's copies issued into the other stage
// (if there is a next tile), then this tile's awaited — its group is the older one in flight. A
// barrier after it makes every thread's copies visible to all.
template <class Issue>
__device__ __forceinline__ void tc_next_tile(bool more, Issue&& issue_next) {
  if (more) {
    issue_next();
    cp_async_wait<1>();
  } else {
    cp_async_wait<0>();
  }
}
// The A fragments (16 rows x 16 KS columns) of rows r0 (registers 0, 2) and r1 = r0 + 8 (1, 3) of a
// bf16 matrix with leading dimension ld, straight from global memory; zeros past the sequence end
// and beyond HD columns.
template <int KS>
__device__ __forceinline__ void tc_load_a(uint32_t (&f)[KS][4], const __nv_bfloat16* src, int ld, int r0, int Tn,
                                          int HD) {
  const int q4 = threadIdx.x & 3;
#pragma unroll
  for (int ks = 0; ks < KS; ++ks)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int r = r0 + 8 * (j % 2), c = ks * 16 + 2 * q4 + 8 * (j / 2);
      f[ks][j] = (r < Tn && c < HD) ? load_bf16x2(src + size_t(r) * ld + c) : pack_bf16x2(0.f, 0.f);
    }
}

template <int HD>
__global__ void __launch_bounds__(kTcThreads)
    attention_forward_tc_kernel(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int Tn, int H, float scale) {
  using Hd = TcHeadDim<HD>;
  constexpr int KS = Hd::kK / 16, NT = kTcBC / 8, DT = HD / 8;
  SHORTCUT_DYNAMIC_SMEM(__nv_bfloat16, tc_smem);  // its own name: extern __shared__ arrays of one name share a type
  // stage i: K [kTcBC][kKs] at tc_smem + i * kStage, then V [kTcBC][kVs]
  const int D = H * HD, row_stride = 3 * D;
  // (b, h) in grid.x (up to 2^31 - 1; grid.y stops at 65535, which B * H can pass), query tile in y
  const int bh = blockIdx.x, b = bh / H, h = bh % H;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, q4 = lane & 3;
  const __nv_bfloat16* base = qkv + size_t(b) * Tn * row_stride + size_t(h) * HD;
  const int r0 = blockIdx.y * kTcBR + warp * 16 + g, r1 = r0 + 8;  // this lane's two query rows
  auto stage_k = [&](int st) { return tc_smem + size_t(st) * Hd::kStage; };
  auto stage_v = [&](int st) { return tc_smem + size_t(st) * Hd::kStage + size_t(kTcBC) * Hd::kKs; };
  // K's padding columns [HD, kK) are zeros for the whole walk (the copies write [0, HD) only)
  if constexpr (Hd::kK > HD) {
    constexpr int pad = Hd::kK - HD;
    for (int i = tid; i < 2 * kTcBC * pad; i += kTcThreads) {
      const int st = i / (kTcBC * pad), j = i % (kTcBC * pad);
      stage_k(st)[(j / pad) * Hd::kKs + HD + j % pad] = __float2bfloat16(0.f);
    }
  }
  auto issue = [&](int k0, int st) {
    tc_issue_rows(stage_k(st), Hd::kKs, base + D, row_stride, k0, kTcBC, Tn, HD);
    tc_issue_rows(stage_v(st), Hd::kVs, base + 2 * D, row_stride, k0, kTcBC, Tn, HD);
    cp_async_commit();
  };
  issue(0, 0);

  uint32_t qf[KS][4];
  tc_load_a<KS>(qf, base, row_stride, r0, Tn, HD);
  float o[DT][4];
  #pragma unroll
  for (int dt = 0; dt < DT; ++dt)
    #pragma unroll
    for (int i = 0; i < 4; ++i) o[dt][i] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};

  for (int k0 = 0, st = 0; k0 < Tn; k0 += kTcBC, st ^= 1) {
    // the next tile into the other stage (its readers finished at the end of the last iteration),
    // then wait for this one: every thread's copies of it, made visible to all by the barrier
    tc_next_tile(k0 + kTcBC < Tn, [&] { issue(k0 + kTcBC, st ^ 1); });
    __syncthreads();
    const __nv_bfloat16* Ks = stage_k(st);
    const __nv_bfloat16* Vs = stage_v(st);

    float s[NT][4];
    #pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      #pragma unroll
      for (int i = 0; i < 4; ++i) s[nt][i] = 0.f;
      const __nv_bfloat16* kr = Ks + (nt * 8 + g) * Hd::kKs + 2 * q4;
      #pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
        const uint32_t bf[2] = {load_bf16x2(kr + ks * 16), load_bf16x2(kr + ks * 16 + 8)};
        mma_bf16_16816(s[nt], qf[ks], bf, s[nt]);
      }
    }
    // scale, mask, the tile's row max (rows r0: i = 0, 1; r1: i = 2, 3)
    float mt[2] = {-INFINITY, -INFINITY};
    #pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      #pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int key = k0 + nt * 8 + 2 * q4 + (i % 2);
        s[nt][i] = key < Tn ? s[nt][i] * scale : -INFINITY;
        mt[i / 2] = fmaxf(mt[i / 2], s[nt][i]);
      }
    float alpha[2], mnew[2], rs[2] = {0.f, 0.f};
    #pragma unroll
    for (int r = 0; r < 2; ++r) {
      mt[r] = fmaxf(mt[r], __shfl_xor_sync(0xffffffffu, mt[r], 1));
      mt[r] = fmaxf(mt[r], __shfl_xor_sync(0xffffffffu, mt[r], 2));
      mnew[r] = fmaxf(m[r], mt[r]);  // finite: the first tile holds key 0
      alpha[r] = expf(m[r] - mnew[r]);
      m[r] = mnew[r];
    }
    #pragma unroll
    for (int nt = 0; nt < NT; ++nt)
      #pragma unroll
      for (int i = 0; i < 4; ++i) {
        s[nt][i] = expf(s[nt][i] - mnew[i / 2]);
        rs[i / 2] += s[nt][i];
      }
    #pragma unroll
    for (int r = 0; r < 2; ++r) {
      rs[r] += __shfl_xor_sync(0xffffffffu, rs[r], 1);
      rs[r] += __shfl_xor_sync(0xffffffffu, rs[r], 2);
      l[r] = l[r] * alpha[r] + rs[r];
    }
    #pragma unroll
    for (int dt = 0; dt < DT; ++dt)
      #pragma unroll
      for (int i = 0; i < 4; ++i) o[dt][i] *= alpha[i / 2];
    // O += P V: k runs over the tile's keys, 16 at a time; lane l addresses key row kk * 16 + l % 16
    #pragma unroll
    for (int kk = 0; kk < NT / 2; ++kk) {
      uint32_t pa[4];
      pack_a_from_d(pa, s[2 * kk], s[2 * kk + 1]);
      const __nv_bfloat16* vrow = Vs + (kk * 16 + (lane & 15)) * Hd::kVs;
      #pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        uint32_t bf[2];
        ldmatrix_x2_trans(bf, vrow + dt * 8);
        mma_bf16_16816(o[dt], pa, bf, o[dt]);
      }
    }
    __syncthreads();  // every warp is done with this stage before the next iteration refills it
  }
  const int rows[2] = {r0, r1};
  #pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (rows[r] >= Tn) continue;
    const float inv = 1.f / l[r];
    __nv_bfloat16* orow = out + (size_t(b) * Tn + rows[r]) * D + size_t(h) * HD + 2 * q4;
    #pragma unroll
    for (int dt = 0; dt < DT; ++dt) {
      const uint32_t v = pack_bf16x2(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
      store_bf16x2(orow + dt * 8, v);
    }
    if (q4 == 0) lse[size_t(bh) * Tn + rows[r]] = m[r] + logf(l[r]);
  }
}

// The grid of the tensor-core kernels: (b, h) pairs in x (up to 2^31 - 1; B * H passes y's and z's
// limit of 65535 at, e.g., B = 1024 with H = 64), tiles of `tile` rows of the sequence in y.
inline dim3 tc_grid(int B, int H, int Tn, int tile, const char* what) {
  const size_t pairs = size_t(B) * size_t(H), tiles = (size_t(Tn) + size_t(tile) - 1) / size_t(tile);
  if (pairs > 0x7fffffffu || tiles > 65535u)
    throw ShapeError(cat(what, ": B H = ", pairs, " (at most 2^31 - 1) and ", tiles, " tiles of ", tile,
                         " along T = ", Tn, " (at most 65535) do not fit a grid"));
  return dim3(unsigned(pairs), unsigned(tiles));
}

template <int HD>
void attention_forward_tc_hd(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int Tn, int H,
                             float scale, cudaStream_t s) {
  const dim3 grid = tc_grid(B, H, Tn, kTcBR, "bf16 attention");
  constexpr size_t smem = TcHeadDim<HD>::kSmemBytes;  // two stages: 68 KB at head dim 128
  auto kernel = attention_forward_tc_kernel<HD>;
  if (smem > 48 * 1024) attention_allow_smem(kernel, smem);
  launch("attention_forward_tc", kernel, grid, dim3(kTcThreads), smem, s, out, lse, qkv, Tn, H, scale);
}

// The bf16 tensor-core forward; same arguments as attention_forward. Needs sm_80 or later.
inline void attention_forward_tc(__nv_bfloat16* out, float* lse, const __nv_bfloat16* qkv, int B, int Tn, int H,
                                 int hd, float scale, cudaStream_t s) {
  attention_check_head_dim(hd);
  if (B <= 0 || Tn <= 0 || H <= 0) return;
  tc_check_aligned(qkv, "qkv");
  switch (hd) {
    case 32: attention_forward_tc_hd<32>(out, lse, qkv, B, Tn, H, scale, s); break;
    case 64: attention_forward_tc_hd<64>(out, lse, qkv, B, Tn, H, scale, s); break;
    case 72: attention_forward_tc_hd<72>(out, lse, qkv, B, Tn, H, scale, s); break;
    default: attention_forward_tc_hd<128>(out, lse, qkv, B, Tn, H, scale, s); break;
  }
}

}  // namespace shortcut::kernels
