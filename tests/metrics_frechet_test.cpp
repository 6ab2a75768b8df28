// Fréchet distance: identical sets, the closed form for diagonal covariances, an independent check
// of Tr (S1 S2)^(1/2) through the eigenvalues of the non-symmetric product, singular covariances,
// shifts, sampled Gaussians, and errors.
#include <catch2/catch.hpp>

#include <Eigen/Eigenvalues>
#include <cmath>

#include "data_test_util.hpp"
#include "shortcut/metrics/frechet.hpp"
#include "test_util.hpp"

using namespace shortcut;
using metrics::frechet_distance;
using metrics::gaussian_stats;
using metrics::GaussianStats;

namespace {
Eigen::MatrixXd random_spd(int d, double ridge) {
  auto v = testutil::randn(d * d);
  Eigen::MatrixXd A = Eigen::Map<Eigen::MatrixXd>(v.data(), d, d);
  return A * A.transpose() + ridge * Eigen::MatrixXd::Identity(d, d);
}
}  // namespace

TEST_CASE("frechet: identical sets give ~0, also with fewer samples than features", "[metrics][frechet]") {
  for (auto [n, d] : {std::pair{500, 8}, std::pair{6, 20}}) {
    INFO("n " << n << ", d " << d);
    auto a = testutil::randn<float>(static_cast<size_t>(n) * d, 3.0);
    double fd = frechet_distance(a, a, d);
    double scale = gaussian_stats(a, d).cov.trace();
    CHECK(fd >= 0);
    CHECK(fd <= 1e-9 * scale);
  }
}

TEST_CASE("frechet: diagonal covariances give |mu1 - mu2|^2 + sum (s1 - s2)^2", "[metrics][frechet]") {
  const int d = 6;
  GaussianStats a, b;
  a.mean = Eigen::VectorXd::Map(testutil::randn(d).data(), d);
  b.mean = Eigen::VectorXd::Map(testutil::randn(d).data(), d);
  Eigen::VectorXd s1(d), s2(d);
  for (int i = 0; i < d; ++i) s1[i] = 0.2 + i, s2[i] = 3.0 - 0.4 * i;
  a.cov = s1.cwiseAbs2().asDiagonal();
  b.cov = s2.cwiseAbs2().asDiagonal();
  double want = (a.mean - b.mean).squaredNorm() + (s1 - s2).squaredNorm();
  CHECK(frechet_distance(a, b) == Approx(want).epsilon(1e-12));
  CHECK(frechet_distance(b, a) == Approx(want).epsilon(1e-12));
  // 1-D: (mu1 - mu2)^2 + (sigma1 - sigma2)^2
  GaussianStats p, q;
  p.mean = Eigen::VectorXd::Constant(1, 1.0);
  q.mean = Eigen::VectorXd::Constant(1, -2.0);
  p.cov = Eigen::MatrixXd::Constant(1, 1, 4.0);
  q.cov = Eigen::MatrixXd::Constant(1, 1, 0.25);
  CHECK(frechet_distance(p, q) == Approx(9.0 + 1.5 * 1.5).epsilon(1e-12));
}

TEST_CASE("frechet: full covariances agree with the eigenvalues of S1 S2", "[metrics][frechet]") {
  for (int d : {2, 5, 16}) {
    INFO("d " << d);
    GaussianStats a, b;
    a.mean = Eigen::VectorXd::Map(testutil::randn(d).data(), d);
    b.mean = Eigen::VectorXd::Map(testutil::randn(d).data(), d);
    a.cov = random_spd(d, 0.1);
    b.cov = random_spd(d, 0.1);
    // S1 S2 is similar to a symmetric PSD matrix, so its eigenvalues are real and >= 0.
    Eigen::EigenSolver<Eigen::MatrixXd> es(a.cov * b.cov, false);
    double tr = 0;
    for (int i = 0; i < d; ++i) tr += std::sqrt(std::max(0.0, es.eigenvalues()[i].real()));
    double want = (a.mean - b.mean).squaredNorm() + a.cov.trace() + b.cov.trace() - 2 * tr;
    CHECK(frechet_distance(a, b) == Approx(want).epsilon(1e-8).margin(1e-9 * (a.cov.trace() + b.cov.trace())));
    CHECK(frechet_distance(a, b) == Approx(frechet_distance(b, a)).epsilon(1e-8));
    // A rotation of both feature spaces leaves it unchanged.
    Eigen::HouseholderQR<Eigen::MatrixXd> qr(random_spd(d, 1.0));
    Eigen::MatrixXd Q = qr.householderQ();
    GaussianStats ra{0, Q * a.mean, Q * a.cov * Q.transpose()}, rb{0, Q * b.mean, Q * b.cov * Q.transpose()};
    CHECK(frechet_distance(ra, rb) == Approx(frechet_distance(a, b)).epsilon(1e-8));
  }
}

TEST_CASE("frechet: a shift s of one set adds |s|^2 and grows with the shift", "[metrics][frechet]") {
  const int d = 4, n = 300;
  auto a = testutil::randn(static_cast<size_t>(n) * d);
  double prev = -1;
  for (double len : {0.0, 0.5, 1.0, 2.0, 4.0}) {
    auto b = a;
    for (int i = 0; i < n; ++i) b[i * d + 1] += len;
    double fd = frechet_distance(std::span<const double>(a), std::span<const double>(b), d);
    CHECK(fd == Approx(len * len).margin(1e-9));
    CHECK(fd > prev);
    prev = fd;
  }
}

TEST_CASE("frechet: samples of two Gaussians estimate the closed form", "[metrics][frechet]") {
  // N(0, I) vs N((1, 0, 0), 4 I) in 3-D: FD = 1 + 3 (2 - 1)^2 = 4. With n = 50000 per set the
  // estimate's standard deviation is ~0.03.
  const int d = 3, n = 50000;
  auto a = testutil::randn<float>(static_cast<size_t>(n) * d), b = testutil::randn<float>(static_cast<size_t>(n) * d, 2.0);
  for (int i = 0; i < n; ++i) b[i * d] += 1.0f;
  CHECK(frechet_distance(a, b, d) == Approx(4.0).margin(0.15));
  GaussianStats s = gaussian_stats(a, d);
  CHECK(s.n == n);
  CHECK(s.dim() == d);
  CHECK((s.cov - Eigen::MatrixXd::Identity(d, d)).cwiseAbs().maxCoeff() < 0.05);
}

TEST_CASE("frechet: non-finite features give NaN and bad shapes throw", "[metrics][frechet]") {
  auto a = testutil::randn<float>(40);
  auto b = a;
  b[3] = std::numeric_limits<float>::quiet_NaN();
  CHECK(std::isnan(frechet_distance(a, b, 4)));
  datatest::require_throws<ShapeError>([&] { gaussian_stats(std::vector<float>(4, 1.0f), 4); }, "at least 2");
  datatest::require_throws<ShapeError>([&] { gaussian_stats(std::vector<float>(10, 1.0f), 4); }, "not a multiple");
  datatest::require_throws<ShapeError>([&] { frechet_distance(gaussian_stats(a, 4), gaussian_stats(a, 5)); }, "different shapes");
}
