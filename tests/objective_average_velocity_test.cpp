// MeanFlow and α-Flow (DESIGN.md §8) against hand computations: with the closed-form linear network
// (u = a x + bt t + bk d + by[y], so du/dt along (ṽ, 1, -1) is a ṽ + bt - bk) the targets, the
// loss and the adaptively weighted gradient; on a real network (the MLP, random weights) the JVP
// target against central differences of the network along the trajectory; the (t, d) sampler's
// distribution against a quadrature of the logit-normal density.
#include <catch2/catch.hpp>

#include <shortcut/shortcut.hpp>

#include <cmath>

#include "linear_test_net.hpp"
#include "objective_test_util.hpp"
#include "test_util.hpp"

using namespace shortcut;
using Model = ShortcutModel<LinearTestNet<double>>;
using Be = cpu::Backend<double>;

static_assert(TangentModel<Model>);
static_assert(TrainingObjective<MeanFlow<Model>, Model>);
static_assert(TrainingObjective<AlphaFlow<Model>, Model>);
static_assert(TangentModel<ShortcutModel<nn::DiT<cpu::Backend<float>>>>);

namespace {

const double kA = 1.0 - 1e-5;  // v = x1 - kA x0, x_t = (1 - kA t) x0 + t x1

struct Linear {
  double a, bt, bk;
  std::vector<double> by;
};

Linear random_linear(Model& m, int classes) {
  auto& L = m.net();
  Linear p{0.7, -0.4, 0.9, testutil::randn(size_t(classes + 1))};
  auto P = m.arena().to_host(Role::Param);
  P[L.a_] = p.a; P[L.bt_] = p.bt; P[L.bk_] = p.bk;
  for (int c = 0; c <= classes; ++c) P[L.by_ + c] = p.by[c];
  m.arena().from_host(Role::Param, P);
  return p;
}

// The velocity v of each row, recovered from x_t, x1 and t.
std::vector<double> row_velocity(const std::vector<double>& xt, const std::vector<double>& x1,
                                 const std::vector<float>& t, int dim) {
  std::vector<double> v(xt.size());
  for (size_t r = 0; r < t.size(); ++r)
    for (int i = 0; i < dim; ++i) {
      const size_t j = r * dim + i;
      const double x0 = (xt[j] - t[r] * x1[j]) / (1 - kA * t[r]);
      v[j] = x1[j] - kA * x0;
    }
  return v;
}

}  // namespace

TEST_CASE("MeanFlow with the linear network: targets, loss and weighted gradient by hand", "[objectives][meanflow]") {
  Be be;
  const int dim = 3, classes = 2, B = 16;
  Model m(be, {dim, classes});
  const Linear p = random_linear(m, classes);
  MeanFlowConfig c;
  c.denoise_timesteps = 16;
  c.norm_p = 0.75;  // not 1, so that a wrong exponent shows
  MeanFlow<Model> obj(c);
  const auto d = objtest::run_step(obj, m, B, dim, classes);
  const auto& plan = obj.plan();
  const int Ba = c.average_rows(B);
  REQUIRE(Ba == 4);
  std::vector<double> xt(obj.inputs(), obj.inputs() + B * dim), tg(obj.targets(), obj.targets() + B * dim);
  const auto v = row_velocity(xt, d.x1, plan.t, dim);
  double loss = 0, boot = 0, flow = 0, ga = 0, gbt = 0, gbk = 0;
  std::vector<double> gby(classes + 1, 0.0);
  for (int r = 0; r < B; ++r) {
    CHECK((r < Ba ? plan.d[r] > 0 : plan.d[r] == 0));
    CHECK(plan.t[r] >= 0);
    CHECK(plan.t[r] + plan.d[r] <= 1.0f);
    double sq = 0;
    std::vector<double> delta(dim);
    for (int i = 0; i < dim; ++i) {
      const size_t j = size_t(r) * dim + i;
      const double dudt = p.a * v[j] + p.bt - p.bk;
      const double target = v[j] + plan.d[r] * dudt;
      CHECK(tg[j] == Approx(target).margin(1e-9));
      const double u = p.a * xt[j] + p.bt * plan.t[r] + p.bk * plan.d[r] + p.by[plan.y[r]];
      delta[i] = u - target;
      sq += delta[i] * delta[i];
    }
    const double w = std::pow(sq + c.norm_c, -c.norm_p);
    loss += sq / dim;  // reported: the plain mean squared error; the weight acts on the gradient
    (r < Ba ? boot : flow) += sq / dim;
    for (int i = 0; i < dim; ++i) {
      const double g = 2 * w * delta[i] / B;  // the gradient through u only (the target is held)
      ga += g * xt[size_t(r) * dim + i];
      gbt += g * plan.t[r];
      gbk += g * plan.d[r];
      gby[plan.y[r]] += g;
    }
  }
  CHECK(d.result.loss == Approx(loss / B).epsilon(1e-9));
  CHECK(d.result.bootstrap_loss == Approx(boot / Ba).epsilon(1e-9));
  CHECK(d.result.flow_loss == Approx(flow / (B - Ba)).epsilon(1e-9));
  const auto G = m.arena().to_host(Role::Grad);
  const auto& L = m.net();
  CHECK(G[L.a_] == Approx(ga).epsilon(1e-9));
  CHECK(G[L.bt_] == Approx(gbt).epsilon(1e-9));
  CHECK(G[L.bk_] == Approx(gbk).epsilon(1e-9));
  for (int k = 0; k <= classes; ++k) CHECK(G[L.by_ + k] == Approx(gby[k]).margin(1e-12));
  // the sampler feeds the step size itself
  CHECK(obj.sampling().step_input == StepInput::Size);
  CHECK(obj.sampling().step_input_for(4) == 0.25);
  CHECK(obj.to_json().at("name") == "meanflow");
}

TEST_CASE("MeanFlow's guided target mixes the conditional and null velocities on the guided rows only",
          "[objectives][meanflow]") {
  Be be;
  const int dim = 2, classes = 3, B = 32;
  Model m(be, {dim, classes});
  const Linear p = random_linear(m, classes);
  MeanFlowConfig c;
  c.denoise_timesteps = 16;
  c.omega = 1.5;
  c.kappa = 0.3;
  c.guidance_t_min = 0.2;
  c.guidance_t_max = 0.9;
  c.class_dropout_prob = 0.25;
  MeanFlow<Model> obj(c);
  const auto d = objtest::run_step(obj, m, B, dim, classes);
  const auto& plan = obj.plan();
  std::vector<double> xt(obj.inputs(), obj.inputs() + B * dim), tg(obj.targets(), obj.targets() + B * dim);
  const auto v = row_velocity(xt, d.x1, plan.t, dim);
  int guided = 0, dropped = 0;
  for (int r = 0; r < B; ++r) {
    const bool drop = plan.y[r] == classes;
    const bool in = plan.t[r] >= c.guidance_t_min && plan.t[r] <= c.guidance_t_max;
    CHECK(bool(plan.guided[r]) == (!drop && in));
    guided += plan.guided[r];
    dropped += drop;
    for (int i = 0; i < dim; ++i) {
      const size_t j = size_t(r) * dim + i;
      double vt = v[j];
      if (plan.guided[r]) {
        const double base = p.a * xt[j] + p.bt * plan.t[r];  // u(x_t, t, 0 | label) = base + by[label]
        vt = c.omega * v[j] + c.kappa * (base + p.by[plan.y[r]]) + (1 - c.omega - c.kappa) * (base + p.by[classes]);
      }
      CHECK(tg[j] == Approx(vt + plan.d[r] * (p.a * vt + p.bt - p.bk)).margin(1e-9));
    }
  }
  INFO("guided rows " << guided << ", dropped " << dropped);
  CHECK(guided > 0);
  CHECK(guided < B);
}

TEST_CASE("MeanFlow's target on the MLP network: the JVP equals central differences along the trajectory",
          "[objectives][meanflow][tangent]") {
  Be be;
  nn::MlpNetConfig nc;
  nc.dim = 2; nc.hidden = 16; nc.depth = 2; nc.classes = 1; nc.fourier = 8; nc.t_scale = 2.0;
  ShortcutModel<nn::MlpNet<Be>> m(be, nc, 3);
  m.arena().from_host(Role::Param, testutil::randn(m.arena().size(), 0.3));
  MeanFlowConfig c;
  c.denoise_timesteps = 16;
  c.flow_fraction = 0.25;
  MeanFlow<ShortcutModel<nn::MlpNet<Be>>> obj(c);
  const int B = 8, dim = 2;
  const auto d = objtest::run_step(obj, m, B, dim, 1);
  const auto& plan = obj.plan();
  std::vector<double> xt(obj.inputs(), obj.inputs() + B * dim), tg(obj.targets(), obj.targets() + B * dim);
  const auto v = row_velocity(xt, d.x1, plan.t, dim);
  // u along the trajectory with its end fixed: (x_t + e v, t + e, d - e)
  auto u_at = [&](double e) {
    std::vector<double> x(xt.size()), t(B), dd(B), out(xt.size());
    for (size_t j = 0; j < x.size(); ++j) x[j] = xt[j] + e * v[j];
    for (int r = 0; r < B; ++r) { t[r] = plan.t[r] + e; dd[r] = plan.d[r] - e; }
    const std::vector<int32_t> y(B, 1);
    m.velocity(out.data(), x.data(), t.data(), dd.data(), y.data(), B, 1.0, Role::Param);
    return out;
  };
  const double h = 1e-4;
  const auto up = u_at(h), um = u_at(-h), up2 = u_at(2 * h), um2 = u_at(-2 * h);
  double worst = 0, scale = 0;
  for (int r = 0; r < B; ++r)
    for (int i = 0; i < dim; ++i) {
      const size_t j = size_t(r) * dim + i;
      const double dudt = (8 * (up[j] - um[j]) - (up2[j] - um2[j])) / (12 * h);
      worst = std::max(worst, std::abs(tg[j] - (v[j] + plan.d[r] * dudt)));
      scale = std::max(scale, std::abs(plan.d[r] * dudt));
    }
  INFO("max |target - (v + d du/dt by differences)| " << worst << ", largest d du/dt " << scale);
  CHECK(scale > 1e-2);  // the derivative term is really there
  CHECK(worst < 1e-7 * (1 + scale));
}

TEST_CASE("α-Flow: the two-piece target by hand, α = 1 is flow matching, α = 0 is MeanFlow", "[objectives][alpha_flow]") {
  Be be;
  const int dim = 2, classes = 2, B = 16;
  AlphaFlowConfig c;
  c.denoise_timesteps = 16;
  c.alpha_start = 0.2;
  c.alpha_end = 0.6;
  SECTION("the curriculum") {
    CHECK(c.alpha({0, 100}) == 1.0);
    CHECK(c.alpha({19, 100}) == 1.0);
    CHECK(c.alpha({40, 100}) == Approx(0.5));
    CHECK(c.alpha({30, 100}) == Approx(0.5 * (1 + std::cos(M_PI / 4))));
    CHECK(c.alpha({60, 100}) == 0.0);
    CHECK(c.alpha({99, 100}) == 0.0);
  }
  for (const int64_t step : {int64_t(10), int64_t(35), int64_t(80)}) {
    Model m(be, {dim, classes});
    const Linear p = random_linear(m, classes);
    AlphaFlow<Model> obj(c);
    obj.set_progress({step, 100});
    const double alpha = obj.alpha();
    const auto d = objtest::run_step(obj, m, B, dim, classes);
    const auto& plan = obj.plan();
    std::vector<double> xt(obj.inputs(), obj.inputs() + B * dim), tg(obj.targets(), obj.targets() + B * dim);
    const auto v = row_velocity(xt, d.x1, plan.t, dim);
    INFO("step " << step << ", alpha " << alpha);
    for (int r = 0; r < B; ++r)
      for (int i = 0; i < dim; ++i) {
        const size_t j = size_t(r) * dim + i;
        const double dr = plan.d[r];
        double want = v[j];
        if (alpha == 0) {
          want = v[j] + dr * (p.a * v[j] + p.bt - p.bk);
        } else if (dr > 0) {
          const double uq = p.a * (xt[j] + alpha * dr * v[j]) + p.bt * (plan.t[r] + alpha * dr) +
                            p.bk * (1 - alpha) * dr + p.by[plan.y[r]];
          want = alpha * v[j] + (1 - alpha) * uq;
        }
        CHECK(tg[j] == Approx(want).margin(1e-9));
      }
  }
}

TEST_CASE("the (t, d) sampler: logit-normal ends, the flow fraction, t + d <= 1, label dropout",
          "[objectives][meanflow]") {
  AverageVelocityConfig c;
  const int B = 40000, classes = 10;
  std::vector<int32_t> y(B, 3);
  Rng rng(uint64_t(testutil::gen()()));
  const auto p = average_velocity_plan(c, BatchSlice::all(B), y, classes, rng);
  const int Ba = c.average_rows(B);
  CHECK(Ba == 10000);
  double st = 0, sd = 0, st_all = 0;
  int dropped = 0;
  for (int r = 0; r < B; ++r) {
    REQUIRE(p.t[r] >= 0);
    REQUIRE(p.t[r] + p.d[r] <= 1.0f);
    if (r < Ba) { st += p.t[r]; sd += p.d[r]; }
    else REQUIRE(p.d[r] == 0);
    st_all += p.t[r];
    dropped += p.y[r] == classes;
  }
  // E[max(a, b)] and E|a - b| for a, b iid sigmoid(N(-0.4, 1)), by quadrature on a fine grid
  const int K = 2000;
  std::vector<double> s(K), w(K);
  double wsum = 0;
  for (int i = 0; i < K; ++i) {
    const double z = -8 + 16.0 * (i + 0.5) / K;
    s[i] = 1 / (1 + std::exp(-(c.logit_mean + c.logit_std * z)));
    w[i] = std::exp(-0.5 * z * z);
    wsum += w[i];
  }
  double emax = 0, ediff = 0;
  for (int i = 0; i < K; ++i)
    for (int j = 0; j < K; ++j) {
      const double ww = w[i] * w[j] / (wsum * wsum);
      emax += ww * std::max(s[i], s[j]);
      ediff += ww * std::abs(s[i] - s[j]);
    }
  // standard errors: sd(t), sd(d) < 0.3, so 4 sigma over 10000 rows is about 0.012
  CHECK(st / Ba == Approx(1 - emax).margin(0.012));
  CHECK(sd / Ba == Approx(ediff).margin(0.012));
  CHECK(st_all / B == Approx(1 - emax).margin(0.006));
  CHECK(double(dropped) / B == Approx(c.class_dropout_prob).margin(0.006));
  // the uniform option: E[1 - max(a, b)] = E|a - b| = 1/3 for a, b ~ U(0, 1)
  c.uniform_time = true;
  const auto u = average_velocity_plan(c, BatchSlice::all(B), y, classes, rng);
  double ut = 0, ud = 0;
  for (int r = 0; r < Ba; ++r) { ut += u.t[r]; ud += u.d[r]; }
  CHECK(ut / Ba == Approx(1.0 / 3).margin(0.01));
  CHECK(ud / Ba == Approx(1.0 / 3).margin(0.01));
}

TEST_CASE("average-velocity configs refuse bad settings, and the shortcut loss refuses a d step input",
          "[objectives][meanflow]") {
  auto bad = [](auto edit) {
    MeanFlowConfig c;
    edit(c);
    return c;
  };
  CHECK_THROWS_WITH(bad([](auto& c) { c.flow_fraction = 1; }).validate(), Catch::Contains("flow_fraction"));
  CHECK_THROWS_WITH(bad([](auto& c) { c.norm_c = 0; }).validate(), Catch::Contains("norm_c"));
  CHECK_THROWS_WITH(bad([](auto& c) { c.kappa = 1; }).validate(), Catch::Contains("kappa"));
  CHECK_THROWS_WITH(bad([](auto& c) { c.guidance_t_min = 0.8; c.guidance_t_max = 0.2; }).validate(),
                    Catch::Contains("guidance interval"));
  CHECK_THROWS_WITH(bad([](auto& c) { c.logit_std = 0; }).validate(), Catch::Contains("logit_std"));
  AlphaFlowConfig a;
  a.alpha_start = 0.9;
  a.alpha_end = 0.5;
  CHECK_THROWS_WITH(a.validate(), Catch::Contains("alpha_start"));
  // the field round-trips and is absent from an index model's metadata
  CHECK_FALSE(ShortcutConfig{}.sampling().to_json().contains("step_input"));
  CHECK(SamplingSchedule::from_json(MeanFlowConfig{}.sampling().to_json()).step_input == StepInput::Size);
  CHECK_THROWS_WITH(SamplingSchedule::from_json({{"step_input", "k"}}), Catch::Contains("step_input"));
}
