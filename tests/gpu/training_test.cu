// End to end: a few shortcut-model training steps (self-consistency loss with bootstrap targets from
// the EMA weights, AdamW, EMA) on the CUDA backend against the same steps on the CPU backend. Both
// draw the same noise (shared Philox) and the same host-side batch plan, so they compute the same
// function; the tolerance is derived as in network_test.cu from the float CPU backend's own error.
#include "gpu_test_util.hpp"

using namespace shortcut;
using namespace gputest;
using testutil::randn;

namespace {

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
  auto host = [&](Role role) {
    auto v = m.arena().to_host(role);
    return std::vector<double>(v.begin(), v.end());
  };
  r.param = host(Role::Param);
  r.ema = host(Role::Ema);
  r.grad = host(Role::Grad);
  return r;
}

}  // namespace

TEST_CASE("shortcut training steps on the GPU match the CPU backend", "[network][training]") {
  nn::DiTConfig c;  // 16 tokens, head dim 32
  c.image = 8; c.channels = 2; c.patch = 2; c.hidden = 64; c.depth = 2; c.heads = 2; c.classes = 3;
  const int B = 32, steps = 3;  // 8 bootstrap rows: one per step size (L = 7) and one more
  Ref ref;
  cpu::Backend<float> f32;
  nn::DiT<Ref> probe(ref, c);
  auto P0 = randn(probe.layout().total(), 0.1);
  auto x1 = randn(size_t(B) * probe.sample_size());
  auto y = random_ids(B, c.classes);

  const StepRun want = run_training(ref, c, P0, x1, y, B, steps);
  const StepRun f = run_training(f32, c, P0, x1, y, B, steps);
  const StepRun got = run_training(gpu(), c, P0, x1, y, B, steps);
  auto check = [&](const std::string& what, const std::vector<double>& g, const std::vector<double>& fv,
                   const std::vector<double>& r) {
    check_close("training " + what, g, r, std::max(2e-4, 10 * rel_err(fv, r)));
  };
  check("losses (total, flow, bootstrap per step)", got.losses, f.losses, want.losses);
  check("parameters after the steps", got.param, f.param, want.param);
  check("EMA weights after the steps", got.ema, f.ema, want.ema);
  check("gradients of the last step", got.grad, f.grad, want.grad);
}
