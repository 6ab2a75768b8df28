// Finite-difference checks (double) of every op's hand-written backward in the CPU backend.
#include <catch2/catch.hpp>

#include "shortcut/cpu/backend.hpp"
#include "test_util.hpp"

using namespace shortcut;
using testutil::dot;
using testutil::fd_error;
using testutil::randn;
using Be = cpu::Backend<double>;
static const double kTol = 1e-6;

TEST_CASE("linear backward matches finite differences", "[grad][linear]") {
  Be be;
  const int N = 5, I = 7, O = 4;
  auto x = randn(N * I), W = randn(O * I), b = randn(O), R = randn(N * O);
  std::vector<double> y(N * O);
  auto L = [&] { be.linear_forward(y.data(), x.data(), W.data(), b.data(), N, I, O); return dot(R, y.data()); };
  std::vector<double> dx(N * I), dW(O * I, 0.0), db(O, 0.0);
  be.linear_backward(dx.data(), dW.data(), db.data(), R.data(), x.data(), W.data(), N, I, O);
  CHECK(fd_error(x.data(), x.size(), dx.data(), L) < kTol);
  CHECK(fd_error(W.data(), W.size(), dW.data(), L) < kTol);
  CHECK(fd_error(b.data(), b.size(), db.data(), L) < kTol);
  // accumulate mode adds to what is there
  std::vector<double> dx2(N * I, 1.0);
  be.linear_backward(dx2.data(), nullptr, nullptr, R.data(), x.data(), W.data(), N, I, O, true);
  for (int i = 0; i < N * I; ++i) CHECK(dx2[i] == Approx(dx[i] + 1.0).epsilon(1e-12));
}

TEST_CASE("GELU (tanh) and SiLU backward match finite differences", "[grad][activation]") {
  Be be;
  const int n = 50;
  auto x = randn(n, 2.0), R = randn(n);
  std::vector<double> y(n), dx(n);
  auto Lg = [&] { be.gelu_forward(y.data(), x.data(), n); return dot(R, y.data()); };
  be.gelu_backward(dx.data(), R.data(), x.data(), n);
  CHECK(fd_error(x.data(), n, dx.data(), Lg) < kTol);
  auto Ls = [&] { be.silu_forward(y.data(), x.data(), n); return dot(R, y.data()); };
  be.silu_backward(dx.data(), R.data(), x.data(), n);
  CHECK(fd_error(x.data(), n, dx.data(), Ls) < kTol);
}

TEST_CASE("the MLP pair (linear + GELU, and the backward through GELU's input) matches finite differences",
          "[grad][linear][activation]") {
  // out = fc2(GELU(fc1(x))): linear_gelu_forward runs fc1 and GELU, gelu_linear_backward takes fc2's
  // backward through GELU's derivative, linear_backward fc1's
  Be be;
  const int N = 5, I = 6, H = 8, O = 4;
  auto x = randn(N * I), W1 = randn(H * I), b1 = randn(H), W2 = randn(O * H), b2 = randn(O), R = randn(N * O);
  std::vector<double> a(N * H), g(N * H), y(N * O);
  auto L = [&] {
    be.linear_gelu_forward(g.data(), a.data(), x.data(), W1.data(), b1.data(), N, I, H);
    be.linear_forward(y.data(), g.data(), W2.data(), b2.data(), N, H, O);
    return dot(R, y.data());
  };
  L();
  std::vector<double> da(N * H, 7.0), dx(N * I), dW1(H * I, 0.0), db1(H, 0.0), dW2(O * H, 0.0), db2(O, 0.0);
  be.gelu_linear_backward(da.data(), dW2.data(), db2.data(), R.data(), g.data(), a.data(), W2.data(), N, H, O);
  be.linear_backward(dx.data(), dW1.data(), db1.data(), da.data(), x.data(), W1.data(), N, I, H);
  CHECK(fd_error(x.data(), x.size(), dx.data(), L) < kTol);
  CHECK(fd_error(W1.data(), W1.size(), dW1.data(), L) < kTol);
  CHECK(fd_error(b1.data(), b1.size(), db1.data(), L) < kTol);
  CHECK(fd_error(W2.data(), W2.size(), dW2.data(), L) < kTol);
  CHECK(fd_error(b2.data(), b2.size(), db2.data(), L) < kTol);
  // without a bias: the forward adds none, the backward writes no bias gradient
  std::vector<double> a0(N * H), g0(N * H);
  be.linear_gelu_forward(g0.data(), a0.data(), x.data(), W1.data(), static_cast<const double*>(nullptr), N, I, H);
  for (int r = 0; r < N; ++r)
    for (int j = 0; j < H; ++j) CHECK(a0[r * H + j] == Approx(a[r * H + j] - b1[j]).epsilon(1e-12));
}

TEST_CASE("LayerNorm + adaLN modulate backward matches finite differences", "[grad][adaln]") {
  Be be;
  const int B = 3, T = 4, D = 8, S = 3 * D;  // shift/scale read from a wider modulation row
  auto x = randn(B * T * D, 1.5), mod = randn(B * S, 0.5), R = randn(B * T * D);
  for (auto& v : x) v += 0.7;  // non-zero mean rows
  std::vector<double> out(B * T * D), mean(B * T), rstd(B * T);
  auto L = [&] {
    be.ln_modulate_forward(out.data(), mean.data(), rstd.data(), x.data(), mod.data(), mod.data() + D, S, B, T, D, 1e-6);
    return dot(R, out.data());
  };
  L();
  std::vector<double> dx(x.size(), 0.0), dmod(mod.size(), 0.0);
  be.ln_modulate_backward(dx.data(), dmod.data(), dmod.data() + D, R.data(), x.data(), mean.data(), rstd.data(),
                          mod.data() + D, S, B, T, D);
  CHECK(fd_error(x.data(), x.size(), dx.data(), L) < kTol);
  CHECK(fd_error(mod.data(), mod.size(), dmod.data(), L) < kTol);
  // the third part of each modulation row is untouched
  for (int b = 0; b < B; ++b)
    for (int j = 2 * D; j < S; ++j) CHECK(dmod[b * S + j] == 0.0);
}

TEST_CASE("gated residual backward matches finite differences", "[grad][adaln]") {
  Be be;
  const int B = 2, T = 3, D = 5, S = 2 * D;
  auto x = randn(B * T * D), gate = randn(B * S), y = randn(B * T * D), R = randn(B * T * D);
  std::vector<double> out(x.size());
  auto L = [&] {
    out = x;
    be.gated_residual_forward(out.data(), gate.data() + D, y.data(), S, B, T, D);
    return dot(R, out.data());
  };
  std::vector<double> dy(y.size()), dgate(gate.size(), 0.0);
  be.gated_residual_backward(dy.data(), dgate.data() + D, R.data(), gate.data() + D, y.data(), S, B, T, D);
  CHECK(fd_error(y.data(), y.size(), dy.data(), L) < kTol);
  CHECK(fd_error(gate.data(), gate.size(), dgate.data(), L) < kTol);
}

TEST_CASE("attention backward matches finite differences", "[grad][attention]") {
  Be be;
  for (double scale : {1.0 / 4, 0.5}) {
    const int B = 2, T = 5, H = 2, hd = 4, D = H * hd;
    auto qkv = randn(B * T * 3 * D), R = randn(B * T * D);
    std::vector<double> out(B * T * D), lse(B * H * T);
    auto L = [&] {
      be.attention_forward(out.data(), lse.data(), qkv.data(), B, T, H, hd, scale);
      return dot(R, out.data());
    };
    L();
    std::vector<double> dqkv(qkv.size());
    be.attention_backward(dqkv.data(), R.data(), qkv.data(), out.data(), lse.data(), B, T, H, hd, scale);
    CHECK(fd_error(qkv.data(), qkv.size(), dqkv.data(), L) < kTol);
  }
}

TEST_CASE("label embedding backward matches finite differences", "[grad][embedding]") {
  Be be;
  const int B = 6, D = 4, rows = 4;
  std::vector<int32_t> ids = {0, 3, 3, 1, 2, 3};
  auto table = randn(rows * D), R = randn(B * D);
  std::vector<double> out(B * D), dt(table.size(), 0.0);
  auto L = [&] { be.embedding_forward(out.data(), table.data(), ids.data(), B, D); return dot(R, out.data()); };
  be.embedding_backward(dt.data(), R.data(), ids.data(), B, D);
  CHECK(fd_error(table.data(), table.size(), dt.data(), L) < kTol);
}

TEST_CASE("patch gather and scatter are adjoint permutations", "[grad][patch]") {
  Be be;
  const int B = 2, H = 6, C = 3, p = 2;
  for (auto order : {PatchOrder::ChannelMajor, PatchOrder::ChannelMinor}) {
    auto img = randn(B * H * H * C);
    std::vector<double> tok(img.size(), std::nan("")), back(img.size(), std::nan(""));
    be.patch_gather(tok.data(), img.data(), B, H, H, C, p, order);
    be.patch_scatter(back.data(), tok.data(), B, H, H, C, p, order);
    CHECK(back == img);  // a permutation: every element written, nothing lost
    auto R = randn(tok.size());
    // <R, gather(img)> = <scatter(R), img>
    std::vector<double> sR(img.size());
    be.patch_scatter(sR.data(), R.data(), B, H, H, C, p, order);
    CHECK(dot(R, tok.data()) == Approx(dot(sR, img.data())).epsilon(1e-12));
  }
}

TEST_CASE("MSE loss gradient matches finite differences", "[grad][loss]") {
  Be be;
  const int rows = 4, n = 6;
  auto pred = randn(rows * n), target = randn(rows * n);
  std::vector<double> grad(pred.size()), rl(rows);
  auto L = [&] {
    std::vector<double> g(pred.size()), r(rows);
    be.mse_loss(g.data(), r.data(), pred.data(), target.data(), rows, n, 1.0 / rows);
    double s = 0;
    for (double v : r) s += v;
    return s / rows;
  };
  be.mse_loss(grad.data(), rl.data(), pred.data(), target.data(), rows, n, 1.0 / rows);
  CHECK(fd_error(pred.data(), pred.size(), grad.data(), L) < kTol);
}
