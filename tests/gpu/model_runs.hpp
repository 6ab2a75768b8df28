// Whole-model runs on any backend, host doubles in and out, shared by the tests that compare them
// across backends and precisions: `steps` shortcut training steps (self-consistency loss, AdamW,
// EMA) from given weights on a fixed batch, and generate() on given raw and EMA weights.
#pragma once
#include "gpu_test_util.hpp"

namespace gputest {

using namespace shortcut;

struct StepRun {
  std::vector<double> losses, param, ema, grad;
};

template <class Be>
StepRun run_training(Be& be, const nn::DiTConfig& c, const std::vector<double>& P0, const std::vector<double>& x1,
                     const std::vector<int32_t>& y, int B, int steps) {
  using T = typename Be::Scalar;
  using Model = ShortcutModel<nn::DiT<Be>>;
  Model m(be, c, 7);
  // random weights everywhere (the zero-initialised final layer would leave most gradients zero)
  m.arena().from_host(Role::Param, std::vector<T>(P0.begin(), P0.end()));
  m.arena().copy_role(Role::Ema, Role::Param);
  SelfConsistencyLoss<Model> loss{ShortcutConfig{}};
  AdamW opt;
  EmaTracker ema;
  Rng rng(1234);
  auto dx1 = upload_d(be, x1);
  StepRun r;
  for (int s = 0; s < steps; ++s) {
    m.arena().zero_grad();
    auto res = loss.step(m, dx1, y, rng);
    r.losses.insert(r.losses.end(), {res.loss, res.flow_loss, res.bootstrap_loss});
    opt.step(m.arena());
    ema.update(m.arena());
  }
  r.param = host_doubles(m.arena(), Role::Param);
  r.ema = host_doubles(m.arena(), Role::Ema);
  r.grad = host_doubles(m.arena(), Role::Grad);
  return r;
}

// The displacement x1 - x0 of generate() (what the velocities made; x1 holds the noise too).
template <class Be>
std::vector<double> sample_on(Be& be, const nn::DiTConfig& c, const std::vector<double>& P,
                              const std::vector<double>& E, const std::vector<int32_t>& labels,
                              const SamplerConfig& s, uint64_t seed) {
  using T = typename Be::Scalar;
  ShortcutModel<nn::DiT<Be>> m(be, c, 3);
  const auto x0 = sample_noise<T>(m.sample_size(), 0, int64_t(labels.size()), seed, 0);
  m.arena().from_host(Role::Param, std::vector<T>(P.begin(), P.end()));
  m.arena().from_host(Role::Ema, std::vector<T>(E.begin(), E.end()));
  // chunk 5: several chunks, the last one partial, as a long generation run has
  const auto out = generate(m, SamplingSchedule{}, labels, s, seed, 0, 5);
  std::vector<double> moved(out.size());
  for (size_t i = 0; i < out.size(); ++i) moved[i] = double(out[i]) - double(x0[i]);
  return moved;
}

}  // namespace gputest
