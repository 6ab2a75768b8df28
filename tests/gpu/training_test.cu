// End to end: a few shortcut-model training steps (self-consistency loss with bootstrap targets from
// the EMA weights, AdamW, EMA) on the CUDA backend against the same steps on the CPU backend. Both
// draw the same noise (shared Philox) and the same host-side batch plan, so they compute the same
// function; the tolerance is derived as in network_test.cu from the float CPU backend's own error.
#include "model_runs.hpp"

using namespace shortcut;
using namespace gputest;
using testutil::randn;

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
                   const std::vector<double>& r) { check_close_to_fp32("training " + what, g, fv, r); };
  check("losses (total, flow, bootstrap per step)", got.losses, f.losses, want.losses);
  check("parameters after the steps", got.param, f.param, want.param);
  check("EMA weights after the steps", got.ema, f.ema, want.ema);
  check("gradients of the last step", got.grad, f.grad, want.grad);
}
