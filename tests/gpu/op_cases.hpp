// Test cases shared by the tests of the fused kernels and of the benchmarks' unfused references:
// inputs, poisoned outputs, reference and tolerance written once, with the GPU implementation under
// test passed in as `run(be, pointers..., sizes...)` (a generic callable that the CPU reference runs
// too; backend_* run the backend's own ops).
#pragma once
#include <cmath>
#include <string>
#include <type_traits>

#include "gpu_test_util.hpp"

namespace gputest {

template <class Be>
constexpr bool is_gpu = std::is_same_v<std::decay_t<Be>, Gpu>;

// ---- attention: run(be, out, lse, dqkv, qkv, dout, B, Tn, H, hd, scale), forward then backward ----
struct AttnShape {
  int B, Tn, H, hd;
};

// Where the exact dS is zero (T = 1: P = 1 and dP = D = dO.V), the naive bf16 backward gets exactly 0,
// since its D is the rowsum of its own rounded dP, while the kernel takes D = rowsum(dO * O) as
// flash-attention does: two fp32 sums of hd terms in different orders, each within hd u sum|dO||V|
// (u = 2^-24), whose difference reaches dQ and dK through scale * sum_j P_ij K_j (or Q_i), sum_j P_ij = 1.
// That bound is the absolute floor; wherever dS is not zero the naive error is orders larger.
inline double fp32_cancellation_floor(const std::vector<double>& qkv, const std::vector<double>& dout,
                                      const AttnShape& s, double scale) {
  const int D = s.H * s.hd;
  double max_qk = 0, max_v = 0, max_row_do = 0;
  for (size_t t = 0; t < size_t(s.B) * s.Tn; ++t) {
    for (int c = 0; c < 2 * D; ++c) max_qk = std::max(max_qk, std::abs(qkv[t * 3 * D + c]));
    for (int c = 0; c < D; ++c) max_v = std::max(max_v, std::abs(qkv[t * 3 * D + 2 * D + c]));
    for (int h = 0; h < s.H; ++h) {
      double row = 0;
      for (int c = 0; c < s.hd; ++c) row += std::abs(dout[t * D + h * s.hd + c]);
      max_row_do = std::max(max_row_do, row);
    }
  }
  const double u = std::ldexp(1.0, -24);
  return scale * max_qk * 2 * s.hd * u * max_row_do * max_v;
}

// The double CPU backend's attention forward and backward: the oracle's reference values.
struct AttnRef {
  std::vector<double> out, lse, dqkv;
};
inline AttnRef reference_attention(const std::vector<double>& qkv, const std::vector<double>& dout, const AttnShape& s,
                                   double scale) {
  const size_t rows = size_t(s.B) * s.Tn;
  AttnRef r{std::vector<double>(rows * s.H * s.hd), std::vector<double>(size_t(s.B) * s.H * s.Tn),
            std::vector<double>(qkv.size())};
  Ref be;
  be.attention_forward(r.out.data(), r.lse.data(), qkv.data(), s.B, s.Tn, s.H, s.hd, scale);
  be.attention_backward(r.dqkv.data(), dout.data(), qkv.data(), r.out.data(), r.lse.data(), s.B, s.Tn, s.H, s.hd,
                        scale);
  return r;
}

// Column block `part` (0 = q, 1 = k, 2 = v) of a [rows, 3D] array, so each gradient is judged alone.
inline std::vector<double> part_of(const std::vector<double>& a, int D, int part) {
  const size_t rows = a.size() / (3 * size_t(D));
  std::vector<double> r(rows * D);
  for (size_t i = 0; i < rows; ++i)
    for (int j = 0; j < D; ++j) r[i * D + j] = a[i * 3 * D + part * D + j];
  return r;
}

inline constexpr auto backend_attention = [](auto& be, auto* out, auto* lse, auto* dqkv, const auto* qkv,
                                             const auto* dout, int B, int Tn, int H, int hd, auto scale) {
  be.attention_forward(out, lse, qkv, B, Tn, H, hd, scale);
  be.attention_backward(dqkv, dout, qkv, out, lse, B, Tn, H, hd, scale);
};

// Both logit scales of the DiT config, and inputs of sd 3 for peaked softmax rows (the online max
// rescaling then matters).
template <class Run>
void check_attention(const std::string& what, const AttnShape& s, Run&& run) {
  for (bool inv_sqrt : {false, true}) {
    for (double sd : {1.0, 3.0}) {
      const int B = s.B, Tn = s.Tn, H = s.H, hd = s.hd, D = H * hd;
      const double scale = inv_sqrt ? 1.0 / std::sqrt(double(hd)) : 1.0 / hd;
      auto qkv = testutil::randn(size_t(B) * Tn * 3 * D, sd), dout = testutil::randn(size_t(B) * Tn * D);
      const std::string label = what + " B=" + std::to_string(B) + " T=" + std::to_string(Tn) + " H=" +
                                std::to_string(H) + " hd=" + std::to_string(hd) +
                                (inv_sqrt ? " scale=1/sqrt(hd)" : " scale=1/hd") + " sd=" + std::to_string(int(sd));
      compare_backends(label, [&](auto& be) {
        using S = typename std::decay_t<decltype(be)>::Scalar;
        auto dq = upload_d(be, qkv), dg = upload_d(be, dout);
        auto out = poisoned(be, size_t(B) * Tn * D), lse = poisoned(be, size_t(B) * H * Tn);
        auto dqkv = poisoned(be, qkv.size());
        run(be, out.data(), lse.data(), dqkv.data(), dq.data(), dg.data(), B, Tn, H, hd, S(scale));
        auto g = download_d(be, dqkv);
        return Outputs{{"out", download_d(be, out)}, {"lse", download_d(be, lse)}, {"dq", part_of(g, D, 0)},
                       {"dk", part_of(g, D, 1)},   {"dv", part_of(g, D, 2)}};
      }, kReductionTol);
    }
  }
}

// ---- adaLN: modulation rows of stride M = stride_mult * D per sample ------------------------------
struct AdaShape {
  int B, Tn, D, stride_mult;
};
inline std::string ada_label(const std::string& what, const AdaShape& s) {
  return what + " B=" + std::to_string(s.B) + " T=" + std::to_string(s.Tn) + " D=" + std::to_string(s.D) +
         " stride=" + std::to_string(s.stride_mult) + "D";
}

// run(be, out, mean, rstd, dx, dmod, x, mod, dout, M, B, Tn, D): forward, then backward with dx and
// dmod accumulating; shift at mod + 0, scale at mod + D (dmod likewise).
inline constexpr auto backend_ln_modulate = [](auto& be, auto* out, auto* mean, auto* rstd, auto* dx, auto* dmod,
                                               const auto* x, const auto* mod, const auto* dout, int M, int B, int Tn,
                                               int D) {
  using S = std::remove_cv_t<std::remove_pointer_t<decltype(out)>>;
  be.ln_modulate_forward(out, mean, rstd, x, mod, mod + D, M, B, Tn, D, S(1e-6));
  be.ln_modulate_backward(dx, dmod, dmod + D, dout, x, mean, rstd, mod + D, M, B, Tn, D);
};

template <class Run>
void check_ln_modulate(const std::string& what, const AdaShape& s, Run&& run) {
  const int B = s.B, Tn = s.Tn, D = s.D, M = s.stride_mult * D;
  const size_t n = size_t(B) * Tn * D;
  auto x = testutil::randn(n, 1.5), mod = testutil::randn(size_t(B) * M, 0.5), dout = testutil::randn(n);
  auto dx0 = testutil::randn(n), dmod0 = testutil::randn(size_t(B) * M);
  for (auto& v : x) v += 0.7;  // rows with a non-zero mean
  compare_backends(ada_label(what, s), [&](auto& be) {
    auto dx_in = upload_d(be, x), dm = upload_d(be, mod), dg = upload_d(be, dout);
    auto out = poisoned(be, n), mean = poisoned(be, size_t(B) * Tn), rstd = poisoned(be, size_t(B) * Tn);
    auto dx = upload_d(be, dx0), gmod = upload_d(be, dmod0);  // both accumulate
    run(be, out.data(), mean.data(), rstd.data(), dx.data(), gmod.data(), dx_in.data(), dm.data(), dg.data(), M, B,
        Tn, D);
    return Outputs{{"out", download_d(be, out)},   {"mean", download_d(be, mean)},
                   {"rstd", download_d(be, rstd)}, {"dx (+=)", download_d(be, dx)},
                   {"dshift, dscale (+=)", download_d(be, gmod)}};
  }, kReductionTol);
}

// run(be, x, dy, dgate, dx_out, gate, y, M, B, Tn, D): x += gate * y, then dy = gate * dx_out and
// dgate += sum over tokens of dx_out * y.
inline constexpr auto backend_gated_residual = [](auto& be, auto* x, auto* dy, auto* dgate, const auto* dxo,
                                                  const auto* gate, const auto* y, int M, int B, int Tn, int D) {
  be.gated_residual_forward(x, gate, y, M, B, Tn, D);
  be.gated_residual_backward(dy, dgate, dxo, gate, y, M, B, Tn, D);
};

template <class Run>
void check_gated_residual(const std::string& what, const AdaShape& s, Run&& run) {
  const int B = s.B, Tn = s.Tn, D = s.D, M = s.stride_mult * D;
  const size_t n = size_t(B) * Tn * D;
  auto x = testutil::randn(n), y = testutil::randn(n), mod = testutil::randn(size_t(B) * M);
  auto dxo = testutil::randn(n), dmod0 = testutil::randn(size_t(B) * M);
  const int g = M >= 3 * D ? 2 * D : D;  // the gate's offset in a modulation row
  compare_backends(ada_label(what, s), [&](auto& be) {
    auto dx = upload_d(be, x), dy_in = upload_d(be, y), dm = upload_d(be, mod), dg = upload_d(be, dxo);
    auto dy = poisoned(be, n), gmod = upload_d(be, dmod0);
    run(be, dx.data(), dy.data(), gmod.data() + g, dg.data(), dm.data() + g, dy_in.data(), M, B, Tn, D);
    return Outputs{{"x (+=)", download_d(be, dx)}, {"dy", download_d(be, dy)}, {"dgate (+=)", download_d(be, gmod)}};
  }, kReductionTol);
}

}  // namespace gputest
