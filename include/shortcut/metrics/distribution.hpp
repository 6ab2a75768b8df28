// Distances between two point sets A [n, d] and B [m, d] (row-major float, each point weighted 1/n or
// 1/m), used to score samples of the 2-D demo against fresh data. Everything is computed in double
// and is deterministic: no draw depends on the inputs, the thread count or a global generator.
//
// Sliced Wasserstein distance of order p (p = 1 or 2):
//   SW_p(A, B) = ( (1/L) sum_{l=1..L} W_p^p(<theta_l, A>, <theta_l, B>) )^(1/p)
// where theta_l are L unit vectors, theta_l = g_l / |g_l| with g_l[k] = philox_normal(seed, 0x5715,
// l d + k) (uniform on the sphere, fixed by (seed, L, d)), and W_p^p between two 1-D empirical
// measures is the exact integral int_0^1 |F^-1(u) - G^-1(u)|^p du of their quantile functions (two
// step functions, so the integral is a finite sum; n and m may differ). Defaults: p = 1, L = 256,
// seed 0x5eed. SW_1 is in the units of the data (a shift of A by a vector s changes it by at most |s|).
//
// Maximum mean discrepancy with a Gaussian kernel k(x, y) = exp(-|x - y|^2 / (2 sigma^2)), the biased
// (V-statistic) estimate of its square:
//   MMD^2(A, B) = mean_{i,j} k(a_i, a_j) + mean_{i,j} k(b_i, b_j) - 2 mean_{i,j} k(a_i, b_j)
// This is the squared RKHS distance between the two empirical mean embeddings, so it is >= 0 and
// exactly 0 for identical sets (the unbiased U-statistic can go negative). Default sigma = 1, about
// half the per-axis spread of the toy distributions. Cost O((n + m)^2 d).
//
// on_board_fraction: the fraction of 2-D points on a filled square of the checkerboard
// (shortcut::data::on_board).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "shortcut/core/error.hpp"
#include "shortcut/core/rng.hpp"
#include "shortcut/data/toy2d.hpp"

namespace shortcut::metrics {

namespace detail {

// Number of points in a [n, d] set; names the argument in the error.
inline int64_t count_points(const char* fn, const char* arg, std::span<const float> x, int d) {
  if (d <= 0) throw ShapeError(cat(fn, ": dimension d must be positive, got ", d));
  if (x.size() % static_cast<size_t>(d) != 0)
    throw ShapeError(cat(fn, ": ", arg, " must be [n, ", d, "], but its ", x.size(), " values are not a multiple of ", d));
  if (x.empty()) throw ShapeError(cat(fn, ": ", arg, " is empty"));
  return static_cast<int64_t>(x.size() / d);
}

// Exact W_p^p between the uniform empirical measures on sorted x (n values) and sorted y (m values).
// Quantile breakpoints are at i / n and j / m; working in units of 1 / (n m) keeps them integers, so
// the merge never mis-orders two breakpoints through rounding.
inline double wasserstein_1d_pow(const std::vector<double>& x, const std::vector<double>& y, int p) {
  const int64_t n = static_cast<int64_t>(x.size()), m = static_cast<int64_t>(y.size());
  int64_t i = 0, j = 0, u = 0;  // u: current position in [0, n m]
  double s = 0;
  while (i < n && j < m) {
    int64_t next = std::min((i + 1) * m, (j + 1) * n);
    double diff = std::abs(x[i] - y[j]);
    s += static_cast<double>(next - u) * (p == 1 ? diff : diff * diff);
    u = next;
    if ((i + 1) * m == next) ++i;
    if ((j + 1) * n == next) ++j;
  }
  return s / (static_cast<double>(n) * static_cast<double>(m));
}

}  // namespace detail

struct SlicedWassersteinOptions {
  int projections = 256;
  int p = 1;                // 1 or 2
  uint64_t seed = 0x5eed;   // fixes the projection directions
  // The name a metrics file records, e.g. "sliced_wasserstein_1".
  std::string name() const { return cat("sliced_wasserstein_", p); }
};

// The L projection directions [L, d] (unit vectors), as defined at the top of this file.
inline std::vector<double> sliced_directions(int d, const SlicedWassersteinOptions& o) {
  std::vector<double> th(static_cast<size_t>(o.projections) * d);
  for (int l = 0; l < o.projections; ++l) {
    double nrm = 0;
    for (int k = 0; k < d; ++k) {
      double g = philox_normal(o.seed, 0x5715, static_cast<uint64_t>(l) * d + k);
      th[static_cast<size_t>(l) * d + k] = g;
      nrm += g * g;
    }
    nrm = std::sqrt(nrm);
    for (int k = 0; k < d; ++k) th[static_cast<size_t>(l) * d + k] /= nrm;
  }
  return th;
}

inline double sliced_wasserstein(std::span<const float> a, std::span<const float> b, int d,
                                 const SlicedWassersteinOptions& o = {}) {
  const int64_t n = detail::count_points("sliced_wasserstein", "A", a, d);
  const int64_t m = detail::count_points("sliced_wasserstein", "B", b, d);
  if (o.p != 1 && o.p != 2) throw ConfigError(cat("sliced_wasserstein: order p must be 1 or 2, got ", o.p));
  if (o.projections <= 0) throw ConfigError(cat("sliced_wasserstein: projections must be positive, got ", o.projections));
  const std::vector<double> th = sliced_directions(d, o);
  std::vector<double> pa(n), pb(m);
  double total = 0;
  for (int l = 0; l < o.projections; ++l) {
    const double* t = th.data() + static_cast<size_t>(l) * d;
    for (int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (int k = 0; k < d; ++k) s += t[k] * a[i * d + k];
      pa[i] = s;
    }
    for (int64_t i = 0; i < m; ++i) {
      double s = 0;
      for (int k = 0; k < d; ++k) s += t[k] * b[i * d + k];
      pb[i] = s;
    }
    std::sort(pa.begin(), pa.end());
    std::sort(pb.begin(), pb.end());
    total += detail::wasserstein_1d_pow(pa, pb, o.p);
  }
  double mean = total / o.projections;
  return o.p == 1 ? mean : std::sqrt(mean);
}

inline constexpr double kDefaultMmdBandwidth = 1.0;

// Biased squared MMD with the Gaussian kernel of bandwidth sigma (see the top of this file).
inline double mmd2_gaussian(std::span<const float> a, std::span<const float> b, int d,
                            double sigma = kDefaultMmdBandwidth) {
  const int64_t n = detail::count_points("mmd2_gaussian", "A", a, d);
  const int64_t m = detail::count_points("mmd2_gaussian", "B", b, d);
  if (!(sigma > 0) || !std::isfinite(sigma))
    throw ConfigError(cat("mmd2_gaussian: bandwidth sigma must be positive and finite, got ", sigma));
  const double g = -1.0 / (2.0 * sigma * sigma);
  // Mean kernel value between two sets; the within-set sums use symmetry (i < j twice plus the diagonal).
  auto mean_k = [&](std::span<const float> x, int64_t nx, std::span<const float> y, int64_t ny, bool same) {
    double s = 0;
    for (int64_t i = 0; i < nx; ++i) {
      const float* xi = x.data() + i * d;
      for (int64_t j = same ? i + 1 : 0; j < ny; ++j) {
        const float* yj = y.data() + j * d;
        double r2 = 0;
        for (int k = 0; k < d; ++k) {
          double t = static_cast<double>(xi[k]) - yj[k];
          r2 += t * t;
        }
        s += std::exp(g * r2);
      }
    }
    if (same) s = 2 * s + static_cast<double>(nx);
    return s / (static_cast<double>(nx) * static_cast<double>(ny));
  };
  double v = mean_k(a, n, a, n, true) + mean_k(b, m, b, m, true) - 2 * mean_k(a, n, b, m, false);
  return std::max(0.0, v);  // the exact value is >= 0; rounding alone can dip below
}

// Fraction of the points [n, 2] on a filled square of the checkerboard. Checkerboard data gives 1,
// points uniform on [-4, 4]^2 give 1/2, N(0, I) noise 0.49994 (half of its mass inside the board).
inline double on_board_fraction(std::span<const float> points) {
  const int64_t n = detail::count_points("on_board_fraction", "points", points, 2);
  int64_t hit = 0;
  for (int64_t i = 0; i < n; ++i) hit += data::on_board(points[2 * i], points[2 * i + 1]) ? 1 : 0;
  return static_cast<double>(hit) / static_cast<double>(n);
}

}  // namespace shortcut::metrics
