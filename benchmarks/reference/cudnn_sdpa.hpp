// cuDNN's fused attention (scaled dot-product attention, SDPA), forward and backward, bf16, as a
// reference for the bf16 tensor-core kernels (kernels/attention_tc*.cuh): kernels_bench.cu times it
// beside them at the same shapes, and tests/gpu/cudnn_sdpa_test.cu uses it as a second oracle (ours
// may be at most about as far from the double CPU reference as cuDNN is). Only there: the library
// itself never depends on cuDNN.
//
// API path: cuDNN's backend (graph) C API of cudnn_graph.h, with the dedicated single-node operations
// CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR and _SDPA_BWD_DESCRIPTOR (cuDNN >= 9.13; this build
// has 9.19). Why these and not the classic graph (matmul -> scale -> softmax pieces -> matmul, matched
// by the runtime-fusion engine): the backend reference documents neither, and the one public user of
// the SDPA operations is cudnn-frontend, whose SDPA node (UnifiedSDPANode, include/cudnn_frontend/
// node/scaled_dot_product_flash_attention.h) is what it picks by default on cuDNN >= 9.13.1 for a
// plain bf16 SDPA with fp32 compute: Q, K, V, O and Stats tensors plus the scale as a by-value fp32
// scalar tensor, nothing else. The classic graph is a dozen operations forward and about twenty
// backward whose exact pattern the engine must recognise; a single node leaves nothing to get wrong
// in the topology, and where the engines refuse it, supported() says so with cuDNN's message.
//
// Layout (our attention contract, kernels/attention_tc.cuh): qkv [B, T, 3D] bf16 with D = H hd, head h
// of q | k | v at columns h hd of each third; out [B, T, D]; stats = lse [B, H, T] fp32. cuDNN sees
// strided views of the same memory, dims [B, H, T, hd] ("BHSD" order):
//   Q, K, V   strides [T 3D, hd, 3D, 1] at element offsets 0, D, 2D of qkv (dQ, dK, dV: of dqkv)
//   O, dO     strides [T D, hd, D, 1]
//   Stats     dims [B, H, T, 1], strides [H T, T, 1, 1], fp32
//   scale     dims [1, 1, 1, 1], fp32, by value (a host float read at execution)
// Every bf16 view starts 16-byte aligned when hd is a multiple of 8 (all of ours).
//
// UNVERIFIED (this file was only compiled, never run: the machine that wrote it has no GPU):
//  - that the engines accept the SDPA_BWD operation at all (cudnn-frontend never builds it: its
//    backward is the classic graph); if they do not, supported_backward() is false with the reason;
//  - that Stats is lse = max + log(sum), natural log, of the scaled logits, as in cudnn-frontend's
//    classic graph and its docs ("Stats (natural-log LSE)"): the test checks it against our lse;
//  - that dQ, dK, dV may be written as interleaved views of one dqkv buffer;
//  - head dim 72 (cudnn-frontend asks only for multiples of 8), T = 1 and T not a multiple of 64;
//  - which status the engines return when they refuse a shape: NOT_SUPPORTED (3xxx) and BAD_PARAM
//    (2xxx) from finalizing the operation, the graph or the heuristics, and any failure of every
//    engine config, count as "unsupported" (with cuDNN's messages); everything else throws.
#pragma once
#include <cuda_bf16.h>
#include <cudnn_graph.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "shortcut/core/error.hpp"
#include "shortcut/cuda/check.hpp"
#include "shortcut/cuda/device_buffer.hpp"

#define SHORTCUT_CUDNN_CHECK(call) ::shortcut::bench::check_cudnn((call), #call, __FILE__, __LINE__)

namespace shortcut::bench {

// cuDNN's own text for the last failure on this thread (often names the refused feature).
inline std::string cudnn_last_message() {
  char msg[1024] = {};
  cudnnGetLastErrorString(msg, sizeof msg);
  return msg;
}
inline void check_cudnn(cudnnStatus_t s, const char* what, const char* file, int line) {
  if (s != CUDNN_STATUS_SUCCESS)
    throw Error(cat("cuDNN error at ", file, ":", line, ": ", what, " failed with ", cudnnGetErrorString(s), " (",
                    cudnn_last_message(), ")"));
}

namespace cudnn_detail {

// Thrown while building a plan when cuDNN refuses the graph; caught by CudnnSdpa's constructor.
struct Refused {
  std::string why;
};
inline bool is_refusal(cudnnStatus_t s) { return (s >= 2000 && s < 4000); }  // BAD_PARAM*, NOT_SUPPORTED*

// One backend descriptor, owned.
class Desc {
 public:
  explicit Desc(cudnnBackendDescriptorType_t t) { SHORTCUT_CUDNN_CHECK(cudnnBackendCreateDescriptor(t, &d_)); }
  ~Desc() {
    if (d_) cudnnBackendDestroyDescriptor(d_);
  }
  Desc(Desc&& o) noexcept : d_(std::exchange(o.d_, nullptr)) {}
  Desc& operator=(Desc&& o) noexcept {
    std::swap(d_, o.d_);
    return *this;
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;
  cudnnBackendDescriptor_t get() const { return d_; }

  template <class T>
  Desc& set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, const T* v, int64_t n = 1) {
    SHORTCUT_CUDNN_CHECK(cudnnBackendSetAttribute(d_, name, type, n, v));
    return *this;
  }
  Desc& set_desc(cudnnBackendAttributeName_t name, const Desc& d) {
    cudnnBackendDescriptor_t raw = d.get();
    return set(name, CUDNN_TYPE_BACKEND_DESCRIPTOR, &raw);
  }
  // Finalize; a refusal becomes Refused (naming `what`), anything else an Error.
  Desc& finalize(const char* what) {
    const cudnnStatus_t s = cudnnBackendFinalize(d_);
    if (is_refusal(s)) throw Refused{cat(what, ": ", cudnnGetErrorString(s), " (", cudnn_last_message(), ")")};
    check_cudnn(s, what, __FILE__, __LINE__);
    return *this;
  }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
};

// A 4-d tensor of the graph, never virtual.
inline Desc tensor(int64_t uid, cudnnDataType_t type, std::array<int64_t, 4> dims, std::array<int64_t, 4> strides,
                   bool by_value = false) {
  Desc t(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const int64_t align = 16;
  const bool is_virtual = false;
  t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, &type)
      .set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, dims.data(), 4)
      .set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, strides.data(), 4)
      .set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, &uid)
      .set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, &align)
      .set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, &is_virtual);
  if (by_value) t.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, &by_value);
  return std::move(t.finalize("tensor descriptor"));
}

// An execution plan and every descriptor it was built from (kept alive with it: cudnn-frontend keeps
// the graph and the engine config alive beside its plans, so we do too).
struct Plan {
  std::vector<Desc> keep;
  Desc plan{CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR};
  int64_t workspace = 0;
};

// The operation graph of one operation, and the first engine config (heuristics mode A, then the
// fallback list) that finalizes into a plan.
inline Plan make_plan(cudnnHandle_t handle, Desc op, std::vector<Desc> tensors, const char* name) {
  Plan p;
  p.keep = std::move(tensors);
  Desc graph(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  graph.set_desc(CUDNN_ATTR_OPERATIONGRAPH_OPS, op).set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, &handle);
  graph.finalize(cat(name, ": operation graph").c_str());
  std::string tried;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    Desc heur(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    heur.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph).set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, &mode);
    const cudnnStatus_t hs = cudnnBackendFinalize(heur.get());
    if (hs != CUDNN_STATUS_SUCCESS) {
      if (!is_refusal(hs)) check_cudnn(hs, "engine heuristics", __FILE__, __LINE__);
      tried += cat(" heuristics mode ", int(mode), ": ", cudnnGetErrorString(hs), " (", cudnn_last_message(), ");");
      continue;
    }
    int64_t count = 0;
    SHORTCUT_CUDNN_CHECK(
        cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count, nullptr));
    if (count <= 0) {
      tried += cat(" heuristics mode ", int(mode), ": no engine config;");
      continue;
    }
    std::vector<Desc> cfgs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < count; ++i) {
      cfgs.emplace_back(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR);
      raw.push_back(cfgs.back().get());
    }
    int64_t got = 0;
    SHORTCUT_CUDNN_CHECK(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                                  CUDNN_TYPE_BACKEND_DESCRIPTOR, count, &got, raw.data()));
    for (int64_t i = 0; i < got && i < count; ++i) {
      Desc plan(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
      plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, &handle)
          .set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, cfgs[size_t(i)]);
      const cudnnStatus_t ps = cudnnBackendFinalize(plan.get());
      if (ps != CUDNN_STATUS_SUCCESS) {  // any failure: try the next config (cudnn-frontend does too)
        tried += cat(" engine config ", i, ": ", cudnnGetErrorString(ps), " (", cudnn_last_message(), ");");
        continue;
      }
      int64_t n = 0;
      SHORTCUT_CUDNN_CHECK(cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                                                    CUDNN_TYPE_INT64, 1, &n, &p.workspace));
      p.plan = std::move(plan);
      p.keep.push_back(std::move(op));
      p.keep.push_back(std::move(graph));
      p.keep.push_back(std::move(heur));
      p.keep.push_back(std::move(cfgs[size_t(i)]));
      return p;
    }
  }
  throw Refused{cat(name, ": no engine runs it;", tried)};
}

}  // namespace cudnn_detail

// cuDNN SDPA plans for one shape (B, T, H, hd, scale), on one stream. Not copyable (owns the handle).
class CudnnSdpa {
 public:
  CudnnSdpa(int B, int T, int H, int hd, float scale, cudaStream_t stream)
      : scale_(scale), stream_(stream), D_(int64_t(H) * hd) {
    using namespace cudnn_detail;
    SHORTCUT_CUDNN_CHECK(cudnnCreate(&handle_.h));
    SHORTCUT_CUDNN_CHECK(cudnnSetStream(handle_.h, stream_));
    const int64_t b = B, t = T, h = H, d = hd, D = h * d;
    const std::array<int64_t, 4> dims{b, h, t, d}, qkv_st{t * 3 * D, d, 3 * D, 1}, o_st{t * D, d, D, 1},
        stat_dims{b, h, t, 1}, stat_st{h * t, t, 1, 1}, one{1, 1, 1, 1};
    const auto bf = CUDNN_DATA_BFLOAT16, f32 = CUDNN_DATA_FLOAT;
    try {
      std::vector<Desc> ts;
      for (int64_t uid = kQ; uid <= kScale; ++uid)
        ts.push_back(uid <= kV      ? tensor(uid, bf, dims, qkv_st)
                     : uid == kO    ? tensor(uid, bf, dims, o_st)
                     : uid == kStats ? tensor(uid, f32, stat_dims, stat_st)
                                     : tensor(uid, f32, one, one, true));
      Desc op(CUDNN_BACKEND_OPERATION_SDPA_FWD_DESCRIPTOR);
      op.set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_QDESC, ts[0])
          .set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_KDESC, ts[1])
          .set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_VDESC, ts[2])
          .set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_ODESC, ts[3])
          .set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_STATSDESC, ts[4])
          .set_desc(CUDNN_ATTR_OPERATION_SDPA_FWD_SCALEDESC, ts[5])
          .finalize("SDPA forward operation");
      fwd_.push_back(make_plan(handle_.h, std::move(op), std::move(ts), "SDPA forward"));
    } catch (const Refused& r) {
      reason_ = r.why;
    }
    try {
      std::vector<Desc> ts;
      for (int64_t uid = kQ; uid <= kDV; ++uid)
        ts.push_back((uid <= kV || uid >= kDQ) ? tensor(uid, bf, dims, qkv_st)
                     : (uid == kO || uid == kDO) ? tensor(uid, bf, dims, o_st)
                     : uid == kStats             ? tensor(uid, f32, stat_dims, stat_st)
                                                 : tensor(uid, f32, one, one, true));
      Desc op(CUDNN_BACKEND_OPERATION_SDPA_BWD_DESCRIPTOR);
      op.set_desc(CUDNN_ATTR_OPERATION_SDPA_BWD_QDESC, ts[kQ - 1])
          .set_desc(CUDNN_ATTR_OPERATION_SDPA_BWD_KDESC, ts[kK - 1])
          .set_desc(CUDNN_ATTR_OPERATION_SDPA_BWD_VDESC, ts[kV - 1])
          .set_desc(CUDNN_ATTR_OPERATION_SDPA_BWD_ODESC, ts[kO - 1])
          .set_desc(CUDNN_ATTR_OPERATION_SDPA_BWD_STATSDESC, ts[kStats - 1])
          .set_desc(CUDNN_ATTR_OPERATION_SDPA_BWD_SCALEDESC, ts[kScale - 1])
          .set_desc(CUDNN_ATTR_OPERATION_SDPA_BWD_DODDESC, ts[kDO - 1])
          .set_desc(CUDNN_ATTR_OPERATION_SDPA_BWD_DQDESC, ts[kDQ - 1])
          .set_desc(CUDNN_ATTR_OPERATION_SDPA_BWD_DKDESC, ts[kDK - 1])
          .set_desc(CUDNN_ATTR_OPERATION_SDPA_BWD_DVDESC, ts[kDV - 1])
          .finalize("SDPA backward operation");
      bwd_.push_back(make_plan(handle_.h, std::move(op), std::move(ts), "SDPA backward"));
    } catch (const Refused& r) {
      reason_ += (reason_.empty() ? "" : "; ") + r.why;
    }
    const int64_t ws = std::max(fwd_.empty() ? 0 : fwd_[0].workspace, bwd_.empty() ? 0 : bwd_[0].workspace);
    workspace_.resize(size_t(ws));
    // resize zero-fills on the legacy stream: finish that before any plan writes the workspace
    SHORTCUT_CUDA_CHECK(cudaDeviceSynchronize());
  }
  CudnnSdpa(const CudnnSdpa&) = delete;
  CudnnSdpa& operator=(const CudnnSdpa&) = delete;

  bool supported_forward() const { return !fwd_.empty(); }
  bool supported_backward() const { return !bwd_.empty(); }
  bool supported() const { return supported_forward() && supported_backward(); }
  // Why a direction is unsupported (cuDNN's status and message), empty when both are.
  const std::string& reason() const { return reason_; }
  size_t workspace_bytes() const { return workspace_.size(); }
  // The scale is a by-value input, not part of the plans: one object serves every scale of a shape.
  void set_scale(float scale) { scale_ = scale; }

  // out [B, T, D] bf16 and stats [B, H, T] fp32 from qkv [B, T, 3D] bf16.
  void forward(__nv_bfloat16* out, float* stats, const __nv_bfloat16* qkv, cudaStream_t stream) {
    if (!supported_forward()) throw Error("cuDNN SDPA forward is not supported here: " + reason_);
    auto* q = const_cast<__nv_bfloat16*>(qkv);
    void* ptrs[] = {q, q + D_, q + 2 * D_, out, stats, &scale_};
    const int64_t uids[] = {kQ, kK, kV, kO, kStats, kScale};
    execute(fwd_[0], uids, ptrs, 6, stream);
  }
  // dqkv [B, T, 3D] bf16 (overwritten) from dout [B, T, D], qkv, out and the forward's stats.
  void backward(__nv_bfloat16* dqkv, const __nv_bfloat16* dout, const __nv_bfloat16* qkv, const __nv_bfloat16* out,
                const float* stats, cudaStream_t stream) {
    if (!supported_backward()) throw Error("cuDNN SDPA backward is not supported here: " + reason_);
    auto* q = const_cast<__nv_bfloat16*>(qkv);
    void* ptrs[] = {q,       q + D_,    q + 2 * D_,    const_cast<__nv_bfloat16*>(out), const_cast<float*>(stats),
                    &scale_, const_cast<__nv_bfloat16*>(dout), dqkv, dqkv + D_, dqkv + 2 * D_};
    const int64_t uids[] = {kQ, kK, kV, kO, kStats, kScale, kDO, kDQ, kDK, kDV};
    execute(bwd_[0], uids, ptrs, 10, stream);
  }

 private:
  // the tensors' unique ids (also their order in the tensor lists above)
  enum : int64_t { kQ = 1, kK, kV, kO, kStats, kScale, kDO, kDQ, kDK, kDV };

  void execute(const cudnn_detail::Plan& p, const int64_t* uids, void** ptrs, int64_t n, cudaStream_t stream) {
    if (stream != stream_) {
      SHORTCUT_CUDNN_CHECK(cudnnSetStream(handle_.h, stream));
      stream_ = stream;
    }
    cudnn_detail::Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
    void* ws = workspace_.data();
    pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, uids, n)
        .set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, ptrs, n)
        .set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, &ws);
    SHORTCUT_CUDNN_CHECK(cudnnBackendFinalize(pack.get()));
    SHORTCUT_CUDNN_CHECK(cudnnBackendExecute(handle_.h, p.plan.get(), pack.get()));
  }

  struct Handle {  // destroyed after the plans (declared before them), also when the constructor throws
    cudnnHandle_t h = nullptr;
    ~Handle() {
      if (h) cudnnDestroy(h);
    }
  };
  float scale_;  // by value: the variant pack points here
  cudaStream_t stream_;
  int64_t D_;  // H hd: the offsets of k and v within a row of qkv
  Handle handle_;
  std::vector<cudnn_detail::Plan> fwd_, bwd_;  // empty where cuDNN refused
  std::string reason_;
  cuda::DeviceBuffer<unsigned char> workspace_;
};

}  // namespace shortcut::bench
