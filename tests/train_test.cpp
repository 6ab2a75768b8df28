// The training method on the CPU: batch construction, bootstrap targets against a hand computation,
// the sampler against closed forms, AdamW and EMA against their formulas, and config validation.
#include <catch2/catch.hpp>
#include <cmath>
#include <map>

#include "linear_test_net.hpp"
#include "shortcut/nn/classifier.hpp"
#include "shortcut/nn/dit.hpp"
#include "shortcut/nn/mlp_net.hpp"
#include "shortcut/train/adamw.hpp"
#include "shortcut/train/ema.hpp"
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

TEST_CASE("flow-matching objective: no bootstrap rows, k = L everywhere", "[train][batch]") {
  ShortcutConfig cfg;
  cfg.objective = Objective::FlowMatching;
  std::vector<int32_t> y(8, 0);
  Rng rng(5);
  BatchPlan p = plan_batch(cfg, y.data(), 8, 2, rng);
  CHECK(p.Bb == 0);
  for (int r = 0; r < 8; ++r) CHECK(p.k[r] == 7.0f);
}

// Samples from host noise x with host labels y; returns the samples on the host.
static std::vector<double> sample_on(Model& m, OdeSampler<Model>& s, const std::vector<double>& x,
                                     const std::vector<int32_t>& y, const SamplerConfig& c) {
  auto& be = m.backend();
  auto dx = upload(be, x);
  s.sample(m, dx, upload(be, y), c);
  return download(be, dx);
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

TEST_CASE("sampler: Euler steps on a linear field match the closed form; k = log2 N", "[train][sampler]") {
  cpu::Backend<double> be;
  const int dim = 4, classes = 2, B = 3;
  Model m(be, LinearNetConfig{dim, classes}, 0);
  auto E = m.arena().to_host(Role::Ema);
  const double a = 0.8;
  E[m.net().a_] = a;  // v = a x: Euler with N steps gives (1 + a/N)^N x0
  m.arena().from_host(Role::Ema, E);
  ShortcutConfig cfg;
  OdeSampler<Model> s(cfg);
  for (int N : {1, 2, 4, 8, 128}) {
    auto x0 = testutil::randn(B * dim);
    auto x = x0;
    std::vector<int32_t> y(B, 0);
    m.net().seen_k.clear();
    x = sample_on(m, s, x, y, {N, 1.0, true});
    for (size_t i = 0; i < x.size(); ++i) CHECK(x[i] == Approx(std::pow(1 + a / N, N) * x0[i]).epsilon(1e-12));
    for (double k : m.net().seen_k) CHECK(k == std::log2(N));
    CHECK(m.net().seen_k.size() == size_t(N * B));
  }
  // N = 128 is close to the exact flow x0 e^a
  auto x0 = testutil::randn(dim), x = x0;
  std::vector<int32_t> y1(1, 1);
  x = sample_on(m, s, x, y1, {128, 1.0, true});
  for (int i = 0; i < dim; ++i) CHECK(x[i] == Approx(std::exp(a) * x0[i]).epsilon(0.01));
}

TEST_CASE("sampler: guidance combines the conditional and null velocities", "[train][sampler]") {
  cpu::Backend<double> be;
  const int dim = 2, classes = 3;
  Model m(be, LinearNetConfig{dim, classes}, 0);
  auto E = m.arena().to_host(Role::Ema);
  auto& net = m.net();
  for (int c = 0; c <= classes; ++c) E[net.by_ + c] = 0.5 * c - 0.2;  // constant velocity per label
  m.arena().from_host(Role::Ema, E);
  OdeSampler<Model> s(ShortcutConfig{});
  for (double w : {1.0, 3.0}) {
    std::vector<double> x(dim, 0.25);
    std::vector<int32_t> y(1, 1);
    x = sample_on(m, s, x, y, {4, w, true});
    double vn = E[net.by_ + classes], vc = E[net.by_ + 1];
    for (double v : x) CHECK(v == Approx(0.25 + vn + w * (vc - vn)).epsilon(1e-12));
  }
}

TEST_CASE("noise interpolation follows n xa + sqrt(1 - n^2) xb", "[train][sampler]") {
  cpu::Backend<double> be;
  auto xa = testutil::randn(10), xb = testutil::randn(10);
  std::vector<double> x(10);
  for (double n : {0.0, 0.3, 1.0}) {
    OdeSampler<Model>::interpolate_noise(be, x.data(), xa.data(), xb.data(), n, 10);
    for (int i = 0; i < 10; ++i) CHECK(x[i] == Approx(n * xa[i] + std::sqrt(1 - n * n) * xb[i]).margin(1e-14));
  }
  CHECK_THROWS_AS(OdeSampler<Model>::interpolate_noise(be, x.data(), xa.data(), xb.data(), 1.5, 10), ConfigError);
}

TEST_CASE("AdamW and EMA follow their formulas", "[train][optim]") {
  cpu::Backend<double> be;
  Model m(be, LinearNetConfig{2, 2}, 0);
  auto& A = m.arena();
  const size_t n = A.size();
  auto p0 = testutil::randn(n);
  A.from_host(Role::Param, p0);
  EmaTracker ema(0.9);
  ema.reset(A);
  AdamWConfig oc;
  oc.lr = 0.01;
  AdamW opt(oc);
  std::vector<double> p = p0, mm(n, 0), vv(n, 0), e = p0;
  for (int step = 1; step <= 3; ++step) {
    auto g = testutil::randn(n);
    A.from_host(Role::Grad, g);
    opt.step(A);
    ema.update(A);
    for (size_t i = 0; i < n; ++i) {
      p[i] -= 0.01 * 0.1 * p[i];
      mm[i] = 0.9 * mm[i] + 0.1 * g[i];
      vv[i] = 0.999 * vv[i] + 0.001 * g[i] * g[i];
      double mh = mm[i] / (1 - std::pow(0.9, step)), vh = vv[i] / (1 - std::pow(0.999, step));
      p[i] -= 0.01 * mh / (std::sqrt(vh) + 1e-8);
      e[i] = 0.9 * e[i] + 0.1 * p[i];
    }
  }
  auto P = A.to_host(Role::Param), Ev = A.to_host(Role::Ema);
  for (size_t i = 0; i < n; ++i) {
    CHECK(P[i] == Approx(p[i]).epsilon(1e-12));
    CHECK(Ev[i] == Approx(e[i]).epsilon(1e-12));
  }
  CHECK(opt.step_count() == 3);
}

TEST_CASE("learning-rate warm-up and cosine schedule", "[train][optim]") {
  AdamWConfig c;
  c.lr = 1.0; c.warmup_steps = 10; c.cosine_steps = 100; c.min_lr = 0.1;
  AdamW o(c);
  CHECK(o.lr_at(1) == Approx(0.1));
  CHECK(o.lr_at(10) == Approx(1.0));
  CHECK(o.lr_at(60) == Approx(0.1 + 0.45 * (1 + std::cos(M_PI * 0.5))));
  CHECK(o.lr_at(110) == Approx(0.1));
  CHECK(o.lr_at(500) == Approx(0.1));
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
  OdeSampler<Model> s(ShortcutConfig{});
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
