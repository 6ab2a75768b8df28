// The baseline objectives of DESIGN.md §7 (progressive and consistency distillation, consistency
// training, live reflow) and the average-velocity objectives of §8 (MeanFlow, α-Flow) on the CUDA backend against the same steps on the CPU backend: a few steps
// of each through the objective, AdamW and the EMA, with the host-side plans and the shared Philox
// noise equal on both; the GPU steps run eagerly, as on the CPU (training steps are not captured
// into graphs). On the MLP network: the DiT's kernels are covered by training_test.cu, and an MLP
// keeps this file's twelve instantiations cheap to compile. Tolerance as in training_test.cu:
// from the float CPU backend's own error against double.
#include "gpu_test_util.hpp"

using namespace shortcut;
using namespace gputest;
using testutil::randn;

namespace {

struct ObjectiveRun {
  std::vector<double> losses, param, grad;
};

// `make` builds the objective for a model type: make.template operator()<Model>(). Net: the network
// template (nn::MlpNet, nn::DiT), Cfg its config.
template <template <class> class Net = nn::MlpNet, class Be, class Make, class Cfg>
ObjectiveRun run_objective(Be& be, const Cfg& c, const std::vector<double>& P0,
                           const std::vector<double>& x1, const std::vector<int32_t>& y, int steps, Make make) {
  using T = typename Be::Scalar;
  using Model = ShortcutModel<Net<Be>>;
  Model m(be, c, 7);
  m.arena().from_host(Role::Param, std::vector<T>(P0.begin(), P0.end()));
  m.arena().copy_role(Role::Ema, Role::Param);
  auto obj = make.template operator()<Model>();
  if constexpr (requires { obj.attach(m); }) obj.attach(m);
  AdamW opt;
  EmaTracker ema(0.9);
  Rng rng(99);
  const auto dx1 = upload_d(be, x1);
  ObjectiveRun r;
  for (int s = 0; s < steps; ++s) {
    obj.set_progress({s, steps});
    m.arena().zero_grad();
    const LossResult res = obj.step(m, dx1, y, BatchSlice::all(int(y.size())), rng);
    r.losses.insert(r.losses.end(), {res.loss, res.flow_loss, res.bootstrap_loss});
    opt.step(m.arena());
    ema.update(m.arena());
  }
  r.param = host_doubles(m.arena(), Role::Param);
  r.grad = host_doubles(m.arena(), Role::Grad);
  return r;
}

}  // namespace

TEST_CASE("the baseline objectives' training steps on the GPU match the CPU backend", "[network][objectives]") {
  nn::MlpNetConfig c;
  c.dim = 6; c.hidden = 32; c.depth = 2; c.classes = 3;
  const int B = 16, steps = 4;  // 4 steps over L = 2 stages: one stage boundary (progressive's teacher swap)
  Ref ref;
  cpu::Backend<float> f32;
  nn::MlpNet<Ref> probe(ref, c);
  const auto P0 = randn(probe.layout().total(), 0.1);
  const auto x1 = randn(size_t(B) * probe.sample_size());
  const auto y = random_ids(B, c.classes);
  // the teacher: other random weights, as a weights file every backend reads
  const auto teacher = testutil::scratch_dir("gpu_objectives") / "teacher.safetensors";
  {
    ShortcutModel<nn::MlpNet<Ref>> t(ref, c, 3);
    t.arena().from_host(Role::Ema, randn(t.arena().size(), 0.1));
    io::save_weights(teacher, t.net(), t.arena(), Role::Ema);
  }
  auto compare = [&](const std::string& name, auto make) {
    const ObjectiveRun want = run_objective(ref, c, P0, x1, y, steps, make);
    const ObjectiveRun f = run_objective(f32, c, P0, x1, y, steps, make);
    const ObjectiveRun got = run_objective(gpu(), c, P0, x1, y, steps, make);
    auto check = [&](const std::string& what, const std::vector<double>& g, const std::vector<double>& fv,
                     const std::vector<double>& r) { check_close_to_fp32(name + " " + what, g, fv, r); };
    check("losses", got.losses, f.losses, want.losses);
    check("parameters", got.param, f.param, want.param);
    check("gradients of the last step", got.grad, f.grad, want.grad);
  };
  compare("consistency training", [&]<class M>() {  // a capture: no conversion to a function pointer (nvcc warns)
    ConsistencyTrainingConfig k;
    k.denoise_timesteps = 4;
    return ConsistencyTraining<M>(k);
  });
  compare("consistency distillation", [&]<class M>() {
    ConsistencyDistillationConfig k;
    k.denoise_timesteps = 8;
    k.teacher = teacher.string();
    return ConsistencyDistillation<M>(k);
  });
  compare("progressive distillation", [&]<class M>() {
    ProgressiveDistillationConfig k;
    k.denoise_timesteps = 4;
    k.teacher = teacher.string();
    return ProgressiveDistillation<M>(k);
  });
  compare("live reflow", [&]<class M>() {
    LiveReflowConfig k;
    k.denoise_timesteps = 8;
    k.euler_steps = 3;
    return LiveReflow<M>(k);
  });
  // DESIGN.md §8: the forward mode through the MLP's layers (guidance inside the target on), and
  // α-Flow over its curriculum: α = 1, 1, 1/2, then the JVP at α = 0
  compare("meanflow", [&]<class M>() {
    MeanFlowConfig k;
    k.denoise_timesteps = 8;
    k.flow_fraction = 0.5;
    k.omega = 1.5;
    k.kappa = 0.3;
    return MeanFlow<M>(k);
  });
  compare("alpha_flow", [&]<class M>() {
    AlphaFlowConfig k;
    k.denoise_timesteps = 8;
    k.flow_fraction = 0.5;
    return AlphaFlow<M>(k);
  });
}

TEST_CASE("MeanFlow's training steps on the DiT (attention's tangent) on the GPU match the CPU backend",
          "[network][objectives]") {
  nn::DiTConfig c;
  c.image = 8; c.channels = 1; c.patch = 2; c.hidden = 32; c.depth = 2; c.heads = 1; c.classes = 3;  // head dim 32
  const int B = 8, steps = 3;
  Ref ref;
  cpu::Backend<float> f32;
  nn::DiT<Ref> probe(ref, c);
  const auto P0 = randn(probe.layout().total(), 0.1);
  const auto x1 = randn(size_t(B) * probe.sample_size());
  const auto y = random_ids(B, c.classes);
  auto make = [&]<class M>() {
    MeanFlowConfig k;
    k.denoise_timesteps = 8;
    k.flow_fraction = 0.5;
    return MeanFlow<M>(k);
  };
  const ObjectiveRun want = run_objective<nn::DiT>(ref, c, P0, x1, y, steps, make);
  const ObjectiveRun f = run_objective<nn::DiT>(f32, c, P0, x1, y, steps, make);
  const ObjectiveRun got = run_objective<nn::DiT>(gpu(), c, P0, x1, y, steps, make);
  check_close_to_fp32("meanflow DiT losses", got.losses, f.losses, want.losses);
  check_close_to_fp32("meanflow DiT parameters", got.param, f.param, want.param);
  check_close_to_fp32("meanflow DiT gradients of the last step", got.grad, f.grad, want.grad);
}
