// The 2-D toy distributions: determinism from the counter-based Rng, the checkerboard's definition,
// and each distribution's shape and moments.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>

#include "data_test_util.hpp"
#include "shortcut/data/toy2d.hpp"
#include "shortcut/metrics/distribution.hpp"

using namespace shortcut;
using shortcut::data::on_board;
using shortcut::data::sample_toy2d;
using shortcut::data::toy2d_names;

namespace {
struct Moments {
  double mx = 0, my = 0, sx = 0, sy = 0, max_abs = 0;
};
Moments moments(const std::vector<float>& p) {
  Moments m;
  const size_t n = p.size() / 2;
  for (size_t i = 0; i < n; ++i) m.mx += p[2 * i], m.my += p[2 * i + 1];
  m.mx /= n;
  m.my /= n;
  for (size_t i = 0; i < n; ++i) {
    m.sx += (p[2 * i] - m.mx) * (p[2 * i] - m.mx);
    m.sy += (p[2 * i + 1] - m.my) * (p[2 * i + 1] - m.my);
    m.max_abs = std::max({m.max_abs, std::abs(double(p[2 * i])), std::abs(double(p[2 * i + 1]))});
  }
  m.sx = std::sqrt(m.sx / n);
  m.sy = std::sqrt(m.sy / n);
  return m;
}
}  // namespace

TEST_CASE("toy2d: a seed and Rng position fix the points and each call takes one stream", "[data][toy2d]") {
  for (const auto& name : toy2d_names()) {
    INFO(name);
    Rng a(7), b(7), c(8);
    auto p1 = sample_toy2d(name, 500, a);
    auto p2 = sample_toy2d(name, 500, b);
    REQUIRE(p1.size() == 1000);
    CHECK(p1 == p2);
    CHECK(a.position() == 1);
    CHECK(sample_toy2d(name, 500, c) != p1);  // another seed
    CHECK(sample_toy2d(name, 500, a) != p1);  // the next stream
    // A prefix of a larger draw from the same position equals the smaller draw.
    Rng d(7);
    auto big = sample_toy2d(name, 800, d);
    CHECK(std::equal(p1.begin(), p1.end(), big.begin()));
    // Replaying from a stored position.
    Rng e(7, 5), f(7);
    f.set_position(5);
    CHECK(sample_toy2d(name, 50, e) == sample_toy2d(name, 50, f));
    for (float v : p1) CHECK(std::isfinite(v));
  }
  Rng r(1);
  CHECK(sample_toy2d("spiral", 0, r).empty());
}

TEST_CASE("toy2d: unknown names are a ConfigError that lists the valid names", "[data][toy2d]") {
  Rng r(0);
  for (const auto& name : toy2d_names()) datatest::require_throws<ConfigError>([&] { sample_toy2d("checker", 10, r); }, name);
  datatest::require_throws<ConfigError>([&] { sample_toy2d("checker", 10, r); }, "'checker'");
  datatest::require_throws<ConfigError>([&] { sample_toy2d("spiral", -1, r); }, "negative");
  CHECK(data::is_toy2d_name("two_moons"));
  CHECK_FALSE(data::is_toy2d_name("moons"));
}

TEST_CASE("toy2d: on_board follows the 4x4 board of side-2 squares on [-4, 4]^2", "[data][toy2d]") {
  CHECK(on_board(-3, -3));   // square (0, 0): filled
  CHECK_FALSE(on_board(-1, -3));  // (1, 0)
  CHECK(on_board(-1, -1));   // (1, 1)
  CHECK(on_board(1, 1));     // (2, 2)
  CHECK(on_board(3, -1));    // (3, 1)
  CHECK_FALSE(on_board(1, -1));   // (2, 1)
  CHECK(on_board(-4, -4));   // lower edges belong to the board
  CHECK_FALSE(on_board(4, 0));    // upper edge x = 4 is off
  CHECK_FALSE(on_board(-5, -3));  // outside
  CHECK_FALSE(on_board(std::numeric_limits<double>::quiet_NaN(), 0));
  // Exactly 8 of the 16 square centres are filled, two per row and per column.
  int filled = 0;
  for (int i = 0; i < 4; ++i) {
    int row = 0;
    for (int j = 0; j < 4; ++j) row += on_board(-3 + 2 * j, -3 + 2 * i);
    CHECK(row == 2);
    filled += row;
  }
  CHECK(filled == 8);
}

TEST_CASE("toy2d: on_board fraction is 1 for checkerboard data and about 1/2 for noise", "[data][toy2d]") {
  Rng r(3);
  const int n = 20000;
  auto board = sample_toy2d("checkerboard", n, r);
  CHECK(metrics::on_board_fraction(board) == 1.0);
  // N(0, I): exact fraction 0.49994; the 4-sigma band of a binomial with n = 20000 is +-0.0142.
  std::vector<float> noise(2 * n);
  for (int i = 0; i < 2 * n; ++i) noise[i] = philox_normal(11, 0, i);
  CHECK(std::abs(metrics::on_board_fraction(noise) - 0.49994) < 0.0142);
  // Uniform on [-4, 4]^2: exactly 1/2 in expectation.
  std::vector<float> uni(2 * n);
  for (int i = 0; i < 2 * n; ++i) uni[i] = -4.0f + 8.0f * philox_uniform(12, 0, i);
  CHECK(std::abs(metrics::on_board_fraction(uni) - 0.5) < 0.0142);
  // The other distributions put clearly less than all of their mass on it.
  for (const char* name : {"8gaussians", "two_moons", "spiral"}) {
    INFO(name);
    CHECK(metrics::on_board_fraction(sample_toy2d(name, n, r)) < 0.8);
  }
  datatest::require_throws<ShapeError>([] { metrics::on_board_fraction(std::vector<float>{1, 2, 3}); }, "2");
}

TEST_CASE("toy2d: each distribution is centred with the documented spread", "[data][toy2d]") {
  Rng r(5);
  const int n = 40000;
  struct Want { const char* name; double sx, sy, max_abs; };
  // Standard deviations derived in toy2d.hpp; tolerances are ~5 standard errors at n = 40000.
  const Want wants[] = {{"checkerboard", 2.3094, 2.3094, 4.0},
                        {"8gaussians", 2.0310, 2.0310, 5.5},
                        {"two_moons", 0, 0, 4.0},
                        {"spiral", 0, 0, 4.0}};
  for (const auto& w : wants) {
    INFO(w.name);
    auto p = sample_toy2d(w.name, n, r);
    Moments m = moments(p);
    CHECK(std::abs(m.mx) < 0.06);
    CHECK(std::abs(m.my) < 0.06);
    CHECK(m.sx > 0.9);
    CHECK(m.sy > 0.9);
    CHECK(m.sx < 2.4);
    CHECK(m.sy < 2.4);
    CHECK(m.max_abs <= w.max_abs);
    if (w.sx > 0) {
      CHECK(m.sx == Approx(w.sx).margin(0.03));
      CHECK(m.sy == Approx(w.sy).margin(0.03));
    }
  }
}

TEST_CASE("toy2d: 8gaussians has 8 equal modes at radius 2 sqrt 2, the spiral's radius is at most pi", "[data][toy2d]") {
  Rng r(9);
  const int n = 40000;
  auto p = sample_toy2d("8gaussians", n, r);
  std::vector<int> count(8, 0);
  double rad = 0;
  for (int i = 0; i < n; ++i) {
    double x = p[2 * i], y = p[2 * i + 1];
    double a = std::atan2(y, x);
    int k = static_cast<int>(std::lround(a / (2 * M_PI / 8))) & 7;
    ++count[k];
    rad += std::hypot(x, y);
  }
  for (int c : count) CHECK(std::abs(c - n / 8.0) < 5 * std::sqrt(n / 8.0));
  CHECK(rad / n == Approx(2 * std::sqrt(2.0)).margin(0.05));

  auto s = sample_toy2d("spiral", n, r);
  double rmax = 0;
  for (int i = 0; i < n; ++i) rmax = std::max(rmax, std::hypot(double(s[2 * i]), double(s[2 * i + 1])));
  CHECK(rmax < M_PI + 0.6);  // arm radius phi / 3 <= pi, plus N(0, 0.1^2) noise
  CHECK(rmax > M_PI - 0.2);

  // two_moons: the upper moon's points (before centring) lie at unit distance from (0, 0), i.e. at
  // distance 2 from (-1, -0.5) after p -> 2 (p - (1/2, 1/4)); about half of the points do.
  auto t = sample_toy2d("two_moons", n, r);
  int near = 0;
  for (int i = 0; i < n; ++i) near += std::abs(std::hypot(t[2 * i] + 1.0, t[2 * i + 1] + 0.5) - 2.0) < 0.3;
  CHECK(near > 0.4 * n);  // 87% of the upper moon (half the points) is within 1.5 noise sd
}
