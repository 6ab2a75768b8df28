// Helpers of the GPU tests: run the same op sequence on any backend (host vectors of double in,
// host vectors of double out), poison outputs with NaN, and compare against a reference by
// ||out - ref|| / ||ref||.
//
// Tolerances (fp32 kernels against the double CPU backend on fresh random inputs; METHOD.md: fp32
// arithmetic lands far under 1e-3, TF32 near 3e-4):
//  - kElementwiseTol 1e-5: a handful of fp32 roundings per element (about 1e-7 each) plus the few-ulp
//    error of expf/tanhf/sinf; 100x margin, and far under any indexing mistake (order 1).
//  - kReductionTol 1e-4: sums of up to ~10^4 fp32 terms in an order unlike the reference's (dot
//    products of matmul and attention, LayerNorm statistics, sums over tokens); typical error is
//    1e-6, and 1e-4 still fails TF32 products (3e-4) where full fp32 was asked for.
#pragma once
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <iostream>
#include <limits>
#include <string>
#include <vector>

#include "shortcut/cuda.hpp"
#include "test_util.hpp"

namespace gputest {

inline constexpr double kElementwiseTol = 1e-5;
inline constexpr double kReductionTol = 1e-4;

using Ref = shortcut::cpu::Backend<double>;
using Gpu = shortcut::cuda::Backend;

// One GPU backend for the whole test program (a stream and a cuBLAS handle).
inline Gpu& gpu() {
  static Gpu be;
  return be;
}

template <class Be>
using Buf = typename Be::template Buffer<typename Be::Scalar>;

// Host doubles to a device buffer of the backend's scalar, and back (named apart from
// shortcut::upload/download, which keep the element type).
template <class Be>
Buf<Be> upload_d(const Be& be, const std::vector<double>& h) {
  using S = typename Be::Scalar;
  std::vector<S> tmp(h.begin(), h.end());
  Buf<Be> b(h.size());
  be.to_device(b.data(), tmp.data(), tmp.size());
  return b;
}
template <class Be>
typename Be::template Buffer<int32_t> upload_ids(const Be& be, const std::vector<int32_t>& h) {
  typename Be::template Buffer<int32_t> b(h.size());
  be.to_device(b.data(), h.data(), h.size());
  return b;
}
template <class Be, class B>
std::vector<double> download_d(const Be& be, const B& b) {
  std::vector<typename B::value_type> tmp(b.size());
  be.to_host(tmp.data(), b.data(), b.size());
  return std::vector<double>(tmp.begin(), tmp.end());
}
// A buffer whose every element is NaN: whatever the op does not write stays NaN and fails the check.
template <class Be>
Buf<Be> poisoned(const Be& be, size_t n) {
  using S = typename Be::Scalar;
  Buf<Be> b(n);
  be.fill(b.data(), std::numeric_limits<S>::quiet_NaN(), n);
  return b;
}

// ||got - ref|| / ||ref|| (absolute where ref is all zero). A position that is NaN in ref must be
// NaN in got (an element that neither backend writes); any other non-finite value in got is +inf.
inline double rel_err(const std::vector<double>& got, const std::vector<double>& ref) {
  if (got.size() != ref.size()) return std::numeric_limits<double>::infinity();
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(ref[i])) {
      if (!std::isnan(got[i])) return std::numeric_limits<double>::infinity();
      continue;
    }
    if (!std::isfinite(got[i])) return std::numeric_limits<double>::infinity();
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

// Checks one output and prints its error, so that a GPU run's log holds every number.
inline void check_close(const std::string& what, const std::vector<double>& got, const std::vector<double>& ref,
                        double tol) {
  const double e = rel_err(got, ref);
  std::cout << "  " << what << ": rel err " << e << " (tol " << tol << ")\n";
  INFO(what << ": rel err " << e << " (tol " << tol << ", " << got.size() << " values)");
  CHECK(e < tol);
}

// The GPU's result against the double CPU reference, with the tolerance the float CPU backend's own
// error sets: ten times it, and at least 2e-4.
inline void check_close_to_fp32(const std::string& what, const std::vector<double>& got,
                                const std::vector<double>& fp32, const std::vector<double>& ref) {
  check_close(what, got, ref, std::max(2e-4, 10 * rel_err(fp32, ref)));
}

inline std::vector<double> uniform(size_t n, double lo, double hi) {
  std::uniform_real_distribution<double> d(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = d(testutil::gen());
  return v;
}
inline std::vector<int32_t> random_ids(size_t n, int rows) {
  std::uniform_int_distribution<int32_t> d(0, rows - 1);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = d(testutil::gen());
  return v;
}

// One weight set (or the gradients) of an arena, as host doubles.
template <class Be>
std::vector<double> host_doubles(const shortcut::ParamArena<Be>& a, shortcut::Role r) {
  const auto v = a.to_host(r);
  return std::vector<double>(v.begin(), v.end());
}

// Named outputs of one run, as host doubles.
using Outputs = std::vector<std::pair<std::string, std::vector<double>>>;

// How far the GPU may be from the double reference, relative to how far the same math done in fp32 on
// the CPU is (flash-attention's rule: the kernel's error at most a small multiple of the naive fp32
// error). It matters where fp32 itself is poor — e.g. GELU at x = -4 cancels 1 + tanh(u) ~ 1e-4, so a
// one-element output is off by ~1e-4 relative in any fp32 code — and leaves the fixed tolerances in
// force everywhere else. 8: the device's expf/tanhf may round differently by a few ulps.
inline constexpr double kFp32ErrorMultiple = 8;

// Runs `run` (a generic lambda taking a backend) on the double CPU reference, on the float CPU backend
// and on the GPU (the shared backend unless another is given), and checks every named output against
// the reference, within max(tol, kFp32ErrorMultiple x the float CPU backend's error).
template <class F>
void compare_backends(const std::string& label, F&& run, double tol, Gpu* g = nullptr) {
  Ref ref;
  shortcut::cpu::Backend<float> f32;
  const Outputs want = run(ref);
  const Outputs single = run(f32);
  const Outputs got = run(g ? *g : gpu());
  REQUIRE(want.size() == got.size());
  REQUIRE(want.size() == single.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const double fp32 = rel_err(single[i].second, want[i].second);
    check_close(label + " " + want[i].first, got[i].second, want[i].second,
                std::max(tol, std::isfinite(fp32) ? kFp32ErrorMultiple * fp32 : tol));
  }
}

// ---- bf16 data: host doubles rounded to bf16, to and from bf16 device buffers --------------------
inline double round_bf16(double x) { return double(__bfloat162float(__float2bfloat16(float(x)))); }
inline std::vector<double> rounded(std::vector<double> x) {
  for (double& v : x) v = round_bf16(v);
  return x;
}
inline shortcut::cuda::DeviceBuffer<__nv_bfloat16> upload_bf16(const std::vector<double>& x) {
  std::vector<__nv_bfloat16> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = __float2bfloat16(float(x[i]));
  shortcut::cuda::DeviceBuffer<__nv_bfloat16> d(x.size());
  gpu().to_device(d.data(), h.data(), h.size());
  return d;
}
inline std::vector<double> download_bf16(const shortcut::cuda::DeviceBuffer<__nv_bfloat16>& d) {
  std::vector<__nv_bfloat16> h(d.size());
  gpu().to_host(h.data(), d.data(), d.size());
  std::vector<double> out(h.size());
  for (size_t i = 0; i < h.size(); ++i) out[i] = __bfloat162float(h[i]);
  return out;
}
// ||a - b||_2, +inf where a difference is NaN.
inline double l2_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return std::isnan(s) ? std::numeric_limits<double>::infinity() : std::sqrt(s);
}
inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(a[i] - b[i]);
    if (!(d <= m)) m = std::isnan(d) ? std::numeric_limits<double>::infinity() : d;
  }
  return m;
}

}  // namespace gputest
