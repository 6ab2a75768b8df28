// The distillation objectives of DESIGN.md §7 (a frozen teacher beside the student): consistency
// distillation's and progressive distillation's targets against a hand computation with the
// closed-form linear network, progressive distillation's stages and teacher swap, the teacher in the
// checkpoint, and the errors for a missing teacher or one of another shape.
#include <catch2/catch.hpp>

#include <shortcut/shortcut.hpp>

#include <cmath>

#include "linear_test_net.hpp"
#include "objective_test_util.hpp"
#include "test_util.hpp"

using namespace shortcut;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;
using Model = ShortcutModel<LinearTestNet<double>>;

static_assert(TrainingObjective<ConsistencyDistillation<Model>, Model>);
static_assert(TrainingObjective<ProgressiveDistillation<Model>, Model>);

namespace {

const int dim = 3, classes = 2;

// A linear model with random raw and EMA weights (they differ); the arena's padding between
// tensors stays zero, as in a model loaded from a file.
Model linear_model(cpu::Backend<double>& be, uint64_t seed) {
  Model m(be, LinearNetConfig{dim, classes}, seed);
  const auto& net = m.net();
  auto P = m.arena().to_host(Role::Param);
  const auto r = testutil::randn(4 + classes, 0.6);
  P[net.a_] = r[0]; P[net.bt_] = r[1]; P[net.bk_] = r[2];
  for (int c = 0; c <= classes; ++c) P[net.by_ + c] = r[3 + c];
  m.arena().from_host(Role::Param, P);
  for (size_t i : {net.a_, net.bt_, net.bk_}) P[i] -= 0.15;
  m.arena().from_host(Role::Ema, P);
  return m;
}

// A teacher file (in double, so that hand computations stay exact): another linear model's EMA
// weights; returns them too.
std::vector<double> write_teacher(cpu::Backend<double>& be, const fs::path& file) {
  Model t = linear_model(be, 9);
  io::SaveOptions opt;
  opt.dtype = io::DType::F64;
  io::save_weights(file, t.net(), t.arena(), Role::Ema, opt);
  return t.arena().to_host(Role::Ema);
}

// Equal up to the float rounding of a checkpoint (teachers are saved as F32, like every checkpoint).
void check_near(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == Approx(b[i]).epsilon(1e-6).margin(1e-7));
}

double lin(const std::vector<double>& W, const LinearTestNet<double>& net, double x, double t, double k, int y) {
  return W[net.a_] * x + W[net.bt_] * t + W[net.bk_] * k + W[net.by_ + y];
}

}  // namespace

TEST_CASE("consistency distillation: targets match a hand computation", "[objectives][cd]") {
  cpu::Backend<double> be;
  const fs::path file = testutil::scratch_dir("objectives_cd") / "teacher.safetensors";
  const auto Wt = write_teacher(be, file);
  Model m = linear_model(be, 1);
  ConsistencyDistillationConfig c;
  c.denoise_timesteps = 8;
  c.step_clip = 1.0;  // small enough to clip some x'
  c.teacher = file.string();
  ConsistencyDistillation<Model> cd(c);
  cd.attach(m);
  const int B = 40, M = 8, L = 3;
  [[maybe_unused]] const auto [x1, y, seed, res] = objtest::run_step(cd, m, B, dim, classes);
  const auto& p = cd.plan();
  const auto W = m.arena().to_host(Role::Ema);
  const double a = 1 - 1e-5;
  int clipped = 0;
  for (int r = 0; r < B; ++r) {
    REQUIRE(std::fmod(p.t[r] * M, 1.0) == 0);
    REQUIRE(p.tp[r] == Approx(p.t[r] + 1.0 / M).margin(1e-7));
    for (int i = 0; i < dim; ++i) {
      const size_t j = size_t(r) * dim + i;
      const double x0 = philox_normal(seed, p.noise_stream, j), t = p.t[r], tp = p.tp[r];
      const double xt = (1 - a * t) * x0 + t * x1[j];
      const double raw = xt + lin(Wt, m.net(), xt, t, L, p.y[r]) / M, xp = std::clamp(raw, -1.0, 1.0);
      clipped += raw != xp;
      const double want = (xp + (1 - tp) * lin(W, m.net(), xp, tp, L, p.y[r]) - xt) / (1 - t);
      REQUIRE(cd.later_points()[j] == Approx(xp).margin(1e-12));
      REQUIRE(cd.targets()[j] == Approx(want).margin(1e-9));
    }
  }
  CHECK(clipped > 0);
}

TEST_CASE("progressive distillation: targets match a hand computation in every stage", "[objectives][pd]") {
  cpu::Backend<double> be;
  const fs::path file = testutil::scratch_dir("objectives_pd") / "teacher.safetensors";
  const auto Wt = write_teacher(be, file);
  const int B = 24, M = 8, L = 3;
  Model m = linear_model(be, 1);
  ProgressiveDistillationConfig c;
  c.denoise_timesteps = M;
  c.cfg_scale = 2.0;
  c.target_clip = 1.5;
  c.teacher = file.string();
  ProgressiveDistillation<Model> pd(c);
  pd.attach(m);
  for (int stage = 0; stage < L; ++stage) {
    pd.set_progress({int64_t(stage) * 4, 12});
    REQUIRE(pd.stage() == stage);
    // the teacher: the file in stage 0, then the model's EMA at the boundary it crossed
    const auto T = stage == 0 ? Wt : m.arena().to_host(Role::Ema);
    CHECK(pd.teacher().host() == T);
    [[maybe_unused]] const auto [x1, y, seed, res] = objtest::run_step(pd, m, B, dim, classes);
    const auto& p = pd.plan();
    const double a = 1 - 1e-5, w = 2.0, clip = 1.5, d = std::ldexp(1.0, -(L - 1 - stage));
    CHECK(p.n_cfg == (stage == 0 ? B : 0));  // guided in the first stage only
    for (int r = 0; r < B; ++r) {
      REQUIRE(p.half_d[r] == Approx(d / 2));
      REQUIRE(std::fmod(p.t[r], d) == 0);
      for (int i = 0; i < dim; ++i) {
        const size_t j = size_t(r) * dim + i;
        const double x0 = philox_normal(seed, p.noise_stream, j), t = p.t[r], hd = p.half_d[r];
        const double xt = (1 - a * t) * x0 + t * x1[j];
        auto guide = [&](double x, double tt) {
          const double vc = lin(T, m.net(), x, tt, L, p.y[r]);
          if (r >= p.n_cfg) return vc;
          const double vn = lin(T, m.net(), x, tt, L, classes);
          return vn + w * (vc - vn);
        };
        const double v1 = guide(xt, t), x2 = std::clamp(xt + hd * v1, -clip, clip);
        const double want = std::clamp((v1 + guide(x2, t + hd)) / 2, -clip, clip);
        REQUIRE(pd.inputs()[j] == Approx(xt).margin(1e-12));
        REQUIRE(pd.targets()[j] == Approx(want).margin(1e-9));
      }
    }
    // the next stage's teacher is this model's EMA: move it so the swap is visible
    auto E = m.arena().to_host(Role::Ema);
    E[m.net().a_] += 0.05;
    E[m.net().by_] -= 0.05;
    m.arena().from_host(Role::Ema, E);
  }
}

TEST_CASE("progressive distillation: the teacher swap at stage boundaries and the teacher in a checkpoint",
          "[objectives][pd]") {
  cpu::Backend<double> be;
  const fs::path dir = testutil::scratch_dir("objectives_pd_swap");
  const auto Wt = write_teacher(be, dir / "teacher.safetensors");
  Model m = linear_model(be, 1);
  ProgressiveDistillationConfig c;
  c.denoise_timesteps = 4;  // 2 stages
  c.teacher = (dir / "teacher.safetensors").string();
  c.teacher_ema = false;    // the raw weights become the teacher
  ProgressiveDistillation<Model> pd(c);
  pd.attach(m);
  pd.set_progress({4, 10});  // 10 / 2 = 5 steps a stage: step 4 is the last of stage 0
  CHECK(pd.teacher_stage() == 0);
  CHECK(pd.teacher().host() == Wt);
  pd.set_progress({5, 10});
  CHECK(pd.teacher_stage() == 1);
  CHECK(pd.teacher().host() == m.arena().to_host(Role::Param));
  // saved with the checkpoint, loaded by a fresh objective (whose own teacher is the file's)
  fs::create_directories(dir / "ckpt");
  pd.save_state((dir / "ckpt").string());
  ProgressiveDistillation<Model> again(c);
  again.attach(m);
  again.load_state((dir / "ckpt").string());
  CHECK(again.teacher_stage() == 1);
  check_near(again.teacher().host(), m.arena().to_host(Role::Param));
  CHECK_THROWS_WITH(again.load_state(dir.string()), Contains("has no teacher"));
}

TEST_CASE("a distillation without a teacher, with a missing one or one of another shape is a clear error",
          "[objectives][errors]") {
  cpu::Backend<double> be;
  const fs::path dir = testutil::scratch_dir("objectives_teacher_errors");
  ProgressiveDistillationConfig c;
  CHECK_THROWS_WITH(ProgressiveDistillation<Model>(c), Contains("--teacher PATH"));
  c.teacher = (dir / "nowhere").string();
  CHECK_THROWS_WITH(ProgressiveDistillation<Model>(c), Contains("does not exist"));
  ConsistencyDistillationConfig cd;
  cd.teacher = (dir / "nowhere").string();
  CHECK_THROWS_AS(ConsistencyDistillation<Model>(cd), FileError);
  // a teacher of another shape: dim 4 instead of 3
  Model other(be, LinearNetConfig{4, classes}, 0);
  io::save_weights(dir / "other.safetensors", other.net(), other.arena(), Role::Ema);
  c.teacher = (dir / "other.safetensors").string();
  ProgressiveDistillation<Model> pd(c);
  Model m = linear_model(be, 1);
  CHECK_THROWS_WITH(pd.attach(m), Contains("dim"));
}
