// End-to-end workloads shared by the CPU and GPU benchmarks: one shortcut-model training step and
// N-step sampling, written once over any backend (the library's own templates, nothing re-implemented),
// and the configurations and FLOP counts of the PyTorch peer (../shared/peers/torch_shortcut.py), so
// that our numbers and the peer's are the same work counted the same way.
//
// The peer's training step: bootstrap fraction 1/4, M = 128, bootstrap targets from the EMA weights
// without classifier-free guidance (its cfg = 0), label dropout 0.1, then MSE, AdamW and an EMA lerp.
// `peer_shortcut_config()` is that setting of ours; our default guides the first Bb/L bootstrap rows,
// which costs one more forward of those rows and is measured separately.
//
// Timing: on the GPU, CUDA events recorded on the backend's stream around a call, then a synchronize,
// as the peer times its step (end_to_end_bench.cu passes that timer); on the CPU, wall clock. Both
// include the host work inside a step (batch plan, loss read-back), which a real training loop pays.
#pragma once
#include <benchmark/benchmark.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <shortcut/shortcut.hpp>

namespace shortcut::bench {

// A named DiT workload: the network, the batch.
struct Workload {
  std::string name;
  nn::DiTConfig dit;
  int batch;
};

// The peer's configurations (CONFIGS in torch_shortcut.py), by the same names.
inline Workload peer_workload(const std::string& name) {
  if (name == "mnist-S2") return {name, nn::DiTConfig::preset("DiT-S", 28, 1, 10), 256};
  if (name == "latent-S2") return {name, nn::DiTConfig::preset("DiT-S", 32, 4, 1000), 256};
  if (name == "latent-B2") return {name, nn::DiTConfig::preset("DiT-B", 32, 4, 1000), 256};
  throw ConfigError("unknown benchmark workload '" + name + "' (known: mnist-S2, latent-S2, latent-B2)");
}

// Forward FLOPs of the token path for B rows, counted as the peer's count_flops: the block matmuls
// (qkv, proj, fc1, fc2) and the two attention products; embeddings, adaLN and the final layer left out.
inline double forward_flops(const nn::DiTConfig& c, double B) {
  const double n = c.tokens(), h = c.hidden, mlp = c.mlp_hidden();
  const double per_token_block = 2 * (h * 3 * h + h * h + 2 * h * mlp);
  const double attention = 2 * 2 * n * h;
  return B * n * c.depth * (per_token_block + attention);
}

// A training step as the peer counts it: forward + backward (3 forwards) on the batch, and two
// no-gradient forwards on the B/4 bootstrap rows.
inline double train_step_flops(const nn::DiTConfig& c, int B) {
  const double f = forward_flops(c, B);
  return 3 * f + 2 * f / 4;
}

inline ShortcutConfig peer_shortcut_config() {
  ShortcutConfig s;
  s.bootstrap_fraction = 0.25;
  s.denoise_timesteps = 128;
  s.class_dropout_prob = 0.1;
  s.bootstrap_cfg = false;  // the peer's targets() runs with cfg = 0
  s.bootstrap_ema = true;
  return s;
}

// The default timer: wall clock between two backend synchronisations.
// Labels 0, 1, ..., classes - 1, 0, 1, ... for a batch: every class present, none dropped.
inline std::vector<int32_t> cyclic_labels(int batch, int classes) {
  std::vector<int32_t> y(static_cast<size_t>(batch));
  for (int i = 0; i < batch; ++i) y[size_t(i)] = int32_t(i % classes);
  return y;
}

template <class Be>
double seconds_between_syncs(Be& be, const std::function<void()>& work) {
  be.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  work();
  be.synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// One training step of any network through the library's templates as the Trainer takes it
// (TrainingStep: targets by SelfConsistencyLoss, forward, backward, AdamW and the EMA), on a fixed
// random batch resident on the host
// as the trainer keeps it (the per-step upload of the batch is part of the step, as in training).
// Objective: the shortcut loss by default; any TrainingObjective built from `obj`.
template <class Net, class Objective = SelfConsistencyLoss<ShortcutModel<Net>>>
class TrainStep {
 public:
  using Be = typename Net::Backend;
  using Model = ShortcutModel<Net>;
  using T = typename Model::T;

  template <class ObjectiveConfig>
  TrainStep(Be& be, const typename Net::Config& cfg, int batch, const ObjectiveConfig& obj)
      : model_(be, cfg, 1), loss_(obj), batch_(batch), rng_(7) {
    loss_.validate(batch);
    x1_ = sample_noise<T>(model_.sample_size(), 0, batch, 11, 0);
    y_ = cyclic_labels(batch, model_.num_classes());
  }

  float run() {
    const auto r = step_.take(model_, loss_, opt_, ema_, HostSpan<const T>(x1_), y_, BatchSlice::all(batch_), rng_);
    return float(r.loss);
  }

 private:
  Model model_;
  Objective loss_;
  AdamW opt_;
  EmaTracker ema_;
  TrainingStep<Model, Objective> step_;
  int batch_;
  Rng rng_;
  std::vector<T> x1_;
  std::vector<int32_t> y_;
};

// Sampling `batch` images with `steps` Euler steps from device-resident noise (the OdeSampler; what
// generate() adds on top is host noise and the copy back, which is not the network's speed).
template <class Net>
class Sample {
 public:
  using Be = typename Net::Backend;
  using Model = ShortcutModel<Net>;
  using T = typename Model::T;

  Sample(Be& be, const typename Net::Config& cfg, int batch, int steps)
      : model_(be, cfg, 1), sampler_(SamplingSchedule{}), batch_(batch), steps_(steps) {
    sampler_.check({steps, 1.0, true});
    const size_t n = size_t(batch) * size_t(model_.sample_size());
    nn::ensure(x_, n);
    nn::ensure(y_, size_t(batch));
    const std::vector<int32_t> y = cyclic_labels(batch, model_.num_classes());
    be.to_device(y_.data(), y.data(), y.size());
  }

  void run() {
    Be& be = model_.backend();
    be.normal(x_.data(), x_.size(), 5, uint64_t(calls_++));
    sampler_.sample(model_, x_, y_, {steps_, 1.0, true});
  }

 private:
  Model model_;
  OdeSampler<Model> sampler_;
  int batch_, steps_;
  int64_t calls_ = 0;
  typename Be::template Buffer<T> x_;
  typename Be::template Buffer<int32_t> y_;
};

// Google Benchmark loops with manual time from `timer(be, work)`; the first call is a warm-up
// (allocation, cuBLAS heuristics, page faults, a backend's first recording of work: core/capture.hpp)
// and is not timed.
template <class Be, class Work, class Timer = double (*)(Be&, const std::function<void()>&)>
void time_loop(benchmark::State& st, Be& be, Work& w, Timer timer = &seconds_between_syncs<Be>) {
  w.run();
  for (auto _ : st) st.SetIterationTime(timer(be, [&] { w.run(); }));
}

inline void set_rates(benchmark::State& st, double images, double flops) {
  st.counters["images/s"] = benchmark::Counter(images, benchmark::Counter::kIsIterationInvariantRate);
  if (flops > 0)
    st.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace shortcut::bench
