// Helpers shared by the tests: random tensors and finite-difference gradient checks in double.
#pragma once
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <system_error>
#include <vector>

namespace testutil {

inline std::mt19937_64& gen() {
  // Fresh inputs on every run (the seed is printed on failure through Catch's INFO in the callers).
  static std::mt19937_64 g(std::random_device{}());
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

// Compares an analytic gradient g of a scalar loss L with central differences over the values
// x[0..n) (every element, or `max_checks` evenly spread ones). Returns max|g - fd| / max(max|fd|, floor):
// floor = 1e-4 (1 + |L|) keeps a tensor whose whole gradient is tiny (a gate near zero) from turning
// the differences' own rounding noise (~1e-16 |L| / h ~ 1e-11 |L|) into a large relative error;
// at the tests' 1e-6 bound it still rejects any absolute error above ~1e-10 (1 + |L|).
inline double fd_error(double* x, size_t n, const double* g, const std::function<double()>& L,
                       size_t max_checks = 0, double h = 1e-5) {
  size_t step = (max_checks && n > max_checks) ? n / max_checks : 1;
  const double floor = 1e-4 * (1 + std::abs(L()));
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < n; i += step) {
    double keep = x[i];
    x[i] = keep + h;
    double lp = L();
    x[i] = keep - h;
    double lm = L();
    x[i] = keep;
    double fd = (lp - lm) / (2 * h);
    max_diff = std::max(max_diff, std::abs(fd - g[i]));
    max_ref = std::max(max_ref, std::abs(fd));
  }
  return max_diff / std::max(max_ref, floor);
}

inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

}  // namespace testutil
