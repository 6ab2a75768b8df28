// CPU reference timings (Google Benchmark): the ops that dominate a DiT step, whole shortcut training
// steps, a MeanFlow step against a flow-matching step (the forward mode's cost) and one-step sampling, on the Eigen backend, so that CPU regressions show. The CUDA
// counterparts are in kernels_bench.cu and end_to_end_bench.cu.
#include <benchmark/benchmark.h>

#include <shortcut/shortcut.hpp>

#include "end_to_end.hpp"

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

// End to end through the library's templates (end_to_end.hpp, shared with the GPU benchmark): the
// 2-D demo's training step (MLP width 128, depth 3, batch 256, the demo's settings) and DiT steps of
// the CPU presets on 28x28x1 (batch 64), then one-step sampling of 64 images.
template <class Net>
static void train_step(benchmark::State& st, typename Net::Config cfg, int batch, ShortcutConfig sc) {
  Be be;
  bench::TrainStep<Net> step(be, cfg, batch, sc);
  bench::time_loop(st, be, step);
  bench::set_rates(st, batch, 0);
}
static void BM_train_step_mlp(benchmark::State& st) {
  nn::MlpNetConfig c;
  c.dim = 2; c.hidden = 128; c.depth = 3; c.classes = 1;
  train_step<nn::MlpNet<Be>>(st, c, 256, ShortcutConfig{});
}
static void BM_train_step_dit(benchmark::State& st, const char* preset) {
  train_step<nn::DiT<Be>>(st, nn::DiTConfig::preset(preset), 64, bench::peer_shortcut_config());
}
BENCHMARK(BM_train_step_mlp)->Name("BM_train_step/toy2d-mlp/cpu-fp32")->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_train_step_dit, tiny, "tiny")->Name("BM_train_step/dit-tiny/cpu-fp32")->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_train_step_dit, small, "small")->Name("BM_train_step/dit-small/cpu-fp32")->UseManualTime()
    ->Unit(benchmark::kMillisecond);

// What the forward mode costs (DESIGN.md §8): a MeanFlow step (one training forward with tangents,
// then the primal's backward) over a flow-matching step (forward, backward) of the same network and
// batch; the papers report about 1.16-1.2x on GPUs.
static void BM_train_step_flow(benchmark::State& st, const char* preset) {
  using Net = nn::DiT<Be>;
  Be be;
  bench::TrainStep<Net, FlowMatching<ShortcutModel<Net>>> step(be, nn::DiTConfig::preset(preset), 64,
                                                               FlowMatchingConfig{});
  bench::time_loop(st, be, step);
  bench::set_rates(st, 64, 0);
}
static void BM_train_step_meanflow(benchmark::State& st, const char* preset) {
  using Net = nn::DiT<Be>;
  Be be;
  bench::TrainStep<Net, MeanFlow<ShortcutModel<Net>>> step(be, nn::DiTConfig::preset(preset), 64, MeanFlowConfig{});
  bench::time_loop(st, be, step);
  bench::set_rates(st, 64, 0);
}
BENCHMARK_CAPTURE(BM_train_step_flow, tiny, "tiny")->Name("BM_train_step/dit-tiny/flow/cpu-fp32")->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_train_step_meanflow, tiny, "tiny")->Name("BM_train_step/dit-tiny/meanflow/cpu-fp32")
    ->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_train_step_flow, small, "small")->Name("BM_train_step/dit-small/flow/cpu-fp32")->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_train_step_meanflow, small, "small")->Name("BM_train_step/dit-small/meanflow/cpu-fp32")
    ->UseManualTime()->Unit(benchmark::kMillisecond);

static void BM_sample(benchmark::State& st, const char* preset, int steps) {
  Be be;
  const auto cfg = nn::DiTConfig::preset(preset);
  bench::Sample<nn::DiT<Be>> s(be, cfg, 64, steps);
  bench::time_loop(st, be, s);
  bench::set_rates(st, 64, steps * bench::forward_flops(cfg, 64));
}
BENCHMARK_CAPTURE(BM_sample, tiny, "tiny", 1)->Name("BM_sample/dit-tiny/1/cpu-fp32")->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_sample, small, "small", 1)->Name("BM_sample/dit-small/1/cpu-fp32")->UseManualTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
