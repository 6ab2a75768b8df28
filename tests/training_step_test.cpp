// TrainingStep: the Trainer's one step sequence (zero_grad, the objective's step, the gradient
// reduction, AdamW, the EMA) equals that sequence written out by hand on host and device rows, keeps
// frozen parameter groups where they were, runs its reduction hook where a data-parallel trainer
// needs it, and a step whose loss is not finite changes nothing (the Trainer stops with its
// divergence error at the state before it).
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>

#include "shortcut/data/toy2d.hpp"
#include "shortcut/shortcut.hpp"
#include "test_util.hpp"

using namespace shortcut;

namespace {

nn::MlpNetConfig step_test_net() {
  nn::MlpNetConfig c;
  c.hidden = 16; c.depth = 2; c.classes = 3;
  return c;
}

// A warm-up schedule (the learning rate changes every step) and groups that cut the arena into runs
// of differing settings: what a replay of stale staged values would get wrong.
AdamWConfig scheduled_groups() {
  AdamWConfig oc;
  oc.lr = 3e-3; oc.warmup_steps = 4; oc.cosine_steps = 8;
  oc.groups = {ParamGroup{.pattern = "*.bias", .decay = false, .lr_scale = 0.5},
               ParamGroup{.pattern = "x_embedder.*", .frozen = true}};
  return oc;
}

template <class T>
struct Batch {
  std::vector<T> x1;
  std::vector<int32_t> y;
};
template <class T>
Batch<T> toy_rows(int B, uint64_t seed) {
  Rng rng(seed);
  Batch<T> b;
  const auto x = data::sample_toy2d("8gaussians", B, rng);
  b.x1.assign(x.begin(), x.end());
  for (int i = 0; i < B; ++i) b.y.push_back(int32_t(rng.randint(3)));
  return b;
}

template <class Be>
std::vector<std::vector<typename Be::Scalar>> state(ShortcutModel<nn::MlpNet<Be>>& m) {
  std::vector<std::vector<typename Be::Scalar>> s;
  for (Role r : {Role::Param, Role::Ema, Role::AdamM, Role::AdamV, Role::Grad}) s.push_back(m.arena().to_host(r));
  return s;
}

}  // namespace

// TrainingStep on host rows and on device rows against zero_grad + the objective's step + AdamW + EMA
// written out by hand, six steps; `make` builds one objective (three are compared, each on its own model).
template <class T, template <class> class Objective, class Make>
void check_steps(Make make) {
  using Be = cpu::Backend<T>;
  using Model = ShortcutModel<nn::MlpNet<Be>>;
  using Obj = Objective<Model>;
  Be be;
  const uint64_t seed = testutil::gen()() % 1000;
  INFO("seed " << seed);
  const AdamWConfig oc = scheduled_groups();
  const int B = 32;
  Model hand_m(be, step_test_net(), seed), host_m(be, step_test_net(), seed), device_m(be, step_test_net(), seed);
  for (Model* m : {&hand_m, &host_m, &device_m}) m->arena().copy_role(Role::Ema, Role::Param);
  // the tensor scheduled_groups() freezes: x_embedder.weight (x_embedder.bias matches "*.bias" first)
  const auto frozen = [&](Model& m) {
    const auto p = m.arena().to_host(Role::Param);
    std::vector<T> out;
    for (const auto& e : m.net().layout().entries())
      if (e.name == "x_embedder.weight") out.insert(out.end(), p.begin() + e.offset, p.begin() + e.offset + e.size);
    return out;
  };
  const std::vector<T> frozen_before = frozen(hand_m);
  REQUIRE(!frozen_before.empty());
  Obj hand_loss = make(), host_loss = make(), device_loss = make();
  AdamW hand_opt(oc), host_opt(oc), device_opt(oc);
  const EmaTracker ema(0.9);
  Rng hand_rng(seed), host_rng(seed), device_rng(seed);
  TrainingStep<Model, Obj> host, device;
  for (int s = 0; s < 6; ++s) {
    INFO("step " << s + 1);
    const auto b = toy_rows<T>(B, seed * 31 + uint64_t(s));
    hand_m.arena().zero_grad();
    const auto dx1 = upload(be, b.x1);
    const LossResult want = hand_loss.step(hand_m, dx1, b.y, BatchSlice::all(B), hand_rng);
    hand_opt.step(hand_m.arena());
    ema.update(hand_m.arena());
    const LossResult got = host.take(host_m, host_loss, host_opt, ema, HostSpan<const T>(b.x1), b.y,
                                     BatchSlice::all(B), host_rng);
    const LossResult got_d = device.take(device_m, device_loss, device_opt, ema, DeviceSpan<const T, Be>(dx1), b.y,
                                         BatchSlice::all(B), device_rng);
    CHECK(got.loss == want.loss);
    CHECK(got.bootstrap_loss == want.bootstrap_loss);
    CHECK(got_d.loss == want.loss);
    CHECK(host_opt.step_count() == hand_opt.step_count());
    CHECK(device_opt.step_count() == hand_opt.step_count());
    CHECK(state(host_m) == state(hand_m));
    CHECK(state(device_m) == state(hand_m));
    CHECK(host_rng.position() == hand_rng.position());
  }
  // the steps moved the weights (the comparison above can fail), and the frozen run did not move
  Model init(be, step_test_net(), seed);
  CHECK(hand_m.arena().to_host(Role::Param) != init.arena().to_host(Role::Param));
  CHECK(frozen(host_m) == frozen_before);
}

TEMPLATE_TEST_CASE("a training step is zero_grad, the objective's step, AdamW and the EMA", "[train][step]", float,
                   double) {
  check_steps<TestType, SelfConsistencyLoss>([] { return SelfConsistencyLoss<ShortcutModel<nn::MlpNet<cpu::Backend<TestType>>>>(ShortcutConfig{}); });
  SECTION("consistency training (DESIGN.md §7), at a stage whose gap is not the whole path") {
    check_steps<TestType, ConsistencyTraining>([] {
      ConsistencyTraining<ShortcutModel<nn::MlpNet<cpu::Backend<TestType>>>> ct(ConsistencyTrainingConfig{});
      ct.set_progress({30, 70});  // stage 3 of 7: gap 1/8
      return ct;
    });
  }
}

// The reduction hook (what the data-parallel trainer fills) runs between the backward and AdamW: it
// sees the step's gradients and loss, what it leaves there is what AdamW applies, and a loss it makes
// non-finite stops the update.
TEST_CASE("the gradient-reduction hook runs between the backward and AdamW", "[train][step]") {
  using Be = cpu::Backend<double>;
  using Model = ShortcutModel<nn::MlpNet<Be>>;
  Be be;
  AdamWConfig oc;
  oc.lr = 1e-2; oc.weight_decay = 0;  // no decay: a zero gradient moves nothing
  const EmaTracker ema(0.9);
  const auto b = toy_rows<double>(32, 5);
  const auto p0 = Model(be, step_test_net(), 7).arena().to_host(Role::Param);
  struct Outcome {
    std::vector<double> param, ema;
    int64_t steps;
    double loss;
  };
  // one step whose hook gets the model and the step's loss
  auto run = [&](auto hook) {
    Model m(be, step_test_net(), 7);
    m.arena().copy_role(Role::Ema, Role::Param);
    SelfConsistencyLoss<Model> loss{ShortcutConfig{}};
    AdamW opt(oc);
    Rng rng(7);
    TrainingStep<Model, SelfConsistencyLoss<Model>> step;
    const LossResult r = step.take(m, loss, opt, ema, HostSpan<const double>(b.x1), b.y, BatchSlice::all(32), rng,
                                   [&](LossResult& l) { hook(m, l); });
    return Outcome{m.arena().to_host(Role::Param), m.arena().to_host(Role::Ema), opt.step_count(), r.loss};
  };
  double grad_sq = -1;
  const Outcome seen = run([&](Model& m, LossResult& r) {
    REQUIRE(std::isfinite(r.loss));
    grad_sq = 0;
    for (double g : m.arena().to_host(Role::Grad)) grad_sq += g * g;
  });
  CHECK(grad_sq > 0);  // the backward ran before the hook
  CHECK(seen.steps == 1);
  CHECK(seen.param != p0);
  SECTION("the gradients the hook leaves are the ones AdamW applies") {
    const Outcome cleared = run([](Model& m, LossResult&) { m.arena().zero_grad(); });
    CHECK(cleared.loss == seen.loss);
    CHECK(cleared.steps == 1);
    CHECK(cleared.param == p0);
  }
  SECTION("a loss the hook makes non-finite leaves weights, EMA and step count as they were") {
    const Outcome nan = run([](Model&, LossResult& r) { r.loss = std::numeric_limits<double>::quiet_NaN(); });
    CHECK(nan.steps == 0);
    CHECK(nan.param == p0);
    CHECK(nan.ema == p0);
  }
}

TEST_CASE("a diverged step changes nothing: the trainer stops at the state before it", "[train][step][errors]") {
  using Be = cpu::Backend<float>;
  using Model = ShortcutModel<nn::MlpNet<Be>>;
  Be be;
  TrainerConfig tc;
  tc.batch = 32; tc.steps = 5; tc.progress = false; tc.ema_tau = 0.9;
  AdamWConfig oc;
  oc.lr = 1e-3;
  auto batch = [](int bad_at) {
    return [bad_at, calls = 0](Rng& rng, int B, std::vector<float>& x, std::vector<int32_t>& y) mutable {
      x = data::sample_toy2d("8gaussians", B, rng);
      y.assign(size_t(B), 1);
      if (++calls == bad_at) x[5] = std::numeric_limits<float>::quiet_NaN();  // one bad value in the data
    };
  };
  Model before(be, step_test_net(), 3), m(be, step_test_net(), 3);
  tc.steps = 2;
  Trainer<Model>(before, ShortcutConfig{}, oc, tc).run(batch(0));
  tc.steps = 5;
  Trainer<Model> t(m, ShortcutConfig{}, oc, tc);
  CHECK_THROWS_WITH(t.run(batch(3)), Catch::Matchers::Contains("training diverged") &&
                                         Catch::Matchers::Contains("at step 3"));
  CHECK(t.step() == 2);
  for (Role r : {Role::Param, Role::Ema, Role::AdamM, Role::AdamV}) {
    INFO("role " << role_name(r));
    CHECK(m.arena().to_host(r) == before.arena().to_host(r));  // bit for bit: step 3 was not applied
  }
  for (float v : m.arena().to_host(Role::Param)) REQUIRE(std::isfinite(v));
}
