// Timings of the CUDA ops that dominate a DiT training step, each against its references:
//   fused    the real backend and kernel headers (shortcut::cuda::Backend);
//   unfused  the same op as cuBLAS + one-purpose kernels (benchmarks/reference/unfused.cuh, checked
//            against the CPU backend by tests/gpu/unfused_reference_test.cu);
//   cpu      the Eigen backend (cpu::Backend<float>) at the same shapes;
// and the ceilings of the device: a 1 GiB device-to-device copy and 8192^3 cuBLAS products in fp32,
// TF32 and bf16.
//
// Names (parsed by a table script): BM_<kernel>_<forward|backward|step>/<fused|unfused|cpu>/<args>
// (Google Benchmark appends /manual_time or /real_time), and BM_ceiling_copy, BM_ceiling_matmul_fp32,
// BM_ceiling_matmul_tf32, BM_ceiling_matmul_bf16. Every benchmark sets exactly one counter: "GB/s"
// (memory-bound ops) or "TFLOP/s" (matrix work), with the same formula for every impl of a kernel,
// so the counters of one kernel compare as its times do.
//
// BM_attention_bf16tc_{forward,backward} are the bf16 tensor-core attention kernels on bf16 arrays,
// alone, and BM_attention_cudnn_{forward,backward} cuDNN's fused attention (SDPA, graph API; reference/
// cudnn_sdpa.hpp) on the same bf16 inputs, the external bar for them (skipped with cuDNN's reason
// where it refuses a shape, e.g. head dim 72, or where the build found no cuDNN);
// BM_attention_tangent_{fp32,bf16} are the backend's attention tangent (forward mode) in fp32 and in bf16
// mode; BM_linear_bf16_* and BM_attention_bf16_* are the backend's ops in bf16 mode (cuda::Precision::bf16)
// on its fp32 buffers, conversions included, the weights' bf16 copy kept as in training;
// BM_linear_bf16_*/unfused is that layer without cuBLASLt's bias epilogues (Options::lt_epilogues);
// BM_mlp_bf16_* the MLP's GELU pair (fc1 + GELU, fc2's backward through GELU), /unfused likewise.
// Shapes: DiT-S/B on 32x32x4 latents with patch 2 (256 tokens; D = 384, 6 heads of 64 / D = 768,
// 12 heads) at batch 32 (N = 8192 rows), longer sequences, DiT-XL's head dim 72, and the two
// end-to-end configs at batch 256: mnist-S2 (196 tokens, D 384, 6 heads of 64: N = 50176) and
// latent-B2 (256 tokens, D 768, 12 heads of 64: N = 65536).
//
// Method (METHOD.md): GPU iterations are timed with CUDA events on the backend's stream (manual time),
// after a warm-up call that keeps module loading and cuBLAS heuristics out; inputs are random (never
// zeros) and rotated over enough copies to exceed twice the L2 cache, so the numbers are not
// cache-resident re-runs (the unfused references' workspaces are not rotated: they are written
// before they are read). CPU iterations are timed by wall clock (real time: the backend is
// synchronous and may be multithreaded; the label gives its thread count), without rotation, with
// as few iterations as Google Benchmark's minimum time allows. Byte counters count each input read
// once and each output written once (an accumulated output both): the floor the kernel is measured
// against. Without a CUDA device the program prints one line and exits 0.
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>

#include <cstdio>
#include <string>
#include <vector>

#include "benchmarks/reference/unfused.cuh"
#include "kernels/attention_tc.cuh"
#include "kernels/attention_tc_backward.cuh"
#include "shortcut/cuda.hpp"
#if defined(SHORTCUT_HAVE_CUDNN)
#include "benchmarks/reference/cudnn_sdpa.hpp"
#endif

namespace {

using shortcut::cuda::Backend;
using Buf = shortcut::cuda::DeviceBuffer<float>;
using Cpu = shortcut::cpu::Backend<float>;
using Host = std::vector<float>;
namespace uf = shortcut::bench::unfused;

// bf16: the backend in bf16 mode, reported as its own kernel (BM_<op>_bf16_<direction>/fused/...)
enum class Impl { fused, unfused, cpu, bf16, bf16_unfused };

Backend& be() {
  static Backend b;
  return b;
}
Backend& be_bf16() {
  static Backend b(shortcut::cuda::Options{.precision = shortcut::cuda::Precision::bf16});
  return b;
}
// bf16 mode without cuBLASLt's bias epilogues (cuBLAS products, separate bias kernels)
Backend& be_bf16_unfused() {
  static Backend b(shortcut::cuda::Options{.precision = shortcut::cuda::Precision::bf16, .lt_epilogues = false});
  return b;
}
Backend& backend_for(Impl impl) {
  return impl == Impl::bf16 ? be_bf16() : impl == Impl::bf16_unfused ? be_bf16_unfused() : be();
}

// n random normals drawn on the device (no host traffic, never zeros)
Buf random_buffer(size_t n, double sd = 1.0) {
  static uint64_t stream = 0;
  Buf b(n);
  be().normal(b.data(), n, 20251125, stream++);
  if (sd != 1.0) be().axpy(b.data(), float(sd - 1.0), b.data(), n);  // b *= sd, in place
  return b;
}
template <class U>
std::vector<U> to_host(const shortcut::cuda::DeviceBuffer<U>& b) {
  std::vector<U> h(b.size());
  be().to_host(h.data(), b.data(), b.size());
  return h;
}
// A host copy of n random normals (drawn on the device, so large CPU inputs cost little to make)
Host random_host(size_t n, double sd = 1.0) { return to_host(random_buffer(n, sd)); }

__global__ void abs_kernel(float* x, size_t n) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    x[i] = fabsf(x[i]);
}
__global__ void to_bf16_kernel(__nv_bfloat16* out, const float* in, size_t n) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    out[i] = __float2bfloat16(in[i]);
}
// n random |normal| * sd values (second moments must not be negative)
Buf random_positive(size_t n, double sd) {
  Buf b = random_buffer(n, sd);
  abs_kernel<<<shortcut::kernels::blocks_for(n), 256, 0, be().stream()>>>(b.data(), n);
  SHORTCUT_CUDA_CHECK_LAUNCH("abs_kernel");
  return b;
}

// How many copies of an input set of `bytes` exceed twice the L2 (at most 8).
int rotation(size_t bytes) {
  int l2 = 0;
  SHORTCUT_CUDA_CHECK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, be().device()));
  size_t c = (2 * size_t(l2) + bytes - 1) / bytes;
  return int(c < 1 ? 1 : (c > 8 ? 8 : c));
}

// Times op(copy) per iteration with events; op must only enqueue work on be().stream().
template <class Op>
void timed(benchmark::State& st, int copies, Op&& op) {
  try {
    op(0);  // warm-up
    be().synchronize();
    cudaEvent_t a, b;
    SHORTCUT_CUDA_CHECK(cudaEventCreate(&a));
    SHORTCUT_CUDA_CHECK(cudaEventCreate(&b));
    int i = 0;
    for (auto _ : st) {
      SHORTCUT_CUDA_CHECK(cudaEventRecord(a, be().stream()));
      op(i++ % copies);
      SHORTCUT_CUDA_CHECK(cudaEventRecord(b, be().stream()));
      SHORTCUT_CUDA_CHECK(cudaEventSynchronize(b));
      float ms = 0;
      SHORTCUT_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
      st.SetIterationTime(ms * 1e-3);
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
  }
}

// Times op() on the CPU backend per iteration (the benchmark runs with UseRealTime). The label says
// how many threads Eigen uses here: the CPU backend's OpenMP loops and Eigen's products run in
// parallel only where this .cu file's host code is compiled with OpenMP.
template <class Op>
void cpu_timed(benchmark::State& st, Op&& op) {
  st.SetLabel("cpu threads " + std::to_string(Eigen::nbThreads()));
  try {
    for (auto _ : st) {
      op();
      benchmark::ClobberMemory();
    }
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
  }
}

void set_flops(benchmark::State& st, double flops) {
  st.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
}
void set_bytes(benchmark::State& st, double bytes) {
  st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// ==== linear: args N, I, O ==========================================================================
// Bound by FLOPs: TFLOP/s = 2 N I O (forward: out = in W^T) and 4 N I O (backward: din = dout W and
// dW += dout^T in; the bias terms are O(N O)) per time. Impls: fused and cpu only: kernels/matmul.cuh
// is already the unfused form (GEMM, then a separate bias-add kernel; the bias gradient a separate
// column-sum kernel), so an "unfused" copy would time the same launches.
void linear_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "I", "O"});
  // DiT-S, batch 32 x 256 tokens: qkv, fc1, fc2
  b->Args({8192, 384, 1152})->Args({8192, 384, 1536})->Args({8192, 1536, 384});
  // mnist-S2 (256 x 196 tokens, D 384): qkv, proj, fc1, fc2; adaLN modulation (one row per sample)
  b->Args({50176, 384, 1152})->Args({50176, 384, 384})->Args({50176, 384, 1536})->Args({50176, 1536, 384});
  b->Args({256, 384, 2304});
  // latent-B2 (256 x 256 tokens, D 768): qkv, proj, fc1, fc2; adaLN modulation
  b->Args({65536, 768, 2304})->Args({65536, 768, 768})->Args({65536, 768, 3072})->Args({65536, 3072, 768});
  b->Args({256, 768, 4608});
}

void BM_linear_forward(benchmark::State& st, Impl impl) {
  const int N = int(st.range(0)), I = int(st.range(1)), O = int(st.range(2));
  if (impl == Impl::cpu) {
    Cpu cpu;
    Host in = random_host(size_t(N) * I), W = random_host(size_t(O) * I, 0.05), b = random_host(O), out(size_t(N) * O);
    cpu_timed(st, [&] { cpu.linear_forward(out.data(), in.data(), W.data(), b.data(), N, I, O); });
  } else {
    const int copies = rotation(size_t(N) * (I + O) * 4);
    std::vector<Buf> in, out;
    for (int c = 0; c < copies; ++c) {
      in.push_back(random_buffer(size_t(N) * I));
      out.push_back(Buf(size_t(N) * O));
    }
    Buf W = random_buffer(size_t(O) * I, 0.05), b = random_buffer(O);
    Backend& g = backend_for(impl);
    g.keep_weight_copy(W.data(), W.size());  // as ParamArena does (a no-op outside bf16 mode)
    timed(st, copies, [&](int c) { g.linear_forward(out[c].data(), in[c].data(), W.data(), b.data(), N, I, O); });
    g.drop_weight_copy(W.data());
  }
  set_flops(st, 2.0 * N * I * O);
}
// bf16 mode's layer; /unfused: without cuBLASLt's bias epilogues (Options::lt_epilogues false)
void BM_linear_bf16_forward(benchmark::State& st, Impl impl) {
  BM_linear_forward(st, impl == Impl::unfused ? Impl::bf16_unfused : Impl::bf16);
}

void BM_linear_backward(benchmark::State& st, Impl impl) {
  const int N = int(st.range(0)), I = int(st.range(1)), O = int(st.range(2));
  if (impl == Impl::cpu) {
    Cpu cpu;
    Host in = random_host(size_t(N) * I), dout = random_host(size_t(N) * O), W = random_host(size_t(O) * I, 0.05);
    Host din(size_t(N) * I), dW(size_t(O) * I), db(O);
    cpu_timed(st, [&] {
      cpu.linear_backward(din.data(), dW.data(), db.data(), dout.data(), in.data(), W.data(), N, I, O);
    });
  } else {
    const int copies = rotation(size_t(N) * (2 * I + O) * 4);
    std::vector<Buf> in, dout, din;
    for (int c = 0; c < copies; ++c) {
      in.push_back(random_buffer(size_t(N) * I));
      dout.push_back(random_buffer(size_t(N) * O));
      din.push_back(Buf(size_t(N) * I));
    }
    Buf W = random_buffer(size_t(O) * I, 0.05), dW(size_t(O) * I), db(O);
    Backend& g = backend_for(impl);
    g.keep_weight_copy(W.data(), W.size());
    timed(st, copies, [&](int c) {
      g.linear_backward(din[c].data(), dW.data(), db.data(), dout[c].data(), in[c].data(), W.data(), N, I, O);
    });
    g.drop_weight_copy(W.data());
  }
  set_flops(st, 4.0 * N * I * O);
}
void BM_linear_bf16_backward(benchmark::State& st, Impl impl) {
  BM_linear_backward(st, impl == Impl::unfused ? Impl::bf16_unfused : Impl::bf16);
}

// ==== the MLP's GELU pair in bf16 mode: args N, D (hidden 4D) ======================================
// forward: linear_gelu_forward (fc1 + GELU, the pre-activation kept); backward: gelu_linear_backward
// (fc2's backward through GELU's derivative). /fused: cuBLASLt's GELU_AUX_BIAS / DGELU epilogues;
// /unfused: the products and the separate GELU kernels (Options::lt_epilogues false). FLOPs as the
// layer's (the epilogue's work is O(N 4D)).
void mlp_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"N", "D"});
  b->Args({8192, 384})->Args({50176, 384})->Args({65536, 768});  // DiT-S batch 32, mnist-S2, latent-B2
}
void BM_mlp_bf16_forward(benchmark::State& st, Impl impl) {
  const int N = int(st.range(0)), D = int(st.range(1)), H = 4 * D;
  const int copies = rotation(size_t(N) * (D + 2 * H) * 4);
  std::vector<Buf> in, a, g;
  for (int c = 0; c < copies; ++c) {
    in.push_back(random_buffer(size_t(N) * D));
    a.push_back(Buf(size_t(N) * H));
    g.push_back(Buf(size_t(N) * H));
  }
  Buf W = random_buffer(size_t(H) * D, 0.05), b = random_buffer(H);
  Backend& be = backend_for(impl == Impl::unfused ? Impl::bf16_unfused : Impl::bf16);
  be.keep_weight_copy(W.data(), W.size());
  timed(st, copies, [&](int c) {
    be.linear_gelu_forward(g[c].data(), a[c].data(), in[c].data(), W.data(), b.data(), N, D, H);
  });
  be.drop_weight_copy(W.data());
  set_flops(st, 2.0 * N * D * H);
}
void BM_mlp_bf16_backward(benchmark::State& st, Impl impl) {
  const int N = int(st.range(0)), D = int(st.range(1)), H = 4 * D;
  const int copies = rotation(size_t(N) * (D + 3 * H) * 4);
  std::vector<Buf> dout, g, a, da;
  for (int c = 0; c < copies; ++c) {
    dout.push_back(random_buffer(size_t(N) * D));
    g.push_back(random_buffer(size_t(N) * H));
    a.push_back(random_buffer(size_t(N) * H));
    da.push_back(Buf(size_t(N) * H));
  }
  Buf W = random_buffer(size_t(D) * H, 0.05), dW(size_t(D) * H), db(D);
  Backend& be = backend_for(impl == Impl::unfused ? Impl::bf16_unfused : Impl::bf16);
  be.keep_weight_copy(W.data(), W.size());
  timed(st, copies, [&](int c) {
    be.gelu_linear_backward(da[c].data(), dW.data(), db.data(), dout[c].data(), g[c].data(), a[c].data(), W.data(),
                            N, H, D);
  });
  be.drop_weight_copy(W.data());
  set_flops(st, 4.0 * N * D * H);
}

// ==== attention: args B, T, H, hd ===================================================================
// Bound by FLOPs (T^2 hd work per T hd data): TFLOP/s = 4 B H T^2 hd (forward: Q K^T and P V) and
// 10 B H T^2 hd (backward: S recomputed, dV, dP, dQ, dK) per time, the same count for every impl (the
// softmax's exp and the elementwise steps are not counted). The unfused reference also moves the
// [B, H, T, T] matrices through device memory (S/P forward; P and dS backward), which is the point
// of the comparison.
void attention_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "T", "H", "hd"});
  b->Args({32, 256, 6, 64})->Args({8, 1024, 6, 64})->Args({16, 256, 16, 72})->Args({16, 256, 8, 128});
  b->Args({256, 196, 6, 64});   // mnist-S2
  b->Args({256, 256, 12, 64});  // latent-B2
}

struct AttnSet {
  Buf qkv, out, lse, dout, dqkv;
};
std::vector<AttnSet> attention_sets(int B, int T, int H, int hd, bool backward, int copies) {
  const size_t rows = size_t(B) * T, D = size_t(H) * hd;
  std::vector<AttnSet> sets;
  for (int c = 0; c < copies; ++c) {
    AttnSet s{random_buffer(rows * 3 * D), Buf(rows * D), Buf(size_t(B) * H * T), Buf(), Buf()};
    if (backward) {
      s.dout = random_buffer(rows * D);
      s.dqkv = Buf(rows * 3 * D);
      be().attention_forward(s.out.data(), s.lse.data(), s.qkv.data(), B, T, H, hd, 1.f / hd);
    }
    sets.push_back(std::move(s));
  }
  return sets;
}

void BM_attention_forward(benchmark::State& st, Impl impl) {
  const int B = int(st.range(0)), T = int(st.range(1)), H = int(st.range(2)), hd = int(st.range(3));
  const size_t rows = size_t(B) * T, D = size_t(H) * hd;
  const float scale = 1.f / hd;
  if (impl == Impl::cpu) {
    Cpu cpu;
    Host qkv = random_host(rows * 3 * D), out(rows * D), lse(size_t(B) * H * T);
    cpu_timed(st, [&] { cpu.attention_forward(out.data(), lse.data(), qkv.data(), B, T, H, hd, scale); });
  } else {
    auto sets = attention_sets(B, T, H, hd, false, rotation(rows * D * 4 * 4));
    Buf work(impl == Impl::unfused ? uf::attention_forward_workspace(B, T, H) : 0);
    timed(st, int(sets.size()), [&](int c) {
      auto& s = sets[c];
      if (impl == Impl::fused || impl == Impl::bf16)
        (impl == Impl::bf16 ? be_bf16() : be()).attention_forward(s.out.data(), s.lse.data(), s.qkv.data(), B, T, H,
                                                                   hd, scale);
      else
        uf::attention_forward(be().cublas(), be().stream(), s.out.data(), s.lse.data(), s.qkv.data(), B, T, H, hd,
                              scale, work.data());
    });
  }
  set_flops(st, 4.0 * B * H * double(T) * T * hd);
}
void BM_attention_bf16_forward(benchmark::State& st, Impl) { BM_attention_forward(st, Impl::bf16); }

// The tangent (forward mode) through the backend: BM_attention_tangent_fp32 the fp32 kernel
// (kernels/attention.cuh), BM_attention_tangent_bf16 bf16 mode's tensor-core kernel
// (kernels/attention_tc_tangent.cuh) with its conversions of qkv, qkv_dot and out. out and lse come
// from the same mode's forward. TFLOP/s = 10 B H T^2 hd per time (S, the two products of S_dot, P V_dot
// and (P o S_dot) V). Not yet run on a GPU.
void BM_attention_tangent(benchmark::State& st, bool bf16) {
  const int B = int(st.range(0)), T = int(st.range(1)), H = int(st.range(2)), hd = int(st.range(3));
  const size_t rows = size_t(B) * T, D = size_t(H) * hd;
  const float scale = 1.f / hd;
  Backend& b = bf16 ? be_bf16() : be();
  struct Set {
    Buf qkv, qkv_dot, out, lse, out_dot;
  };
  std::vector<Set> sets;
  for (int c = 0, n = rotation(rows * D * 4 * 9); c < n; ++c) {
    Set s{random_buffer(rows * 3 * D), random_buffer(rows * 3 * D), Buf(rows * D), Buf(size_t(B) * H * T),
          Buf(rows * D)};
    b.attention_forward(s.out.data(), s.lse.data(), s.qkv.data(), B, T, H, hd, scale);
    sets.push_back(std::move(s));
  }
  timed(st, int(sets.size()), [&](int c) {
    auto& s = sets[c];
    b.attention_tangent(s.out_dot.data(), s.qkv.data(), s.qkv_dot.data(), s.out.data(), s.lse.data(), B, T, H, hd,
                        scale);
  });
  set_flops(st, 10.0 * B * H * double(T) * T * hd);
}
void BM_attention_tangent_fp32(benchmark::State& st, Impl) { BM_attention_tangent(st, false); }
void BM_attention_tangent_bf16(benchmark::State& st, Impl) { BM_attention_tangent(st, true); }

// The bf16 attention kernels on bf16 arrays, alone: the tensor-core forward and backward
// (kernels/attention_tc*.cuh) and cuDNN's fused attention (reference/cudnn_sdpa.hpp) on the same
// inputs, at the same shapes and FLOP counts; their fraction of ceiling is taken against the bf16
// matmul ceiling. The backward's inputs out and lse come from the same implementation's forward.
using Bf = shortcut::cuda::DeviceBuffer<__nv_bfloat16>;
struct Bf16AttnSet {
  Bf qkv, out;
  Buf lse;
  Bf dout, dqkv;
};
Bf to_bf16(const Buf& f) {
  Bf b(f.size());
  to_bf16_kernel<<<shortcut::kernels::blocks_for(f.size()), 256, 0, be().stream()>>>(b.data(), f.data(), f.size());
  SHORTCUT_CUDA_CHECK_LAUNCH("to_bf16_kernel");
  be().synchronize();  // f is freed by the caller
  return b;
}
std::vector<Bf16AttnSet> bf16_attention_sets(int B, int T, int H, int hd, bool backward) {
  const size_t rows = size_t(B) * T, D = size_t(H) * hd;
  std::vector<Bf16AttnSet> sets;
  for (int c = 0, n = rotation(rows * D * 2 * (backward ? 8 : 4)); c < n; ++c) {
    Bf16AttnSet s{to_bf16(random_buffer(rows * 3 * D)), Bf(rows * D), Buf(size_t(B) * H * T), Bf(), Bf()};
    if (backward) {
      s.dout = to_bf16(random_buffer(rows * D));
      s.dqkv = Bf(rows * 3 * D);
      shortcut::kernels::attention_forward_tc(s.out.data(), s.lse.data(), s.qkv.data(), B, T, H, hd, 1.f / hd,
                                              be().stream());
    }
    sets.push_back(std::move(s));
  }
  return sets;
}

void BM_attention_bf16tc_forward(benchmark::State& st, Impl) {
  const int B = int(st.range(0)), T = int(st.range(1)), H = int(st.range(2)), hd = int(st.range(3));
  auto sets = bf16_attention_sets(B, T, H, hd, false);
  timed(st, int(sets.size()), [&](int c) {
    auto& s = sets[c];
    shortcut::kernels::attention_forward_tc(s.out.data(), s.lse.data(), s.qkv.data(), B, T, H, hd, 1.f / hd,
                                            be().stream());
  });
  set_flops(st, 4.0 * B * H * double(T) * T * hd);
}

void BM_attention_bf16tc_backward(benchmark::State& st, Impl) {
  const int B = int(st.range(0)), T = int(st.range(1)), H = int(st.range(2)), hd = int(st.range(3));
  auto sets = bf16_attention_sets(B, T, H, hd, true);
  Buf work(shortcut::kernels::attention_backward_tc_workspace(B, T, H, hd));
  timed(st, int(sets.size()), [&](int c) {
    auto& s = sets[c];
    shortcut::kernels::attention_backward_tc(s.dqkv.data(), s.dout.data(), s.qkv.data(), s.out.data(), s.lse.data(),
                                             B, T, H, hd, 1.f / hd, work.data(), be().stream());
  });
  set_flops(st, 10.0 * B * H * double(T) * T * hd);
}

// cuDNN's SDPA (graph API), forward or backward; a shape cuDNN refuses is skipped with its reason.
void attention_cudnn(benchmark::State& st, bool backward) {
  const int B = int(st.range(0)), T = int(st.range(1)), H = int(st.range(2)), hd = int(st.range(3));
#if defined(SHORTCUT_HAVE_CUDNN)
  try {
    shortcut::bench::CudnnSdpa sdpa(B, T, H, hd, 1.f / hd, be().stream());
    if (!(backward ? sdpa.supported_backward() : sdpa.supported_forward())) {
      st.SkipWithError(("cuDNN refuses this shape: " + sdpa.reason()).c_str());
      return;
    }
    auto sets = bf16_attention_sets(B, T, H, hd, backward);
    if (backward)  // its own forward's out and stats
      for (auto& s : sets) sdpa.forward(s.out.data(), s.lse.data(), s.qkv.data(), be().stream());
    timed(st, int(sets.size()), [&](int c) {
      auto& s = sets[c];
      if (backward)
        sdpa.backward(s.dqkv.data(), s.dout.data(), s.qkv.data(), s.out.data(), s.lse.data(), be().stream());
      else
        sdpa.forward(s.out.data(), s.lse.data(), s.qkv.data(), be().stream());
    });
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
    return;
  }
#else
  st.SkipWithError("built without cuDNN (CMake found no libcudnn / cudnn_graph.h)");
  return;
#endif
  set_flops(st, (backward ? 10.0 : 4.0) * B * H * double(T) * T * hd);
}
void BM_attention_cudnn_forward(benchmark::State& st, Impl) { attention_cudnn(st, false); }
void BM_attention_cudnn_backward(benchmark::State& st, Impl) { attention_cudnn(st, true); }

void BM_attention_backward(benchmark::State& st, Impl impl) {
  const int B = int(st.range(0)), T = int(st.range(1)), H = int(st.range(2)), hd = int(st.range(3));
  const size_t rows = size_t(B) * T, D = size_t(H) * hd;
  const float scale = 1.f / hd;
  if (impl == Impl::cpu) {
    Host qkv, dout, out, lse;
    {  // inputs (and the forward's out, lse) made on the device
      auto s = attention_sets(B, T, H, hd, true, 1);
      qkv = to_host(s[0].qkv), dout = to_host(s[0].dout), out = to_host(s[0].out), lse = to_host(s[0].lse);
    }
    Cpu cpu;
    Host dqkv(qkv.size());
    cpu_timed(st, [&] {
      cpu.attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), B, T, H, hd, scale);
    });
  } else {
    auto sets = attention_sets(B, T, H, hd, true, rotation(rows * D * 4 * 9));
    Buf work(impl == Impl::unfused ? uf::attention_backward_workspace(B, T, H) : 0);
    timed(st, int(sets.size()), [&](int c) {
      auto& s = sets[c];
      if (impl == Impl::fused || impl == Impl::bf16)
        (impl == Impl::bf16 ? be_bf16() : be()).attention_backward(s.dqkv.data(), s.dout.data(), s.qkv.data(),
                                                                    s.out.data(), s.lse.data(), B, T, H, hd, scale);
      else
        uf::attention_backward(be().cublas(), be().stream(), s.dqkv.data(), s.dout.data(), s.qkv.data(), s.out.data(),
                               s.lse.data(), B, T, H, hd, scale, work.data());
    });
  }
  set_flops(st, 10.0 * B * H * double(T) * T * hd);
}
void BM_attention_bf16_backward(benchmark::State& st, Impl) { BM_attention_backward(st, Impl::bf16); }

// ==== adaLN: args B, T, D (modulation rows of 6D, as in a DiT block) ================================
// Bound by bytes. With n = B T D, rows = B T and BD = B D (one modulation vector per sample), in
// floats of 4 bytes, the floors per call are
//   ln_modulate forward      x (n), shift and scale (2 BD) read; out (n), mean and rstd (2 rows) written
//   ln_modulate backward     dout, x (2n), mean, rstd (2 rows), scale (BD) read; dx (2n: accumulated),
//                            dshift, dscale (4 BD: accumulated) read and written
//   gated_residual forward   x (2n: accumulated), y (n), gate (BD)
//   gated_residual backward  dx, y (2n), gate (BD) read; dy (n) written; dgate (2 BD: accumulated)
// and GB/s = bytes / time. The unfused references move their intermediates (x-hat, dxhat, gate*y,
// dx*y) through device memory on top of that.
void ada_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"B", "T", "D"});
  b->Args({32, 256, 384})->Args({32, 256, 1152});
  b->Args({256, 196, 384});  // mnist-S2
  b->Args({256, 256, 768});  // latent-B2
}

struct AdaSet {
  Buf x, out, mean, rstd, dout, dx;
};
std::vector<AdaSet> ada_sets(int B, int T, int D) {
  const size_t n = size_t(B) * T * D;
  const int copies = rotation(n * 4 * 4);
  std::vector<AdaSet> sets;
  for (int c = 0; c < copies; ++c) {
    AdaSet s{random_buffer(n), Buf(n), Buf(size_t(B) * T), Buf(size_t(B) * T), random_buffer(n), random_buffer(n)};
    sets.push_back(std::move(s));
  }
  return sets;
}

void BM_ln_modulate_forward(benchmark::State& st, Impl impl) {
  const int B = int(st.range(0)), T = int(st.range(1)), D = int(st.range(2));
  const size_t n = size_t(B) * T * D, rows = size_t(B) * T;
  if (impl == Impl::cpu) {
    Cpu cpu;
    Host x = random_host(n), mod = random_host(size_t(B) * 6 * D, 0.1), out(n), mean(rows), rstd(rows);
    cpu_timed(st, [&] {
      cpu.ln_modulate_forward(out.data(), mean.data(), rstd.data(), x.data(), mod.data(), mod.data() + D, 6 * D, B, T,
                              D, 1e-6f);
    });
  } else {
    auto sets = ada_sets(B, T, D);
    Buf mod = random_buffer(size_t(B) * 6 * D, 0.1);
    Buf work(impl == Impl::unfused ? uf::ln_modulate_forward_workspace(B, T, D) : 0);
    timed(st, int(sets.size()), [&](int c) {
      auto& s = sets[c];
      if (impl == Impl::fused)
        be().ln_modulate_forward(s.out.data(), s.mean.data(), s.rstd.data(), s.x.data(), mod.data(), mod.data() + D,
                                 6 * D, B, T, D, 1e-6f);
      else
        uf::ln_modulate_forward(be().stream(), s.out.data(), s.mean.data(), s.rstd.data(), s.x.data(), mod.data(),
                                mod.data() + D, 6 * D, B, T, D, 1e-6f, work.data());
    });
  }
  set_bytes(st, 4.0 * (2.0 * n + 2.0 * B * D + 2.0 * rows));
}

void BM_ln_modulate_backward(benchmark::State& st, Impl impl) {
  const int B = int(st.range(0)), T = int(st.range(1)), D = int(st.range(2));
  const size_t n = size_t(B) * T * D, rows = size_t(B) * T;
  if (impl == Impl::cpu) {
    Host x, mod, mean, rstd, dout, dx;
    {  // inputs and the forward's statistics made on the device
      auto sets = ada_sets(B, T, D);
      auto& s = sets[0];
      Buf m = random_buffer(size_t(B) * 6 * D, 0.1);
      be().ln_modulate_forward(s.out.data(), s.mean.data(), s.rstd.data(), s.x.data(), m.data(), m.data() + D, 6 * D,
                               B, T, D, 1e-6f);
      x = to_host(s.x), mod = to_host(m), mean = to_host(s.mean), rstd = to_host(s.rstd), dout = to_host(s.dout),
      dx = to_host(s.dx);
    }
    Cpu cpu;
    Host dmod(size_t(B) * 6 * D);
    cpu_timed(st, [&] {
      cpu.ln_modulate_backward(dx.data(), dmod.data(), dmod.data() + D, dout.data(), x.data(), mean.data(),
                               rstd.data(), mod.data() + D, 6 * D, B, T, D);
    });
  } else {
    auto sets = ada_sets(B, T, D);
    Buf mod = random_buffer(size_t(B) * 6 * D, 0.1), dmod = random_buffer(size_t(B) * 6 * D);
    Buf work(impl == Impl::unfused ? uf::ln_modulate_backward_workspace(B, T, D) : 0);
    for (auto& s : sets)
      be().ln_modulate_forward(s.out.data(), s.mean.data(), s.rstd.data(), s.x.data(), mod.data(), mod.data() + D,
                               6 * D, B, T, D, 1e-6f);
    timed(st, int(sets.size()), [&](int c) {
      auto& s = sets[c];
      if (impl == Impl::fused)
        be().ln_modulate_backward(s.dx.data(), dmod.data(), dmod.data() + D, s.dout.data(), s.x.data(), s.mean.data(),
                                  s.rstd.data(), mod.data() + D, 6 * D, B, T, D);
      else
        uf::ln_modulate_backward(be().stream(), s.dx.data(), dmod.data(), dmod.data() + D, s.dout.data(), s.x.data(),
                                 s.mean.data(), s.rstd.data(), mod.data() + D, 6 * D, B, T, D, work.data());
    });
  }
  set_bytes(st, 4.0 * (4.0 * n + 2.0 * rows + 5.0 * B * D));
}

void BM_gated_residual_forward(benchmark::State& st, Impl impl) {
  const int B = int(st.range(0)), T = int(st.range(1)), D = int(st.range(2));
  const size_t n = size_t(B) * T * D;
  if (impl == Impl::cpu) {
    Cpu cpu;
    Host x = random_host(n), y = random_host(n), mod = random_host(size_t(B) * 6 * D, 0.1);
    cpu_timed(st, [&] { cpu.gated_residual_forward(x.data(), mod.data() + 2 * D, y.data(), 6 * D, B, T, D); });
  } else {
    auto sets = ada_sets(B, T, D);  // x: the residual stream, dout: y
    Buf mod = random_buffer(size_t(B) * 6 * D, 0.1);
    Buf work(impl == Impl::unfused ? uf::gated_residual_workspace(B, T, D) : 0);
    timed(st, int(sets.size()), [&](int c) {
      auto& s = sets[c];
      if (impl == Impl::fused)
        be().gated_residual_forward(s.x.data(), mod.data() + 2 * D, s.dout.data(), 6 * D, B, T, D);
      else
        uf::gated_residual_forward(be().stream(), s.x.data(), mod.data() + 2 * D, s.dout.data(), 6 * D, B, T, D,
                                   work.data());
    });
  }
  set_bytes(st, 4.0 * (3.0 * n + 1.0 * B * D));
}

void BM_gated_residual_backward(benchmark::State& st, Impl impl) {
  const int B = int(st.range(0)), T = int(st.range(1)), D = int(st.range(2));
  const size_t n = size_t(B) * T * D;
  if (impl == Impl::cpu) {
    Cpu cpu;
    Host dx = random_host(n), y = random_host(n), mod = random_host(size_t(B) * 6 * D, 0.1), dy(n);
    Host dmod(size_t(B) * 6 * D);
    cpu_timed(st, [&] {
      cpu.gated_residual_backward(dy.data(), dmod.data() + 2 * D, dx.data(), mod.data() + 2 * D, y.data(), 6 * D, B, T,
                                  D);
    });
  } else {
    auto sets = ada_sets(B, T, D);  // dout: dx, x: y, out: dy
    Buf mod = random_buffer(size_t(B) * 6 * D, 0.1), dmod(size_t(B) * 6 * D);
    Buf work(impl == Impl::unfused ? uf::gated_residual_workspace(B, T, D) : 0);
    be().fill(dmod.data(), 0.f, dmod.size());
    timed(st, int(sets.size()), [&](int c) {
      auto& s = sets[c];
      if (impl == Impl::fused)
        be().gated_residual_backward(s.out.data(), dmod.data() + 2 * D, s.dout.data(), mod.data() + 2 * D, s.x.data(),
                                     6 * D, B, T, D);
      else
        uf::gated_residual_backward(be().stream(), s.out.data(), dmod.data() + 2 * D, s.dout.data(),
                                    mod.data() + 2 * D, s.x.data(), 6 * D, B, T, D, work.data());
    });
  }
  set_bytes(st, 4.0 * (3.0 * n + 3.0 * B * D));
}

// ==== bootstrap targets: args rows, n (values per row), n_cfg (guided rows) ========================
// Bound by bytes (elementwise). Floors, in floats of 4 bytes:
//   bootstrap_half_step  x, vc (2 rows n), vu (n_cfg n), hd (rows) read; x2, v1 (2 rows n) written
//   bootstrap_target     v1, vc (2 rows n), vu (n_cfg n) read; target (rows n) written
// GB/s = bytes / time. Shapes: batch 256 with bootstrap_fraction 1/4 (64 rows) and 7 step levels
// (64 / 7 = 9 guided rows) on mnist-S2's 28x28x1 and latent-B2's 32x32x4 samples, where launch
// overhead dominates, and a 16M-value case where bandwidth does.
void bootstrap_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"rows", "n", "n_cfg"});
  b->Args({64, 784, 9})->Args({64, 4096, 9})->Args({4096, 4096, 585});
}

struct BootSet {
  Buf x, vc, vu, hd, x2, v1, target;
};
std::vector<BootSet> boot_sets(int rows, int n) {
  const size_t total = size_t(rows) * n;
  const int copies = rotation(total * 4 * 5);
  std::vector<BootSet> sets;
  for (int c = 0; c < copies; ++c) {
    BootSet s{random_buffer(total), random_buffer(total, 3.0), random_buffer(total, 3.0), random_positive(rows, 0.2),
              Buf(total),           random_buffer(total, 3.0), Buf(total)};
    sets.push_back(std::move(s));
  }
  return sets;
}

void BM_bootstrap_half_step_forward(benchmark::State& st, Impl impl) {
  const int rows = int(st.range(0)), n = int(st.range(1)), n_cfg = int(st.range(2));
  const size_t total = size_t(rows) * n;
  const float w = 1.5f, clip = 4.f;
  if (impl == Impl::cpu) {
    Cpu cpu;
    Host x = random_host(total), vc = random_host(total, 3.0), vu = random_host(total, 3.0);
    Host hd = to_host(random_positive(rows, 0.2)), x2(total), v1(total);
    cpu_timed(st, [&] {
      cpu.bootstrap_half_step(x2.data(), v1.data(), x.data(), vc.data(), vu.data(), n_cfg, w, hd.data(), rows, n, clip);
    });
  } else {
    auto sets = boot_sets(rows, n);
    timed(st, int(sets.size()), [&](int c) {
      auto& s = sets[c];
      if (impl == Impl::fused)
        be().bootstrap_half_step(s.x2.data(), s.v1.data(), s.x.data(), s.vc.data(), s.vu.data(), n_cfg, w, s.hd.data(),
                                 rows, n, clip);
      else
        uf::bootstrap_half_step(be().stream(), s.x2.data(), s.v1.data(), s.x.data(), s.vc.data(), s.vu.data(), n_cfg, w,
                                s.hd.data(), rows, n, clip);
    });
  }
  set_bytes(st, 4.0 * (4.0 * total + double(n_cfg) * n + rows));
}

void BM_bootstrap_target_forward(benchmark::State& st, Impl impl) {
  const int rows = int(st.range(0)), n = int(st.range(1)), n_cfg = int(st.range(2));
  const size_t total = size_t(rows) * n;
  const float w = 1.5f, clip = 4.f;
  if (impl == Impl::cpu) {
    Cpu cpu;
    Host v1 = random_host(total, 3.0), vc = random_host(total, 3.0), vu = random_host(total, 3.0), target(total);
    cpu_timed(st, [&] {
      cpu.bootstrap_target(target.data(), v1.data(), vc.data(), vu.data(), n_cfg, w, rows, n, clip);
    });
  } else {
    auto sets = boot_sets(rows, n);
    timed(st, int(sets.size()), [&](int c) {
      auto& s = sets[c];
      if (impl == Impl::fused)
        be().bootstrap_target(s.target.data(), s.v1.data(), s.vc.data(), s.vu.data(), n_cfg, w, rows, n, clip);
      else
        uf::bootstrap_target(be().stream(), s.target.data(), s.v1.data(), s.vc.data(), s.vu.data(), n_cfg, w, rows, n,
                             clip);
    });
  }
  set_bytes(st, 4.0 * (3.0 * total + double(n_cfg) * n));
}

// ==== optimizer: arg D (384: DiT-S, 768: DiT-B, on 32x32x4 latents with patch 2, 1000 classes) ======
// Bound by bytes. Over the c parameters of the model's tensors (ParamLayout::count(), the same for
// every impl; the fused op also runs over the few alignment gaps of the arena):
//   adamw_step  p, g, m, v read; p, m, v written: 28 c bytes
//   ema_step    ema, p read; ema written:         12 c bytes
// GB/s = bytes / time. fused: one launch over the flat arena; unfused: one launch per tensor of the
// layout (about 10 per DiT block).
shortcut::ParamLayout dit_layout(int D) {
  Cpu cpu;
  shortcut::nn::DiT<Cpu> net(cpu, shortcut::nn::DiTConfig::preset(D == 768 ? "DiT-B" : "DiT-S", 32, 4, 1000));
  return net.layout();
}
void optimizer_shapes(benchmark::internal::Benchmark* b) { b->ArgNames({"D"})->Arg(384)->Arg(768); }

struct AdamSet {
  Buf p, g, m, v;
};

void BM_adamw_step(benchmark::State& st, Impl impl) {
  const shortcut::ParamLayout L = dit_layout(int(st.range(0)));
  const size_t n = L.total();
  const float lr = 1e-4f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f;
  int64_t step = 1;
  if (impl == Impl::cpu) {
    Cpu cpu;
    Host p = random_host(n, 0.02), g = random_host(n, 0.01), m = random_host(n, 0.001);
    Host v = to_host(random_positive(n, 1e-4));
    cpu_timed(st, [&] {
      cpu.adamw_step(p.data(), g.data(), m.data(), v.data(), n, lr, b1, b2, eps, wd, step++);
    });
  } else {
    const int copies = rotation(n * 4 * 4);
    std::vector<AdamSet> sets;
    for (int c = 0; c < copies; ++c)
      sets.push_back({random_buffer(n, 0.02), random_buffer(n, 0.01), random_buffer(n, 0.001),
                      random_positive(n, 1e-4)});
    const auto spans = uf::spans_of(L);
    timed(st, copies, [&](int c) {
      auto& s = sets[c];
      if (impl == Impl::fused)
        be().adamw_step(s.p.data(), s.g.data(), s.m.data(), s.v.data(), n, lr, b1, b2, eps, wd, step++);
      else
        uf::adamw_step(be().stream(), s.p.data(), s.g.data(), s.m.data(), s.v.data(), spans, lr, b1, b2, eps, wd,
                       step++);
    });
  }
  set_bytes(st, 28.0 * double(L.count()));
}

void BM_ema_step(benchmark::State& st, Impl impl) {
  const shortcut::ParamLayout L = dit_layout(int(st.range(0)));
  const size_t n = L.total();
  const float tau = 0.9999f;
  if (impl == Impl::cpu) {
    Cpu cpu;
    Host ema = random_host(n, 0.02), p = random_host(n, 0.02);
    cpu_timed(st, [&] { cpu.ema_update(ema.data(), p.data(), tau, n); });
  } else {
    const int copies = rotation(n * 4 * 2);
    std::vector<Buf> ema, p;
    for (int c = 0; c < copies; ++c) {
      ema.push_back(random_buffer(n, 0.02));
      p.push_back(random_buffer(n, 0.02));
    }
    const auto spans = uf::spans_of(L);
    timed(st, copies, [&](int c) {
      if (impl == Impl::fused)
        be().ema_update(ema[c].data(), p[c].data(), tau, n);
      else
        uf::ema_update(be().stream(), ema[c].data(), p[c].data(), tau, spans);
    });
  }
  set_bytes(st, 12.0 * double(L.count()));
}

// ==== ceilings ======================================================================================
// BM_ceiling_copy: cudaMemcpyAsync of 1 GiB device to device, bound by bytes: GB/s = 2 GiB / time
// (each byte read once and written once). BM_ceiling_matmul_*: C = A B with n = 8192 square matrices
// through cublasGemmEx, bound by FLOPs: TFLOP/s = 2 n^3 / time; fp32 is CUBLAS_COMPUTE_32F on fp32
// arrays, tf32 is CUBLAS_COMPUTE_32F_FAST_TF32 on fp32 arrays, bf16 is CUDA_R_16BF A, B and C with
// CUBLAS_COMPUTE_32F. The products are compute-bound, so no rotation.
void BM_ceiling_copy(benchmark::State& st) {
  const size_t n = size_t(1) << 28;  // floats: 1 GiB
  Buf a = random_buffer(n), b(n);
  timed(st, 1, [&](int) {
    SHORTCUT_CUDA_CHECK(
        cudaMemcpyAsync(b.data(), a.data(), n * sizeof(float), cudaMemcpyDeviceToDevice, be().stream()));
  });
  set_bytes(st, 2.0 * double(n) * sizeof(float));
  st.SetLabel("1 GiB");
}

constexpr int kCeilingN = 8192;

void matmul_ceiling(benchmark::State& st, bool bf16, cublasComputeType_t compute) {
  const int n = kCeilingN;
  const size_t nn = size_t(n) * n;
  const float one = 1.f, zero = 0.f;
  Buf a = random_buffer(nn), b = random_buffer(nn), c32(bf16 ? 0 : nn);
  shortcut::cuda::DeviceBuffer<__nv_bfloat16> a16(bf16 ? nn : 0), b16(bf16 ? nn : 0), c16(bf16 ? nn : 0);
  if (bf16) {
    to_bf16_kernel<<<shortcut::kernels::blocks_for(nn), 256, 0, be().stream()>>>(a16.data(), a.data(), nn);
    to_bf16_kernel<<<shortcut::kernels::blocks_for(nn), 256, 0, be().stream()>>>(b16.data(), b.data(), nn);
    SHORTCUT_CUDA_CHECK_LAUNCH("to_bf16_kernel");
  }
  const cudaDataType_t ty = bf16 ? CUDA_R_16BF : CUDA_R_32F;
  const void* A = bf16 ? static_cast<const void*>(a16.data()) : a.data();
  const void* B = bf16 ? static_cast<const void*>(b16.data()) : b.data();
  void* C = bf16 ? static_cast<void*>(c16.data()) : c32.data();
  timed(st, 1, [&](int) {
    SHORTCUT_CUBLAS_CHECK(cublasGemmEx(be().cublas(), CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, A, ty, n, B, ty, n,
                                       &zero, C, ty, n, compute, CUBLAS_GEMM_DEFAULT));
  });
  set_flops(st, 2.0 * double(n) * n * n);
  st.SetLabel(std::to_string(n) + "^3");
}
void BM_ceiling_matmul_fp32(benchmark::State& st) { matmul_ceiling(st, false, CUBLAS_COMPUTE_32F); }
void BM_ceiling_matmul_tf32(benchmark::State& st) { matmul_ceiling(st, false, CUBLAS_COMPUTE_32F_FAST_TF32); }
void BM_ceiling_matmul_bf16(benchmark::State& st) { matmul_ceiling(st, true, CUBLAS_COMPUTE_32F); }

}  // namespace

// GPU impls run on manual (CUDA event) time, the CPU one on real time.
#define SHORTCUT_BENCH_GPU(fn, impl, shapes) \
  BENCHMARK_CAPTURE(fn, impl, Impl::impl)->Apply(shapes)->UseManualTime()->Unit(benchmark::kMicrosecond)
#define SHORTCUT_BENCH_CPU(fn, shapes) \
  BENCHMARK_CAPTURE(fn, cpu, Impl::cpu)->Apply(shapes)->UseRealTime()->Unit(benchmark::kMicrosecond)

SHORTCUT_BENCH_GPU(BM_linear_forward, fused, linear_shapes);
SHORTCUT_BENCH_CPU(BM_linear_forward, linear_shapes);
SHORTCUT_BENCH_GPU(BM_linear_backward, fused, linear_shapes);
SHORTCUT_BENCH_CPU(BM_linear_backward, linear_shapes);
SHORTCUT_BENCH_GPU(BM_linear_bf16_forward, fused, linear_shapes);
SHORTCUT_BENCH_GPU(BM_linear_bf16_forward, unfused, linear_shapes);
SHORTCUT_BENCH_GPU(BM_linear_bf16_backward, fused, linear_shapes);
SHORTCUT_BENCH_GPU(BM_linear_bf16_backward, unfused, linear_shapes);
SHORTCUT_BENCH_GPU(BM_mlp_bf16_forward, fused, mlp_shapes);
SHORTCUT_BENCH_GPU(BM_mlp_bf16_forward, unfused, mlp_shapes);
SHORTCUT_BENCH_GPU(BM_mlp_bf16_backward, fused, mlp_shapes);
SHORTCUT_BENCH_GPU(BM_mlp_bf16_backward, unfused, mlp_shapes);

SHORTCUT_BENCH_GPU(BM_attention_forward, fused, attention_shapes);
SHORTCUT_BENCH_GPU(BM_attention_forward, unfused, attention_shapes);
SHORTCUT_BENCH_CPU(BM_attention_forward, attention_shapes);
SHORTCUT_BENCH_GPU(BM_attention_bf16tc_forward, fused, attention_shapes);
SHORTCUT_BENCH_GPU(BM_attention_cudnn_forward, fused, attention_shapes);
SHORTCUT_BENCH_GPU(BM_attention_bf16tc_backward, fused, attention_shapes);
SHORTCUT_BENCH_GPU(BM_attention_cudnn_backward, fused, attention_shapes);
SHORTCUT_BENCH_GPU(BM_attention_backward, fused, attention_shapes);
SHORTCUT_BENCH_GPU(BM_attention_backward, unfused, attention_shapes);
SHORTCUT_BENCH_CPU(BM_attention_backward, attention_shapes);
SHORTCUT_BENCH_GPU(BM_attention_bf16_forward, fused, attention_shapes);
SHORTCUT_BENCH_GPU(BM_attention_bf16_backward, fused, attention_shapes);
SHORTCUT_BENCH_GPU(BM_attention_tangent_fp32, fused, attention_shapes);
SHORTCUT_BENCH_GPU(BM_attention_tangent_bf16, fused, attention_shapes);

SHORTCUT_BENCH_GPU(BM_ln_modulate_forward, fused, ada_shapes);
SHORTCUT_BENCH_GPU(BM_ln_modulate_forward, unfused, ada_shapes);
SHORTCUT_BENCH_CPU(BM_ln_modulate_forward, ada_shapes);
SHORTCUT_BENCH_GPU(BM_ln_modulate_backward, fused, ada_shapes);
SHORTCUT_BENCH_GPU(BM_ln_modulate_backward, unfused, ada_shapes);
SHORTCUT_BENCH_CPU(BM_ln_modulate_backward, ada_shapes);
SHORTCUT_BENCH_GPU(BM_gated_residual_forward, fused, ada_shapes);
SHORTCUT_BENCH_GPU(BM_gated_residual_forward, unfused, ada_shapes);
SHORTCUT_BENCH_CPU(BM_gated_residual_forward, ada_shapes);
SHORTCUT_BENCH_GPU(BM_gated_residual_backward, fused, ada_shapes);
SHORTCUT_BENCH_GPU(BM_gated_residual_backward, unfused, ada_shapes);
SHORTCUT_BENCH_CPU(BM_gated_residual_backward, ada_shapes);

SHORTCUT_BENCH_GPU(BM_bootstrap_half_step_forward, fused, bootstrap_shapes);
SHORTCUT_BENCH_GPU(BM_bootstrap_half_step_forward, unfused, bootstrap_shapes);
SHORTCUT_BENCH_CPU(BM_bootstrap_half_step_forward, bootstrap_shapes);
SHORTCUT_BENCH_GPU(BM_bootstrap_target_forward, fused, bootstrap_shapes);
SHORTCUT_BENCH_GPU(BM_bootstrap_target_forward, unfused, bootstrap_shapes);
SHORTCUT_BENCH_CPU(BM_bootstrap_target_forward, bootstrap_shapes);

SHORTCUT_BENCH_GPU(BM_adamw_step, fused, optimizer_shapes);
SHORTCUT_BENCH_GPU(BM_adamw_step, unfused, optimizer_shapes);
SHORTCUT_BENCH_CPU(BM_adamw_step, optimizer_shapes);
SHORTCUT_BENCH_GPU(BM_ema_step, fused, optimizer_shapes);
SHORTCUT_BENCH_GPU(BM_ema_step, unfused, optimizer_shapes);
SHORTCUT_BENCH_CPU(BM_ema_step, optimizer_shapes);

BENCHMARK(BM_ceiling_copy)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ceiling_matmul_fp32)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ceiling_matmul_tf32)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ceiling_matmul_bf16)->UseManualTime()->Unit(benchmark::kMicrosecond);

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: kernel benchmarks skipped\n");
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
