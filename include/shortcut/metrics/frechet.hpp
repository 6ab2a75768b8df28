// Fréchet distance between two feature sets, each summarised by a Gaussian (mean, covariance):
//   FD = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))
// (the squared 2-Wasserstein distance between N(mu1, S1) and N(mu2, S2); the formula of FID, applied
// here to whatever feature extractor the caller uses). Covariances use the n - 1 denominator, as
// numpy.cov and the reference FID code do.
//
// Tr (S1 S2)^(1/2) is computed from the symmetric form: with R = S1^(1/2) (symmetric, from an
// eigendecomposition), S1 S2 = R (R S2 R) R^-1 is similar to the symmetric PSD matrix R S2 R, so
// Tr (S1 S2)^(1/2) = sum_i sqrt(lambda_i(R S2 R)). Both eigendecompositions are self-adjoint solves in
// double, which stay accurate for singular covariances (fewer samples than features), unlike a
// general square root of the non-symmetric S1 S2; eigenvalues that rounding makes slightly negative
// are clamped to 0, and so is the result (the exact FD is >= 0).
#pragma once
#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>

#include "shortcut/core/error.hpp"

namespace shortcut::metrics {

struct GaussianStats {
  int64_t n = 0;          // number of feature vectors summarised
  Eigen::VectorXd mean;   // [d]
  Eigen::MatrixXd cov;    // [d, d], denominator n - 1
  int dim() const { return static_cast<int>(mean.size()); }
};

namespace detail {

template <class T>
GaussianStats gaussian_stats_impl(std::span<const T> x, int d) {
  if (d <= 0) throw ShapeError(cat("gaussian_stats: feature dimension must be positive, got ", d));
  if (x.size() % static_cast<size_t>(d) != 0)
    throw ShapeError(cat("gaussian_stats: features must be [n, ", d, "], but ", x.size(), " values are not a multiple of ", d));
  const int64_t n = static_cast<int64_t>(x.size() / d);
  if (n < 2) throw ShapeError(cat("gaussian_stats: a covariance needs at least 2 feature vectors, got ", n));
  using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  Eigen::Map<const RowMat> X(x.data(), n, d);
  Eigen::MatrixXd Xd = X.template cast<double>();
  GaussianStats s;
  s.n = n;
  s.mean = Xd.colwise().mean().transpose();
  Xd.rowwise() -= s.mean.transpose();
  s.cov = (Xd.transpose() * Xd) / static_cast<double>(n - 1);
  return s;
}

}  // namespace detail

// Mean and covariance of features [n, d] (row-major), accumulated in double.
inline GaussianStats gaussian_stats(std::span<const float> x, int d) { return detail::gaussian_stats_impl(x, d); }
inline GaussianStats gaussian_stats(std::span<const double> x, int d) { return detail::gaussian_stats_impl(x, d); }

// Tr (S1 S2)^(1/2) for symmetric PSD S1, S2 by the symmetric form described above.
inline double trace_sqrt_product(const Eigen::MatrixXd& S1, const Eigen::MatrixXd& S2) {
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> e1(0.5 * (S1 + S1.transpose()));
  if (e1.info() != Eigen::Success) throw Error("frechet_distance: eigendecomposition of the first covariance failed");
  Eigen::VectorXd r = e1.eigenvalues().cwiseMax(0.0).cwiseSqrt();
  Eigen::MatrixXd R = e1.eigenvectors() * r.asDiagonal() * e1.eigenvectors().transpose();
  Eigen::MatrixXd M = R * S2 * R;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> e2(0.5 * (M + M.transpose()), Eigen::EigenvaluesOnly);
  if (e2.info() != Eigen::Success) throw Error("frechet_distance: eigendecomposition of S1^1/2 S2 S1^1/2 failed");
  return e2.eigenvalues().cwiseMax(0.0).cwiseSqrt().sum();
}

// FD between two Gaussians. Non-finite statistics (e.g. features of diverged samples) give NaN rather
// than an exception, so that an evaluation over several step counts still reports the others.
inline double frechet_distance(const GaussianStats& a, const GaussianStats& b) {
  const int d = a.dim();
  if (b.dim() != d || a.cov.rows() != d || a.cov.cols() != d || b.cov.rows() != d || b.cov.cols() != d)
    throw ShapeError(cat("frechet_distance: statistics of different shapes: mean ", a.dim(), " cov [", a.cov.rows(), ", ",
                         a.cov.cols(), "] vs mean ", b.dim(), " cov [", b.cov.rows(), ", ", b.cov.cols(), "]"));
  if (!a.mean.allFinite() || !b.mean.allFinite() || !a.cov.allFinite() || !b.cov.allFinite())
    return std::numeric_limits<double>::quiet_NaN();
  double fd = (a.mean - b.mean).squaredNorm() + a.cov.trace() + b.cov.trace() - 2.0 * trace_sqrt_product(a.cov, b.cov);
  return std::max(0.0, fd);
}

// FD between two feature sets [n, d] and [m, d].
inline double frechet_distance(std::span<const float> a, std::span<const float> b, int d) {
  return frechet_distance(gaussian_stats(a, d), gaussian_stats(b, d));
}
inline double frechet_distance(std::span<const double> a, std::span<const double> b, int d) {
  return frechet_distance(gaussian_stats(a, d), gaussian_stats(b, d));
}

}  // namespace shortcut::metrics
