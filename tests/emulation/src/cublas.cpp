// cuBLAS in the emulation: argument checks in the order and with the statuses the cuBLAS
// documentation gives for cublasGemmEx (an invalid size, operation or leading dimension is
// CUBLAS_STATUS_INVALID_VALUE; a type / compute-type combination outside the documented table is
// CUBLAS_STATUS_NOT_SUPPORTED), device-pointer checks (on a GPU a host pointer faults inside the
// kernel: here a sticky illegal-address fault), and the product in double, queued on the handle's
// stream like any kernel.
#include <cuda_runtime.h>
#include <cublas_v2.h>

#include <cmath>
#include <cstdio>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "internal.hpp"

namespace emu {

struct Blas {
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;  // the user's (cublasSetWorkspace); null: the library's own pool
  size_t workspace_bytes = 0;
};
namespace {
std::set<const Blas*>& handles() {
  static auto* h = new std::set<const Blas*>;
  return *h;
}

cublasStatus_t invalid(const std::string& why) {
  std::fprintf(stderr, "emulated cuBLAS: %s\n", why.c_str());
  return CUBLAS_STATUS_INVALID_VALUE;
}

}  // namespace

// Shared with cublaslt.cpp (internal.hpp).
size_t type_size(cudaDataType_t t) {
  switch (t) {
    case CUDA_R_32F: return 4;
    case CUDA_R_64F: return 8;
    case CUDA_R_16F:
    case CUDA_R_16BF: return 2;
  }
  return 0;
}

EMU_UNCHECKED double load(const void* p, cudaDataType_t t, size_t i) {
  switch (t) {
    case CUDA_R_32F: return static_cast<const float*>(p)[i];
    case CUDA_R_64F: return static_cast<const double*>(p)[i];
    case CUDA_R_16BF: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default: return NAN;
  }
}
EMU_UNCHECKED void store(void* p, cudaDataType_t t, size_t i, double v) {
  switch (t) {
    case CUDA_R_32F: static_cast<float*>(p)[i] = float(v); break;
    case CUDA_R_64F: static_cast<double*>(p)[i] = v; break;
    case CUDA_R_16BF: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(float(v)); break;
    default: break;
  }
}
namespace {
// fp32 -> TF32 (10 mantissa bits), round to nearest
double tf32(double v) {
  float f = float(v);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & ~0x1fffu;
  std::memcpy(&f, &u, 4);
  return f;
}

// The documented cublasGemmEx table (the rows this emulation computes).
bool supported(cublasComputeType_t ct, cudaDataType_t a, cudaDataType_t b, cudaDataType_t c) {
  if (a != b) return false;
  switch (ct) {
    case CUBLAS_COMPUTE_32F:
    case CUBLAS_COMPUTE_32F_PEDANTIC:
      return (a == CUDA_R_32F && c == CUDA_R_32F) || (a == CUDA_R_16BF && (c == CUDA_R_16BF || c == CUDA_R_32F));
    case CUBLAS_COMPUTE_32F_FAST_16BF:
    case CUBLAS_COMPUTE_32F_FAST_TF32: return a == CUDA_R_32F && c == CUDA_R_32F;
    case CUBLAS_COMPUTE_64F: return a == CUDA_R_64F && c == CUDA_R_64F;
    default: return false;
  }
}

// The extent in elements of an (rows x cols) column-major matrix with leading dimension ld.
size_t extent(int rows, int cols, int ld) { return cols ? size_t(cols - 1) * ld + rows : 0; }

}  // namespace

// C = al op(A) op(B) + be C for each of `batch` matrices, in double
EMU_UNCHECKED void product(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, double al, const void* A,
                           cudaDataType_t at, int lda, long long sA, const void* B, cudaDataType_t bt, int ldb,
                           long long sB, double be, void* C, cudaDataType_t ct, int ldc, long long sC, int batch,
                           bool round_tf32) {
  // op(A) as a column-major m x k array and op(B) as k x n, in double (TF32-rounded where asked),
  // so that the inner loop runs over contiguous memory
  std::vector<double> a(size_t(m) * k), bm(size_t(k) * n), acc(static_cast<size_t>(m));
  for (int b = 0; b < batch; ++b) {
    const size_t oa = size_t(b) * sA, ob = size_t(b) * sB, oc = size_t(b) * sC;
    if (al != 0.0) {
      for (int p = 0; p < k; ++p)
        for (int i = 0; i < m; ++i) {
          const double v = load(A, at, oa + (ta == CUBLAS_OP_N ? size_t(p) * lda + i : size_t(i) * lda + p));
          a[size_t(p) * m + i] = round_tf32 ? tf32(v) : v;
        }
      for (int j = 0; j < n; ++j)
        for (int p = 0; p < k; ++p) {
          const double v = load(B, bt, ob + (tb == CUBLAS_OP_N ? size_t(j) * ldb + p : size_t(p) * ldb + j));
          bm[size_t(j) * k + p] = round_tf32 ? tf32(v) : v;
        }
    }
    for (int j = 0; j < n; ++j) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int p = 0; p < k && al != 0.0; ++p) {
        const double bv = bm[size_t(j) * k + p];
        const double* ac = a.data() + size_t(p) * m;
        for (int i = 0; i < m; ++i) acc[i] += ac[i] * bv;
      }
      for (int i = 0; i < m; ++i) {
        const size_t ci = oc + size_t(j) * ldc + i;
        // beta == 0: C is not read, so NaN in C does not propagate (as documented)
        store(C, ct, ci, al * acc[i] + (be != 0.0 ? be * load(C, ct, ci) : 0.0));
      }
    }
  }
}

namespace {
cublasStatus_t gemm(const char* fn, cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                    const void* alpha, const void* A, cudaDataType_t at, int lda, long long sA, const void* B,
                    cudaDataType_t bt, int ldb, long long sB, const void* beta, void* C, cudaDataType_t ct, int ldc,
                    long long sC, int batch, cublasComputeType_t comp) {
  if (!h || !handles().count(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
  const std::string f = fn;
  if (ta != CUBLAS_OP_N && ta != CUBLAS_OP_T && ta != CUBLAS_OP_C) return invalid(f + ": transa is not N, T or C");
  if (tb != CUBLAS_OP_N && tb != CUBLAS_OP_T && tb != CUBLAS_OP_C) return invalid(f + ": transb is not N, T or C");
  if (m < 0 || n < 0 || k < 0 || batch < 0)
    return invalid(f + ": negative size (m " + std::to_string(m) + ", n " + std::to_string(n) + ", k " +
                   std::to_string(k) + ", batch " + std::to_string(batch) + ")");
  const int arows = ta == CUBLAS_OP_N ? m : k, acols = ta == CUBLAS_OP_N ? k : m;
  const int brows = tb == CUBLAS_OP_N ? k : n, bcols = tb == CUBLAS_OP_N ? n : k;
  if (lda < std::max(1, arows))
    return invalid(f + ": lda " + std::to_string(lda) + " < max(1, " + std::to_string(arows) + ")");
  if (ldb < std::max(1, brows))
    return invalid(f + ": ldb " + std::to_string(ldb) + " < max(1, " + std::to_string(brows) + ")");
  if (ldc < std::max(1, m)) return invalid(f + ": ldc " + std::to_string(ldc) + " < max(1, " + std::to_string(m) + ")");
  if (!alpha || !beta) return invalid(f + ": alpha or beta is null");
  if (!supported(comp, at, bt, ct)) {
    std::fprintf(stderr, "emulated cuBLAS: %s: compute type %d with A/B/C types %d/%d/%d is not in the table\n", fn,
                 int(comp), int(at), int(bt), int(ct));
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (!m || !n || !batch) return CUBLAS_STATUS_SUCCESS;
  const double al = comp == CUBLAS_COMPUTE_64F ? *static_cast<const double*>(alpha) : *static_cast<const float*>(alpha);
  const double be = comp == CUBLAS_COMPUTE_64F ? *static_cast<const double*>(beta) : *static_cast<const float*>(beta);
  // every matrix must be device memory over its whole extent (else the kernel would fault)
  auto on_device = [&](const void* p, cudaDataType_t t, int rows, int cols, int ld, long long stride) {
    const size_t span = (size_t(batch - 1) * size_t(stride > 0 ? stride : 0) + extent(rows, cols, ld)) * type_size(t);
    return !span || (p && device_range(p, span));
  };
  std::string bad;
  if (k && al != 0.0 && !on_device(A, at, arows, acols, lda, sA)) bad = "A";
  else if (k && al != 0.0 && !on_device(B, bt, brows, bcols, ldb, sB)) bad = "B";
  else if (!on_device(C, ct, m, n, ldc, sC)) bad = "C";
  const bool round_tf32 = comp == CUBLAS_COMPUTE_32F_FAST_TF32;
  const cudaError_t e = enqueue(h->stream, [=] {
    if (!bad.empty())
      return fault(cudaErrorIllegalAddress, f + ": matrix " + bad + " is not (wholly) device memory");
    product(ta, tb, m, n, k, al, A, at, lda, sA, B, bt, ldb, sB, be, C, ct, ldc, sC, batch, round_tf32);
  });
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}
}  // namespace
}  // namespace emu

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  if (!handle) return CUBLAS_STATUS_INVALID_VALUE;
  *handle = new emu::Blas;
  emu::handles().insert(*handle);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  if (!handle || !emu::handles().erase(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (!handle || !emu::handles().count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  handle->workspace = nullptr;  // as cuBLAS documents: setting the stream resets the workspace
  handle->workspace_bytes = 0;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void* workspace, size_t bytes) {
  if (!handle || !emu::handles().count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes && (!workspace || !emu::device_range(workspace, bytes))) return CUBLAS_STATUS_INVALID_VALUE;
  if (reinterpret_cast<uintptr_t>(workspace) % 256) return CUBLAS_STATUS_INVALID_VALUE;  // documented alignment
  handle->workspace = workspace;
  handle->workspace_bytes = bytes;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t* stream) {
  if (!handle || !emu::handles().count(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!stream) return CUBLAS_STATUS_INVALID_VALUE;
  *stream = handle->stream;
  return CUBLAS_STATUS_SUCCESS;
}
const char* cublasGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}
const char* cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
    case CUBLAS_STATUS_INVALID_VALUE: return "an invalid value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
    default: return cublasGetStatusName(s);
  }
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void* alpha, const void* A, cudaDataType_t at, int lda, const void* B,
                            cudaDataType_t bt, int ldb, const void* beta, void* C, cudaDataType_t ct, int ldc,
                            cublasComputeType_t comp, cublasGemmAlgo_t) {
  return emu::gemm("cublasGemmEx", h, ta, tb, m, n, k, alpha, A, at, lda, 0, B, bt, ldb, 0, beta, C, ct, ldc, 0, 1,
                   comp);
}
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                          int k, const void* alpha, const void* A, cudaDataType_t at, int lda,
                                          long long sA, const void* B, cudaDataType_t bt, int ldb, long long sB,
                                          const void* beta, void* C, cudaDataType_t ct, int ldc, long long sC,
                                          int batch, cublasComputeType_t comp, cublasGemmAlgo_t) {
  return emu::gemm("cublasGemmStridedBatchedEx", h, ta, tb, m, n, k, alpha, A, at, lda, sA, B, bt, ldb, sB, beta, C,
                   ct, ldc, sC, batch, comp);
}
