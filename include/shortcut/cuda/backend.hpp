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
//   their operands and everything else stays fp32. Each product converts its fp32 activations to
//   bf16 itself, as it enters; the weights' bf16 copies are kept (shortcut/cuda/bf16_copies.hpp: how
//   they stay exact). bf16 mode needs a GPU of compute capability 8.0 or later and code compiled for
//   one: the constructor refuses otherwise (ConfigError), before any tensor-core kernel could trap.
// - Several ops reduce with atomics (the adaLN and bias gradients over tokens, dQ of attention,
//   label-table gradients): their summation order, hence their last bits, can vary between runs.
// - Recorded work (Options::graphs, on by default): run_captured(body) captures body's ops into a
//   CUDA graph every call and launches it as one, patching the executable graph of the last call
//   (shortcut/cuda/graphs.hpp); OdeSampler runs its N-step loop so. Training steps run eagerly.
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
#include "kernels/attention_tc_tangent.cuh"
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
  using HostBuffer = PinnedBuffer<U>;     // host memory the copy engines reach directly (dist/reduce_buffer.hpp)
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
    if (precision_ == Precision::bf16) require_tensor_cores(device_);
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

  // The backend's stream, for work of your own queued among its ops.
  cudaStream_t stream() const { return stream_; }
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
  // body() — ops of this backend only — captured into a CUDA graph and launched, every call; the
  // executable graph of the previous call is patched where the topology allows (graphs.hpp). A body
  // whose capture breaks runs eagerly instead. Without graphs (Options::graphs false) body() runs.
  template <class F>
  void run_captured(F&& body) const {
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
    // a broken capture ran the host side of the kept copies' refreshes, not their conversions
    graphs_.run(stream_, body, [this] { copies_.all_written(); });
  }
  const GraphStats& graph_stats() const { return graphs_.stats(); }
  // bf16 mode: the linear layers' cuBLASLt products (lt_matmul.hpp) and the ones that fell back.
  const LtStats& lt_stats() const { return lt_.stats(); }
  bool graphs() const { return graphs_on_; }

  // ---- memory -----------------------------------------------------------------------------
  template <class U>
  void to_device(U* dst, const U* src, size_t n) const {
    if (!n) return;
    copies_.written(dst, n * sizeof(U));
    SHORTCUT_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(U), cudaMemcpyHostToDevice, stream_));
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
    SHORTCUT_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(U), cudaMemcpyDeviceToHost, stream_));
    synchronize();
  }
  // Device to device only, queued on the stream like a kernel (to_device / to_host move host data:
  // they know when the host memory may be touched again, which a queued copy would not).
  template <class U>
  void copy(U* dst, const U* src, size_t n) const {
    if (!n) return;
    copies_.written(dst, n * sizeof(U));
    SHORTCUT_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(U), cudaMemcpyDeviceToDevice, stream_));
  }
  void fill(T* p, T v, size_t n) const {
    copies_.written(p, n * sizeof(T));
    kernels::fill(p, v, n, stream_);
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
      const cudaStream_t s = stream_;
      if (!(lt_on_ && lt_.linear_forward(out, xb, Wb, b, N, I, O, s)))
        kernels::linear_forward_bf16(cublas_, out, xb, Wb, b, N, I, O, s);
      return;
    }
    kernels::linear_forward(cublas_, compute(), out, in, W, b, N, I, O, stream_);
  }
  // din[N,I] (= or += with accumulate; null skips) = dout W; dW[O,I] += dout^T in; db[O] += sum dout
  void linear_backward(T* din, T* dW, T* db, const T* dout, const T* in, const T* W, int N, int I, int O,
                       bool accumulate_din = false) const {
    if (precision_ == Precision::bf16 && N > 0 && I > 0 && O > 0) {
      const __nv_bfloat16* gb = rounded(dout, size_t(N) * O, Scratch::C);
      const __nv_bfloat16* Wb = din ? weights_bf16(W, size_t(O) * I, Scratch::B) : nullptr;
      const cudaStream_t s = stream_;
      kernels::linear_backward_bf16(cublas_, din, nullptr, nullptr, dout, gb, nullptr, Wb, N, I, O, accumulate_din,
                                    sms_, s);
      weight_grads_bf16(dW, db, dout, gb, in, N, I, O, s);
      return;
    }
    kernels::linear_backward(cublas_, compute(), din, dW, db, dout, in, W, N, I, O, accumulate_din, sms_, stream_);
  }
  // The MLP's first layer and GELU: a[N,O] = in W^T + b (kept for the backward), g = GELU(a). bf16 mode:
  // one cuBLASLt product with the GELU_AUX_BIAS epilogue; elsewhere (or where cuBLASLt has no
  // algorithm) the product and the GELU kernel. The product that reads g next converts it itself.
  void linear_gelu_forward(T* g, T* a, const T* in, const T* W, const T* b, int N, int I, int O) const {
    if (precision_ == Precision::bf16 && N > 0 && I > 0 && O > 0) {
      const auto [xb, Wb] = forward_operands(in, W, N, I, O);
      const cudaStream_t s = stream_;
      if (!(lt_on_ && lt_.linear_gelu_forward(g, a, xb, Wb, b, N, I, O, s))) {
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
  // product with the DGELU epilogue (no fp32 dout W written and read back).
  void gelu_linear_backward(T* da, T* dW, T* db, const T* dout, const T* in, const T* a, const T* W, int N, int I,
                            int O) const {
    if (precision_ == Precision::bf16 && N > 0 && I > 0 && O > 0) {
      const __nv_bfloat16* gb = rounded(dout, size_t(N) * O, Scratch::C);
      const __nv_bfloat16* Wb = weights_bf16(W, size_t(O) * I, Scratch::B);
      const cudaStream_t s = stream_;
      const bool fused = lt_on_ && lt_.gelu_data_grad(da, gb, Wb, a, N, I, O, s);
      if (!fused)
        kernels::linear_backward_bf16(cublas_, da, nullptr, nullptr, dout, gb, nullptr, Wb, N, I, O, false, sms_, s);
      weight_grads_bf16(dW, db, dout, gb, in, N, I, O, s);
      if (!fused) gelu_backward(da, da, a, size_t(N) * size_t(I));
      return;
    }
    linear_backward(da, dW, db, dout, in, W, N, I, O);
    gelu_backward(da, da, a, size_t(N) * size_t(I));
  }

  // ---- elementwise -------------------------------------------------------------------------
  void silu_forward(T* out, const T* in, size_t n) const { kernels::silu_forward(out, in, n, stream_); }
  void silu_backward(T* din, const T* dout, const T* in, size_t n) const {
    kernels::silu_backward(din, dout, in, n, stream_);
  }
  void gelu_forward(T* out, const T* in, size_t n) const { kernels::gelu_forward(out, in, n, stream_); }
  void gelu_backward(T* din, const T* dout, const T* in, size_t n) const {
    kernels::gelu_backward(din, dout, in, n, stream_);
  }
  void add_inplace(T* y, const T* x, size_t n) const { kernels::add_inplace(y, x, n, stream_); }
  void axpy(T* y, T a, const T* x, size_t n) const { kernels::axpy(y, a, x, n, stream_); }
  void add_rows(T* x, const T* row, int B, int R) const { kernels::add_rows(x, row, B, R, stream_); }

  // ---- LayerNorm (no affine, eps) + adaLN modulate ------------------------------------------
  void ln_modulate_forward(T* out, T* mean, T* rstd, const T* x, const T* shift, const T* scale, int mod_stride,
                           int B, int Tn, int D, T eps) const {
    kernels::ln_modulate_forward(out, mean, rstd, x, shift, scale, mod_stride, B, Tn, D, eps, stream_);
  }
  void ln_modulate_backward(T* dx, T* dshift, T* dscale, const T* dout, const T* x, const T* mean, const T* rstd,
                            const T* scale, int mod_stride, int B, int Tn, int D) const {
    kernels::ln_modulate_backward(dx, dshift, dscale, dout, x, mean, rstd, scale, mod_stride, B, Tn, D, sms_, stream_);
  }
  void gated_residual_forward(T* x, const T* gate, const T* y, int mod_stride, int B, int Tn, int D) const {
    kernels::gated_residual_forward(x, gate, y, mod_stride, B, Tn, D, stream_);
  }
  void gated_residual_backward(T* dy, T* dgate, const T* dx, const T* gate, const T* y, int mod_stride, int B, int Tn,
                               int D) const {
    kernels::gated_residual_backward(dy, dgate, dx, gate, y, mod_stride, B, Tn, D, sms_, stream_);
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
      kernels::attention_forward_tc(ob, lse, qb, B, Tn, H, hd, scale, stream_);
      kernels::convert(out, ob, n, stream_);
      return;
    }
    kernels::attention_forward(out, lse, qkv, B, Tn, H, hd, scale, stream_);
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
      kernels::attention_backward_tc(db, gb, qb, ob, lse, B, Tn, H, hd, scale, work, stream_);
      kernels::convert(dqkv, db, 3 * n, stream_);
      return;
    }
    kernels::attention_backward(dqkv, dout, qkv, out, lse, B, Tn, H, hd, scale, stream_);
  }

  // ---- forward mode (tangents; cpu::Backend's contract) ---------------------------------------
  void scale_rows(T* x, const T* s, int rows, int n) const { kernels::scale_rows(x, s, rows, n, stream_); }
  void ln_modulate_tangent(T* h_dot, const T* x, const T* x_dot, const T* mean, const T* rstd, const T* scale,
                           const T* shift_dot, const T* scale_dot, int mod_stride, int B, int Tn, int D) const {
    kernels::ln_modulate_tangent(h_dot, x, x_dot, mean, rstd, scale, shift_dot, scale_dot, mod_stride, B, Tn, D,
                                 stream_);
  }
  // Head dims as attention_forward. In bf16 mode: the tensor-core kernel (kernels/attention_tc_tangent.cuh)
  // on bf16 copies of qkv, qkv_dot and out, as the forward reads its operands; lse and out_dot fp32 (out_dot
  // is the kernel's fp32 result, not rounded to bf16: it ends a subtraction, no product reads it here).
  void attention_tangent(T* out_dot, const T* qkv, const T* qkv_dot, const T* out, const T* lse, int B, int Tn, int H,
                         int hd, T scale) const {
    if (precision_ == Precision::bf16) {
      kernels::attention_check_head_dim(hd);
      if (B <= 0 || Tn <= 0 || H <= 0) return;
      const size_t n = size_t(B) * Tn * H * hd;
      const __nv_bfloat16* qb = rounded(qkv, 3 * n, Scratch::A);
      const __nv_bfloat16* qdb = rounded(qkv_dot, 3 * n, Scratch::B);
      const __nv_bfloat16* ob = rounded(out, n, Scratch::C);
      kernels::attention_tangent_tc(out_dot, qb, qdb, ob, lse, B, Tn, H, hd, scale, stream_);
      return;
    }
    kernels::attention_tangent(out_dot, qkv, qkv_dot, out, lse, B, Tn, H, hd, scale, stream_);
  }

  // ---- embeddings -------------------------------------------------------------------------
  void timestep_embedding(T* out, const T* values, int B, int dim) const {
    kernels::timestep_embedding(out, values, B, dim, stream_);
  }
  void embedding_forward(T* out, const T* table, const int32_t* ids, int B, int D) const {
    kernels::embedding_forward(out, table, ids, B, D, stream_);
  }
  void embedding_backward(T* dtable, const T* dout, const int32_t* ids, int B, int D) const {
    kernels::embedding_backward(dtable, dout, ids, B, D, stream_);
  }
  void patch_gather(T* tokens, const T* img, int B, int H, int W, int C, int p, PatchOrder order) const {
    kernels::patch_gather(tokens, img, B, H, W, C, p, order == PatchOrder::ChannelMajor, stream_);
  }
  void patch_scatter(T* img, const T* tokens, int B, int H, int W, int C, int p, PatchOrder order) const {
    kernels::patch_scatter(img, tokens, B, H, W, C, p, order == PatchOrder::ChannelMajor, stream_);
  }

  // ---- training targets -------------------------------------------------------------------
  void normal(T* x0, size_t n, uint64_t seed, uint64_t stream, uint64_t first = 0) const {
    kernels::normal(x0, n, seed, stream, first, stream_);
  }
  void flow_rows(T* xt, T* target, const T* x1, const T* x0, const T* t, int rows, int n) const {
    kernels::flow_rows(xt, target, x1, x0, t, rows, n, stream_);
  }
  void bootstrap_half_step(T* x2, T* v1, const T* x, const T* vc, const T* vu, int n_cfg, T w, const T* hd, int rows,
                           int n, T clip) const {
    kernels::bootstrap_half_step(x2, v1, x, vc, vu, n_cfg, w, hd, rows, n, clip, stream_);
  }
  void bootstrap_target(T* target, const T* v1, const T* vc, const T* vu, int n_cfg, T w, int rows, int n,
                        T clip) const {
    kernels::bootstrap_target(target, v1, vc, vu, n_cfg, w, rows, n, clip, stream_);
  }
  void consistency_target(T* target, const T* xt, const T* xp, const T* v, const T* t, const T* tp, int rows,
                          int n) const {
    kernels::consistency_target(target, xt, xp, v, t, tp, rows, n, stream_);
  }
  void cfg_combine(T* out, const T* vc, const T* vu, T w, size_t n) const {
    kernels::cfg_combine(out, vc, vu, w, n, stream_);
  }
  void mse_loss(T* grad, T* row_loss, const T* pred, const T* target, int rows, int n, T grad_scale) const {
    kernels::mse_loss(grad, row_loss, pred, target, rows, n, grad_scale, stream_);
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
                        adamw_bias_correction(b2, step), stream_, copy);
  }
  void ema_update(T* ema, const T* p, T tau, size_t n, __nv_bfloat16* copy) const {
    if (copy != copies_.copy_for_update(ema, n)) copies_.written(ema, n * sizeof(T));
    kernels::ema_update(ema, p, tau, n, stream_, copy);
  }

 private:
  int device_ = 0, sms_ = 1;
  Precision precision_ = Precision::fp32;
  bool lt_on_ = true;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  mutable WeightCopies copies_;  // bf16 mode: the weights' bf16 copies
  mutable Scratch scratch_;      // bf16 mode: the bf16 operands of the op in flight
  mutable LtMatmul lt_;          // bf16 mode: the linear layers' products with their bias epilogues
  bool graphs_on_ = true;
  mutable CapturedWork graphs_;                           // recorded work
  mutable DeviceBuffer<unsigned char> cublas_workspace_;  // cuBLAS's, once work is recorded
#ifdef SHORTCUT_CUDA_SYNC_CHECK
  static constexpr bool kSyncChecked = true;
#else
  static constexpr bool kSyncChecked = false;
#endif

  cublasComputeType_t compute() const {
    return precision_ == Precision::tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  }
  // bf16 mode: a forward product's operands, the input converted here (slot A), the weights' kept copy
  // (or a conversion into slot B)
  std::pair<const __nv_bfloat16*, const __nv_bfloat16*> forward_operands(const T* in, const T* W, int N, int I,
                                                                         int O) const {
    return {rounded(in, size_t(N) * I, Scratch::A), weights_bf16(W, size_t(O) * I, Scratch::B)};
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
  // bf16 mode runs attention on the tensor-core kernels (mma.sync, cp.async, ldmatrix: sm_80), which
  // compiled for an older architecture are traps (kernels/mma.cuh), and on an older device cannot
  // run: refuse here, with what was found, rather than trap at the first attention call. The
  // compiled code is the forward kernel's: ptxVersion is the architecture its code was compiled for
  // (what __CUDA_ARCH__ was), binaryVersion what runs (the device's where the driver JIT-compiled it).
  static void require_tensor_cores(int device) {
    int major = 0, minor = 0;
    SHORTCUT_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    SHORTCUT_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    if (major < 8)
      throw ConfigError(cat("cuda::Options: bf16 precision needs a GPU of compute capability 8.0 or later (its ",
                            "tensor-core kernels use mma.sync, cp.async and ldmatrix), but CUDA device ", device,
                            " has compute capability ", major, ".", minor, "; use precision fp32 or tf32"));
    cudaFuncAttributes a{};
    const cudaError_t e = cudaFuncGetAttributes(&a, kernels::attention_forward_tc_kernel<64>);
    if (e != cudaSuccess) {
      cudaGetLastError();  // not sticky: the answer is the refusal below
      throw ConfigError(cat("cuda::Options: bf16 precision: this program has no code for CUDA device ", device,
                            " (compute capability ", major, ".", minor, "): cudaFuncGetAttributes of the tensor-core ",
                            "attention kernel says ", cudaGetErrorName(e), " (", cudaGetErrorString(e),
                            "); build with CMAKE_CUDA_ARCHITECTURES including ", major, minor));
    }
    if (a.ptxVersion < 80)
      throw ConfigError(cat("cuda::Options: bf16 precision needs the tensor-core kernels compiled for sm_80 or later, ",
                            "but this program's were compiled for compute_", a.ptxVersion, " (running as sm_",
                            a.binaryVersion, " on CUDA device ", device, ", compute capability ", major, ".", minor,
                            "), where they are traps; configure with CMAKE_CUDA_ARCHITECTURES=", major, minor,
                            " (or 80, or native)"));
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
static_assert(shortcut::ForwardModeBackend<Backend>, "cuda::Backend must offer the forward-mode ops of cpu::Backend");

}  // namespace shortcut::cuda
