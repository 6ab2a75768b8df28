// End to end on the GPU: one shortcut training step and 1-, 4- and 128-step sampling for the PyTorch
// peer's configurations (mnist-S2: DiT-S/2 on 28x28x1; latent-B2: DiT-B/2 on 32x32x4 latents with
// 1000 classes; batch 256 each), through the library's templates on cuda::Backend in each of its
// precisions: full fp32, TF32 matrix products (the peer's "tf32" mode allows TF32 too) and bf16 mixed
// precision (products and attention on the bf16 tensor cores; the peer's "bf16" is autocast). Counters: images/s and TFLOP/s counted as the peer counts them
// (end_to_end.hpp), so that scripts/perf_table.py can put both side by side.
//
// Names: BM_train_step/<config>/<precision> and BM_sample/<config>/<steps>/<precision>; the time is
// CUDA-event time on the backend's stream, the median over repetitions. Sampling captures its N-step
// loop into a CUDA graph every call and launches it as one (Options::graphs, the default; the
// executable graph patched by cudaGraphExecUpdate); BM_sample/<config>/<steps>/bf16-eager is the same
// without graphs, which measures what they save (the launch overhead of a few hundred kernels per
// step, less the capture's host time). Training steps run eagerly (no graph since issue 25), so they
// have no -eager twin. Without a CUDA device the program prints one line and exits 0.
#include <cstdio>
#include <memory>

#include <shortcut/cuda.hpp>

#include "end_to_end.hpp"

namespace {

using namespace shortcut;
using Net = nn::DiT<cuda::Backend>;

using cuda::Precision;
cuda::Backend& backend(Precision p) {
  static cuda::Backend fp32_be(cuda::Options{.precision = Precision::fp32});
  static cuda::Backend tf32_be(cuda::Options{.precision = Precision::tf32});
  static cuda::Backend bf16_be(cuda::Options{.precision = Precision::bf16});
  return p == Precision::bf16 ? bf16_be : p == Precision::tf32 ? tf32_be : fp32_be;
}
cuda::Backend& eager_bf16_backend() {
  static cuda::Backend be(cuda::Options{.precision = Precision::bf16, .graphs = false});
  return be;
}

// CUDA events on the backend's stream around one call, then a synchronize (the peer's timing).
// bf16 mode's evidence beside its times: the linear-layer products that cuBLASLt ran with their
// bias epilogues and those its heuristic refused (they ran on cuBLAS plus the bias kernels; 0
// expected), over the backend's life so far.
void set_bf16_counters(benchmark::State& st, const cuda::Backend& be) {
  if (be.precision() != Precision::bf16) return;
  st.counters["lt_products"] = double(be.lt_stats().products);
  st.counters["lt_fallbacks"] = double(be.lt_stats().fallbacks);
}

double event_seconds(cuda::Backend& be, const std::function<void()>& work) {
  struct Events {
    cudaEvent_t a = nullptr, b = nullptr;
    Events() {
      SHORTCUT_CUDA_CHECK(cudaEventCreate(&a));
      SHORTCUT_CUDA_CHECK(cudaEventCreate(&b));
    }
    ~Events() {
      cudaEventDestroy(a);
      cudaEventDestroy(b);
    }
  };
  static Events ev;
  be.synchronize();
  SHORTCUT_CUDA_CHECK(cudaEventRecord(ev.a, be.stream()));
  work();
  SHORTCUT_CUDA_CHECK(cudaEventRecord(ev.b, be.stream()));
  SHORTCUT_CUDA_CHECK(cudaEventSynchronize(ev.b));
  float ms = 0;
  SHORTCUT_CUDA_CHECK(cudaEventElapsedTime(&ms, ev.a, ev.b));
  return ms * 1e-3;
}

void BM_train_step(benchmark::State& st, const std::string& config, Precision p) {
  try {
    const bench::Workload w = bench::peer_workload(config);
    auto& be = backend(p);
    auto step = std::make_unique<bench::TrainStep<Net>>(be, w.dit, w.batch, bench::peer_shortcut_config());
    bench::time_loop(st, be, *step, event_seconds);
    bench::set_rates(st, w.batch, bench::train_step_flops(w.dit, w.batch));
    set_bf16_counters(st, be);
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
  }
}

void BM_sample(benchmark::State& st, const std::string& config, int steps, Precision p, bool eager) {
  try {
    const bench::Workload w = bench::peer_workload(config);
    auto& be = eager ? eager_bf16_backend() : backend(p);
    auto s = std::make_unique<bench::Sample<Net>>(be, w.dit, w.batch, steps);
    bench::time_loop(st, be, *s, event_seconds);
    bench::set_rates(st, w.batch, steps * bench::forward_flops(w.dit, w.batch));
    set_bf16_counters(st, be);
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
  }
}

void register_all() {
  for (const char* config : {"mnist-S2", "latent-B2"}) {
    for (Precision p : cuda::kPrecisions) {
      const std::string prec = cuda::precision_name(p);
      benchmark::RegisterBenchmark(("BM_train_step/" + std::string(config) + "/" + prec).c_str(), BM_train_step,
                                   std::string(config), p)
          ->UseManualTime()->Unit(benchmark::kMillisecond)->Repetitions(5)->ReportAggregatesOnly(true);
      for (int steps : {1, 4, 128}) {
        // 128 full-fp32 steps of a DiT-B/2 on 256 images are ~1.5 PFLOP (half a minute a run): not fp32
        if (steps == 128 && p == Precision::fp32) continue;
        auto* b = benchmark::RegisterBenchmark(
            ("BM_sample/" + std::string(config) + "/" + std::to_string(steps) + "/" + prec).c_str(), BM_sample,
            std::string(config), steps, p, false);
        b->UseManualTime()->Unit(benchmark::kMillisecond)->ReportAggregatesOnly(true);
        // 128 steps are seconds: a few single timed runs
        if (steps == 128) b->Iterations(1)->Repetitions(3);
        else b->Repetitions(5);
        if (p == Precision::bf16 && steps < 128)
          benchmark::RegisterBenchmark(
              ("BM_sample/" + std::string(config) + "/" + std::to_string(steps) + "/bf16-eager").c_str(), BM_sample,
              std::string(config), steps, p, true)
              ->UseManualTime()->Unit(benchmark::kMillisecond)->ReportAggregatesOnly(true)->Repetitions(5);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: end-to-end GPU benchmarks skipped\n");
    return 0;
  }
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
