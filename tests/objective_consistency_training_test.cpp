// Consistency training (DESIGN.md §7) as a TrainingObjective: its targets against a hand computation
// with the closed-form linear network (v = a x + bt t + bk k + by[y]) at every stage, the stage
// schedule at its boundaries, a rank's rows against the whole batch's, and exact resume through Trainer.
#include <catch2/catch.hpp>

#include <shortcut/shortcut.hpp>

#include <cmath>

#include "linear_test_net.hpp"
#include "objective_test_util.hpp"
#include "test_util.hpp"

using namespace shortcut;
using Catch::Matchers::Contains;
using Model = ShortcutModel<LinearTestNet<double>>;

static_assert(TrainingObjective<ConsistencyTraining<Model>, Model>);

namespace {

// A linear model whose raw and EMA weights differ, so a test can tell which set made the targets.
Model linear_model(cpu::Backend<double>& be, int dim, int classes) {
  Model m(be, LinearNetConfig{dim, classes}, 1);
  auto P = testutil::randn(m.arena().size(), 0.6);
  m.arena().from_host(Role::Param, P);
  for (auto& v : P) v += 0.1;
  m.arena().from_host(Role::Ema, P);
  return m;
}

}  // namespace

TEST_CASE("consistency training: targets match a hand computation at every stage", "[objectives][ct]") {
  cpu::Backend<double> be;
  const int dim = 3, classes = 2, B = 24, M = 8, L = 3;
  for (bool ema : {true, false}) {
    Model m = linear_model(be, dim, classes);
    ConsistencyTrainingConfig c;
    c.denoise_timesteps = M;
    c.target_ema = ema;
    ConsistencyTraining<Model> ct(c);
    const auto W = m.arena().to_host(ema ? Role::Ema : Role::Param);
    const auto& net = m.net();
    auto v = [&](double x, double t, double k, int y) {
      return W[net.a_] * x + W[net.bt_] * t + W[net.bk_] * k + W[net.by_ + y];
    };
    for (int stage = 0; stage < L; ++stage) {
      ct.set_progress({int64_t(stage) * 10, int64_t(L) * 10});
      REQUIRE(ct.stage() == stage);
      [[maybe_unused]] const auto [x1, y, seed, res] = objtest::run_step(ct, m, B, dim, classes);
      const auto& p = ct.plan();
      const double a = 1 - 1e-5, d = std::ldexp(1.0, -stage);
      for (int r = 0; r < B; ++r) {
        REQUIRE(p.tp[r] == Approx(p.t[r] + d).margin(1e-7));
        REQUIRE(std::fmod(p.t[r], d) == 0);  // t a multiple of the gap
        REQUIRE(p.t[r] <= 1 - d);
        REQUIRE(p.k[r] == float(L));
        for (int i = 0; i < dim; ++i) {
          const size_t j = size_t(r) * dim + i;
          const double x0 = philox_normal(seed, p.noise_stream, j);
          const double t = p.t[r], tp = p.tp[r];
          const double xt = (1 - a * t) * x0 + t * x1[j], xp = (1 - a * tp) * x0 + tp * x1[j];
          const double want = (xp + (1 - tp) * v(xp, tp, L, p.y[r]) - xt) / (1 - t);
          REQUIRE(ct.inputs()[j] == Approx(xt).margin(1e-12));
          REQUIRE(ct.targets()[j] == Approx(want).margin(1e-9));
          if (stage == 0) REQUIRE(ct.targets()[j] == Approx(x1[j] - a * x0).margin(1e-9));  // flow matching
        }
      }
    }
  }
}

TEST_CASE("consistency training: the stage schedule at its boundaries", "[objectives][ct]") {
  ConsistencyTrainingConfig c;
  c.denoise_timesteps = 8;  // L = 3 stages
  ConsistencyTraining<Model> ct(c);
  // 12 steps: stages of 4 steps
  for (auto [step, stage] : std::vector<std::pair<int, int>>{{0, 0}, {3, 0}, {4, 1}, {7, 1}, {8, 2}, {11, 2}}) {
    ct.set_progress({step, 12});
    CHECK(ct.stage() == stage);
  }
  ct.set_progress({12, 13});  // 13 / 3 = 4 steps a stage; the 13th step stays in the last stage
  CHECK(ct.stage() == 2);
  CHECK_THROWS_WITH(ct.set_progress({0, 2}), Contains("shorter than one step"));
  CHECK_FALSE(ct.sampling().reads_d);
  CHECK(ct.sampling().denoise_timesteps == 8);
}

TEST_CASE("consistency training: a rank's rows are the whole batch's rows", "[objectives][ct]") {
  cpu::Backend<double> be;
  const int dim = 2, classes = 3, B = 12;
  Model m = linear_model(be, dim, classes);
  ConsistencyTrainingConfig c;
  c.denoise_timesteps = 16;
  ConsistencyTraining<Model> whole(c), part(c);
  whole.set_progress({30, 40});
  part.set_progress({30, 40});
  const auto x1 = testutil::randn(B * dim);
  std::vector<int32_t> y(B);
  for (int i = 0; i < B; ++i) y[i] = i % classes;
  Rng rng(5);
  Rng r1 = rng;
  whole.step(m, upload(be, x1), y, BatchSlice::all(B), r1);
  const std::vector<double> all_t(whole.targets(), whole.targets() + B * dim);
  const BatchSlice s = BatchSlice::of_rank(B, 0, 1, 3);  // rank 1 of 3: rows 4..7
  const std::vector<double> x1s(x1.begin() + 4 * dim, x1.begin() + 8 * dim);
  const std::vector<int32_t> ys(y.begin() + 4, y.begin() + 8);
  Rng r2 = rng;
  part.step(m, upload(be, x1s), ys, s, r2);
  CHECK(r2.position() == r1.position());
  for (int j = 0; j < 4 * dim; ++j) CHECK(part.targets()[j] == all_t[size_t(4 * dim + j)]);
}

TEST_CASE("consistency training through Trainer: N steps straight equal N/2 + resume + N/2", "[objectives][ct]") {
  using Bf = cpu::Backend<float>;
  using M = ShortcutModel<nn::MlpNet<Bf>>;
  Bf be;
  nn::MlpNetConfig nc;
  nc.hidden = 16;
  nc.depth = 2;
  nc.classes = 3;
  ConsistencyTrainingConfig c;
  c.denoise_timesteps = 4;  // 2 stages of 4 steps: the resume point sits at the stage boundary
  AdamWConfig oc;
  oc.lr = 3e-3;
  TrainerConfig tc;
  tc.batch = 16;
  tc.seed = testutil::gen()() % 1000;
  tc.progress = false;
  auto batch = [](Rng& rng, int B, std::vector<float>& x, std::vector<int32_t>& y) {
    x = data::sample_toy2d("8gaussians", B, rng);
    y.resize(size_t(B));
    for (auto& l : y) l = int32_t(rng.randint(3));
  };
  using CT = ConsistencyTraining<M>;
  // the stages follow the planned total, so the half point comes from the straight run's own
  // checkpoint at step 4 (a run planned for 4 steps would have had shorter stages)
  const auto dir = testutil::scratch_dir("objectives_ct") / "straight";
  M straight(be, nc, 1), second(be, nc, 2);
  tc.steps = 8;
  tc.out_dir = dir.string();
  tc.checkpoint_every = 4;
  Trainer<M, dist::LocalCommunicator, CT>(straight, CT(c), oc, tc).run(batch);
  tc.out_dir = "";
  Trainer<M, dist::LocalCommunicator, CT> t2(second, CT(c), oc, tc);
  t2.resume((dir / "checkpoints" / "step_4").string());
  CHECK(t2.step() == 4);
  t2.run(batch);
  CHECK(t2.loss().stage() == 1);
  for (Role r : {Role::Param, Role::Ema, Role::AdamM, Role::AdamV}) {
    INFO("role " << role_name(r));
    CHECK(straight.arena().to_host(r) == second.arena().to_host(r));
  }
  // the checkpoint says how it was trained, and resuming under another objective setting is refused
  const auto info = read_checkpoint_info(dir / "checkpoints" / "step_4");
  CHECK(info.training_json.at("objective").at("name") == "consistency_training");
  CHECK_FALSE(info.sampling.reads_d);
  ConsistencyTrainingConfig other = c;
  other.class_dropout_prob = 0.5;
  Trainer<M, dist::LocalCommunicator, CT> t3(second, CT(other), oc, tc);
  CHECK_THROWS_WITH(t3.resume((dir / "checkpoints" / "step_4").string()), Contains("objective.class_dropout_prob"));
  // a run too short for its stages is refused at construction
  tc.steps = 1;
  CHECK_THROWS_WITH((Trainer<M, dist::LocalCommunicator, CT>(second, CT(c), oc, tc)), Contains("shorter than one step"));
}
