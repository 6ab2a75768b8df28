// The CUDA backend: the op interface of cpu::Backend<float> (same member names, signatures and
// semantics; read include/shortcut/cpu/backend.hpp for the contract of each op) on device memory,
// with the kernels of kernels/*.cuh and cuBLAS for the matrix products. Include it (through
// <shortcut/cuda.hpp>) from a .cu file compiled by nvcc.
//
// - Every pointer an op takes is device memory (Buffer<U> = DeviceBuffer<U>); to_device / to_host
//   move data between host and device and return once the host memory may be reused / read
//   (to_device from pageable memory does not wait for the device; to_host always does).
// - Ops are queued on the backend's own stream and return at once; to_host and synchronize wait.
//   A fault inside a kernel is therefore reported by a later call, which names the kernels that may
//   have caused it (define SHORTCUT_CUDA_SYNC_CHECK to wait after every launch and name the one that
//   did; see shortcut/cuda/check.hpp).
// - Storage is fp32. Options::precision picks the arithmetic of the matrix products and attention
//   (shortcut/cuda/precision.hpp): full fp32 (the default), TF32 matrix units, or bf16 mixed
//   precision, where the products and attention run on the bf16 tensor cores on bf16 copies of
//   their operands and everything else stays fp32 (shortcut/cuda/bf16_copies.hpp: how the weights'
//   bf16 copies stay exact).
// - Several ops reduce with atomics (the adaLN and bias gradients over tokens, dQ of attention,
//   label-table gradients): their summation order, hence their last bits, can vary between runs.
// - Recorded work (Options::graphs, on by default): run_captured(key, body) replays a repeated op
//   sequence as a CUDA graph (shortcut/cuda/graphs.hpp); OdeSampler records its N-step loop so.
// - One backend per thread: the stream and the cuBLAS handle are not shared safely across threads.
//   Buffers are allocated on the current device, which must stay the backend's device.
#pragma once
#include <cmath>
#include <cstdint>
#include <utility>

#include "kernels/adaln.cuh"
#include "kernels/attention.cuh"
#include "kernels/attention_tc.cuh"
#include "kernels/attention_tc_backward.cuh"
#include "kernels/elementwise.cuh"
#include "kernels/embedding.cuh"
#include "kernels/matmul.cuh"
#include "kernels/optimizer.cuh"
#include "kernels/targets.cuh"
#include "shortcut/core/bias_correction.hpp"
#include "shortcut/core/concepts.hpp"
#include "shortcut/core/patch_order.hpp"
#include "shortcut/cuda/bf16_copies.hpp"
#include "shortcut/cuda/device_buffer.hpp"
#include "shortcut/cuda/graphs.hpp"
#include "shortcut/cuda/lt_matmul.hpp"
#include "shortcut/cuda/precision.hpp"

namespace shortcut::cuda {

struct Options {
  int device = -1;     // the CUDA device to use; -1 keeps the current one (device 0 unless set)
  bool tf32 = false;   // = precision tf32 (kept for existing callers)
  Precision precision = Precision::fp32;
  // Record repeated op sequences (the sampler's N-step loop) as CUDA graphs and replay them; off under
  // SHORTCUT_CUDA_SYNC_CHECK, which synchronizes after every launch.
  bool graphs = true;
  // bf16 mode: the linear layers through cuBLASLt with the bias and its gradient in the products'
  // epilogues (shortcut/cuda/lt_matmul.hpp); false: cuBLAS and the separate bias kernels, as fp32
  // mode does (kernels_bench's BM_linear_bf16_*/unfused rows measure what the epilogues save).
  bool lt_epilogues = true;
};

class Backend {
  using T = float;

 public:
  using Scalar = float;
  template <class U>
  using Buffer = DeviceBuffer<U>;
  template <class U>
  using HostBuffer = PinnedBuffer<U>;     // host memory the copy engines reach directly
  static constexpr bool host_memory = false;  // Buffer memory is not the host's (dist/reduce_buffer.hpp)
  static constexpr const char* name() { return "cuda"; }

  // Throws Error("no CUDA device ...") where no usable GPU or driver exists.
  explicit Backend(const Options& opt = Options())
      : precision_(opt.tf32 ? Precision::tf32 : opt.precision),
        lt_on_(opt.lt_epilogues),
        graphs_on_(opt.graphs && !kSyncChecked) {
    if (opt.tf32 && opt.precision != Precision::fp32 && opt.precision != Precision::tf32)
      throw ConfigError(cat("cuda::Options: tf32 and precision ", precision_name(opt.precision), " both asked for"));
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
      cudaGetLastError();
      throw Error(cat("no CUDA device: the CUDA backend needs an NVIDIA GPU and its driver (cudaGetDeviceCount: ",
                      e == cudaSuccess ? "0 devices" : cudaGetErrorString(e), ")"));
    }
    if (opt.device >= count)
      throw Error(cat("CUDA device ", opt.device, " was asked for but only ", count, " device(s) exist"));
    if (opt.device >= 0) SHORTCUT_CUDA_CHECK(cudaSetDevice(opt.device));
    SHORTCUT_CUDA_CHECK(cudaGetDevice(&device_));
    SHORTCUT_CUDA_CHECK(cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device_));
    try {
      SHORTCUT_CUDA_CHECK(cudaStreamCreate(&stream_));
      SHORTCUT_CUBLAS_CHECK(cublasCreate(&cublas_));
      SHORTCUT_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    } catch (...) {
      destroy();
      throw;
    }
  }
  ~Backend() { destroy(); }
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // The backend's stream, for work of your own queued among its ops (counts as an op: see
  // produced_copy below).
  cudaStream_t stream() const { return op_stream(); }
  cublasHandle_t cublas() const { return cublas_; }
  int device() const { return device_; }
  int num_sms() const { return sms_; }
  bool tf32() const { return precision_ == Precision::tf32; }
  Precision precision() const { return precision_; }

  // ---- bf16 copies of weight sets (bf16 mode only; no-ops otherwise) ---------------------------
  // [p, p + n) holds weights that products read: keep a bf16 copy of it (ParamArena calls this for
  // its raw and EMA weights). drop before the memory is freed.
  void keep_weight_copy(const T* p, size_t n) const {
    if (precision_ == Precision::bf16) copies_.keep(p, n);
  }
  void drop_weight_copy(const T* p) const { copies_.drop(p); }
  // Weights in [p, p + n) were written other than through this backend's ops.
  void weights_written(const T* p, size_t n) const { copies_.written(p, n * sizeof(T)); }

  // ---- recorded work (shortcut/core/capture.hpp) ---------------------------------------------
  // body() — ops of this backend only — run eagerly at the key's first call, captured into a CUDA
  // graph at its second and replayed from then on (graphs.hpp: when a graph is dropped, when a body
  // is refused). Without graphs (Options::graphs false) body() runs every time.
  template <class F>
  void run_captured(const CaptureKey& key, F&& body) const {
    if (!graphs_on_) {
      body();
      return;
    }
    if (!cublas_workspace_.data()) {
      // cuBLAS must not allocate its workspace inside a capture: give it one of its own (32 MiB,
      // what cuBLAS suggests for Hopper), set again after every cublasSetStream (which resets it)
      cublas_workspace_ = DeviceBuffer<unsigned char>(size_t(32) << 20);
      SHORTCUT_CUBLAS_CHECK(cublasSetWorkspace(cublas_, cublas_workspace_.data(), cublas_workspace_.size()));
    }
    graphs_.run(
        stream_, key, body,
        [this] { return (device_buffers_freed().load(std::memory_order_relaxed) << 24) ^ copies_.version(); },
        [this] { copies_.all_written(); });
  }
  const GraphStats& graph_stats() const { return graphs_.stats(); }
  // bf16 mode: the linear layers' cuBLASLt products (lt_matmul.hpp) and the ones that fell back.
  const LtStats& lt_stats() const { return lt_.stats(); }
  bool graphs() const { return graphs_on_; }

  // bf16 mode: how many product inputs were read from their producer's bf16 copy (no conversion).
  uint64_t fused_inputs() const { return fused_inputs_; }

  // ---- memory -----------------------------------------------------------------------------
  template <class U>
  void to_device(U* dst, const U* src, size_t n) const {
    if (!n) return;
    copies_.written(dst, n * sizeof(U));
    SHORTCUT_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(U), cudaMemcpyHostToDevice, op_stream()));
    // From pageable memory (a std::vector) the copy returns once src is staged, so src may be reused
    // at once; from pinned or registered memory the DMA reads src later, so wait for it.
    cudaPointerAttributes a{};
    const cudaError_t e = cudaPointerGetAttributes(&a, src);
    if (e != cudaSuccess) cudaGetLastError();  // not an error here (only this call's is cleared): we wait
    if (e != cudaSuccess || a.type != cudaMemoryTypeUnregistered) SHORTCUT_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  template <class U>
  void to_host(U* dst, const U* src, size_t n) const {
    if (!n) return;
    SHORTCUT_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(U), cudaMemcpyDeviceToHost, op_stream()));
    synchronize();
  }
  // Host to device from staged host memory (a HostBuffer: pinned), queued on the stream like a kernel,
  // so recorded work may hold it: a replay copies what the memory holds then. The caller leaves
  // [src, src + n) unchanged until the stream has passed the copy (a later to_host or synchronize).
  template <class U>
  void upload(U* dst, const U* src, size_t n) const {
    if (!n) return;
    copies_.written(dst, n * sizeof(U));
    SHORTCUT_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(U), cudaMemcpyHostToDevice, op_stream()));
  }
  // Device to device only, queued on the stream like a kernel (to_device / to_host move host data:
  // they know when the host memory may be touched again, which a queued copy would not).
  template <class U>
  void copy(U* dst, const U* src, size_t n) const {
    if (!n) return;
    copies_.written(dst, n * sizeof(U));
    SHORTCUT_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(U), cudaMemcpyDeviceToDevice, op_stream()));
  }
  void fill(T* p, T v, size_t n) const {
    copies_.written(p, n * sizeof(T));
    kernels::fill(p, v, n, op_stream());
  }
  void synchronize() const {
    SHORTCUT_CUDA_CHECK(cudaStreamSynchronize(stream_));
    note_synchronized();
  }

  // ---- matrix products ----------------------------------------------------------------------
  // out[N,O] = in[N,I] W[O,I]^T + b[O]  (b may be null)
  void linear_forward(T* out, const T* in, const T* W, const T* b, int N, int I, int O) const {
    if (precision_ == Precision::bf16 && N > 0 && I > 0 && O > 0) {
      const auto [xb, Wb] = forward_operands(in, W, N, I, O);
      const cudaStream_t s = op_stream();
      if (!(lt_on_ && lt_.linear_forward(out, xb, Wb, b, N, I, O, s)))
        kernels::linear_forward_bf16(cublas_, out, xb, Wb, b, N, I, O, s);
      return;
    }
    kernels::linear_forward(cublas_, compute(), out, in, W, b, N, I, O, op_stream());
  }
  // din[N,I] (= or += with accumulate; null skips) = dout W; dW[O,I] += dout^T in; db[O] += sum dout
  void linear_backward(T* din, T* dW, T* db, const T* dout, const T* in, const T* W, int N, int I, int O,
                       bool accumulate_din = false) const {
    if (precision_ == Precision::bf16 && N > 0 && I > 0 && O > 0) {
      const __nv_bfloat16* gb = dout_operand(dout, size_t(N) * O);  // before any op of this one
      const __nv_bfloat16* Wb = din ? weights_bf16(W, size_t(O) * I, Scratch::B) : nullptr;
      const cudaStream_t s = op_stream();
      kernels::linear_backward_bf16(cublas_, din, nullptr, nullptr, dout, gb, nullptr, Wb, N, I, O, accumulate_din,
                                    sms_, s);
      weight_grads_bf16(dW, db, dout, gb, in, N, I, O, s);
      return;
    }
    kernels::linear_backward(cublas_, compute(), din, dW, db, dout, in, W, N, I, O, accumulate_din, sms_, op_stream());
  }
  // The MLP's first layer and GELU: a[N,O] = in W^T + b (kept for the backward), g = GELU(a). bf16 mode:
  // one cuBLASLt product with the GELU_AUX_BIAS epilogue, then g's bf16 copy for the product that reads
  // it next; elsewhere (or where cuBLASLt has no algorithm) the product and the GELU kernel.
  void linear_gelu_forward(T* g, T* a, const T* in, const T* W, const T* b, int N, int I, int O) const {
    if (precision_ == Precision::bf16 && N > 0 && I > 0 && O > 0) {
      const auto [xb, Wb] = forward_operands(in, W, N, I, O);
      const cudaStream_t s = op_stream();
      if (lt_on_ && lt_.linear_gelu_forward(g, a, xb, Wb, b, N, I, O, s)) {
        const size_t n = size_t(N) * size_t(O);
        __nv_bfloat16* c = scratch_.bf16(Scratch::A, n);
        kernels::convert(c, g, n, op_stream());
        produced(c, g, n, Scratch::A);
      } else {
        kernels::linear_forward_bf16(cublas_, a, xb, Wb, b, N, I, O, s);
        gelu_forward(g, a, size_t(N) * size_t(O));
      }
      return;
    }
    linear_forward(a, in, W, b, N, I, O);
    gelu_forward(g, a, size_t(N) * size_t(O));
  }
  // The backward of out = GELU(a) W^T + b, whose input in = GELU(a): da[N,I] = (dout W) * GELU'(a)
  // (written), dW[O,I] += dout^T in, db[O] += sum dout. bf16 mode: the data gradient is one cuBLASLt
  // product with the DGELU epilogue (no fp32 dout W written and read back), then da's bf16 copy for
  // the product backward that reads it next.
  void gelu_linear_backward(T* da, T* dW, T* db, const T* dout, const T* in, const T* a, const T* W, int N, int I,
                            int O) const {
    if (precision_ == Precision::bf16 && N > 0 && I > 0 && O > 0) {
      const __nv_bfloat16* gb = dout_operand(dout, size_t(N) * O);  // before any op of this one
      const __nv_bfloat16* Wb = weights_bf16(W, size_t(O) * I, Scratch::B);
      const cudaStream_t s = op_stream();
      const bool fused = lt_on_ && lt_.gelu_data_grad(da, gb, Wb, a, N, I, O, s);
      if (!fused)
        kernels::linear_backward_bf16(cublas_, da, nullptr, nullptr, dout, gb, nullptr, Wb, N, I, O, false, sms_, s);
      weight_grads_bf16(dW, db, dout, gb, in, N, I, O, s);
      const size_t n = size_t(N) * size_t(I);
      if (!fused) return gelu_backward(da, da, a, n);
      __nv_bfloat16* c = scratch_.bf16(Scratch::C, n);
      kernels::convert(c, da, n, op_stream());
      produced(c, da, n, Scratch::C);
      return;
    }
    linear_backward(da, dW, db, dout, in, W, N, I, O);
    gelu_backward(da, da, a, size_t(N) * size_t(I));
  }

  // ---- elementwise -------------------------------------------------------------------------
  void silu_forward(T* out, const T* in, size_t n) const { kernels::silu_forward(out, in, n, op_stream()); }
  void silu_backward(T* din, const T* dout, const T* in, size_t n) const {
    kernels::silu_backward(din, dout, in, n, op_stream());
  }
  // In bf16 mode GELU and LayerNorm + modulate also write bf16 of their output for the product that
  // reads it next (produced_copy).
  void gelu_forward(T* out, const T* in, size_t n) const {
    __nv_bfloat16* c = copy_slot(n, Scratch::A);
    kernels::gelu_forward(out, in, n, op_stream(), c);
    produced(c, out, n, Scratch::A);
  }
  // In bf16 mode GELU's backward and the gated residual's backward write bf16 of the gradient they
  // produce, the dout of the product backward that reads it next (slot C; the attention's backward
  // keeps its bf16 dqkv in slot D).
  void gelu_backward(T* din, const T* dout, const T* in, size_t n) const {
    __nv_bfloat16* c = copy_slot(n, Scratch::C);
    kernels::gelu_backward(din, dout, in, n, op_stream(), c);
    produced(c, din, n, Scratch::C);
  }
  void add_inplace(T* y, const T* x, size_t n) const { kernels::add_inplace(y, x, n, op_stream()); }
  void axpy(T* y, T a, const T* x, size_t n) const { kernels::axpy(y, a, x, n, op_stream()); }
  void add_rows(T* x, const T* row, int B, int R) const { kernels::add_rows(x, row, B, R, op_stream()); }

  // ---- LayerNorm (no affine, eps) + adaLN modulate ------------------------------------------
  void ln_modulate_forward(T* out, T* mean, T* rstd, const T* x, const T* shift, const T* scale, int mod_stride,
                           int B, int Tn, int D, T eps) const {
    const size_t n = size_t(B) * size_t(Tn) * size_t(D);
    __nv_bfloat16* c = copy_slot(n, Scratch::A);
    kernels::ln_modulate_forward(out, mean, rstd, x, shift, scale, mod_stride, B, Tn, D, eps, op_stream(), c);
    produced(c, out, n, Scratch::A);
  }
  void ln_modulate_backward(T* dx, T* dshift, T* dscale, const T* dout, const T* x, const T* mean, const T* rstd,
                            const T* scale, int mod_stride, int B, int Tn, int D) const {
    kernels::ln_modulate_backward(dx, dshift, dscale, dout, x, mean, rstd, scale, mod_stride, B, Tn, D, sms_, op_stream());
  }
  void gated_residual_forward(T* x, const T* gate, const T* y, int mod_stride, int B, int Tn, int D) const {
    kernels::gated_residual_forward(x, gate, y, mod_stride, B, Tn, D, op_stream());
  }
  void gated_residual_backward(T* dy, T* dgate, const T* dx, const T* gate, const T* y, int mod_stride, int B, int Tn,
                               int D) const {
    const size_t n = size_t(B) * size_t(Tn) * size_t(D);
    __nv_bfloat16* c = copy_slot(n, Scratch::C);
    kernels::gated_residual_backward(dy, dgate, dx, gate, y, mod_stride, B, Tn, D, sms_, op_stream(), c);
    produced(c, dy, n, Scratch::C);
  }

  // ---- attention (head dims 32, 64, 72, 128; others throw ShapeError) -------------------------
  // In bf16 mode: the tensor-core kernels (kernels/attention_tc*.cuh) on bf16 copies of qkv, out and
  // dout; lse and the results stay fp32 (out and dqkv hold bf16 values, as the kernels write them).
  void attention_forward(T* out, T* lse, const T* qkv, int B, int Tn, int H, int hd, T scale) const {
    if (precision_ == Precision::bf16) {
      kernels::attention_check_head_dim(hd);
      if (B <= 0 || Tn <= 0 || H <= 0) return;
      const size_t n = size_t(B) * Tn * H * hd;
      const __nv_bfloat16* qb = rounded(qkv, 3 * n, Scratch::A);
      __nv_bfloat16* ob = scratch_.bf16(Scratch::B, n);
      kernels::attention_forward_tc(ob, lse, qb, B, Tn, H, hd, scale, op_stream());
      kernels::convert(out, ob, n, op_stream());
      produced(ob, out, n, Scratch::B);  // the projection reads ob itself
      return;
    }
    kernels::attention_forward(out, lse, qkv, B, Tn, H, hd, scale, op_stream());
  }
  void attention_backward(T* dqkv, const T* dout, const T* qkv, const T* out, const T* lse, int B, int Tn, int H,
                          int hd, T scale) const {
    if (precision_ == Precision::bf16) {
      kernels::attention_check_head_dim(hd);
      if (B <= 0 || Tn <= 0 || H <= 0) return;
      const size_t n = size_t(B) * Tn * H * hd;
      const __nv_bfloat16* qb = rounded(qkv, 3 * n, Scratch::A);
      const __nv_bfloat16* ob = rounded(out, n, Scratch::B);
      const __nv_bfloat16* gb = rounded(dout, n, Scratch::C);
      __nv_bfloat16* db = scratch_.bf16(Scratch::D, 3 * n);
      float* work = scratch_.f32(kernels::attention_backward_tc_workspace(B, Tn, H, hd));
      kernels::attention_backward_tc(db, gb, qb, ob, lse, B, Tn, H, hd, scale, work, op_stream());
      kernels::convert(dqkv, db, 3 * n, op_stream());
      produced(db, dqkv, 3 * n, Scratch::D);  // the qkv product's backward reads db itself
      return;
    }
    kernels::attention_backward(dqkv, dout, qkv, out, lse, B, Tn, H, hd, scale, op_stream());
  }

  // ---- embeddings -------------------------------------------------------------------------
  void timestep_embedding(T* out, const T* values, int B, int dim) const {
    kernels::timestep_embedding(out, values, B, dim, op_stream());
  }
  void embedding_forward(T* out, const T* table, const int32_t* ids, int B, int D) const {
    kernels::embedding_forward(out, table, ids, B, D, op_stream());
  }
  void embedding_backward(T* dtable, const T* dout, const int32_t* ids, int B, int D) const {
    kernels::embedding_backward(dtable, dout, ids, B, D, op_stream());
  }
  void patch_gather(T* tokens, const T* img, int B, int H, int W, int C, int p, PatchOrder order) const {
    kernels::patch_gather(tokens, img, B, H, W, C, p, order == PatchOrder::ChannelMajor, op_stream());
  }
  void patch_scatter(T* img, const T* tokens, int B, int H, int W, int C, int p, PatchOrder order) const {
    kernels::patch_scatter(img, tokens, B, H, W, C, p, order == PatchOrder::ChannelMajor, op_stream());
  }

  // ---- training targets -------------------------------------------------------------------
  void normal(T* x0, size_t n, uint64_t seed, uint64_t stream, uint64_t first = 0) const {
    kernels::normal(x0, n, seed, stream, first, op_stream());
  }
  void normal_staged(T* x0, size_t n, uint64_t seed, const uint64_t* stream, uint64_t first) const {
    kernels::normal(x0, n, seed, 0, first, op_stream(), stream);
  }
  void flow_rows(T* xt, T* target, const T* x1, const T* x0, const T* t, int rows, int n) const {
    kernels::flow_rows(xt, target, x1, x0, t, rows, n, op_stream());
  }
  void bootstrap_half_step(T* x2, T* v1, const T* x, const T* vc, const T* vu, int n_cfg, T w, const T* hd, int rows,
                           int n, T clip) const {
    kernels::bootstrap_half_step(x2, v1, x, vc, vu, n_cfg, w, hd, rows, n, clip, op_stream());
  }
  void bootstrap_target(T* target, const T* v1, const T* vc, const T* vu, int n_cfg, T w, int rows, int n,
                        T clip) const {
    kernels::bootstrap_target(target, v1, vc, vu, n_cfg, w, rows, n, clip, op_stream());
  }
  void consistency_target(T* target, const T* xt, const T* xp, const T* v, const T* t, const T* tp, int rows,
                          int n) const {
    kernels::consistency_target(target, xt, xp, v, t, tp, rows, n, op_stream());
  }
  void cfg_combine(T* out, const T* vc, const T* vu, T w, size_t n) const {
    kernels::cfg_combine(out, vc, vu, w, n, op_stream());
  }
  void mse_loss(T* grad, T* row_loss, const T* pred, const T* target, int rows, int n, T grad_scale) const {
    kernels::mse_loss(grad, row_loss, pred, target, rows, n, grad_scale, op_stream());
  }

  // ---- optimizer --------------------------------------------------------------------------
  // In bf16 mode a kept bf16 copy of p (of ema) is updated in the same pass (keep_weight_copy).
  void adamw_step(T* p, const T* g, T* m, T* v, size_t n, T lr, T b1, T b2, T eps, T wd, int64_t step) const {
    adamw_step(p, g, m, v, n, lr, b1, b2, eps, wd, step, copies_.copy_for_update(p, n));
  }
  void ema_update(T* ema, const T* p, T tau, size_t n) const { ema_update(ema, p, tau, n, copies_.copy_for_update(ema, n)); }
  // The same, also writing bf16(p) (bf16(ema)) into `copy` in the same pass (null: no copy).
  void adamw_step(T* p, const T* g, T* m, T* v, size_t n, T lr, T b1, T b2, T eps, T wd, int64_t step,
                  __nv_bfloat16* copy) const {
    if (copy != copies_.copy_for_update(p, n)) copies_.written(p, n * sizeof(T));  // a kept copy would miss it
    // the bias corrections exactly as the CPU backend computes them (float pow on the host)
    kernels::adamw_step(p, g, m, v, n, lr, b1, b2, eps, wd, adamw_bias_correction(b1, step),
                        adamw_bias_correction(b2, step), op_stream(), copy);
  }
  void ema_update(T* ema, const T* p, T tau, size_t n, __nv_bfloat16* copy) const {
    if (copy != copies_.copy_for_update(ema, n)) copies_.written(ema, n * sizeof(T));
    kernels::ema_update(ema, p, tau, n, op_stream(), copy);
  }
  // The recorded training step's forms (cpu::Backend says what they compute), kept bf16 copies
  // updated in the same pass as above.
  void adamw_step_staged(T* p, const T* g, T* m, T* v, size_t n, const T* staged, T b1, T b2, T eps, T wd,
                         const int32_t* skip) const {
    __nv_bfloat16* copy = copies_.copy_for_update(p, n);
    kernels::adamw_step(p, g, m, v, n, 0.f, b1, b2, eps, wd, 1.f, 1.f, op_stream(), copy, staged, skip);
  }
  void ema_update_staged(T* ema, const T* p, T tau, size_t n, const int32_t* skip) const {
    kernels::ema_update(ema, p, tau, n, op_stream(), copies_.copy_for_update(ema, n), skip);
  }
  void flag_nonfinite(int32_t* flag, const T* x, size_t n) const { kernels::flag_nonfinite(flag, x, n, op_stream()); }

 private:
  int device_ = 0, sms_ = 1;
  Precision precision_ = Precision::fp32;
  bool lt_on_ = true;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  mutable WeightCopies copies_;  // bf16 mode: the weights' bf16 copies
  mutable Scratch scratch_;      // bf16 mode: the bf16 operands of the op in flight
  mutable LtMatmul lt_;          // bf16 mode: the linear layers' products with their bias epilogues
  // bf16 mode: the bf16 copy of the last op's output that the op wrote beside it (in a scratch slot),
  // for a product that reads that output next. Every op takes its stream through op_stream(), which
  // counts ops: the copy is the output's only if no op came between (none could have written it).
  struct ProducedCopy {
    const T* p = nullptr;
    size_t n = 0;
    uint64_t op = 0;
    Scratch::Slot slot = Scratch::A;
  };
  mutable ProducedCopy produced_;
  mutable uint64_t ops_ = 0, fused_inputs_ = 0;
  cudaStream_t op_stream() const {
    ++ops_;
    return stream_;
  }
  // bf16 mode: where a producer writes bf16 of its n outputs beside them (scratch slot s); null
  // otherwise, and then produced() records nothing.
  __nv_bfloat16* copy_slot(size_t n, Scratch::Slot s) const {
    return precision_ == Precision::bf16 && n ? scratch_.bf16(s, n) : nullptr;
  }
  // The op just queued wrote `copy` (slot `slot`) = bf16 of [p, p + n).
  void produced(const __nv_bfloat16* copy, const T* p, size_t n, Scratch::Slot slot) const {
    if (copy) produced_ = ProducedCopy{p, n, ops_, slot};
  }
  // The bf16 copy of [p, p + n) that the previous op wrote, or null; *slot: the scratch slot it is in.
  const __nv_bfloat16* produced_copy(const T* p, size_t n, Scratch::Slot* slot) const {
    if (produced_.p != p || produced_.n != n || produced_.op != ops_) return nullptr;
    *slot = produced_.slot;
    ++fused_inputs_;
    return scratch_.bf16(produced_.slot, n);
  }
  bool graphs_on_ = true;
  mutable GraphCache graphs_;                             // recorded work
  mutable DeviceBuffer<unsigned char> cublas_workspace_;  // cuBLAS's, once work is recorded
#ifdef SHORTCUT_CUDA_SYNC_CHECK
  static constexpr bool kSyncChecked = true;
#else
  static constexpr bool kSyncChecked = false;
#endif

  cublasComputeType_t compute() const {
    return precision_ == Precision::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  }
  // bf16 mode: a forward product's operands, the input's copy from its producer where it wrote one
  std::pair<const __nv_bfloat16*, const __nv_bfloat16*> forward_operands(const T* in, const T* W, int N, int I,
                                                                         int O) const {
    Scratch::Slot in_slot = Scratch::A;
    const __nv_bfloat16* xb = produced_copy(in, size_t(N) * I, &in_slot);  // before any op of this one
    const __nv_bfloat16* Wb = weights_bf16(W, size_t(O) * I, in_slot == Scratch::B ? Scratch::A : Scratch::B);
    if (!xb) xb = rounded(in, size_t(N) * I, Scratch::A);
    return {xb, Wb};
  }
  // bf16 mode: a backward's dout operand, the copy its producer wrote (slot C or D) or one made in C
  const __nv_bfloat16* dout_operand(const T* dout, size_t n) const {
    Scratch::Slot slot = Scratch::C;
    const __nv_bfloat16* gb = produced_copy(dout, n, &slot);
    return gb ? gb : rounded(dout, n, Scratch::C);
  }
  // bf16 mode: dW += dout^T in and db += sum dout, both in one cuBLASLt product where it has an
  // algorithm (the bias gradient written into scratch, then added), else cuBLAS and the column sum.
  void weight_grads_bf16(T* dW, T* db, const T* dout, const __nv_bfloat16* gb, const T* in, int N, int I, int O,
                         cudaStream_t s) const {
    const __nv_bfloat16* xb = dW ? rounded(in, size_t(N) * I, Scratch::A) : nullptr;
    float* db_new = lt_on_ && dW && db ? scratch_.f32(size_t(O)) : nullptr;
    if (db_new && lt_.weight_grad(dW, db_new, xb, gb, N, I, O, s))
      kernels::add_inplace(db, db_new, size_t(O), s);
    else
      kernels::linear_backward_bf16(cublas_, nullptr, dW, db, dout, gb, xb, nullptr, N, I, O, false, sms_, s);
  }
  // bf16 copy of n values at p in scratch slot `slot`
  const __nv_bfloat16* rounded(const T* p, size_t n, Scratch::Slot slot) const {
    __nv_bfloat16* b = scratch_.bf16(slot, n);
    kernels::convert(b, p, n, stream_);
    return b;
  }
  // The kept copy of the weights W[0, n), or a conversion into scratch where none is kept.
  const __nv_bfloat16* weights_bf16(const T* W, size_t n, Scratch::Slot slot) const {
    if (const __nv_bfloat16* c = copies_.read(W, n, stream_)) return c;
    return rounded(W, n, slot);
  }
  void destroy() noexcept {
    graphs_.clear();
    lt_.clear();
    if (cublas_) cublasDestroy(cublas_);
    if (stream_) cudaStreamDestroy(stream_);
    cublas_ = nullptr;
    stream_ = nullptr;
  }
};

static_assert(shortcut::ComputeBackend<Backend>, "cuda::Backend must offer every op of cpu::Backend, same signatures");

}  // namespace shortcut::cuda
