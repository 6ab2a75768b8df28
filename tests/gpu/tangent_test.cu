// The forward-mode (tangent) ops of the CUDA backend against the double CPU backend, on fresh random
// inputs and NaN-poisoned outputs: scale_rows, ln_modulate_tangent, and attention_tangent in fp32
// (kernels/attention.cuh) and on the bf16 tensor cores (kernels/attention_tc_tangent.cuh), each after
// its own backend's forward (the tangent reads the forward's out and lse, so their conventions are
// checked together). Attention shapes: T under, at and past the tiles (partial last tiles), head dims
// 32, 64, 72 and 128, several heads, batches above 1, both logit scales of the DiT, inputs of sd 1
// and 3 (peaked softmax rows).
//
// Tolerances (gpu_test_util.hpp, METHOD.md): fp32 as the other ops (kElementwiseTol for scale_rows,
// kReductionTol for the row reductions, or 8x the float CPU backend's own error where that is larger).
// bf16, as attention_tc_test.cu derives its bounds: the double reference runs on the bf16-rounded
// inputs, and the same math done naively in bf16 (naive_bf16_tangent below) measures bf16's own error;
// the kernel may be at most 2x that in the 2-norm and 4x in the largest error. Through the backend in
// bf16 mode on unrounded inputs: under 1e-2 relative and over 8e-4 (bf16 engaged), bf16_mode_test.cu's
// rule.
#include <sstream>

#include "kernels/attention_tc_tangent.cuh"
#include "op_cases.hpp"

namespace tangent_test {

using namespace gputest;
namespace kn = shortcut::kernels;

inline Gpu& bf16_backend() {
  static Gpu be(shortcut::cuda::Options{.precision = shortcut::cuda::Precision::bf16});
  return be;
}

inline std::string attn_label(const AttnShape& s, bool inv_sqrt, double sd) {
  return "B=" + std::to_string(s.B) + " T=" + std::to_string(s.Tn) + " H=" + std::to_string(s.H) +
         " hd=" + std::to_string(s.hd) + (inv_sqrt ? " 1/sqrt(hd)" : " 1/hd") + " sd=" + std::to_string(int(sd));
}

// The attention tangent done naively in bf16 on bf16 inputs, each product's result rounded as a bf16
// autograd would round it: S and S_dot (fp32 sums) rounded, P = softmax(S) in fp32 rounded, P o S_dot
// rounded, O the naive bf16 forward's (rounded); out_dot = P V_dot + (P o S_dot) V - rowsum(P o S_dot) O
// summed in fp32 and left fp32, as the kernel leaves it.
inline std::vector<double> naive_bf16_tangent(const std::vector<double>& qkv, const std::vector<double>& qkv_dot,
                                              const AttnShape& s, double scale) {
  const int D = s.H * s.hd, T = s.Tn, hd = s.hd;
  std::vector<double> od(size_t(s.B) * T * D);
  std::vector<float> S(T), Sd(T), P(T), PS(T), O(hd);
  for (int b = 0; b < s.B; ++b)
    for (int h = 0; h < s.H; ++h) {
      auto at = [&](const std::vector<double>& a, int t, int part, int j) {
        return float(a[(size_t(b) * T + t) * 3 * D + part * D + h * hd + j]);
      };
      for (int i = 0; i < T; ++i) {
        float mx = -INFINITY, sum = 0.f;
        for (int j = 0; j < T; ++j) {
          float dot = 0.f, dd = 0.f;
          for (int c = 0; c < hd; ++c) {
            dot += at(qkv, i, 0, c) * at(qkv, j, 1, c);
            dd += at(qkv_dot, i, 0, c) * at(qkv, j, 1, c) + at(qkv, i, 0, c) * at(qkv_dot, j, 1, c);
          }
          S[j] = float(round_bf16(dot * float(scale)));
          Sd[j] = float(round_bf16(dd * float(scale)));
          mx = std::max(mx, S[j]);
        }
        for (int j = 0; j < T; ++j) sum += (P[j] = std::exp(S[j] - mx));
        float rs = 0.f;
        for (int j = 0; j < T; ++j) {
          P[j] = float(round_bf16(P[j] / sum));
          PS[j] = float(round_bf16(P[j] * Sd[j]));
          rs += PS[j];
        }
        for (int c = 0; c < hd; ++c) {
          float acc = 0.f;
          for (int j = 0; j < T; ++j) acc += P[j] * at(qkv, j, 2, c);
          O[c] = float(round_bf16(acc));
        }
        for (int c = 0; c < hd; ++c) {
          float acc = 0.f;
          for (int j = 0; j < T; ++j) acc += P[j] * at(qkv_dot, j, 2, c) + PS[j] * at(qkv, j, 2, c);
          od[(size_t(b) * T + i) * D + h * hd + c] = acc - rs * O[c];
        }
      }
    }
  return od;
}

// The shapes of the attention tangent tests: T = 1, within one tile, past one by one and a few rows
// (partial last tiles of every tile size used: 32, 64), several heads and batches, every head dim.
inline const AttnShape kShapes[] = {{1, 1, 1, 32},  {2, 7, 2, 64},  {2, 49, 3, 32}, {3, 65, 2, 32},
                                    {1, 33, 1, 72}, {2, 64, 2, 128}, {2, 97, 2, 64}, {1, 70, 1, 128}};

}  // namespace tangent_test

TEST_CASE("forward mode: scale_rows matches the CPU backend", "[tangent][ops]") {
  using namespace tangent_test;
  for (auto [rows, n] : {std::pair{1, 1}, std::pair{7, 333}, std::pair{4097, 5}}) {
    const auto x = testutil::randn(size_t(rows) * n), s = testutil::randn(size_t(rows), 2.0);
    compare_backends("scale_rows rows=" + std::to_string(rows) + " n=" + std::to_string(n), [&](auto& be) {
      auto dx = upload_d(be, x), ds = upload_d(be, s);
      be.scale_rows(dx.data(), ds.data(), rows, n);
      return Outputs{{"x", download_d(be, dx)}};
    }, kElementwiseTol);
  }
}

TEST_CASE("forward mode: the LayerNorm + modulate tangent matches the CPU backend", "[tangent][adaln]") {
  using namespace tangent_test;
  for (AdaShape s : {AdaShape{1, 1, 5, 2}, AdaShape{3, 7, 33, 6}, AdaShape{2, 49, 64, 6}, AdaShape{2, 197, 384, 6},
                     AdaShape{1, 300, 72, 2}}) {
    const int B = s.B, Tn = s.Tn, D = s.D, M = s.stride_mult * D;
    const size_t n = size_t(B) * Tn * D;
    auto x = testutil::randn(n, 1.5), xd = testutil::randn(n), mod = testutil::randn(size_t(B) * M, 0.5);
    const auto mod_dot = testutil::randn(size_t(B) * M);
    for (auto& v : x) v += 0.7;  // rows with a non-zero mean
    compare_backends(ada_label("ln_modulate_tangent", s), [&](auto& be) {
      using S = typename std::decay_t<decltype(be)>::Scalar;
      auto dx = upload_d(be, x), dxd = upload_d(be, xd), dm = upload_d(be, mod), dmd = upload_d(be, mod_dot);
      auto out = poisoned(be, n), mean = poisoned(be, size_t(B) * Tn), rstd = poisoned(be, size_t(B) * Tn);
      auto h_dot = poisoned(be, n);
      be.ln_modulate_forward(out.data(), mean.data(), rstd.data(), dx.data(), dm.data(), dm.data() + D, M, B, Tn, D,
                             S(1e-6));
      // shift_dot at mod_dot + 0, scale_dot at mod_dot + D, as the modulation's rows lay them out
      be.ln_modulate_tangent(h_dot.data(), dx.data(), dxd.data(), mean.data(), rstd.data(), dm.data() + D,
                             dmd.data(), dmd.data() + D, M, B, Tn, D);
      return Outputs{{"h_dot", download_d(be, h_dot)}};
    }, kReductionTol);
  }
}

TEST_CASE("forward mode: the fp32 attention tangent matches the CPU backend", "[tangent][attention]") {
  using namespace tangent_test;
  for (const AttnShape& s : kShapes)
    for (bool inv_sqrt : {false, true})
      for (double sd : {1.0, 3.0}) {
        const int B = s.B, Tn = s.Tn, H = s.H, hd = s.hd, D = H * hd;
        const double scale = inv_sqrt ? 1.0 / std::sqrt(double(hd)) : 1.0 / hd;
        const auto qkv = testutil::randn(size_t(B) * Tn * 3 * D, sd), qkv_dot = testutil::randn(qkv.size());
        compare_backends("attention_tangent " + attn_label(s, inv_sqrt, sd), [&](auto& be) {
          using S = typename std::decay_t<decltype(be)>::Scalar;
          auto dq = upload_d(be, qkv), dqd = upload_d(be, qkv_dot);
          auto out = poisoned(be, size_t(B) * Tn * D), lse = poisoned(be, size_t(B) * H * Tn);
          auto od = poisoned(be, size_t(B) * Tn * D);
          be.attention_forward(out.data(), lse.data(), dq.data(), B, Tn, H, hd, S(scale));
          be.attention_tangent(od.data(), dq.data(), dqd.data(), out.data(), lse.data(), B, Tn, H, hd, S(scale));
          return Outputs{{"out_dot", download_d(be, od)}};
        }, kReductionTol);
      }
  // the forward's head dims, no others
  auto q = poisoned(gpu(), 3 * 48), o = poisoned(gpu(), 48), l = poisoned(gpu(), 1);
  CHECK_THROWS_AS(gpu().attention_tangent(o.data(), q.data(), q.data(), o.data(), l.data(), 1, 1, 1, 48, 0.1f),
                  shortcut::ShapeError);
}

TEST_CASE("forward mode: the bf16 tensor-core attention tangent matches the double CPU backend within bf16's own "
          "error",
          "[tangent][attention][bf16]") {
  using namespace tangent_test;
  for (const AttnShape& s : kShapes)
    for (bool inv_sqrt : {false, true})
      for (double sd : {1.0, 3.0}) {
        const int D = s.H * s.hd;
        const double scale = inv_sqrt ? 1.0 / std::sqrt(double(s.hd)) : 1.0 / s.hd;
        const auto qkv = rounded(testutil::randn(size_t(s.B) * s.Tn * 3 * D, sd));
        const auto qkv_dot = rounded(testutil::randn(qkv.size()));
        // the reference: the library's double forward and tangent on the bf16-rounded inputs
        Ref ref_be;
        std::vector<double> out(size_t(s.B) * s.Tn * D), lse(size_t(s.B) * s.H * s.Tn), ref(out.size());
        ref_be.attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.Tn, s.H, s.hd, scale);
        ref_be.attention_tangent(ref.data(), qkv.data(), qkv_dot.data(), out.data(), lse.data(), s.B, s.Tn, s.H, s.hd,
                                 scale);
        const auto naive = naive_bf16_tangent(qkv, qkv_dot, s, scale);
        // the kernels: the tensor-core forward's out and lse feed the tangent, as in bf16 mode
        auto dqkv = upload_bf16(qkv), dqkv_dot = upload_bf16(qkv_dot);
        auto dout = upload_bf16(std::vector<double>(out.size(), std::nan("")));
        auto dlse = poisoned(gpu(), lse.size()), dod = poisoned(gpu(), out.size());
        kn::attention_forward_tc(dout.data(), dlse.data(), dqkv.data(), s.B, s.Tn, s.H, s.hd, float(scale),
                                 gpu().stream());
        kn::attention_tangent_tc(dod.data(), dqkv.data(), dqkv_dot.data(), dout.data(), dlse.data(), s.B, s.Tn, s.H,
                                 s.hd, float(scale), gpu().stream());
        const auto got = download_d(gpu(), dod);
        const double err = max_abs_diff(got, ref), nerr = max_abs_diff(naive, ref);
        const double l2 = l2_diff(got, ref), nl2 = l2_diff(naive, ref);
        std::ostringstream what;
        what << attn_label(s, inv_sqrt, sd) << ": max |kernel - ref| " << err << " (naive bf16: " << nerr
             << "), ||kernel - ref|| " << l2 << " (naive bf16: " << nl2 << ")";
        std::cout << "  bf16 attention_tangent " << what.str() << "\n";
        INFO(what.str());
        CHECK(l2 <= 2 * nl2 + 1e-6);
        CHECK(err <= 4 * nerr + 1e-6);
      }
}

TEST_CASE("forward mode: bf16 mode runs the attention tangent on the tensor cores behind the fp32 interface",
          "[tangent][attention][bf16]") {
  using namespace tangent_test;
  for (AttnShape s : {AttnShape{2, 33, 2, 32}, AttnShape{2, 70, 3, 64}}) {
    const int D = s.H * s.hd;
    const double scale = 1.0 / std::sqrt(double(s.hd));
    const auto qkv = testutil::randn(size_t(s.B) * s.Tn * 3 * D), qkv_dot = testutil::randn(qkv.size());
    Ref ref;
    std::vector<double> out(size_t(s.B) * s.Tn * D), lse(size_t(s.B) * s.H * s.Tn), od(out.size());
    ref.attention_forward(out.data(), lse.data(), qkv.data(), s.B, s.Tn, s.H, s.hd, scale);
    ref.attention_tangent(od.data(), qkv.data(), qkv_dot.data(), out.data(), lse.data(), s.B, s.Tn, s.H, s.hd, scale);

    Gpu& be = bf16_backend();
    auto dq = upload_d(be, qkv), dqd = upload_d(be, qkv_dot);
    auto o = poisoned(be, out.size()), l = poisoned(be, lse.size()), d = poisoned(be, od.size());
    be.attention_forward(o.data(), l.data(), dq.data(), s.B, s.Tn, s.H, s.hd, float(scale));
    be.attention_tangent(d.data(), dq.data(), dqd.data(), o.data(), l.data(), s.B, s.Tn, s.H, s.hd, float(scale));
    const double e = rel_err(download_d(be, d), od);
    INFO("T=" << s.Tn << " H=" << s.H << " hd=" << s.hd << " out_dot: rel err " << e);
    CHECK(e < 1e-2);
    CHECK(e > 8e-4);
  }
}
