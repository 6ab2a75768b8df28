// Live reflow (DESIGN.md §7) against a hand computation with the closed-form linear network, and
// exact resume through Trainer for every objective of §7 (the distillations' teachers included).
#include <catch2/catch.hpp>

#include <shortcut/shortcut.hpp>

#include <cmath>

#include "linear_test_net.hpp"
#include "objective_test_util.hpp"
#include "test_util.hpp"

using namespace shortcut;
namespace fs = std::filesystem;
using Model = ShortcutModel<LinearTestNet<double>>;

static_assert(TrainingObjective<LiveReflow<Model>, Model>);

TEST_CASE("live reflow: reflow and flow rows match a hand computation", "[objectives][reflow]") {
  cpu::Backend<double> be;
  const int dim = 3, classes = 2, B = 16, M = 8, L = 3;
  Model m(be, LinearNetConfig{dim, classes}, 0);
  auto P = testutil::randn(m.arena().size(), 0.5);
  m.arena().from_host(Role::Param, P);
  LiveReflowConfig c;
  c.denoise_timesteps = M;
  c.cfg_scale = 2.0;
  LiveReflow<Model> lr(c);
  [[maybe_unused]] const auto [x1, y, seed, res] = objtest::run_step(lr, m, B, dim, classes);
  const auto& p = lr.plan();
  REQUIRE(p.Br == B / 4);
  CHECK(res.bootstrap_rows == B / 4);
  const auto& net = m.net();
  auto v = [&](double x, double t, double k, int lab) {
    return P[net.a_] * x + P[net.bt_] * t + P[net.bk_] * k + P[net.by_ + lab];
  };
  const double a = 1 - 1e-5, w = 2.0;
  for (int r = 0; r < B; ++r) {
    REQUIRE(std::fmod(p.t[r] * M, 1.0) == 0);
    REQUIRE(p.k[r] == (r < p.Br ? 0.f : float(L)));
    if (r < p.Br) REQUIRE(p.y[r] == y[r]);  // reflow rows keep their labels (guided generation)
    for (int i = 0; i < dim; ++i) {
      const size_t j = size_t(r) * dim + i;
      // reflow rows are the batch's first rows: their noise is the stream's first numbers
      const double x0 = philox_normal(seed, p.noise_stream, j), t = p.t[r];
      double end = x1[j];
      if (r < p.Br) {
        end = x0;
        for (int s = 0; s < 8; ++s) {
          const double vc = v(end, s / 8.0, L, p.y[r]), vn = v(end, s / 8.0, L, classes);
          end += (vn + w * (vc - vn)) / 8;
        }
        REQUIRE(lr.reflow_endpoints()[j] == Approx(end).margin(1e-12));
      }
      REQUIRE(lr.inputs()[j] == Approx((1 - a * t) * x0 + t * end).margin(1e-12));
      REQUIRE(lr.targets()[j] == Approx(end - a * x0).margin(1e-12));
    }
  }
  CHECK(lr.sampling().reads_d);  // N steps query k = log2 N
}

namespace {

using Bf = cpu::Backend<float>;
using Mf = ShortcutModel<nn::MlpNet<Bf>>;

nn::MlpNetConfig small_net() {
  nn::MlpNetConfig c;
  c.hidden = 16;
  c.depth = 2;
  c.classes = 3;
  return c;
}
void toy_batch(Rng& rng, int B, std::vector<float>& x, std::vector<int32_t>& y) {
  x = data::sample_toy2d("8gaussians", B, rng);
  y.resize(size_t(B));
  for (auto& l : y) l = int32_t(rng.randint(3));
}

// 8 steps straight against a resume from the straight run's own checkpoint at step 6 (stages follow
// the planned total, so the half point must come from a run planned for 8 steps).
template <class Obj>
void check_exact_resume(const std::string& tag, const Obj& objective) {
  Bf be;
  AdamWConfig oc;
  oc.lr = 3e-3;
  TrainerConfig tc;
  tc.batch = 16;
  tc.seed = testutil::gen()() % 1000;
  tc.progress = false;
  tc.steps = 8;
  tc.checkpoint_every = 6;
  const fs::path dir = testutil::scratch_dir("objectives_resume") / tag;
  tc.out_dir = dir.string();
  Mf straight(be, small_net(), 1), resumed(be, small_net(), 2);
  Trainer<Mf, dist::LocalCommunicator, Obj>(straight, objective, oc, tc).run(toy_batch);
  tc.out_dir = "";
  Trainer<Mf, dist::LocalCommunicator, Obj> t(resumed, objective, oc, tc);
  t.resume((dir / "checkpoints" / "step_6").string());
  t.run(toy_batch);
  for (Role r : {Role::Param, Role::Ema, Role::AdamM, Role::AdamV}) {
    INFO(tag << ", role " << role_name(r));
    CHECK(straight.arena().to_host(r) == resumed.arena().to_host(r));  // bit for bit
  }
  const auto info = read_checkpoint_info(dir / "checkpoints" / "last");
  CHECK(info.training_json.at("objective").at("name") == objective.name());
}

}  // namespace

TEST_CASE("every objective resumes exactly through Trainer, the distillations' teachers included",
          "[objectives][resume]") {
  Bf be;
  const fs::path teacher = testutil::scratch_dir("objectives_resume") / "teacher.safetensors";
  Mf fm(be, small_net(), 5);
  fm.arena().from_host(Role::Ema, testutil::randn<float>(fm.arena().size(), 0.3));
  io::save_weights(teacher, fm.net(), fm.arena(), Role::Ema);

  LiveReflowConfig lr;
  lr.denoise_timesteps = 16;
  check_exact_resume("live_reflow", LiveReflow<Mf>(lr));
  ConsistencyDistillationConfig cd;
  cd.denoise_timesteps = 16;
  cd.teacher = teacher.string();
  check_exact_resume("consistency_distillation", ConsistencyDistillation<Mf>(cd));
  // 2 stages of 4 steps: the checkpoint at step 6 holds the teacher swapped in at step 4
  ProgressiveDistillationConfig pd;
  pd.denoise_timesteps = 4;
  pd.teacher = teacher.string();
  check_exact_resume("progressive_distillation", ProgressiveDistillation<Mf>(pd));
  CHECK(fs::exists(testutil::scratch_dir("objectives_resume") / "progressive_distillation" / "checkpoints" /
                   "step_6" / "teacher.safetensors"));
  // the average-velocity objectives of §8: α-Flow's curriculum crosses from the two-piece target to
  // the JVP at step 6 of 8, where the resumed run starts
  MeanFlowConfig mf;
  mf.denoise_timesteps = 16;
  check_exact_resume("meanflow", MeanFlow<Mf>(mf));
  AlphaFlowConfig af;
  af.denoise_timesteps = 16;
  check_exact_resume("alpha_flow", AlphaFlow<Mf>(af));
}
