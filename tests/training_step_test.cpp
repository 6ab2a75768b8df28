// TrainingStep: the Trainer's step as one recorded body (staged plan, noise stream and AdamW values)
// equals the eager sequence it replaces bit for bit, and a step whose loss is not finite changes
// nothing (the Trainer stops with its divergence error at the state before it).
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

// TrainingStep on host rows and on device rows against zero_grad + the objective's step + AdamW + EMA,
// six steps; `make` builds one objective (three are compared, each on its own model).
template <class T, template <class> class Objective, class Make>
void check_recorded_steps(Make make) {
  using Be = cpu::Backend<T>;
  using Model = ShortcutModel<nn::MlpNet<Be>>;
  using Obj = Objective<Model>;
  Be be;
  const uint64_t seed = testutil::gen()() % 1000;
  const AdamWConfig oc = scheduled_groups();
  const int B = 32;
  Model eager_m(be, step_test_net(), seed), staged_m(be, step_test_net(), seed), device_m(be, step_test_net(), seed);
  for (Model* m : {&eager_m, &staged_m, &device_m}) m->arena().copy_role(Role::Ema, Role::Param);
  Obj eager_loss = make(), staged_loss = make(), device_loss = make();
  AdamW eager_opt(oc), staged_opt(oc), device_opt(oc);
  const EmaTracker ema(0.9);
  Rng eager_rng(seed), staged_rng(seed), device_rng(seed);
  TrainingStep<Model, Obj> staged, device;
  STATIC_REQUIRE(TrainingStep<Model, Obj>::kRecorded);
  for (int s = 0; s < 6; ++s) {
    INFO("step " << s + 1);
    const auto b = toy_rows<T>(B, seed * 31 + uint64_t(s));
    eager_m.arena().zero_grad();
    const auto dx1 = upload(be, b.x1);
    const LossResult want = eager_loss.step(eager_m, dx1, b.y, BatchSlice::all(B), eager_rng);
    eager_opt.step(eager_m.arena());
    ema.update(eager_m.arena());
    const LossResult got = staged.take(staged_m, staged_loss, staged_opt, ema, HostSpan<const T>(b.x1), b.y,
                                       BatchSlice::all(B), staged_rng);
    const LossResult got_d = device.take(device_m, device_loss, device_opt, ema, DeviceSpan<const T, Be>(dx1), b.y,
                                         BatchSlice::all(B), device_rng);
    CHECK(got.loss == want.loss);
    CHECK(got.bootstrap_loss == want.bootstrap_loss);
    CHECK(got_d.loss == want.loss);
    CHECK(staged_opt.step_count() == eager_opt.step_count());
    CHECK(device_opt.step_count() == eager_opt.step_count());
    CHECK(state(staged_m) == state(eager_m));
    CHECK(state(device_m) == state(eager_m));
    CHECK(staged_rng.position() == eager_rng.position());
  }
  // the steps moved the weights (the comparison above can fail), and the frozen run did not move
  Model init(be, step_test_net(), seed);
  CHECK(eager_m.arena().to_host(Role::Param) != init.arena().to_host(Role::Param));
}

TEMPLATE_TEST_CASE("the recorded training step equals zero_grad, step, AdamW and EMA bit for bit", "[train][step]",
                   float, double) {
  check_recorded_steps<TestType, SelfConsistencyLoss>([] { return SelfConsistencyLoss<ShortcutModel<nn::MlpNet<cpu::Backend<TestType>>>>(ShortcutConfig{}); });
  SECTION("consistency training (DESIGN.md §7), at a stage whose gap is not the whole path") {
    check_recorded_steps<TestType, ConsistencyTraining>([] {
      ConsistencyTraining<ShortcutModel<nn::MlpNet<cpu::Backend<TestType>>>> ct(ConsistencyTrainingConfig{});
      ct.set_progress({30, 70});  // stage 3 of 7: gap 1/8
      return ct;
    });
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
