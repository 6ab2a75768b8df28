// The unfused GPU references of benchmarks/reference/unfused.cuh (cuBLAS + one-purpose kernels, what
// kernels_bench.cu times the fused kernels against) against the double CPU backend, with the same
// inputs, poisoned outputs and tolerances as the tests of the fused kernels, so that the benchmark
// compares against something correct. Workspaces are NaN-poisoned too: a reference that read a
// part of its workspace before writing it would fail. Sizes stay small (the CPU emulator runs these).
#include <type_traits>

#include "benchmarks/reference/unfused.cuh"
#include "gpu_test_util.hpp"

using namespace shortcut;
using namespace gputest;
using testutil::randn;
namespace uf = shortcut::bench::unfused;

namespace {

template <class Be>
constexpr bool is_gpu = std::is_same_v<std::decay_t<Be>, Gpu>;

// A NaN-filled device workspace of n floats (at least one).
Buf<Gpu> workspace(size_t n) { return poisoned(gpu(), n ? n : 1); }

// Column block `part` (0 = q, 1 = k, 2 = v) of a [rows, 3D] array.
std::vector<double> part_of(const std::vector<double>& a, int D, int part) {
  const size_t rows = a.size() / (3 * size_t(D));
  std::vector<double> r(rows * D);
  for (size_t i = 0; i < rows; ++i)
    for (int j = 0; j < D; ++j) r[i * D + j] = a[i * 3 * D + part * D + j];
  return r;
}

struct AttnShape {
  int B, Tn, H, hd;
};
struct AdaShape {
  int B, Tn, D, stride_mult;
};
std::string ada_label(const char* what, const AdaShape& s) {
  return std::string(what) + " B=" + std::to_string(s.B) + " T=" + std::to_string(s.Tn) + " D=" +
         std::to_string(s.D) + " stride=" + std::to_string(s.stride_mult) + "D";
}

}  // namespace

TEST_CASE("unfused attention forward/backward match the CPU backend", "[unfused]") {
  // several heads and samples (the per-head strided batches), head dims under and over a warp,
  // T = 1 and odd lengths, both logit scales, and sd 3 for peaked softmax rows
  for (AttnShape s :
       {AttnShape{1, 1, 1, 32}, AttnShape{2, 7, 3, 8}, AttnShape{3, 33, 2, 40}, AttnShape{2, 70, 2, 64}}) {
    for (bool inv_sqrt : {false, true}) {
      for (double sd : {1.0, 3.0}) {
        const int B = s.B, Tn = s.Tn, H = s.H, hd = s.hd, D = H * hd;
        const double scale = inv_sqrt ? 1.0 / std::sqrt(double(hd)) : 1.0 / hd;
        auto qkv = randn(size_t(B) * Tn * 3 * D, sd), dout = randn(size_t(B) * Tn * D);
        const std::string label = "unfused attention B=" + std::to_string(B) + " T=" + std::to_string(Tn) + " H=" +
                                  std::to_string(H) + " hd=" + std::to_string(hd) +
                                  (inv_sqrt ? " scale=1/sqrt(hd)" : " scale=1/hd") + " sd=" + std::to_string(int(sd));
        compare_backends(label, [&](auto& be) {
          using S = typename std::decay_t<decltype(be)>::Scalar;
          auto dq = upload(be, qkv), dg = upload(be, dout);
          auto out = poisoned(be, size_t(B) * Tn * D), lse = poisoned(be, size_t(B) * H * Tn);
          auto dqkv = poisoned(be, qkv.size());
          if constexpr (is_gpu<decltype(be)>) {
            auto wf = workspace(uf::attention_forward_workspace(B, Tn, H));
            auto wb = workspace(uf::attention_backward_workspace(B, Tn, H));
            uf::attention_forward(be.cublas(), be.stream(), out.data(), lse.data(), dq.data(), B, Tn, H, hd, S(scale),
                                  wf.data());
            uf::attention_backward(be.cublas(), be.stream(), dqkv.data(), dg.data(), dq.data(), out.data(), lse.data(),
                                   B, Tn, H, hd, S(scale), wb.data());
            be.synchronize();
          } else {
            be.attention_forward(out.data(), lse.data(), dq.data(), B, Tn, H, hd, S(scale));
            be.attention_backward(dqkv.data(), dg.data(), dq.data(), out.data(), lse.data(), B, Tn, H, hd, S(scale));
          }
          auto g = download(be, dqkv);
          return Outputs{{"out", download(be, out)}, {"lse", download(be, lse)}, {"dq", part_of(g, D, 0)},
                         {"dk", part_of(g, D, 1)},   {"dv", part_of(g, D, 2)}};
        }, kReductionTol);
      }
    }
  }
}

TEST_CASE("unfused LayerNorm + modulate forward/backward match the CPU backend", "[unfused]") {
  for (AdaShape s : {AdaShape{1, 1, 5, 2}, AdaShape{3, 7, 33, 6}, AdaShape{2, 49, 64, 6}, AdaShape{2, 20, 384, 6},
                     AdaShape{300, 1, 96, 3}}) {
    const int B = s.B, Tn = s.Tn, D = s.D, M = s.stride_mult * D;  // M: modulation row stride
    const size_t n = size_t(B) * Tn * D;
    auto x = randn(n, 1.5), mod = randn(size_t(B) * M, 0.5), dout = randn(n), dx0 = randn(n);
    auto dmod0 = randn(size_t(B) * M);
    for (auto& v : x) v += 0.7;  // rows with a non-zero mean
    compare_backends(ada_label("unfused ln_modulate", s), [&](auto& be) {
      using S = typename std::decay_t<decltype(be)>::Scalar;
      auto dx_in = upload(be, x), dm = upload(be, mod), dg = upload(be, dout);
      auto out = poisoned(be, n), mean = poisoned(be, size_t(B) * Tn), rstd = poisoned(be, size_t(B) * Tn);
      auto dx = upload(be, dx0), gmod = upload(be, dmod0);  // both accumulate
      if constexpr (is_gpu<decltype(be)>) {
        auto wf = workspace(uf::ln_modulate_forward_workspace(B, Tn, D));
        auto wb = workspace(uf::ln_modulate_backward_workspace(B, Tn, D));
        uf::ln_modulate_forward(be.stream(), out.data(), mean.data(), rstd.data(), dx_in.data(), dm.data(),
                                dm.data() + D, M, B, Tn, D, S(1e-6), wf.data());
        uf::ln_modulate_backward(be.stream(), dx.data(), gmod.data(), gmod.data() + D, dg.data(), dx_in.data(),
                                 mean.data(), rstd.data(), dm.data() + D, M, B, Tn, D, wb.data());
        be.synchronize();
      } else {
        be.ln_modulate_forward(out.data(), mean.data(), rstd.data(), dx_in.data(), dm.data(), dm.data() + D, M, B, Tn,
                               D, S(1e-6));
        be.ln_modulate_backward(dx.data(), gmod.data(), gmod.data() + D, dg.data(), dx_in.data(), mean.data(),
                                rstd.data(), dm.data() + D, M, B, Tn, D);
      }
      return Outputs{{"out", download(be, out)},   {"mean", download(be, mean)},
                     {"rstd", download(be, rstd)}, {"dx (+=)", download(be, dx)},
                     {"dshift, dscale (+=)", download(be, gmod)}};
    }, kReductionTol);
  }
}

TEST_CASE("unfused gated residual forward/backward match the CPU backend", "[unfused]") {
  for (AdaShape s : {AdaShape{1, 1, 5, 2}, AdaShape{3, 7, 33, 6}, AdaShape{2, 49, 384, 6}, AdaShape{300, 1, 96, 3}}) {
    const int B = s.B, Tn = s.Tn, D = s.D, M = s.stride_mult * D;
    const size_t n = size_t(B) * Tn * D;
    auto x = randn(n), y = randn(n), mod = randn(size_t(B) * M), dxo = randn(n), dmod0 = randn(size_t(B) * M);
    const int g = M >= 3 * D ? 2 * D : D;  // the gate's offset in a modulation row
    compare_backends(ada_label("unfused gated_residual", s), [&](auto& be) {
      auto dx = upload(be, x), dy_in = upload(be, y), dm = upload(be, mod), dg = upload(be, dxo);
      auto dy = poisoned(be, n), gmod = upload(be, dmod0);
      if constexpr (is_gpu<decltype(be)>) {
        auto w = workspace(uf::gated_residual_workspace(B, Tn, D));
        uf::gated_residual_forward(be.stream(), dx.data(), dm.data() + g, dy_in.data(), M, B, Tn, D, w.data());
        uf::gated_residual_backward(be.stream(), dy.data(), gmod.data() + g, dg.data(), dm.data() + g, dy_in.data(), M,
                                    B, Tn, D, w.data());
        be.synchronize();
      } else {
        be.gated_residual_forward(dx.data(), dm.data() + g, dy_in.data(), M, B, Tn, D);
        be.gated_residual_backward(dy.data(), gmod.data() + g, dg.data(), dm.data() + g, dy_in.data(), M, B, Tn, D);
      }
      return Outputs{{"x (+=)", download(be, dx)}, {"dy", download(be, dy)}, {"dgate (+=)", download(be, gmod)}};
    }, kReductionTol);
  }
}

TEST_CASE("unfused bootstrap half step and target match the CPU backend", "[unfused]") {
  const int rows = 13, n = 37;
  const size_t total = size_t(rows) * n;
  // velocities of sd 3 and steps up to 0.5 push some x2 and targets past the clip at 4
  auto x = randn(total, 2.0), hd = uniform(rows, 0.0, 0.5);
  auto vc = randn(total, 3.0), vu = randn(total, 3.0), vc2 = randn(total, 3.0), vu2 = randn(total, 3.0);
  const double w = 1.5, clip = 4.0;
  for (int n_cfg : {0, 5, rows}) {
    compare_backends("unfused bootstrap n_cfg=" + std::to_string(n_cfg), [&](auto& be) {
      using S = typename std::decay_t<decltype(be)>::Scalar;
      auto dx = upload(be, x), dh = upload(be, hd);
      auto dc = upload(be, vc), du = upload(be, vu), dc2 = upload(be, vc2), du2 = upload(be, vu2);
      const S* u = n_cfg ? du.data() : nullptr;  // unguided: vu is never read
      const S* u2 = n_cfg ? du2.data() : nullptr;
      auto x2 = poisoned(be, total), v1 = poisoned(be, total), tg = poisoned(be, total);
      if constexpr (is_gpu<decltype(be)>) {
        uf::bootstrap_half_step(be.stream(), x2.data(), v1.data(), dx.data(), dc.data(), u, n_cfg, S(w), dh.data(),
                                rows, n, S(clip));
        uf::bootstrap_target(be.stream(), tg.data(), v1.data(), dc2.data(), u2, n_cfg, S(w), rows, n, S(clip));
        be.synchronize();
      } else {
        be.bootstrap_half_step(x2.data(), v1.data(), dx.data(), dc.data(), u, n_cfg, S(w), dh.data(), rows, n,
                               S(clip));
        be.bootstrap_target(tg.data(), v1.data(), dc2.data(), u2, n_cfg, S(w), rows, n, S(clip));
      }
      return Outputs{{"x2", download(be, x2)}, {"v1", download(be, v1)}, {"target", download(be, tg)}};
    }, kElementwiseTol);
  }
}

namespace {

// AdamW and EMA through one launch per span against the CPU backend's op over the whole array; the
// values outside the spans are zero, which the CPU op leaves at zero, as the reference must.
void check_optimizer(const std::string& label, const std::vector<uf::Span>& spans, size_t n,
                     const std::vector<int64_t>& steps) {
  std::vector<char> inside(n, 0);
  for (const auto& t : spans) std::fill(inside.begin() + t.offset, inside.begin() + t.offset + t.size, 1);
  auto p = randn(n), g = randn(n), m = randn(n, 0.1), v = uniform(n, 0.0, 0.05), e = randn(n);
  for (size_t i = 0; i < n; ++i)
    if (!inside[i]) p[i] = g[i] = m[i] = v[i] = e[i] = 0;
  for (int64_t step : steps) {
    compare_backends(label + " adamw step=" + std::to_string(step), [&](auto& be) {
      using S = typename std::decay_t<decltype(be)>::Scalar;
      auto dp = upload(be, p), dg = upload(be, g), dm = upload(be, m), dv = upload(be, v);
      if constexpr (is_gpu<decltype(be)>) {
        uf::adamw_step(be.stream(), dp.data(), dg.data(), dm.data(), dv.data(), spans, S(1e-3), S(0.9), S(0.999),
                       S(1e-8), S(0.1), step);
        be.synchronize();
      } else {
        be.adamw_step(dp.data(), dg.data(), dm.data(), dv.data(), n, S(1e-3), S(0.9), S(0.999), S(1e-8), S(0.1), step);
      }
      return Outputs{{"p", download(be, dp)}, {"m", download(be, dm)}, {"v", download(be, dv)}};
    }, kElementwiseTol);
  }
  compare_backends(label + " ema", [&](auto& be) {
    using S = typename std::decay_t<decltype(be)>::Scalar;
    auto de = upload(be, e), dp = upload(be, p);
    if constexpr (is_gpu<decltype(be)>) {
      uf::ema_update(be.stream(), de.data(), dp.data(), S(0.999), spans);
      be.synchronize();
    } else {
      be.ema_update(de.data(), dp.data(), S(0.999), n);
    }
    return Outputs{{"ema", download(be, de)}};
  }, kElementwiseTol);
}

}  // namespace

TEST_CASE("unfused per-tensor AdamW and EMA match the CPU backend", "[unfused]") {
  // random tensor sizes with gaps between them
  std::vector<uf::Span> spans;
  size_t n = 0;
  std::uniform_int_distribution<size_t> size(1, 3000), gap(0, 15);
  for (int i = 0; i < 8; ++i) {
    n += gap(testutil::gen());
    const size_t s = size(testutil::gen());
    spans.push_back({n, s});
    n += s;
  }
  check_optimizer("unfused random spans", spans, n, {1, 3, 1000});
  // a real layout: the "tiny" DiT preset's tensors (16-element aligned, so with gaps)
  Ref ref;
  nn::DiT<Ref> net(ref, nn::DiTConfig::preset("tiny"));
  const auto layout_spans = uf::spans_of(net.layout());
  REQUIRE(layout_spans.size() == net.layout().entries().size());
  check_optimizer("unfused DiT-tiny layout", layout_spans, net.layout().total(), {7});
}
