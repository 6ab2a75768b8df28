// The fully connected layer on cuBLAS, row-major: out[N,O] = in[N,I] W[O,I]^T + b[O], and its
// backward din[N,I] (= or +=) = dout W, dW[O,I] += dout^T in, db[O] += sum_n dout.
//
// cuBLAS is column-major; a row-major [R,C] array is the column-major [C,R] array of its transpose,
// so each product is issued as its transpose: out^T = W in^T is gemm(T, N) with W as the [I,O]
// column-major matrix, din^T = W^T dout^T is gemm(N, N), dW^T = in^T dout is gemm(N, T).
// The compute type is CUBLAS_COMPUTE_32F by default (full fp32, no TF32, so the tests hold fp32
// tolerances); Backend's Options::tf32 selects CUBLAS_COMPUTE_32F_FAST_TF32 (about 3e-4 relative
// error, the matrix units' fp32 mode). The bias is added by a broadcast kernel after the product and
// its gradient is a column sum; bf16 mode fuses both into cuBLASLt's epilogues where it can
// (include/shortcut/cuda/lt_matmul.hpp) and falls back to the functions here otherwise.
#pragma once
#include <cublas_v2.h>

#include "kernels/common.cuh"
#include "kernels/elementwise.cuh"

namespace shortcut::kernels {

template <class T>
struct CudaType;
template <>
struct CudaType<float> {
  static constexpr cudaDataType_t value = CUDA_R_32F;
};
template <>
struct CudaType<__nv_bfloat16> {
  static constexpr cudaDataType_t value = CUDA_R_16BF;
};

// db[o] += sum over rows n of dout[n, o]. Threads own columns (coalesced across a warp); the rows
// are split over gridDim.y slices whose partial sums meet through atomics when there are several.
template <class T>
__global__ void column_sum_add_kernel(T* db, const T* dout, int N, int O, int rows_per_slice) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= O) return;
  const int n0 = blockIdx.y * rows_per_slice;
  const int n1 = min(N, n0 + rows_per_slice);
  float s = 0.f;
  for (int n = n0; n < n1; ++n) s += to_f32(dout[size_t(n) * O + o]);
  if (gridDim.y > 1) atomicAdd(db + o, from_f32<T>(s));
  else db[o] = from_f32<T>(to_f32(db[o]) + s);
}

template <class T>
void column_sum_add(T* db, const T* dout, int N, int O, int num_sms, cudaStream_t s) {
  if (N <= 0 || O <= 0) return;
  const int col_blocks = ceil_div(O, kThreads);
  int slices = ceil_div(4 * num_sms, col_blocks);                 // about four blocks per multiprocessor
  slices = slices < 1 ? 1 : (slices > 65535 ? 65535 : slices);    // gridDim.y limit
  int rows = ceil_div(N, slices);
  rows = rows < 32 ? 32 : rows;                                   // not fewer than 32 rows per slice
  slices = ceil_div(N, rows);
  launch("column_sum_add_kernel", column_sum_add_kernel<T>, dim3(col_blocks, slices), kThreads, 0, s, db, dout, N, O, rows);
}

// C (column-major m x n, ldc) = alpha op(A) op(B) + beta C; operands stored as TA, C as TC (bf16
// operands with an fp32 C: the mixed-precision products), compute `ct`.
template <class TA, class TC>
void gemm(cublasHandle_t h, cublasComputeType_t ct, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
          const TA* A, int lda, const TA* B, int ldb, float beta, TC* C, int ldc) {
  const float alpha = 1.f;
  constexpr cudaDataType_t ty = CudaType<TA>::value, tc = CudaType<TC>::value;
  SHORTCUT_CUBLAS_CHECK(cublasGemmEx(h, ta, tb, m, n, k, &alpha, A, ty, lda, B, ty, ldb, &beta, C, tc, ldc, ct,
                                     CUBLAS_GEMM_DEFAULT));
}

// out[N,O] = in[N,I] W[O,I]^T + b[O]  (b may be null). The handle must be bound to stream s.
template <class T>
void linear_forward(cublasHandle_t h, cublasComputeType_t ct, T* out, const T* in, const T* W, const T* b, int N, int I,
                    int O, cudaStream_t s) {
  if (N <= 0 || O <= 0) return;
  if (I <= 0) {  // an empty sum (cuBLAS would reject lda = 0); all-zero bits are 0 in fp32 and bf16
    SHORTCUT_CUDA_CHECK(cudaMemsetAsync(out, 0, size_t(N) * O * sizeof(T), s));
  } else {
    gemm(h, ct, CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, W, I, in, I, 0.f, out, O);
  }
  if (b) add_rows(out, b, N, O, s);
}

// din[N,I] (= or += with accumulate_din; null skips) = dout W; dW[O,I] += dout^T in; db[O] += sum dout
template <class T>
void linear_backward(cublasHandle_t h, cublasComputeType_t ct, T* din, T* dW, T* db, const T* dout, const T* in,
                     const T* W, int N, int I, int O, bool accumulate_din, int num_sms, cudaStream_t s) {
  if (N <= 0 || O <= 0) return;
  if (I > 0) {
    // beta = 0 makes cuBLAS ignore din's old contents, NaN included
    if (din) gemm(h, ct, CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, W, I, dout, O, accumulate_din ? 1.f : 0.f, din, I);
    if (dW) gemm(h, ct, CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, in, I, dout, O, 1.f, dW, I);
  }
  if (db) column_sum_add(db, dout, N, O, num_sms, s);
}

// The mixed-precision layer: bf16 operands (in_b, W_b: copies of the fp32 in and W), fp32 results
// and accumulation on the bf16 tensor cores. out[N,O] = in_b W_b^T + b; I > 0.
inline void linear_forward_bf16(cublasHandle_t h, float* out, const __nv_bfloat16* in_b, const __nv_bfloat16* W_b,
                                const float* b, int N, int I, int O, cudaStream_t s) {
  if (N <= 0 || O <= 0) return;
  gemm(h, CUBLAS_COMPUTE_32F, CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, W_b, I, in_b, I, 0.f, out, O);
  if (b) add_rows(out, b, N, O, s);
}
// din (fp32, = or +=) = dout_b W_b; dW (fp32) += dout_b^T in_b; db += sum of the fp32 dout. I > 0.
inline void linear_backward_bf16(cublasHandle_t h, float* din, float* dW, float* db, const float* dout,
                                 const __nv_bfloat16* dout_b, const __nv_bfloat16* in_b, const __nv_bfloat16* W_b,
                                 int N, int I, int O, bool accumulate_din, int num_sms, cudaStream_t s) {
  if (N <= 0 || O <= 0) return;
  if (din) gemm(h, CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, W_b, I, dout_b, O, accumulate_din ? 1.f : 0.f,
                din, I);
  if (dW) gemm(h, CUBLAS_COMPUTE_32F, CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, in_b, I, dout_b, O, 1.f, dW, I);
  if (db) column_sum_add(db, dout, N, O, num_sms, s);
}

}  // namespace shortcut::kernels
