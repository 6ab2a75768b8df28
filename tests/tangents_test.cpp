// Finite-difference checks (double) of the forward mode (DESIGN.md §8): every tangent op of the CPU
// backend, every layer's tangent() and the whole DiT and MLP network, along random directions in
// the inputs (x, t, k) on random weights (the real init zeroes the final layer, which would hide
// upstream errors).
#include <catch2/catch.hpp>
#include <iostream>

#include "shortcut/cpu/backend.hpp"
#include "shortcut/nn/dit.hpp"
#include "shortcut/nn/mlp_net.hpp"
#include "test_util.hpp"

using namespace shortcut;
using testutil::randn;
using testutil::tangent_error;
using Be = cpu::Backend<double>;
using Vec = std::vector<double>;
static const double kTol = 1e-6;

// a + s b
static Vec along(const Vec& a, const Vec& b, double s) {
  Vec r(a.size());
  for (size_t i = 0; i < a.size(); ++i) r[i] = a[i] + s * b[i];
  return r;
}

TEST_CASE("scale_rows scales each row by its own factor", "[tangent]") {
  Be be;
  auto x = randn(12), s = randn(3);
  auto y = x;
  be.scale_rows(y.data(), s.data(), 3, 4);
  for (int r = 0; r < 3; ++r)
    for (int j = 0; j < 4; ++j) CHECK(y[r * 4 + j] == x[r * 4 + j] * s[r]);
}

TEST_CASE("LayerNorm + adaLN modulate tangent matches finite differences", "[tangent][adaln]") {
  Be be;
  const int B = 3, T = 4, D = 8, S = 3 * D;  // shift/scale read from a wider modulation row
  auto x = randn(B * T * D, 1.5), mod = randn(B * S, 0.5), xd = randn(B * T * D), modd = randn(B * S);
  for (auto& v : x) v += 0.7;  // non-zero mean rows
  auto f = [&](double s) {
    auto xs = along(x, xd, s), ms = along(mod, modd, s);
    Vec out(B * T * D), mean(B * T), rstd(B * T);
    be.ln_modulate_forward(out.data(), mean.data(), rstd.data(), xs.data(), ms.data(), ms.data() + D, S, B, T, D, 1e-6);
    return out;
  };
  Vec out(B * T * D), mean(B * T), rstd(B * T), hd(B * T * D);
  be.ln_modulate_forward(out.data(), mean.data(), rstd.data(), x.data(), mod.data(), mod.data() + D, S, B, T, D, 1e-6);
  be.ln_modulate_tangent(hd.data(), x.data(), xd.data(), mean.data(), rstd.data(), mod.data() + D, modd.data(),
                         modd.data() + D, S, B, T, D);
  CHECK(tangent_error(hd, f) < kTol);
}

TEST_CASE("attention tangent matches finite differences, also past one block of query rows", "[tangent][attention]") {
  Be be;
  struct Shape { int B, T, H, hd; };
  for (Shape sh : {Shape{2, 5, 2, 3}, Shape{1, 70, 2, 4}, Shape{2, 64, 1, 8}, Shape{1, 129, 3, 2}}) {
    const int D = sh.H * sh.hd;
    const double scale = 1.0 / std::sqrt(double(sh.hd));
    auto qkv = randn(size_t(sh.B) * sh.T * 3 * D), qd = randn(qkv.size());
    auto f = [&](double s) {
      auto q = along(qkv, qd, s);
      Vec out(size_t(sh.B) * sh.T * D), lse(size_t(sh.B) * sh.H * sh.T);
      be.attention_forward(out.data(), lse.data(), q.data(), sh.B, sh.T, sh.H, sh.hd, scale);
      return out;
    };
    Vec out(size_t(sh.B) * sh.T * D), lse(size_t(sh.B) * sh.H * sh.T), od(out.size());
    be.attention_forward(out.data(), lse.data(), qkv.data(), sh.B, sh.T, sh.H, sh.hd, scale);
    be.attention_tangent(od.data(), qkv.data(), qd.data(), out.data(), lse.data(), sh.B, sh.T, sh.H, sh.hd, scale);
    const double e = tangent_error(od, f);
    INFO("B " << sh.B << " T " << sh.T << " H " << sh.H << " hd " << sh.hd << " rel err " << e);
    CHECK(e < kTol);
  }
}

// One layer's parameters on random values, its tangent against finite differences of its forward.
TEST_CASE("every layer's tangent() matches finite differences of its forward", "[tangent][layers]") {
  Be be;
  const int B = 2, Tn = 3, D = 8, S = 6 * D;
  ParamLayout L;
  nn::MlpBranch<Be> mlp(L, "mlp", D, 2 * D);
  nn::AttentionBranch<Be> attn(L, "attn", D, 2, 0.5);
  nn::FinalLayer<Be> fin(L, D, 5);
  nn::Conditioner<Be> cond(L, D, 3);
  auto P = randn(L.total(), 0.4);
  auto x = randn(size_t(B) * Tn * D), xd = randn(x.size()), mod = randn(size_t(B) * S, 0.5), modd = randn(mod.size());
  SECTION("MLP branch and attention branch (x and the modulation rows move)") {
    for (int which = 0; which < 2; ++which) {
      auto run = [&](auto& layer, auto& ctx, const Vec& xi, const Vec& m, Vec& xo) {
        layer.forward(be, P.data(), ctx, xi.data(), xo.data(), m.data(), S, B, Tn, 1e-6);
      };
      auto f = [&](double s) {
        auto xi = along(x, xd, s), m = along(mod, modd, s);
        Vec xo(x.size());
        if (which == 0) { typename nn::MlpBranch<Be>::Ctx c; run(mlp, c, xi, m, xo); }
        else { typename nn::AttentionBranch<Be>::Ctx c; run(attn, c, xi, m, xo); }
        return xo;
      };
      Vec xo(x.size()), xod(x.size());
      if (which == 0) {
        typename nn::MlpBranch<Be>::Ctx c;
        run(mlp, c, x, mod, xo);
        mlp.tangent(be, P.data(), c, x.data(), xd.data(), xod.data(), mod.data(), modd.data(), S, B, Tn);
      } else {
        typename nn::AttentionBranch<Be>::Ctx c;
        run(attn, c, x, mod, xo);
        attn.tangent(be, P.data(), c, x.data(), xd.data(), xod.data(), mod.data(), modd.data(), S, B, Tn);
      }
      const double e = tangent_error(xod, f);
      INFO((which == 0 ? "MLP" : "attention") << " branch rel err " << e);
      CHECK(e < kTol);
    }
  }
  SECTION("final layer (x and the conditioning move)") {
    auto sc = randn(size_t(B) * D), scd = randn(sc.size());
    auto f = [&](double s) {
      auto xi = along(x, xd, s), c = along(sc, scd, s);
      typename nn::FinalLayer<Be>::Ctx ctx;
      Vec out(size_t(B) * Tn * 5);
      fin.forward(be, P.data(), ctx, c.data(), xi.data(), out.data(), B, Tn, 1e-6);
      return out;
    };
    typename nn::FinalLayer<Be>::Ctx ctx;
    Vec out(size_t(B) * Tn * 5), od(out.size());
    fin.forward(be, P.data(), ctx, sc.data(), x.data(), out.data(), B, Tn, 1e-6);
    fin.tangent(be, P.data(), ctx, scd.data(), x.data(), xd.data(), od.data(), B, Tn);
    CHECK(tangent_error(od, f) < kTol);
  }
  SECTION("conditioner: t and the step input move, labels do not") {
    Vec t = {0.1, 0.8}, k = {0.0, 0.25}, td = {1.0, -0.4}, kd = {-1.0, 2.0};
    std::vector<int32_t> y = {0, 3};
    auto f = [&](double s) {
      auto ts = along(t, td, s), ks = along(k, kd, s);
      typename nn::Conditioner<Be>::Ctx ctx;
      cond.forward(be, P.data(), ctx, ts.data(), ks.data(), y.data(), B);
      return Vec(ctx.silu_c.begin(), ctx.silu_c.end());
    };
    typename nn::Conditioner<Be>::Ctx ctx;
    cond.forward(be, P.data(), ctx, t.data(), k.data(), y.data(), B);
    cond.tangent(be, P.data(), ctx, td.data(), kd.data());
    CHECK(tangent_error(Vec(ctx.silu_c_dot.begin(), ctx.silu_c_dot.end()), f) < kTol);
  }
}

// The whole network: tangent along (x_dot, t_dot, k_dot) against finite differences; the backward
// after the tangent pass equals the backward without it (the tangent leaves the saved activations).
template <class Net>
void check_network_tangent(Net& net, int B, std::vector<int32_t> y, const char* label) {
  const auto& L = net.layout();
  auto P = randn(L.total(), 0.3);
  const size_t n = size_t(B) * net.sample_size();
  auto x = randn(n), xd = randn(n), td = randn(B), kd = randn(B), R = randn(n);
  Vec t(B), k(B);
  for (int b = 0; b < B; ++b) {
    t[b] = double(b + 1) / (B + 1);
    k[b] = 0.125 * b;
  }
  typename Net::Context ctx;
  auto f = [&](double s) {
    auto xs = along(x, xd, s), ts = along(t, td, s), ks = along(k, kd, s);
    Vec out(n);
    net.forward(ctx, P.data(), xs.data(), ts.data(), ks.data(), y.data(), B, out.data());
    return out;
  };
  Vec out(n), od(n);
  // gradients in the backend's aligned buffers: Eigen's reductions group by the destination's alignment
  auto grads = [&](bool with_tangent) {
    Be::Buffer<double> G(L.total(), 0.0);
    net.forward(ctx, P.data(), x.data(), t.data(), k.data(), y.data(), B, out.data());
    if (with_tangent) net.tangent(ctx, P.data(), xd.data(), td.data(), kd.data(), od.data());
    net.backward(ctx, P.data(), G.data(), R.data());
    return G;
  };
  const auto G1 = grads(false), G2 = grads(true);
  CHECK(G1 == G2);
  const double e = tangent_error(od, f);
  INFO(label << " tangent rel err " << e);
  CHECK(e < kTol);
  // each input's part alone (a direction in t only, in k only) is checked too: a sum can hide one
  for (int part = 0; part < 3; ++part) {
    Vec xz(n, 0.0), tz(B, 0.0), kz(B, 0.0);
    (part == 0 ? xz : part == 1 ? tz : kz) = (part == 0 ? xd : part == 1 ? td : kd);
    net.forward(ctx, P.data(), x.data(), t.data(), k.data(), y.data(), B, out.data());
    net.tangent(ctx, P.data(), xz.data(), tz.data(), kz.data(), od.data());
    auto fp = [&](double s) {
      auto xs = along(x, xz, s), ts = along(t, tz, s), ks = along(k, kz, s);
      Vec o(n);
      net.forward(ctx, P.data(), xs.data(), ts.data(), ks.data(), y.data(), B, o.data());
      return o;
    };
    const double ep = tangent_error(od, fp);
    INFO(label << " input " << part << " (x, t, k) rel err " << ep);
    CHECK(ep < kTol);
  }
  std::cout << label << ": tangent rel err " << e << "\n";
}

TEST_CASE("DiT tangent matches finite differences along (x, t, d)", "[tangent][dit]") {
  Be be;
  nn::DiTConfig c;
  c.image = 8; c.channels = 2; c.patch = 2; c.hidden = 16; c.depth = 2; c.heads = 2; c.classes = 3;
  nn::DiT<Be> net(be, c);
  check_network_tangent(net, 3, {0, 2, 3}, "DiT");
  c.image = 4; c.channels = 1; c.patch = 1; c.hidden = 8; c.depth = 1; c.classes = 2;
  c.attn_scale = nn::AttnScale::InvSqrtHeadDim;
  nn::DiT<Be> net2(be, c);
  check_network_tangent(net2, 2, {1, 2}, "DiT(1/sqrt)");
}

TEST_CASE("MLP network tangent matches finite differences, plain and with Fourier features and a t scale",
          "[tangent][mlp]") {
  Be be;
  nn::MlpNetConfig c;
  c.dim = 3; c.hidden = 12; c.depth = 2; c.classes = 2;
  nn::MlpNet<Be> net(be, c);
  check_network_tangent(net, 4, {0, 1, 2, 2}, "MlpNet");
  c.dim = 2; c.fourier = 8; c.fourier_scale = 1.7; c.t_scale = 3.0;
  nn::MlpNet<Be> net2(be, c);
  check_network_tangent(net2, 4, {0, 1, 2, 2}, "MlpNet(fourier)");
}
