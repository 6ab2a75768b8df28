// CPU reference timings (Google Benchmark): the ops that dominate a DiT step, a whole shortcut training
// step and one-step sampling, on the Eigen backend. The CUDA counterparts are in kernels_bench.cu.
#include <benchmark/benchmark.h>

#include <shortcut/shortcut.hpp>

using namespace shortcut;
using Be = cpu::Backend<float>;

static std::vector<float> noise(size_t n, uint64_t stream) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = philox_normal(7, stream, i);
  return v;
}

static void BM_linear_forward(benchmark::State& st) {
  Be be;
  const int N = int(st.range(0)), I = int(st.range(1)), O = int(st.range(2));
  auto x = noise(size_t(N) * I, 1), W = noise(size_t(O) * I, 2), b = noise(O, 3);
  std::vector<float> y(size_t(N) * O);
  for (auto _ : st) {
    be.linear_forward(y.data(), x.data(), W.data(), b.data(), N, I, O);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(2.0 * N * I * O, benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}
BENCHMARK(BM_linear_forward)->Args({3136, 128, 384})->Args({3136, 384, 1536})->Unit(benchmark::kMillisecond);

static void BM_attention(benchmark::State& st) {
  Be be;
  const int B = 64, T = int(st.range(0)), H = 4, hd = 32, D = H * hd;
  auto qkv = noise(size_t(B) * T * 3 * D, 4), dout = noise(size_t(B) * T * D, 5);
  std::vector<float> out(size_t(B) * T * D), lse(size_t(B) * H * T), dqkv(qkv.size());
  for (auto _ : st) {
    be.attention_forward(out.data(), lse.data(), qkv.data(), B, T, H, hd, 1.0f / hd);
    be.attention_backward(dqkv.data(), dout.data(), qkv.data(), out.data(), lse.data(), B, T, H, hd, 1.0f / hd);
    benchmark::DoNotOptimize(dqkv.data());
  }
}
BENCHMARK(BM_attention)->Arg(49)->Arg(196)->Unit(benchmark::kMillisecond);

// One shortcut training step (targets, forward, backward, AdamW, EMA) of a DiT preset on 28x28x1.
static void BM_train_step(benchmark::State& st, const char* preset) {
  Be be;
  ShortcutModel<nn::DiT<Be>> m(be, nn::DiTConfig::preset(preset), 0);
  SelfConsistencyLoss<decltype(m)> loss(ShortcutConfig{});
  AdamW opt;
  EmaTracker ema;
  const int B = 64;
  auto x = noise(size_t(B) * 784, 6);
  std::vector<int32_t> y(B, 3);
  Rng rng(1);
  for (auto _ : st) {
    m.arena().zero_grad();
    auto r = loss.step(m, x.data(), y.data(), B, rng);
    opt.step(m.arena());
    ema.update(m.arena());
    benchmark::DoNotOptimize(r.loss);
  }
  st.counters["images/s"] = benchmark::Counter(B, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK_CAPTURE(BM_train_step, tiny, "tiny")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_train_step, small, "small")->Unit(benchmark::kMillisecond);

// One-step generation of 64 images (one DiT forward on the EMA weights).
static void BM_sample_one_step(benchmark::State& st, const char* preset) {
  Be be;
  ShortcutModel<nn::DiT<Be>> m(be, nn::DiTConfig::preset(preset), 0);
  std::vector<int32_t> labels(64, 1);
  for (auto _ : st) benchmark::DoNotOptimize(generate(m, ShortcutConfig{}, labels, SamplerConfig{1, 1.0, true}, 1, 0));
  st.counters["images/s"] = benchmark::Counter(64, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK_CAPTURE(BM_sample_one_step, tiny, "tiny")->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_sample_one_step, small, "small")->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
