// The unfused GPU references of benchmarks/reference/unfused.cuh (cuBLAS + one-purpose kernels, what
// kernels_bench.cu times the fused kernels against) against the double CPU backend, with the same
// inputs, poisoned outputs and tolerances as the tests of the fused kernels, so that the benchmark
// compares against something correct. Workspaces are NaN-poisoned too: a reference that read a
// part of its workspace before writing it would fail. Sizes stay small (the CPU emulator runs these).
#include <type_traits>

#include "benchmarks/reference/unfused.cuh"
#include "op_cases.hpp"

using namespace shortcut;
using namespace gputest;
using testutil::randn;
namespace uf = shortcut::bench::unfused;

namespace {

// A NaN-filled device workspace of n floats (at least one).
Buf<Gpu> workspace(size_t n) { return poisoned(gpu(), n ? n : 1); }

}  // namespace

TEST_CASE("unfused attention forward/backward match the CPU backend", "[unfused]") {
  // several heads and samples (the per-head strided batches), head dims under and over a warp, T = 1
  // and odd lengths
  for (AttnShape s :
       {AttnShape{1, 1, 1, 32}, AttnShape{2, 7, 3, 8}, AttnShape{3, 33, 2, 40}, AttnShape{2, 70, 2, 64}}) {
    check_attention("unfused attention", s, [&](auto& be, auto* out, auto* lse, auto* dqkv, const auto* qkv,
                                                const auto* dout, int B, int Tn, int H, int hd, auto scale) {
      if constexpr (is_gpu<decltype(be)>) {
        auto wf = workspace(uf::attention_forward_workspace(B, Tn, H));
        auto wb = workspace(uf::attention_backward_workspace(B, Tn, H));
        uf::attention_forward(be.cublas(), be.stream(), out, lse, qkv, B, Tn, H, hd, scale, wf.data());
        uf::attention_backward(be.cublas(), be.stream(), dqkv, dout, qkv, out, lse, B, Tn, H, hd, scale, wb.data());
        be.synchronize();
      } else {
        backend_attention(be, out, lse, dqkv, qkv, dout, B, Tn, H, hd, scale);
      }
    });
  }
}

TEST_CASE("unfused LayerNorm + modulate forward/backward match the CPU backend", "[unfused]") {
  for (AdaShape s : {AdaShape{1, 1, 5, 2}, AdaShape{3, 7, 33, 6}, AdaShape{2, 49, 64, 6}, AdaShape{2, 20, 384, 6},
                     AdaShape{300, 1, 96, 3}}) {
    check_ln_modulate("unfused ln_modulate", s, [&](auto& be, auto* out, auto* mean, auto* rstd, auto* dx,
                                                    auto* dmod, const auto* x, const auto* mod, const auto* dout,
                                                    int M, int B, int Tn, int D) {
      if constexpr (is_gpu<decltype(be)>) {
        auto wf = workspace(uf::ln_modulate_forward_workspace(B, Tn, D));
        auto wb = workspace(uf::ln_modulate_backward_workspace(B, Tn, D));
        uf::ln_modulate_forward(be.stream(), out, mean, rstd, x, mod, mod + D, M, B, Tn, D, 1e-6f, wf.data());
        uf::ln_modulate_backward(be.stream(), dx, dmod, dmod + D, dout, x, mean, rstd, mod + D, M, B, Tn, D,
                                 wb.data());
        be.synchronize();
      } else {
        backend_ln_modulate(be, out, mean, rstd, dx, dmod, x, mod, dout, M, B, Tn, D);
      }
    });
  }
}

TEST_CASE("unfused gated residual forward/backward match the CPU backend", "[unfused]") {
  for (AdaShape s : {AdaShape{1, 1, 5, 2}, AdaShape{3, 7, 33, 6}, AdaShape{2, 49, 384, 6}, AdaShape{300, 1, 96, 3}}) {
    check_gated_residual("unfused gated_residual", s, [&](auto& be, auto* x, auto* dy, auto* dgate, const auto* dxo,
                                                          const auto* gate, const auto* y, int M, int B, int Tn,
                                                          int D) {
      if constexpr (is_gpu<decltype(be)>) {
        auto w = workspace(uf::gated_residual_workspace(B, Tn, D));
        uf::gated_residual_forward(be.stream(), x, gate, y, M, B, Tn, D, w.data());
        uf::gated_residual_backward(be.stream(), dy, dgate, dxo, gate, y, M, B, Tn, D, w.data());
        be.synchronize();
      } else {
        backend_gated_residual(be, x, dy, dgate, dxo, gate, y, M, B, Tn, D);
      }
    });
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
      auto dx = upload_d(be, x), dh = upload_d(be, hd);
      auto dc = upload_d(be, vc), du = upload_d(be, vu), dc2 = upload_d(be, vc2), du2 = upload_d(be, vu2);
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
      return Outputs{{"x2", download_d(be, x2)}, {"v1", download_d(be, v1)}, {"target", download_d(be, tg)}};
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
      auto dp = upload_d(be, p), dg = upload_d(be, g), dm = upload_d(be, m), dv = upload_d(be, v);
      if constexpr (is_gpu<decltype(be)>) {
        uf::adamw_step(be.stream(), dp.data(), dg.data(), dm.data(), dv.data(), spans, S(1e-3), S(0.9), S(0.999),
                       S(1e-8), S(0.1), step);
        be.synchronize();
      } else {
        be.adamw_step(dp.data(), dg.data(), dm.data(), dv.data(), n, S(1e-3), S(0.9), S(0.999), S(1e-8), S(0.1), step);
      }
      return Outputs{{"p", download_d(be, dp)}, {"m", download_d(be, dm)}, {"v", download_d(be, dv)}};
    }, kElementwiseTol);
  }
  compare_backends(label + " ema", [&](auto& be) {
    using S = typename std::decay_t<decltype(be)>::Scalar;
    auto de = upload_d(be, e), dp = upload_d(be, p);
    if constexpr (is_gpu<decltype(be)>) {
      uf::ema_update(be.stream(), de.data(), dp.data(), S(0.999), spans);
      be.synchronize();
    } else {
      be.ema_update(de.data(), dp.data(), S(0.999), n);
    }
    return Outputs{{"ema", download_d(be, de)}};
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
