// The ODE sampler (OdeSampler) on the CPU against closed forms with the linear network: Euler steps
// and the step-size input k = log2 N, classifier-free guidance, and the noise interpolation.
#include <catch2/catch.hpp>
#include <cmath>

#include "linear_test_net.hpp"
#include "shortcut/train/ode_sampler.hpp"
#include "test_util.hpp"

using namespace shortcut;
using Net = LinearTestNet<double>;
using Model = ShortcutModel<Net>;

// Samples from host noise x with host labels y; returns the samples on the host.
static std::vector<double> sample_on(Model& m, OdeSampler<Model>& s, const std::vector<double>& x,
                                     const std::vector<int32_t>& y, const SamplerConfig& c) {
  auto& be = m.backend();
  auto dx = upload(be, x);
  s.sample(m, dx, upload(be, y), c);
  return download(be, dx);
}

TEST_CASE("sampler: Euler steps on a linear field match the closed form - k = log2 N", "[train][sampler]") {
  cpu::Backend<double> be;
  const int dim = 4, classes = 2, B = 3;
  Model m(be, LinearNetConfig{dim, classes}, 0);
  auto E = m.arena().to_host(Role::Ema);
  const double a = 0.8;
  E[m.net().a_] = a;  // v = a x: Euler with N steps gives (1 + a/N)^N x0
  m.arena().from_host(Role::Ema, E);
  OdeSampler<Model> s(SamplingSchedule{});
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
  OdeSampler<Model> s(SamplingSchedule{});
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
