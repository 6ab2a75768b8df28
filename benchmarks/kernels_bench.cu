// Timings of the CUDA ops that dominate a DiT training step, through the real backend and kernel
// headers: the linear layer (cuBLAS), fused attention and the adaLN kernels, forward and backward.
// Shapes are DiT-S's on 32x32x4 latents with patch 2 (256 tokens, D = 384, 6 heads of 64) at batch
// 32, plus longer sequences and DiT-XL's head dim 72.
//
// Method (METHOD.md): every iteration is timed with CUDA events on the backend's stream (manual
// time), after a warm-up call that keeps module loading and cuBLAS heuristics out; inputs are random
// (never zeros) and rotated over enough copies to exceed twice the L2 cache, so the numbers are not
// cache-resident re-runs. Counters give TFLOP/s (matrix work) or bytes/s (memory-bound ops, counting
// each input read once and each output written once: the floor the kernel is measured against).
// Without a CUDA device the program prints one line and exits 0.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <vector>

#include "shortcut/cuda.hpp"

namespace {

using shortcut::cuda::Backend;
using Buf = shortcut::cuda::DeviceBuffer<float>;

Backend& be() {
  static Backend b;
  return b;
}

// n random normals drawn on the device (no host traffic, never zeros)
Buf random_buffer(size_t n, double sd = 1.0) {
  static uint64_t stream = 0;
  Buf b(n);
  be().normal(b.data(), n, 20251125, stream++);
  if (sd != 1.0) be().axpy(b.data(), float(sd - 1.0), b.data(), n);  // b *= sd, in place
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

void set_flops(benchmark::State& st, double flops) {
  st.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
}
void set_bytes(benchmark::State& st, double bytes) {
  st.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// ---- linear: args N, I, O --------------------------------------------------------------------
void BM_linear_forward(benchmark::State& st) {
  const int N = int(st.range(0)), I = int(st.range(1)), O = int(st.range(2));
  const int copies = rotation(size_t(N) * (I + O) * 4);
  std::vector<Buf> in, out;
  for (int c = 0; c < copies; ++c) {
    in.push_back(random_buffer(size_t(N) * I));
    out.push_back(Buf(size_t(N) * O));
  }
  Buf W = random_buffer(size_t(O) * I, 0.05), b = random_buffer(O);
  timed(st, copies, [&](int c) { be().linear_forward(out[c].data(), in[c].data(), W.data(), b.data(), N, I, O); });
  set_flops(st, 2.0 * N * I * O);
}

void BM_linear_backward(benchmark::State& st) {
  const int N = int(st.range(0)), I = int(st.range(1)), O = int(st.range(2));
  const int copies = rotation(size_t(N) * (2 * I + O) * 4);
  std::vector<Buf> in, dout, din;
  for (int c = 0; c < copies; ++c) {
    in.push_back(random_buffer(size_t(N) * I));
    dout.push_back(random_buffer(size_t(N) * O));
    din.push_back(Buf(size_t(N) * I));
  }
  Buf W = random_buffer(size_t(O) * I, 0.05), dW(size_t(O) * I), db(O);
  timed(st, copies, [&](int c) {
    be().linear_backward(din[c].data(), dW.data(), db.data(), dout[c].data(), in[c].data(), W.data(), N, I, O);
  });
  set_flops(st, 4.0 * N * I * O);
}

// ---- attention: args B, T, H, hd ---------------------------------------------------------------
struct AttnSet {
  Buf qkv, out, lse, dout, dqkv;
};
std::vector<AttnSet> attention_sets(int B, int T, int H, int hd, bool backward) {
  const size_t rows = size_t(B) * T, D = size_t(H) * hd;
  const int copies = rotation(rows * D * 4 * (backward ? 9 : 4));
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

void BM_attention_forward(benchmark::State& st) {
  const int B = int(st.range(0)), T = int(st.range(1)), H = int(st.range(2)), hd = int(st.range(3));
  auto sets = attention_sets(B, T, H, hd, false);
  timed(st, int(sets.size()), [&](int c) {
    be().attention_forward(sets[c].out.data(), sets[c].lse.data(), sets[c].qkv.data(), B, T, H, hd, 1.f / hd);
  });
  set_flops(st, 4.0 * B * H * double(T) * T * hd);  // QK^T and PV
}

void BM_attention_backward(benchmark::State& st) {
  const int B = int(st.range(0)), T = int(st.range(1)), H = int(st.range(2)), hd = int(st.range(3));
  auto sets = attention_sets(B, T, H, hd, true);
  timed(st, int(sets.size()), [&](int c) {
    auto& s = sets[c];
    be().attention_backward(s.dqkv.data(), s.dout.data(), s.qkv.data(), s.out.data(), s.lse.data(), B, T, H, hd,
                            1.f / hd);
  });
  set_flops(st, 10.0 * B * H * double(T) * T * hd);  // S recomputed, dP, dV, dK, dQ
}

// ---- adaLN: args B, T, D (modulation rows of 6D as in a DiT block) --------------------------------
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

void BM_ln_modulate_forward(benchmark::State& st) {
  const int B = int(st.range(0)), T = int(st.range(1)), D = int(st.range(2));
  auto sets = ada_sets(B, T, D);
  Buf mod = random_buffer(size_t(B) * 6 * D, 0.1);
  timed(st, int(sets.size()), [&](int c) {
    auto& s = sets[c];
    be().ln_modulate_forward(s.out.data(), s.mean.data(), s.rstd.data(), s.x.data(), mod.data(), mod.data() + D, 6 * D,
                             B, T, D, 1e-6f);
  });
  set_bytes(st, 2.0 * B * T * D * 4);  // x read, out written
}

void BM_ln_modulate_backward(benchmark::State& st) {
  const int B = int(st.range(0)), T = int(st.range(1)), D = int(st.range(2));
  auto sets = ada_sets(B, T, D);
  Buf mod = random_buffer(size_t(B) * 6 * D, 0.1), dmod(size_t(B) * 6 * D);
  for (auto& s : sets)
    be().ln_modulate_forward(s.out.data(), s.mean.data(), s.rstd.data(), s.x.data(), mod.data(), mod.data() + D, 6 * D,
                             B, T, D, 1e-6f);
  timed(st, int(sets.size()), [&](int c) {
    auto& s = sets[c];
    be().ln_modulate_backward(s.dx.data(), dmod.data(), dmod.data() + D, s.dout.data(), s.x.data(), s.mean.data(),
                              s.rstd.data(), mod.data() + D, 6 * D, B, T, D);
  });
  set_bytes(st, 4.0 * B * T * D * 4);  // dout, x, dx read; dx written
}

void BM_gated_residual_backward(benchmark::State& st) {
  const int B = int(st.range(0)), T = int(st.range(1)), D = int(st.range(2));
  auto sets = ada_sets(B, T, D);
  Buf mod = random_buffer(size_t(B) * 6 * D, 0.1), dmod(size_t(B) * 6 * D);
  timed(st, int(sets.size()), [&](int c) {
    auto& s = sets[c];
    be().gated_residual_backward(s.out.data(), dmod.data() + 2 * D, s.dout.data(), mod.data() + 2 * D, s.x.data(),
                                 6 * D, B, T, D);
  });
  set_bytes(st, 3.0 * B * T * D * 4);  // dx, y read; dy written
}

}  // namespace

BENCHMARK(BM_linear_forward)->Args({8192, 384, 1152})->Args({8192, 384, 1536})->Args({8192, 1536, 384})
    ->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_linear_backward)->Args({8192, 384, 1152})->Args({8192, 384, 1536})->Args({8192, 1536, 384})
    ->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_attention_forward)->Args({32, 256, 6, 64})->Args({8, 1024, 6, 64})->Args({16, 256, 16, 72})
    ->Args({16, 256, 8, 128})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_attention_backward)->Args({32, 256, 6, 64})->Args({8, 1024, 6, 64})->Args({16, 256, 16, 72})
    ->Args({16, 256, 8, 128})->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ln_modulate_forward)->Args({32, 256, 384})->Args({32, 256, 1152})->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_ln_modulate_backward)->Args({32, 256, 384})->Args({32, 256, 1152})->UseManualTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_gated_residual_backward)->Args({32, 256, 384})->Args({32, 256, 1152})->UseManualTime()
    ->Unit(benchmark::kMicrosecond);

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
