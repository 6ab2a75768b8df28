// Helpers shared by the tests: random tensors and finite-difference gradient checks in double.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <system_error>
#include <vector>

namespace testutil {

// Fresh random inputs on every run, reproducible: the seed comes from SHORTCUT_TEST_SEED where set,
// else from std::random_device, and is printed once to stderr (CTest shows it with a failure's output).
inline uint64_t seed() {
  static const uint64_t s = [] {
    const char* env = std::getenv("SHORTCUT_TEST_SEED");
    const uint64_t v = env && *env ? std::strtoull(env, nullptr, 10) : uint64_t(std::random_device{}());
    std::fprintf(stderr, "testutil: random seed %llu (rerun with SHORTCUT_TEST_SEED=%llu)\n", (unsigned long long)v,
                 (unsigned long long)v);
    return v;
  }();
  return s;
}
inline std::mt19937_64& gen() {
  static std::mt19937_64 g(seed());
  return g;
}
template <class T = double>
std::vector<T> randn(size_t n, double sd = 1.0) {
  std::normal_distribution<double> d(0.0, sd);
  std::vector<T> v(n);
  for (auto& x : v) x = T(d(gen()));
  return v;
}
// A scratch folder for this test process, made on first use and removed with everything in it when
// the process exits (tests that write files must not leave them in /tmp run after run).
inline const std::filesystem::path& scratch_dir(const std::string& tag) {
  struct Dir {
    std::filesystem::path path;
    explicit Dir(const std::string& t) {
      path = std::filesystem::temp_directory_path() / (t + "_" + std::to_string(std::random_device{}()));
      std::filesystem::create_directories(path);
    }
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
  };
  static Dir d(tag);
  return d.path;
}

inline double dot(const std::vector<double>& a, const double* b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Compares an analytic gradient g of a scalar loss L with finite differences over the values
// x[0..n) (every element, or `max_checks` evenly spread ones). Returns max|g - fd| / max(max|fd|, floor),
// where each element's difference is first reduced by the finite difference's own noise:
//  - fd is the five-point stencil (8 (L(x+h) - L(x-h)) - (L(x+2h) - L(x-2h))) / 12h, whose O(h^4)
//    truncation error is negligible at h = 1e-4 even on random deep networks (the plain central
//    difference's h^2/6 L''' term is not);
//  - its rounding noise is not: L's value carries rounding of order eps times the sum of the
//    magnitudes it adds up (not eps |L|: the terms can cancel), amplified through the layers, and
//    divided by h. It is measured, not guessed: the stencil at h/2 has twice the noise and the same
//    (negligible) truncation, so |fd(h) - fd(h/2)| estimates it, and 3 times that is forgiven.
//    A wrong gradient differs by an amount of the gradient's own order, far above that noise.
// floor = 1e-4 (1 + |L|) keeps a tensor whose whole gradient is tiny (a gate near zero) from being
// judged relative to nothing.
inline double fd_error(double* x, size_t n, const double* g, const std::function<double()>& L,
                       size_t max_checks = 0, double h = 1e-4) {
  size_t step = (max_checks && n > max_checks) ? n / max_checks : 1;
  const double floor = 1e-4 * (1 + std::abs(L()));
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < n; i += step) {
    const double keep = x[i];
    auto at = [&](double d) {
      x[i] = keep + d;
      return L();
    };
    auto stencil = [&](double s) { return (8 * (at(s) - at(-s)) - (at(2 * s) - at(-2 * s))) / (12 * s); };
    const double fd = stencil(h), noise = std::abs(fd - stencil(h / 2));
    x[i] = keep;
    max_diff = std::max(max_diff, std::max(0.0, std::abs(fd - g[i]) - 3 * noise));
    max_ref = std::max(max_ref, std::abs(fd));
  }
  return max_diff / std::max(max_ref, floor);
}

// The forward-mode counterpart of fd_error: compares a tangent (the derivative of a vector function
// along a direction) with finite differences of f(s) = the function at inputs + s * direction, every
// output element, by the same five-point stencil and the same measured noise allowance. Returns
// max|tangent - fd| / max(max|fd|, 1e-6).
inline double tangent_error(const std::vector<double>& tangent,
                            const std::function<std::vector<double>(double)>& f, double h = 1e-4) {
  auto stencil = [&](double s) {
    auto p1 = f(s), m1 = f(-s), p2 = f(2 * s), m2 = f(-2 * s);
    std::vector<double> d(p1.size());
    for (size_t i = 0; i < d.size(); ++i) d[i] = (8 * (p1[i] - m1[i]) - (p2[i] - m2[i])) / (12 * s);
    return d;
  };
  const auto fd = stencil(h), fd2 = stencil(h / 2);
  if (fd.size() != tangent.size()) return 1e300;
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < fd.size(); ++i) {
    const double noise = std::abs(fd[i] - fd2[i]);
    max_diff = std::max(max_diff, std::max(0.0, std::abs(fd[i] - tangent[i]) - 3 * noise));
    max_ref = std::max(max_ref, std::abs(fd[i]));
  }
  return max_diff / std::max(max_ref, 1e-6);
}

inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace testutil
