// cuBLASLt in the emulation: the descriptor objects the backend builds, the heuristic and
// cublasLtMatmul with the DEFAULT, BIAS, BGRADB, GELU_AUX, GELU_AUX_BIAS and DGELU epilogues.
// Arguments are checked as the cuBLASLt documentation states (a descriptor attribute of the wrong size,
// layouts that do not describe the product, a C layout other than D's, a missing bias or auxiliary
// pointer, an auxiliary leading dimension not divisible by 8 or below D's rows, too small a workspace:
// INVALID_VALUE; a type combination or epilogue outside what this emulation computes: NOT_SUPPORTED)
// and the product is cublas.cpp's, in double, with the epilogue applied before the one rounding to
// D's type. GELU is the tanh form (what cuBLASLt's epilogue computes: PyTorch routes only
// gelu(approximate="tanh") to it); the auxiliary matrix (GELU's input, written by GELU_AUX, read by
// DGELU) has D's type unless AUX_DATA_TYPE says otherwise, and only D's type is emulated.
//
// An algorithm remembers the operand alignments the heuristic was told to expect (the preference's
// MIN_ALIGNMENT attributes, 256 bytes when not set, as documented); cublasLtMatmul rejects pointers
// aligned less than that (capped at 16 bytes, the widest access a GPU kernel makes), which a real
// kernel chosen for aligned operands would turn into a misaligned-address fault.
#include <cuda_runtime.h>
#include <cublasLt.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "internal.hpp"

namespace emu {

struct LtContext {};
struct LtDesc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
  uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
  const void* bias = nullptr;
  int32_t bias_type = -1;
  const void* aux = nullptr;  // GELU's input: written by GELU_AUX(_BIAS), read by DGELU
  int64_t aux_ld = 0;
  int32_t aux_type = -1;
};
struct LtLayout {
  cudaDataType_t type;
  uint64_t rows, cols;
  int64_t ld;
};
struct LtPreference {
  uint64_t max_workspace = 0;
  uint32_t align[4] = {256, 256, 256, 256};  // A, B, C, D
};

namespace {
constexpr uint64_t kAlgoMagic = 0x4c74456d75416c67ull;  // "LtEmuAlg"
constexpr size_t kAlgoWorkspace = size_t(1) << 20;       // what the emulated algorithm asks for, at most
bool finds_nothing = false;
uint32_t refused_epilogue = 0;

template <class T>
std::set<const T*>& live() {
  static auto* s = new std::set<const T*>;
  return *s;
}
template <class T>
cublasStatus_t create(T** out, T value) {
  if (!out) return CUBLAS_STATUS_INVALID_VALUE;
  *out = new T(value);
  live<T>().insert(*out);
  return CUBLAS_STATUS_SUCCESS;
}
template <class T>
cublasStatus_t destroy(T* p) {
  if (!p) return CUBLAS_STATUS_SUCCESS;  // as documented: destroying null is allowed
  if (!live<T>().erase(p)) return CUBLAS_STATUS_INVALID_VALUE;
  delete p;
  return CUBLAS_STATUS_SUCCESS;
}
template <class T>
bool valid(const T* p) {
  return p && live<T>().count(p);
}
cublasStatus_t invalid(const std::string& why) {
  std::fprintf(stderr, "emulated cuBLASLt: %s\n", why.c_str());
  return CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t unsupported(const std::string& why) {
  std::fprintf(stderr, "emulated cuBLASLt: %s\n", why.c_str());
  return CUBLAS_STATUS_NOT_SUPPORTED;
}
template <class V>
cublasStatus_t read(V* dst, const void* buf, size_t bytes, const char* what) {
  if (!buf || bytes != sizeof(V))
    return invalid(std::string(what) + ": attribute buffer null or of " + std::to_string(bytes) + " bytes, expected " +
                   std::to_string(sizeof(V)));
  std::memcpy(dst, buf, sizeof(V));
  return CUBLAS_STATUS_SUCCESS;
}

// The problem the descriptors describe: m x n = D, k the contraction.
struct Problem {
  int m = 0, n = 0, k = 0;
  cudaDataType_t bias_type = CUDA_R_32F, aux_type = CUDA_R_32F;
};
size_t extent(uint64_t rows, uint64_t cols, int64_t ld) { return cols ? size_t(cols - 1) * size_t(ld) + rows : 0; }

bool adds_bias(uint32_t e) { return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS; }
bool uses_aux(uint32_t e) {
  return e == CUBLASLT_EPILOGUE_GELU_AUX || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_DGELU;
}
bool uses_bias(uint32_t e) { return adds_bias(e) || e == CUBLASLT_EPILOGUE_BGRADB; }
// GELU, tanh form, and its derivative
constexpr double kGeluC = 0.7978845608028654;  // sqrt(2 / pi)
double gelu(double x) { return 0.5 * x * (1.0 + std::tanh(kGeluC * (x + 0.044715 * x * x * x))); }
double dgelu(double x) {
  const double t = std::tanh(kGeluC * (x + 0.044715 * x * x * x));
  return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * kGeluC * (1.0 + 3.0 * 0.044715 * x * x);
}

cublasStatus_t check(const char* fn, const LtDesc* d, const LtLayout* A, const LtLayout* B, const LtLayout* C,
                     const LtLayout* D, Problem* p) {
  const std::string f = fn;
  if (!valid(d)) return invalid(f + ": the matmul descriptor is not a live one");
  if (!valid(A) || !valid(B) || !valid(C) || !valid(D)) return invalid(f + ": a matrix layout is not a live one");
  if (d->transa != CUBLAS_OP_N && d->transa != CUBLAS_OP_T) return unsupported(f + ": TRANSA other than N or T");
  if (d->transb != CUBLAS_OP_N && d->transb != CUBLAS_OP_T) return unsupported(f + ": TRANSB other than N or T");
  for (const LtLayout* l : {A, B, C, D})
    if (l->ld < std::max<int64_t>(1, int64_t(l->rows)))
      return invalid(f + ": a layout's leading dimension " + std::to_string(l->ld) + " < its rows " +
                     std::to_string(l->rows));
  p->m = int(D->rows);
  p->n = int(D->cols);
  const bool ta = d->transa == CUBLAS_OP_T, tb = d->transb == CUBLAS_OP_T;
  p->k = int(ta ? A->rows : A->cols);
  if ((ta ? A->cols : A->rows) != uint64_t(p->m)) return invalid(f + ": op(A) does not have D's rows");
  if ((tb ? B->cols : B->rows) != uint64_t(p->k) || (tb ? B->rows : B->cols) != uint64_t(p->n))
    return invalid(f + ": op(B) is not k x n (k from op(A), n from D)");
  if (C->type != D->type || C->rows != D->rows || C->cols != D->cols || C->ld != D->ld)
    return invalid(f + ": the C layout differs from D's");
  if (d->compute != CUBLAS_COMPUTE_32F || d->scale != CUDA_R_32F)
    return unsupported(f + ": only CUBLAS_COMPUTE_32F with fp32 scale is emulated");
  const bool types_ok = A->type == B->type && ((A->type == CUDA_R_32F && D->type == CUDA_R_32F) ||
                                               (A->type == CUDA_R_16BF && (D->type == CUDA_R_32F || D->type == CUDA_R_16BF)));
  if (!types_ok) return unsupported(f + ": A/B/D types outside the emulated table");
  const uint32_t e = d->epilogue;
  if (e != CUBLASLT_EPILOGUE_DEFAULT && !uses_bias(e) && !uses_aux(e))
    return unsupported(f + ": epilogue " + std::to_string(e) +
                       " is not emulated (DEFAULT, BIAS, BGRADB, GELU_AUX, GELU_AUX_BIAS, DGELU are)");
  // bias: D's type for BIAS, C's for the gradient (the documented defaults); fp32 accepted for both
  p->bias_type = d->bias_type < 0 ? D->type : cudaDataType_t(d->bias_type);
  if (uses_bias(e) && p->bias_type != D->type && p->bias_type != CUDA_R_32F)
    return unsupported(f + ": a bias type other than D's or fp32");
  if (uses_aux(e)) {
    if (d->aux_ld % 8 != 0 || d->aux_ld < int64_t(D->rows))
      return invalid(f + ": EPILOGUE_AUX_LD " + std::to_string(d->aux_ld) +
                     " is not divisible by 8 or is below D's rows " + std::to_string(D->rows));
    p->aux_type = d->aux_type < 0 ? D->type : cudaDataType_t(d->aux_type);
    if (p->aux_type != D->type) return unsupported(f + ": an auxiliary (GELU input) type other than D's");
  }
  return CUBLAS_STATUS_SUCCESS;
}

uint32_t alignment(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t k = 1;
  while (k < 16 && a % (2 * k) == 0) k *= 2;
  return k;
}

EMU_UNCHECKED void run(Problem p, LtDesc d, double al, double be, const void* A, LtLayout la, const void* B,
                       LtLayout lb, const void* C, LtLayout lc, void* D, LtLayout ld) {
  const auto ta = cublasOperation_t(d.transa), tb = cublasOperation_t(d.transb);
  std::vector<double> acc(size_t(p.m) * p.n);
  product(ta, tb, p.m, p.n, p.k, al, A, la.type, int(la.ld), 0, B, lb.type, int(lb.ld), 0, 0.0, acc.data(),
          CUDA_R_64F, p.m, 0, 1, false);
  if (d.epilogue == CUBLASLT_EPILOGUE_BGRADB) {
    // db[j] = sum over the contraction of op(B)[., j], written (not accumulated) in the bias type
    for (int j = 0; j < p.n; ++j) {
      double s = 0.0;
      for (int q = 0; q < p.k; ++q)
        s += load(B, lb.type, tb == CUBLAS_OP_N ? size_t(j) * lb.ld + q : size_t(q) * lb.ld + j);
      store(const_cast<void*>(d.bias), cudaDataType_t(p.bias_type), size_t(j), s);
    }
  }
  for (int j = 0; j < p.n; ++j)
    for (int i = 0; i < p.m; ++i) {
      double v = acc[size_t(j) * p.m + i];
      if (be != 0.0) v += be * load(C, lc.type, size_t(j) * lc.ld + i);  // beta 0: C is not read
      if (adds_bias(d.epilogue)) v += load(d.bias, p.bias_type, size_t(i));
      const size_t a = size_t(j) * size_t(d.aux_ld) + size_t(i);
      if (d.epilogue == CUBLASLT_EPILOGUE_DGELU) {
        v *= dgelu(load(d.aux, p.aux_type, a));
      } else if (uses_aux(d.epilogue)) {
        store(const_cast<void*>(d.aux), p.aux_type, a, v);
        v = gelu(v);
      }
      store(D, ld.type, size_t(j) * ld.ld + i, v);
    }
}
}  // namespace

void lt_heuristic_finds_nothing(bool on) { finds_nothing = on; }
void lt_matmul_refuses(uint32_t epilogue) { refused_epilogue = epilogue; }
}  // namespace emu

using namespace emu;

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) { return create(handle, LtContext{}); }
cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) {
  if (!handle) return CUBLAS_STATUS_NOT_INITIALIZED;
  return destroy(handle) == CUBLAS_STATUS_SUCCESS ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t ct, cudaDataType_t st) {
  return create(desc, LtDesc{ct, st});
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) { return destroy(desc); }
cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d, cublasLtMatmulDescAttributes_t attr,
                                              const void* buf, size_t bytes) {
  if (!valid(d)) return invalid("cublasLtMatmulDescSetAttribute: not a live descriptor");
  switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return read(&d->transa, buf, bytes, "TRANSA");
    case CUBLASLT_MATMUL_DESC_TRANSB: return read(&d->transb, buf, bytes, "TRANSB");
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return read(&d->epilogue, buf, bytes, "EPILOGUE");
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return read(&d->bias, buf, bytes, "BIAS_POINTER");
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return read(&d->bias_type, buf, bytes, "BIAS_DATA_TYPE");
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER: return read(&d->aux, buf, bytes, "EPILOGUE_AUX_POINTER");
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD: return read(&d->aux_ld, buf, bytes, "EPILOGUE_AUX_LD");
    case CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_DATA_TYPE: return read(&d->aux_type, buf, bytes, "EPILOGUE_AUX_DATA_TYPE");
    default: return unsupported("cublasLtMatmulDescSetAttribute: attribute " + std::to_string(int(attr)) +
                                " is not emulated");
  }
}
cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, uint64_t rows,
                                          uint64_t cols, int64_t ld) {
  return create(layout, LtLayout{type, rows, cols, ld});
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) { return destroy(layout); }
cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  return create(pref, LtPreference{});
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) { return destroy(pref); }
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    size_t bytes) {
  if (!valid(p)) return invalid("cublasLtMatmulPreferenceSetAttribute: not a live preference");
  switch (attr) {
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES: return read(&p->max_workspace, buf, bytes, "MAX_WORKSPACE_BYTES");
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: return read(&p->align[0], buf, bytes, "MIN_ALIGNMENT_A_BYTES");
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: return read(&p->align[1], buf, bytes, "MIN_ALIGNMENT_B_BYTES");
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: return read(&p->align[2], buf, bytes, "MIN_ALIGNMENT_C_BYTES");
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return read(&p->align[3], buf, bytes, "MIN_ALIGNMENT_D_BYTES");
    default: return unsupported("cublasLtMatmulPreferenceSetAttribute: attribute " + std::to_string(int(attr)) +
                                " is not emulated");
  }
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d, cublasLtMatrixLayout_t A,
                                              cublasLtMatrixLayout_t B, cublasLtMatrixLayout_t C,
                                              cublasLtMatrixLayout_t D, cublasLtMatmulPreference_t pref,
                                              int requested, cublasLtMatmulHeuristicResult_t results[], int* count) {
  if (!valid(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (!valid(pref) || requested < 1 || !results || !count)
    return invalid("cublasLtMatmulAlgoGetHeuristic: preference, requested count, results or count invalid");
  *count = 0;
  Problem p;
  if (cublasStatus_t s = check("cublasLtMatmulAlgoGetHeuristic", d, A, B, C, D, &p); s != CUBLAS_STATUS_SUCCESS)
    return s;
  if (finds_nothing) return CUBLAS_STATUS_NOT_SUPPORTED;
  cublasLtMatmulHeuristicResult_t r{};
  r.algo.data[0] = kAlgoMagic;
  for (int i = 0; i < 4; ++i) r.algo.data[1 + i] = std::min<uint32_t>(std::max<uint32_t>(pref->align[i], 1), 16);
  r.workspaceSize = std::min<size_t>(pref->max_workspace, kAlgoWorkspace);
  r.algo.data[5] = r.workspaceSize;
  // the auxiliary pointer's value set at planning tells the heuristic its alignment (documented)
  r.algo.data[6] = uses_aux(d->epilogue) ? alignment(d->aux) : 1;
  r.state = CUBLAS_STATUS_SUCCESS;
  r.wavesCount = 1.f;
  results[0] = r;
  *count = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t d, const void* alpha, const void* A,
                              cublasLtMatrixLayout_t la, const void* B, cublasLtMatrixLayout_t lb, const void* beta,
                              const void* C, cublasLtMatrixLayout_t lc, void* D, cublasLtMatrixLayout_t ld,
                              const cublasLtMatmulAlgo_t* algo, void* workspace, size_t workspace_bytes,
                              cudaStream_t stream) {
  if (!valid(h)) return CUBLAS_STATUS_NOT_INITIALIZED;
  Problem p;
  if (cublasStatus_t s = check("cublasLtMatmul", d, la, lb, lc, ld, &p); s != CUBLAS_STATUS_SUCCESS) return s;
  if (!alpha || !beta) return invalid("cublasLtMatmul: alpha or beta is null");
  if (refused_epilogue && d->epilogue == refused_epilogue)
    return unsupported("cublasLtMatmul: epilogue " + std::to_string(refused_epilogue) + " refused (emulation knob)");
  if (!algo || algo->data[0] != kAlgoMagic) return invalid("cublasLtMatmul: no algorithm from the heuristic");
  const void* ptrs[4] = {A, B, C, D};
  const char* names[4] = {"A", "B", "C", "D"};
  for (int i = 0; i < 4; ++i)
    if (alignment(ptrs[i]) < algo->data[1 + i])
      return invalid(std::string("cublasLtMatmul: ") + names[i] + " is " + std::to_string(alignment(ptrs[i])) +
                     "-byte aligned; the algorithm was chosen for " + std::to_string(algo->data[1 + i]) +
                     " (the preference's MIN_ALIGNMENT)");
  if (uses_aux(d->epilogue) && alignment(d->aux) < algo->data[6])
    return invalid("cublasLtMatmul: the auxiliary matrix is " + std::to_string(alignment(d->aux)) +
                   "-byte aligned; the algorithm was chosen for " + std::to_string(algo->data[6]));
  if (workspace_bytes < algo->data[5])
    return invalid("cublasLtMatmul: a workspace of " + std::to_string(workspace_bytes) + " bytes; the algorithm needs " +
                   std::to_string(algo->data[5]));
  if (workspace_bytes && (!workspace || !device_range(workspace, workspace_bytes)))
    return invalid("cublasLtMatmul: the workspace is not device memory of the size given");
  const bool bias_epilogue = uses_bias(d->epilogue), aux_epilogue = uses_aux(d->epilogue);
  if (bias_epilogue && !d->bias) return invalid("cublasLtMatmul: the epilogue needs BIAS_POINTER");
  if (aux_epilogue && !d->aux) return invalid("cublasLtMatmul: the epilogue needs EPILOGUE_AUX_POINTER");
  const double al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  // every operand must be device memory over its whole extent (else the kernel would fault)
  std::string bad;
  auto on_device = [](const void* ptr, const LtLayout* l) {
    const size_t span = extent(l->rows, l->cols, l->ld) * type_size(l->type);
    return !span || (ptr && device_range(ptr, span));
  };
  if (p.k && !on_device(A, la)) bad = "A";
  else if (p.k && !on_device(B, lb)) bad = "B";
  else if (be != 0.0 && !on_device(C, lc)) bad = "C";
  else if (!on_device(D, ld)) bad = "D";
  else if (bias_epilogue) {
    const size_t len = adds_bias(d->epilogue) ? size_t(p.m) : size_t(p.n);
    if (len && !device_range(d->bias, len * type_size(p.bias_type))) bad = "the bias vector";
  }
  if (bad.empty() && aux_epilogue) {
    const size_t span = extent(uint64_t(p.m), uint64_t(p.n), d->aux_ld) * type_size(p.aux_type);
    if (span && !device_range(d->aux, span)) bad = "the auxiliary (GELU input) matrix";
  }
  const LtDesc desc = *d;
  const LtLayout a = *la, b = *lb, c = *lc, dd = *ld;
  const cudaError_t e = enqueue(stream, [=] {
    if (!bad.empty()) return fault(cudaErrorIllegalAddress, "cublasLtMatmul: " + bad + " is not (wholly) device memory");
    run(p, desc, al, be, A, a, B, b, C, c, D, dd);
  });
  return e == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}
