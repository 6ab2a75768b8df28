// The shortcut objective (SelfConsistencyLoss) on the CPU and its batch plan: batch construction
// (step-index blocks, label dropout, flow-matching rows), bootstrap targets and the loss step against a
// hand computation with the closed-form linear network, and config validation.
#include <catch2/catch.hpp>
#include <cmath>
#include <map>

#include "linear_test_net.hpp"
#include "shortcut/nn/classifier.hpp"
#include "shortcut/nn/dit.hpp"
#include "shortcut/nn/mlp_net.hpp"
#include "shortcut/train/adamw.hpp"
#include "shortcut/train/ema.hpp"
#include "shortcut/train/objectives/flow_matching.hpp"
#include "shortcut/train/ode_sampler.hpp"
#include "shortcut/train/self_consistency_loss.hpp"
#include "test_util.hpp"

using namespace shortcut;
using Net = LinearTestNet<double>;
using Model = ShortcutModel<Net>;

// The contracts (core/concepts.hpp) hold for the networks and models the library ships and tests; the
// classifier is a NamedNetwork (checkpoint I/O) but no velocity network.
static_assert(VelocityNetwork<Net> && VelocityModel<Model>);
static_assert(VelocityNetwork<nn::DiT<cpu::Backend<float>>> && VelocityNetwork<nn::MlpNet<cpu::Backend<double>>>);
static_assert(VelocityModel<ShortcutModel<nn::MlpNet<cpu::Backend<float>>>>);
static_assert(NamedNetwork<nn::Classifier<cpu::Backend<float>>> && !VelocityNetwork<nn::Classifier<cpu::Backend<float>>>);
static_assert(TrainingObjective<SelfConsistencyLoss<Model>, Model>);

TEST_CASE("batch plan: step-index blocks, t on the grid of d, flow rows", "[train][batch]") {
  ShortcutConfig cfg;  // M = 128, L = 7, fraction 1/4
  const int B = 256, classes = 10;
  std::vector<int32_t> y(B);
  for (int i = 0; i < B; ++i) y[i] = i % classes;
  Rng rng(uint64_t(testutil::gen()()));
  BatchPlan p = plan_batch(cfg, y.data(), B, classes, rng);
  REQUIRE(p.Bb == 64);
  const int L = 7, block = 64 / 7;  // 9 rows per level, 1 remainder row at k_b = 0
  std::map<int, int> count;
  for (int r = 0; r < p.Bb; ++r) {
    count[p.k_b[r]]++;
    double sections = std::ldexp(1.0, p.k_b[r]);
    CHECK(p.k[r] == float(p.k_b[r]));
    CHECK(p.half_d[r] == Approx(0.5 / sections));
    CHECK(p.t[r] >= 0);
    CHECK(p.t[r] < 1);
    CHECK(std::abs(p.t[r] * sections - std::round(p.t[r] * sections)) < 1e-6);  // t multiple of d
    CHECK(p.y[r] == y[r]);  // bootstrap rows keep their labels
    if (r < block * L) CHECK(p.k_b[r] == L - 1 - r / block);  // levels L-1 ... 0 in order
  }
  for (int kb = 1; kb < L; ++kb) CHECK(count[kb] == block);
  CHECK(count[0] == block + (64 - block * L));
  CHECK(p.n_cfg == block);
  for (int r = p.Bb; r < B; ++r) {
    CHECK(p.k[r] == float(L));
    CHECK(std::abs(p.t[r] * 128 - std::round(p.t[r] * 128)) < 1e-4);
    CHECK((p.y[r] == y[r] || p.y[r] == classes));
  }
}

TEST_CASE("batch plan: label dropout rate and unconditional null labels", "[train][batch]") {
  ShortcutConfig cfg;
  const int B = 512, classes = 10;
  std::vector<int32_t> y(B, 3);
  Rng rng(uint64_t(testutil::gen()()));
  int dropped = 0, flow = 0;
  for (int it = 0; it < 40; ++it) {
    BatchPlan p = plan_batch(cfg, y.data(), B, classes, rng);
    for (int r = p.Bb; r < B; ++r, ++flow) dropped += p.y[r] == classes;
  }
  double rate = double(dropped) / flow, sd = std::sqrt(0.1 * 0.9 / flow);
  CHECK(std::abs(rate - 0.1) < 5 * sd);
  // cfg_scale = 0 or a single class: every label is the null label
  ShortcutConfig u = cfg;
  u.cfg_scale = 0;
  std::vector<int32_t> y0(B, 0);  // the one class of a single-class data set
  for (auto& p : {plan_batch(u, y.data(), B, classes, rng), plan_batch(cfg, y0.data(), B, 1, rng)}) {
    for (int r = 0; r < B; ++r) CHECK(p.y[r] == p.y[0]);
    CHECK(p.n_cfg == 0);
  }
  CHECK(plan_batch(u, y.data(), B, classes, rng).y[0] == classes);
  CHECK(plan_batch(cfg, y0.data(), B, 1, rng).y[0] == 1);
  y[7] = 11;  // out of range: an error, not an out-of-bounds table read
  CHECK_THROWS_WITH(plan_batch(cfg, y.data(), B, classes, rng), Catch::Matchers::Contains("label 11 of row 7"));
}

TEST_CASE("flow-matching objective: k = L everywhere, t on the grid of M, the shortcut plan's flow rows",
          "[train][batch]") {
  FlowMatchingConfig cfg;
  std::vector<int32_t> y(64);
  for (int i = 0; i < 64; ++i) y[i] = i % 2;
  Rng rng(5);
  const FlowMatchingPlan p = flow_matching_plan(cfg, BatchSlice::all(64), y, 2, rng);
  int dropped = 0;
  for (int r = 0; r < 64; ++r) {
    CHECK(p.k[r] == 7.0f);
    CHECK(p.t[r] * 128 == std::floor(p.t[r] * 128));
    dropped += p.y[r] == 2;
  }
  CHECK(dropped > 0);
  CHECK(dropped < 20);
  CHECK(FlowMatching<Model>(cfg).bootstrap_rows(64) == 0);
  CHECK_FALSE(cfg.sampling().reads_d);
  CHECK(cfg.sampling().step_input_for(4) == 7.0);
  // the draws are those of the shortcut plan's flow rows: t, then the label drop, row by row
  Rng a(9), b(9);
  ShortcutConfig sc;
  const BatchPlan sp = plan_batch(sc, y.data(), 64, 2, a);
  for (int r = 0; r < sp.Bb; ++r) b.randint(int64_t(1) << sp.k_b[r]);
  const FlowMatchingPlan fp =
      flow_matching_plan(cfg, BatchSlice::all(64 - sp.Bb), HostSpan<const int32_t>(y).subspan(size_t(sp.Bb)), 2, b);
  for (int r = 0; r < 64 - sp.Bb; ++r) {
    CHECK(fp.t[r] == sp.t[sp.Bb + r]);
    CHECK(fp.y[r] == sp.y[sp.Bb + r]);
  }
  CHECK(fp.noise_stream == sp.noise_stream);
  // bad settings are refused, naming the field
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(FlowMatching<Model>(FlowMatchingConfig{.denoise_timesteps = 100}), Contains("power of two"));
  CHECK_THROWS_WITH(FlowMatching<Model>(FlowMatchingConfig{.class_dropout_prob = 1.5}), Contains("class_dropout_prob"));
  CHECK_THROWS_WITH(FlowMatching<Model>(FlowMatchingConfig{.cfg_scale = -1}), Contains("cfg_scale"));
  CHECK_THROWS_WITH(FlowMatching<Model>(cfg).validate(0), Contains("at least one row"));
}


// Shared: a linear test model with random coefficients.
static Model make_linear_model(cpu::Backend<double>& be, int dim, int classes) {
  Model m(be, LinearNetConfig{dim, classes}, 1);
  auto& net = m.net();
  auto P = m.arena().to_host(Role::Param);
  auto r = testutil::randn(P.size(), 0.7);
  P[net.a_] = r[0]; P[net.bt_] = r[1]; P[net.bk_] = 0.3 * r[2];
  for (int c = 0; c <= classes; ++c) P[net.by_ + c] = r[3 + c];
  m.arena().from_host(Role::Param, P);
  auto E = P;
  E[net.a_] += 0.1;  // EMA weights differ, so a test can tell which set made the targets
  m.arena().from_host(Role::Ema, E);
  return m;
}

TEST_CASE("bootstrap targets match a hand computation with a linear network", "[train][targets]") {
  cpu::Backend<double> be;
  const int dim = 3, classes = 2, B = 64;
  for (bool use_ema : {true, false}) {
    Model m = make_linear_model(be, dim, classes);
    ShortcutConfig cfg;
    cfg.denoise_timesteps = 8;  // L = 3
    cfg.cfg_scale = 2.5;
    cfg.bootstrap_ema = use_ema;
    cfg.target_clip = 1.5;  // small enough that clipping happens
    SelfConsistencyLoss<Model> loss(cfg);
    auto x1 = testutil::randn(B * dim, 2.0);
    std::vector<int32_t> y(B);
    for (int i = 0; i < B; ++i) y[i] = i % classes;
    Rng rng(uint64_t(testutil::gen()()));
    const uint64_t seed = rng.seed();
    loss.build(m, upload(be, x1), y, rng);
    const BatchPlan& p = loss.plan();
    auto W = m.arena().to_host(use_ema ? Role::Ema : Role::Param);
    auto& net = m.net();
    auto v = [&](double x, double t, double k, int lab) { return W[net.a_] * x + W[net.bt_] * t + W[net.bk_] * k + W[net.by_ + lab]; };
    const double a = 1 - 1e-5, w = 2.5, clip = 1.5;
    int guided = 0;
    for (int r = 0; r < B; ++r)
      for (int i = 0; i < dim; ++i) {
        size_t j = size_t(r) * dim + i;
        double x0 = philox_normal(seed, p.noise_stream, j);
        double xt = (1 - a * p.t[r]) * x0 + p.t[r] * x1[j];
        REQUIRE(loss.inputs()[j] == Approx(xt).margin(1e-12));
        double want;
        if (r >= p.Bb) {
          want = x1[j] - a * x0;
        } else {
          double kq = p.k_b[r] + 1, hd = p.half_d[r], t = p.t[r];
          auto guide = [&](double xx, double tt) {
            double vc = v(xx, tt, kq, p.y[r]);
            if (r >= p.n_cfg) return vc;
            return v(xx, tt, kq, classes) + w * (vc - v(xx, tt, kq, classes));
          };
          double v1 = guide(xt, t);
          double x2 = std::clamp(xt + hd * v1, -clip, clip);
          double v2 = guide(x2, t + hd);
          want = std::clamp((v1 + v2) / 2, -clip, clip);
          guided += r < p.n_cfg;
        }
        REQUIRE(loss.targets()[j] == Approx(want).margin(1e-12));
      }
    CHECK(guided == p.n_cfg * dim);
    CHECK(p.n_cfg == p.Bb / 3);
  }
}

TEST_CASE("loss step: value, parts and gradient of the linear model", "[train][loss]") {
  cpu::Backend<double> be;
  const int dim = 2, classes = 3, B = 32;
  Model m = make_linear_model(be, dim, classes);
  ShortcutConfig cfg;
  cfg.denoise_timesteps = 4;
  SelfConsistencyLoss<Model> loss(cfg);
  auto x1 = testutil::randn(B * dim);
  std::vector<int32_t> y(B, 1);
  Rng rng(7);
  m.arena().zero_grad();
  auto res = loss.step(m, upload(be, x1), y, rng);
  // recompute the loss from the stored inputs/targets with the raw weights
  auto P = m.arena().to_host(Role::Param);
  auto& net = m.net();
  const auto& p = loss.plan();
  double total = 0, flow = 0, boot = 0, ga = 0;
  for (int r = 0; r < B; ++r) {
    double rl = 0;
    for (int i = 0; i < dim; ++i) {
      size_t j = size_t(r) * dim + i;
      double pred = P[net.a_] * loss.inputs()[j] + P[net.bt_] * p.t[r] + P[net.bk_] * p.k[r] + P[net.by_ + p.y[r]];
      double e = pred - loss.targets()[j];
      rl += e * e / dim;
      ga += 2 * e / dim / B * loss.inputs()[j];
    }
    total += rl / B;
    (r < p.Bb ? boot : flow) += rl;
  }
  CHECK(res.loss == Approx(total).epsilon(1e-10));
  CHECK(res.bootstrap_loss == Approx(boot / p.Bb).epsilon(1e-10));
  CHECK(res.flow_loss == Approx(flow / (B - p.Bb)).epsilon(1e-10));
  CHECK(m.arena().to_host(Role::Grad)[net.a_] == Approx(ga).epsilon(1e-10));
}

TEST_CASE("configuration errors are clear", "[train][config]") {
  using Catch::Matchers::Contains;
  ShortcutConfig c;
  c.denoise_timesteps = 100;
  CHECK_THROWS_WITH(c.validate(), Contains("power of two"));
  c = {};
  c.bootstrap_fraction = 0;
  CHECK_THROWS_WITH(c.validate(), Contains("bootstrap_fraction"));
  c.bootstrap_fraction = 1;
  CHECK_THROWS_WITH(c.validate(), Contains("bootstrap_fraction"));
  c = {};
  CHECK_THROWS_WITH(c.validate(16), Contains("too small"));  // 4 bootstrap rows < 7 levels
  CHECK_NOTHROW(c.validate(28));
  CHECK_THROWS_WITH(nn::DiTConfig::preset("DiT-Q"), Contains("unknown DiT preset 'DiT-Q'"));
  cpu::Backend<double> be;
  OdeSampler<Model> s(SamplingSchedule{});
  CHECK_THROWS_WITH(s.check({3, 1.0, true}), Contains("power of two"));
  CHECK_THROWS_WITH(s.check({256, 1.0, true}), Contains("power of two in [1, 128]"));
  CHECK_THROWS_AS(EmaTracker(1.5), ConfigError);
  AdamWConfig oc;
  oc.lr = -1;
  CHECK_THROWS_AS(AdamW(oc), ConfigError);
  nn::DiTConfig d;
  d.image = 30; d.patch = 4;
  CHECK_THROWS_WITH(d.validate(), Contains("not a multiple of the patch size"));
}
