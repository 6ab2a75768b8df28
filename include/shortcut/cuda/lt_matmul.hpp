// bf16 mode's linear-layer products through cuBLASLt, with the bias work fused into them (issue 11,
// item 3): the forward adds its bias in the product's epilogue (CUBLASLT_EPILOGUE_BIAS) instead of a
// broadcast kernel that reads and writes the whole output again, and the weight-gradient product
// sums the bias gradient from the operand it already reads (CUBLASLT_EPILOGUE_BGRADB) instead of a
// column-sum kernel that reads dout again. Each saves one pass over an [N, O] fp32 array per layer.
// The MLP's first layer and GELU run as one product (CUBLASLT_EPILOGUE_GELU_AUX_BIAS: a = x W^T + b
// kept as the auxiliary output for the backward, g = GELU(a) as D), and the second layer's data
// gradient takes GELU's derivative in its epilogue (CUBLASLT_EPILOGUE_DGELU: da = (dout W) * GELU'(a),
// a read as the auxiliary input), which removes the fp32 dg that the separate GELU-backward kernel
// wrote and read back. GELU is the tanh form in both, the library's (docs/method.md).
//
// A plan (descriptors, layouts, the heuristic's algorithm) is made once per problem — shape, epilogue
// and the operands' alignments, which the heuristic is told (MIN_ALIGNMENT_*: a weight inside the
// arena or an output at an odd offset is not 16-byte aligned, and an algorithm chosen for aligned
// operands would fault on it) — and cached. Where the heuristic finds no algorithm, the call returns
// false and the caller runs the cuBLAS product and the separate kernel instead (LtStats::fallbacks,
// the heuristic's status in last_refusal); the plan remembers that, so it is asked once. Likewise
// where cublasLtMatmul itself answers NOT_SUPPORTED at a plan's first run (documented for
// configurations the device's kernels do not support, which the heuristic may not have filtered):
// the product is not run and the plan falls back from then on, rather than the training stopping.
// Any other error, or a refusal after a plan has run, is an error (thrown).
//
// Numerics: the bias is added to the fp32 accumulator before the one rounding to the fp32 output (the
// separate kernel rounds the product first); the bias gradient is summed from the bf16 copy of dout
// that the product reads (the column-sum kernel sums the fp32 dout), accumulated in fp32 — what
// autocast does, and within the mode's tolerances (tests/gpu/lt_matmul_test.cu).
//
// Capturable: the workspace is allocated at the first product (a key's first, eager call), and
// nothing else allocates or synchronizes.
#pragma once
#include <cublasLt.h>
#include <cuda_bf16.h>

#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "shortcut/cuda/check.hpp"
#include "shortcut/cuda/device_buffer.hpp"

namespace shortcut::cuda {

struct LtStats {
  uint64_t products = 0;   // cuBLASLt products run
  uint64_t fallbacks = 0;  // products the heuristic found no algorithm for (run by the caller instead)
  uint64_t plans = 0;      // problems planned
  std::string last_refusal;
};

class LtMatmul {
 public:
  LtMatmul() = default;
  LtMatmul(const LtMatmul&) = delete;
  LtMatmul& operator=(const LtMatmul&) = delete;
  ~LtMatmul() { clear(); }

  // out[N,O] = in_b[N,I] W_b[O,I]^T + b[O] (fp32 out and b; b may be null). False: not run (no algorithm).
  bool linear_forward(float* out, const __nv_bfloat16* in_b, const __nv_bfloat16* W_b, const float* b, int N, int I,
                      int O, cudaStream_t s) {
    return run(b ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT, CUBLAS_OP_T, CUBLAS_OP_N, O, N, I, W_b, I, in_b,
               I, 0.f, out, O, b, s);
  }
  // a[N,O] = in_b W_b^T + b (b may be null) and g = GELU(a) in one product, a kept for the backward
  // (GELU_AUX_BIAS / GELU_AUX; fp32 g and a). False: not run (no algorithm, or O not a multiple of 8:
  // the auxiliary matrix's leading dimension must be).
  bool linear_gelu_forward(float* g, float* a, const __nv_bfloat16* in_b, const __nv_bfloat16* W_b, const float* b,
                           int N, int I, int O, cudaStream_t s) {
    return run(b ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX, CUBLAS_OP_T, CUBLAS_OP_N, O, N, I,
               W_b, I, in_b, I, 0.f, g, O, b, s, a);
  }
  // da[N,I] = (dout_b W_b) * GELU'(a), a[N,I] the pre-activation of the layer's input (DGELU). False:
  // not run (no algorithm, or I not a multiple of 8).
  bool gelu_data_grad(float* da, const __nv_bfloat16* dout_b, const __nv_bfloat16* W_b, const float* a, int N, int I,
                      int O, cudaStream_t s) {
    // da^T [I,N] = W^T dout^T: A = W (col-major [I,O]), B = dout^T (col-major [O,N]); aux = a^T, ld I
    return run(CUBLASLT_EPILOGUE_DGELU, CUBLAS_OP_N, CUBLAS_OP_N, I, N, O, W_b, I, dout_b, O, 0.f, da, I, nullptr, s,
               a);
  }
  // dW[O,I] += dout_b^T in_b and db[O] = sum over n of dout_b[n, :] (written, not added). False: not run.
  bool weight_grad(float* dW, float* db, const __nv_bfloat16* in_b, const __nv_bfloat16* dout_b, int N, int I, int O,
                   cudaStream_t s) {
    // dW^T [I,O] = in^T dout: A = in^T (col-major [I,N]), B = dout^T (col-major [O,N]) transposed, so
    // the reduction over the GEMM's k (= N) of op(B) is the bias gradient, one value per column of D
    return run(CUBLASLT_EPILOGUE_BGRADB, CUBLAS_OP_N, CUBLAS_OP_T, I, O, N, in_b, I, dout_b, O, 1.f, dW, I, db, s);
  }

  const LtStats& stats() const { return stats_; }
  void clear() noexcept {
    for (auto& [key, p] : plans_) p.release();
    plans_.clear();
    if (handle_) cublasLtDestroy(handle_);
    handle_ = nullptr;
  }

 private:
  // Shape, epilogue, and the alignments (bytes, capped at 256) of A, B, C = D, the bias vector and the
  // auxiliary matrix.
  using Key = std::tuple<int, int, int, int, int, int, unsigned, unsigned, unsigned, unsigned, unsigned>;
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatmulAlgo_t algo{};
    size_t workspace = 0;
    bool found = false;
    bool ran = false;  // cublasLtMatmul has accepted it once
    void release() noexcept {
      if (pref) cublasLtMatmulPreferenceDestroy(pref);
      if (a) cublasLtMatrixLayoutDestroy(a);
      if (b) cublasLtMatrixLayoutDestroy(b);
      if (c) cublasLtMatrixLayoutDestroy(c);
      if (desc) cublasLtMatmulDescDestroy(desc);
      *this = Plan{};
    }
  };
  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;  // cuBLAS's suggestion for Hopper

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<unsigned char> workspace_;
  std::map<Key, Plan> plans_;
  LtStats stats_;

  static unsigned alignment(const void* p) {
    const auto a = reinterpret_cast<uintptr_t>(p);
    unsigned k = 1;
    while (k < 256 && a % (2 * k) == 0) k *= 2;
    return k;
  }
  template <class V>
  static void set(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr, const V& v) {
    SHORTCUT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(d, attr, &v, sizeof(V)));
  }
  template <class V>
  static void set(cublasLtMatmulPreference_t p, cublasLtMatmulPreferenceAttributes_t attr, const V& v) {
    SHORTCUT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p, attr, &v, sizeof(V)));
  }

  // D (col-major m x n, fp32) = op(A) op(B) + beta D with `epi`, whose vector is `vec` (the bias added,
  // or the bias gradient written) and whose auxiliary matrix (m x n, ld m: GELU's input) is `aux`.
  bool run(cublasLtEpilogue_t epi, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
           const __nv_bfloat16* A, int lda, const __nv_bfloat16* B, int ldb, float beta, float* D, int ldd,
           const float* vec, cudaStream_t s, const float* aux = nullptr) {
    if (aux && m % 8 != 0) {  // the documented rule for the GELU input's leading dimension
      ++stats_.fallbacks;
      stats_.last_refusal = cat("epilogue ", int(epi), ": the auxiliary matrix's leading dimension ", m,
                                " is not a multiple of 8");
      return false;
    }
    const Key key{int(epi), int(ta), int(tb), m, n, k, alignment(A), alignment(B), alignment(D), alignment(vec),
                  alignment(aux)};
    auto it = plans_.find(key);
    if (it == plans_.end()) it = plans_.emplace(key, plan(epi, ta, tb, m, n, k, lda, ldb, ldd, key, vec, aux)).first;
    Plan& p = it->second;
    if (!p.found) {
      ++stats_.fallbacks;
      return false;
    }
    if (vec) set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(vec));
    if (aux) set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<const void*>(aux));
    const float alpha = 1.f;
    const cublasStatus_t st = cublasLtMatmul(handle_, p.desc, &alpha, A, p.a, B, p.b, &beta, D, p.c, D, p.c, &p.algo,
                                             workspace_.data(), workspace_.size(), s);
    if (st == CUBLAS_STATUS_NOT_SUPPORTED && !p.ran) {
      p.found = false;
      ++stats_.fallbacks;
      stats_.last_refusal = cat("cublasLtMatmul (epilogue ", int(epi), ", m ", m, ", n ", n, ", k ", k,
                                "): CUBLAS_STATUS_NOT_SUPPORTED at the plan's first run");
      return false;
    }
    check_cublas(st, "cublasLtMatmul", __FILE__, __LINE__);
    p.ran = true;
    ++stats_.products;
    return true;
  }

  Plan plan(cublasLtEpilogue_t epi, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, int lda, int ldb,
            int ldd, const Key& key, const float* vec, const float* aux) {
    if (!handle_) SHORTCUT_CUBLAS_CHECK(cublasLtCreate(&handle_));
    if (!workspace_.data()) workspace_ = DeviceBuffer<unsigned char>(kWorkspaceBytes);
    ++stats_.plans;
    Plan p;
    try {
      SHORTCUT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      set(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, int32_t(ta));
      set(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, int32_t(tb));
      set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, uint32_t(epi));
      if (vec) {
        set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, int32_t(CUDA_R_32F));
        set(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(vec));  // its alignment counts
      }
      if (aux) {  // fp32, D's type: the documented default
        set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<const void*>(aux));  // alignment counts
        set(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, int64_t(m));
      }
      const bool a_t = ta == CUBLAS_OP_T, b_t = tb == CUBLAS_OP_T;
      SHORTCUT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, a_t ? k : m, a_t ? m : k, lda));
      SHORTCUT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, b_t ? n : k, b_t ? k : n, ldb));
      SHORTCUT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, CUDA_R_32F, m, n, ldd));
      SHORTCUT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p.pref));
      set(p.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(workspace_.size()));
      set(p.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, uint32_t(std::get<6>(key)));
      set(p.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, uint32_t(std::get<7>(key)));
      set(p.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, uint32_t(std::get<8>(key)));
      set(p.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, uint32_t(std::get<8>(key)));
    } catch (...) {
      p.release();
      throw;
    }
    cublasLtMatmulHeuristicResult_t r{};
    int count = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.c, p.c, p.pref, 1, &r, &count);
    if (st == CUBLAS_STATUS_SUCCESS && count > 0 && r.state == CUBLAS_STATUS_SUCCESS &&
        r.workspaceSize <= workspace_.size()) {
      p.algo = r.algo;
      p.workspace = r.workspaceSize;
      p.found = true;
    } else {
      stats_.last_refusal = cat("cublasLtMatmulAlgoGetHeuristic (epilogue ", int(epi), ", m ", m, ", n ", n, ", k ", k,
                                "): ", st != CUBLAS_STATUS_SUCCESS ? cublasGetStatusName(st) : "no algorithm");
    }
    return p;
  }
};

}  // namespace shortcut::cuda
