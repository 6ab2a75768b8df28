// Sliced Wasserstein distance and Gaussian-kernel MMD between point sets: zero on identical sets,
// closed forms for shifted sets, symmetry, growth with the shift, unequal set sizes, and argument errors.
#include <catch2/catch.hpp>

#include <cmath>

#include "data_test_util.hpp"
#include "shortcut/data/toy2d.hpp"
#include "shortcut/metrics/distribution.hpp"
#include "test_util.hpp"

using namespace shortcut;
using metrics::mmd2_gaussian;
using metrics::sliced_wasserstein;
using metrics::SlicedWassersteinOptions;

namespace {
std::vector<float> shifted(const std::vector<float>& a, int d, const std::vector<double>& s) {
  std::vector<float> b(a);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(b[i] + s[i % d]);
  return b;
}
}  // namespace

TEST_CASE("sliced Wasserstein: 0 on identical sets, symmetric, deterministic", "[metrics][sw]") {
  auto a = testutil::randn<float>(2 * 700), b = testutil::randn<float>(2 * 500, 2.0);
  for (int p : {1, 2}) {
    SlicedWassersteinOptions o;
    o.p = p;
    CHECK(sliced_wasserstein(a, a, 2, o) == 0.0);
    double ab = sliced_wasserstein(a, b, 2, o), ba = sliced_wasserstein(b, a, 2, o);
    CHECK(ab > 0.1);
    CHECK(ab == Approx(ba).epsilon(1e-12));
    CHECK(sliced_wasserstein(a, b, 2, o) == ab);  // no hidden state
  }
  SlicedWassersteinOptions o;
  CHECK(o.name() == "sliced_wasserstein_1");
  // Another seed or number of projections moves the value only by the Monte-Carlo error over directions.
  SlicedWassersteinOptions o2;
  o2.seed = 99;
  o2.projections = 1024;
  double v1 = sliced_wasserstein(a, b, 2, o), v2 = sliced_wasserstein(a, b, 2, o2);
  CHECK(v1 == Approx(v2).epsilon(0.1));
}

TEST_CASE("sliced Wasserstein: a shift s gives the closed form mean |<theta, s>| (p=1), rms (p=2)", "[metrics][sw]") {
  const int d = 3;
  auto a = testutil::randn<float>(d * 400);
  SlicedWassersteinOptions o1, o2;
  o2.p = 2;
  auto th = metrics::sliced_directions(d, o1);
  double prev1 = 0, prev2 = 0;
  for (double len : {0.25, 0.5, 1.0, 2.0, 4.0}) {
    std::vector<double> s{len * 0.6, -len * 0.8, len * 0.0};
    auto b = shifted(a, d, s);
    // Projecting a shifted set shifts the 1-D distribution by <theta, s>, whose W_p is |<theta, s>|.
    double m1 = 0, m2 = 0;
    for (int l = 0; l < o1.projections; ++l) {
      double t = th[l * d] * s[0] + th[l * d + 1] * s[1] + th[l * d + 2] * s[2];
      m1 += std::abs(t);
      m2 += t * t;
    }
    m1 /= o1.projections;
    m2 = std::sqrt(m2 / o1.projections);
    double sw1 = sliced_wasserstein(a, b, d, o1), sw2 = sliced_wasserstein(a, b, d, o2);
    // float storage of the shifted points limits the agreement to ~1e-6 relative
    CHECK(sw1 == Approx(m1).epsilon(1e-5));
    CHECK(sw2 == Approx(m2).epsilon(1e-5));
    // Over random directions in 3-D, E|cos| = 1/2 and E cos^2 = 1/3.
    CHECK(sw1 == Approx(len * 0.5).epsilon(0.1));
    CHECK(sw2 == Approx(len / std::sqrt(3.0)).epsilon(0.1));
    CHECK(sw1 > prev1);
    CHECK(sw2 > prev2);
    prev1 = sw1;
    prev2 = sw2;
  }
}

TEST_CASE("sliced Wasserstein: exact for sets of different sizes", "[metrics][sw]") {
  // 1-D: uniform on {0, 1} vs uniform on {0, 0.5, 1}: the quantile functions differ by 0.5 on
  // [1/3, 2/3), so W_1 = 1/6 and W_2 = sqrt(0.25 / 3); in 1-D every direction is +-1.
  std::vector<float> a{0, 1}, b{0, 0.5f, 1};
  SlicedWassersteinOptions o2;
  o2.p = 2;
  CHECK(sliced_wasserstein(a, b, 1) == Approx(1.0 / 6).epsilon(1e-12));
  CHECK(sliced_wasserstein(a, b, 1, o2) == Approx(std::sqrt(0.25 / 3)).epsilon(1e-12));
  // The same empirical measure with every point repeated is at distance 0.
  auto x = testutil::randn<float>(2 * 301);
  std::vector<float> xx(x);
  xx.insert(xx.end(), x.begin(), x.end());
  CHECK(sliced_wasserstein(x, xx, 2) < 1e-12);
}

TEST_CASE("sliced Wasserstein / MMD: fresh data of the same distribution is closer than another distribution",
          "[metrics][sw][mmd]") {
  Rng r(21);
  auto c1 = data::sample_toy2d("checkerboard", 2000, r), c2 = data::sample_toy2d("checkerboard", 2000, r);
  auto g = data::sample_toy2d("8gaussians", 2000, r);
  CHECK(sliced_wasserstein(c1, c2, 2) * 3 < sliced_wasserstein(c1, g, 2));
  CHECK(mmd2_gaussian(c1, c2, 2) * 3 < mmd2_gaussian(c1, g, 2));
}

TEST_CASE("MMD: 0 on identical sets, closed form for single points, grows with the shift, symmetric",
          "[metrics][mmd]") {
  auto a = testutil::randn<float>(2 * 400), b = testutil::randn<float>(2 * 300, 1.5);
  CHECK(mmd2_gaussian(a, a, 2) < 1e-12);
  CHECK(mmd2_gaussian(a, b, 2) == Approx(mmd2_gaussian(b, a, 2)).epsilon(1e-12));
  // One point each: MMD^2 = 2 - 2 exp(-|x - y|^2 / (2 sigma^2)).
  std::vector<float> x{1, 2}, y{-1, 0.5f};
  for (double sigma : {0.5, 1.0, 3.0})
    CHECK(mmd2_gaussian(x, y, 2, sigma) == Approx(2 - 2 * std::exp(-(4 + 2.25) / (2 * sigma * sigma))).epsilon(1e-12));
  double prev = 0;
  for (double len : {0.25, 0.5, 1.0, 2.0, 4.0}) {
    double m = mmd2_gaussian(a, shifted(a, 2, {len, 0}), 2);
    CHECK(m > prev);
    prev = m;
  }
  // Bounded by 2 (the kernel is in [0, 1]); far-apart sets approach it.
  CHECK(mmd2_gaussian(a, shifted(a, 2, {100, 0}), 2) <= 2.0);
}

TEST_CASE("distribution metrics: shape and option errors", "[metrics]") {
  std::vector<float> a{1, 2, 3, 4}, odd{1, 2, 3}, empty;
  datatest::require_throws<ShapeError>([&] { sliced_wasserstein(a, odd, 2); }, "not a multiple of 2");
  datatest::require_throws<ShapeError>([&] { sliced_wasserstein(a, empty, 2); }, "empty");
  datatest::require_throws<ShapeError>([&] { mmd2_gaussian(a, a, 0); }, "positive");
  SlicedWassersteinOptions o;
  o.p = 3;
  datatest::require_throws<ConfigError>([&] { sliced_wasserstein(a, a, 2, o); }, "1 or 2");
  o.p = 1;
  o.projections = 0;
  datatest::require_throws<ConfigError>([&] { sliced_wasserstein(a, a, 2, o); }, "projections");
  datatest::require_throws<ConfigError>([&] { mmd2_gaussian(a, a, 2, 0.0); }, "bandwidth");
}
