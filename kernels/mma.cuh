// The tensor-core instructions the bf16 kernels use, and the one place where they differ between a
// GPU and the CPU emulation (mma.sync; cp.async and ldmatrix below): mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 (sm_80 and later) is
// inline PTX under nvcc and the emulator's warp collective under g++ (tests/emulation, which computes
// it from the PTX ISA's fragment tables on its own). Fragment layouts, lane = 4 g + q:
//   A (16 x 16, row-major): a[j] holds two bf16 (low half first) of row g + 8 (j % 2),
//                           columns 2q, 2q + 1, plus 8 for j >= 2
//   B (16 x 8, k x n):      b[j] holds rows (k) 2q, 2q + 1, plus 8 for j = 1, of column (n) g
//   C, D (16 x 8, fp32):    c[i] at row g + 8 (i / 2), column 2q + (i % 2)
// So two neighbouring D tiles (columns 0-7, 8-15) are, after a conversion to bf16, the A fragment of
// the next product with k over those 16 columns (pack_a_from_d): attention's P V needs no shuffle.
#pragma once
#include <cstdint>

#include "kernels/common.cuh"

namespace shortcut::kernels {

// Two floats as one register of two bf16, `lo` in the low half (round to nearest even).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat16 l = __float2bfloat16(lo), h = __float2bfloat16(hi);
  uint16_t lb, hb;
  memcpy(&lb, &l, 2);
  memcpy(&hb, &h, 2);
  return uint32_t(lb) | (uint32_t(hb) << 16);
}

// Two consecutive bf16 in memory (4-byte aligned) as one fragment register, and back. One 32-bit
// access the compiler knows is aligned: a memcpy from a __nv_bfloat16* (2-byte alignment) compiled to
// byte or 16-bit accesses (ld.global.u8 x4 per word for Q, two ld.shared.u16 per K fragment register,
// st.global.u8 for the output). Every caller's address is even in bf16 elements from a 16-byte
// aligned base (head dims and the shared-memory strides are multiples of 8), so 4-byte aligned; the
// emulation checks it and faults as a GPU would (cudaErrorMisalignedAddress).
__device__ __forceinline__ uint32_t load_bf16x2(const __nv_bfloat16* p) {
#if defined(SHORTCUT_CUDA_EMULATION)
  if (reinterpret_cast<uintptr_t>(p) % 4) ::emu::misaligned("32-bit load of two bf16 at an address not a multiple of 4");
  uint32_t u;
  std::memcpy(&u, p, 4);
  return u;
#else
  return *static_cast<const uint32_t*>(__builtin_assume_aligned(p, 4));
#endif
}
__device__ __forceinline__ void store_bf16x2(__nv_bfloat16* p, uint32_t u) {
#if defined(SHORTCUT_CUDA_EMULATION)
  if (reinterpret_cast<uintptr_t>(p) % 4) ::emu::misaligned("32-bit store of two bf16 at an address not a multiple of 4");
  std::memcpy(p, &u, 4);
#else
  *static_cast<uint32_t*>(__builtin_assume_aligned(p, 4)) = u;
#endif
}

// D = A B + C on the tensor cores, fp32 accumulation; every lane of the warp must call it.
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                               const float (&c)[4]) {
#if defined(SHORTCUT_CUDA_EMULATION)
  ::emu::MmaBf16Fragments f;
  for (int i = 0; i < 4; ++i) f.a[i] = a[i], f.c[i] = c[i];
  f.b[0] = b[0];
  f.b[1] = b[1];
  ::emu::mma_m16n8k16_bf16(&f);
  for (int i = 0; i < 4; ++i) d[i] = f.d[i];
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
        "f"(c[3]));
#elif defined(__CUDA_ARCH__)
  __trap();  // no bf16 tensor cores before sm_80: cuda::Backend refuses bf16 mode there at construction
#endif
}

// ---- asynchronous copies and matrix loads (sm_80), as the emulation follows them ------------------
// 16 bytes from global into shared memory without passing through registers: cp.async.cg (L2 only,
// the operand tiles are read once per block), reading src_bytes of them (0: none, all zeros; the
// source address must still be a valid one). Completes at the cp_async_wait that retires its group.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
#if defined(SHORTCUT_CUDA_EMULATION)
  ::emu::cp_async(smem, gmem, 16, src_bytes);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes) : "memory");
#elif defined(__CUDA_ARCH__)
  __trap();
#endif
}
// Closes this thread's current group of copies.
__device__ __forceinline__ void cp_async_commit() {
#if defined(SHORTCUT_CUDA_EMULATION)
  ::emu::cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
// Waits until at most N of this thread's groups are in flight (a barrier makes them the block's).
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(SHORTCUT_CUDA_EMULATION)
  ::emu::cp_async_wait(N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
// Two transposed 8 x 8 bf16 matrices from shared memory (ldmatrix .x2.trans): lane l gives the
// address of row l % 8 of matrix (l / 8) % 2 (16-byte aligned rows); lane 4 g + q receives rows
// 2q, 2q + 1 of column g of each — for a row-major [k][n] tile, the B fragment of mma m16n8k16
// (b[0] from keys 0-7, b[1] from keys 8-15). Every lane of the warp must call it.
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], const void* row) {
#if defined(SHORTCUT_CUDA_EMULATION)
  ::emu::LdMatrixCall c{row, 2, true, {}};
  ::emu::ldmatrix(&c);
  r[0] = c.r[0];
  r[1] = c.r[1];
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(s)
               : "memory");
#elif defined(__CUDA_ARCH__)
  __trap();
#endif
}

// The A fragment (16 x 16, k over the 16 columns) of the bf16 rounding of two D tiles: d_lo holds
// columns 0-7, d_hi columns 8-15 (see the layouts above).
__device__ __forceinline__ void pack_a_from_d(uint32_t (&a)[4], const float (&d_lo)[4], const float (&d_hi)[4]) {
  a[0] = pack_bf16x2(d_lo[0], d_lo[1]);
  a[1] = pack_bf16x2(d_lo[2], d_lo[3]);
  a[2] = pack_bf16x2(d_hi[0], d_hi[1]);
  a[3] = pack_bf16x2(d_hi[2], d_hi[3]);
}

}  // namespace shortcut::kernels
