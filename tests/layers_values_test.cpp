// Forward values against independent hand computations, and float against double.
#include <catch2/catch.hpp>
#include <cmath>

#include "shortcut/cpu/backend.hpp"
#include "shortcut/nn/dit.hpp"
#include "shortcut/nn/mlp_net.hpp"
#include "shortcut/nn/pos_embed.hpp"
#include "test_util.hpp"

using namespace shortcut;

TEST_CASE("2-D sin-cos position embedding follows the formula", "[values][pos]") {
  const int G = 3, D = 8;  // D/4 = 2 frequencies: w_0 = 1, w_1 = 10000^(-1/2) = 0.01
  auto pos = nn::sincos_pos_embed<double>(G, D);
  // token (row 2, col 1) is index 2*3 + 1 = 7
  const double* p = pos.data() + 7 * D;
  CHECK(p[0] == Approx(std::sin(1.0)));
  CHECK(p[1] == Approx(std::sin(0.01)));
  CHECK(p[2] == Approx(std::cos(1.0)));
  CHECK(p[3] == Approx(std::cos(0.01)));
  CHECK(p[4] == Approx(std::sin(2.0)));
  CHECK(p[5] == Approx(std::sin(0.02)));
  CHECK(p[6] == Approx(std::cos(2.0)));
  CHECK(p[7] == Approx(std::cos(0.02)));
  // token (0, 0): sin 0 = 0, cos 0 = 1
  for (int j = 0; j < 2; ++j) {
    CHECK(pos[j] == 0.0);
    CHECK(pos[2 + j] == 1.0);
  }
}

TEST_CASE("timestep embedding is [cos(a f_j) | sin(a f_j)] with f_j = exp(-ln(1e4) j / half)", "[values][temb]") {
  cpu::Backend<double> be;
  const int dim = 256;
  std::vector<double> a = {0.0, 0.37, 5.0}, out(3 * dim);
  be.timestep_embedding(out.data(), a.data(), 3, dim);
  for (int b = 0; b < 3; ++b)
    for (int j : {0, 1, 64, 127}) {
      double f = std::pow(10000.0, -j / 128.0);
      CHECK(out[b * dim + j] == Approx(std::cos(a[b] * f)).margin(1e-12));
      CHECK(out[b * dim + 128 + j] == Approx(std::sin(a[b] * f)).margin(1e-12));
    }
}

TEST_CASE("attention on a tiny case equals the hand computation", "[values][attention]") {
  cpu::Backend<double> be;
  // B = 1, T = 2, H = 1, hd = 2: rows of qkv are [q | k | v]
  std::vector<double> qkv = {1, 0, 1, 0, 1, 2,  //
                             0, 1, 0, 1, 3, 4};
  std::vector<double> out(4), lse(2);
  const double s = 0.5;  // 1 / head_dim
  be.attention_forward(out.data(), lse.data(), qkv.data(), 1, 2, 1, 2, s);
  // q0 = (1,0): logits (q0.k0, q0.k1) s = (0.5, 0) -> weights softmax
  double w00 = std::exp(0.5) / (std::exp(0.5) + 1), w01 = 1 - w00;
  CHECK(out[0] == Approx(w00 * 1 + w01 * 3));
  CHECK(out[1] == Approx(w00 * 2 + w01 * 4));
  // q1 = (0,1): logits (0, 0.5)
  CHECK(out[2] == Approx(w01 * 1 + w00 * 3));
  CHECK(out[3] == Approx(w01 * 2 + w00 * 4));
  CHECK(lse[0] == Approx(std::log(std::exp(0.5) + 1)));
}

TEST_CASE("LayerNorm statistics: zero mean, unit variance before modulation", "[values][adaln]") {
  cpu::Backend<double> be;
  const int B = 2, T = 3, D = 64;
  auto x = testutil::randn(B * T * D, 3.0);
  for (auto& v : x) v += 5;
  std::vector<double> mod(B * 2 * D, 0.0), out(x.size()), mean(B * T), rstd(B * T);
  be.ln_modulate_forward(out.data(), mean.data(), rstd.data(), x.data(), mod.data(), mod.data() + D, 2 * D, B, T, D, 1e-6);
  for (int r = 0; r < B * T; ++r) {
    double m = 0, v = 0, hm = 0;
    for (int j = 0; j < D; ++j) hm += x[r * D + j] / D;
    for (int j = 0; j < D; ++j) {
      m += out[r * D + j] / D;
      v += out[r * D + j] * out[r * D + j] / D;
    }
    CHECK(mean[r] == Approx(hm));
    CHECK(std::abs(m) < 1e-12);
    CHECK(v == Approx(1.0).epsilon(1e-5));  // var / (var + eps)
  }
  // modulation: scale s and shift h give out = xhat (1 + s) + h
  for (int j = 0; j < D; ++j) {
    mod[j] = 0.5;       // shift of sample 0
    mod[D + j] = -0.25; // scale of sample 0
  }
  std::vector<double> out2(x.size());
  be.ln_modulate_forward(out2.data(), mean.data(), rstd.data(), x.data(), mod.data(), mod.data() + D, 2 * D, B, T, D, 1e-6);
  for (int j = 0; j < D; ++j) CHECK(out2[j] == Approx(out[j] * 0.75 + 0.5));
  CHECK(out2[T * D] == out[T * D]);  // sample 1 untouched
}

TEST_CASE("float and double agree on a DiT forward to float precision", "[values][dit]") {
  nn::DiTConfig c;
  c.image = 8; c.channels = 1; c.patch = 2; c.hidden = 32; c.depth = 2; c.heads = 2; c.classes = 4;
  cpu::Backend<double> bd;
  cpu::Backend<float> bf;
  nn::DiT<cpu::Backend<double>> nd(bd, c);
  nn::DiT<cpu::Backend<float>> nf(bf, c);
  const int B = 3;
  auto Pd = testutil::randn(nd.layout().total(), 0.2);
  std::vector<float> Pf(Pd.begin(), Pd.end());
  Pd.assign(Pf.begin(), Pf.end());  // same (float-representable) weights
  auto xd = testutil::randn(B * 64);
  std::vector<float> xf(xd.begin(), xd.end());
  xd.assign(xf.begin(), xf.end());
  std::vector<double> td = {0.0, 0.5, 0.875}, kd = {0, 3, 7};
  std::vector<float> tf(td.begin(), td.end()), kf(kd.begin(), kd.end());
  std::vector<int32_t> y = {0, 2, 4};
  std::vector<double> od(B * 64);
  std::vector<float> of(B * 64);
  decltype(nd)::Context cd;
  decltype(nf)::Context cf;
  nd.forward(cd, Pd.data(), xd.data(), td.data(), kd.data(), y.data(), B, od.data());
  nf.forward(cf, Pf.data(), xf.data(), tf.data(), kf.data(), y.data(), B, of.data());
  double num = 0, den = 0;
  for (size_t i = 0; i < od.size(); ++i) {
    num += (of[i] - od[i]) * (of[i] - od[i]);
    den += od[i] * od[i];
  }
  double rel = std::sqrt(num / den);
  INFO("relative error " << rel);
  CHECK(den > 0);
  CHECK(rel < 1e-5);
}

TEST_CASE("DiT init: final layer zero, so a new model predicts zero velocity", "[values][dit]") {
  cpu::Backend<double> be;
  nn::DiTConfig c = nn::DiTConfig::preset("tiny", 8, 1, 3);
  nn::DiT<cpu::Backend<double>> net(be, c);
  std::vector<double> P(net.layout().total());
  net.layout().initialize(P.data(), 42);
  const auto& qkv = net.layout().at("blocks.0.attn.qkv.weight");
  CHECK(qkv.shape == std::vector<int64_t>{192, 64});
  double bound = std::sqrt(6.0 / (64 + 192)), mx = 0;
  for (size_t i = 0; i < qkv.size; ++i) mx = std::max(mx, std::abs(P[qkv.offset + i]));
  CHECK(mx <= bound);
  CHECK(mx > 0.9 * bound);
  const auto& tab = net.layout().at("y_embedder.embedding_table.weight");
  CHECK(tab.shape == std::vector<int64_t>{4, 64});
  double ss = 0;
  for (size_t i = 0; i < tab.size; ++i) ss += P[tab.offset + i] * P[tab.offset + i];
  CHECK(std::sqrt(ss / tab.size) == Approx(0.02).epsilon(0.25));
  CHECK(net.layout().at("x_embedder.proj.weight").shape == std::vector<int64_t>{64, 1, 4, 4});
  auto x = testutil::randn(2 * 64);
  std::vector<double> t = {0.1, 0.9}, k = {0, 7}, out(2 * 64, 1.0);
  std::vector<int32_t> y = {0, 3};
  decltype(net)::Context ctx;
  net.forward(ctx, P.data(), x.data(), t.data(), k.data(), y.data(), 2, out.data());
  for (double v : out) CHECK(v == 0.0);
}

// cuBLAS reads weights through pointers into the arena: every tensor must start 16-byte aligned (the
// layout pads each to 16 elements, 64 bytes in fp32), whatever the odd shapes before it.
TEST_CASE("every parameter tensor starts on a 16-element boundary of the arena", "[values][layout]") {
  cpu::Backend<float> be;
  auto check = [](const ParamLayout& L) {
    size_t odd_sizes = 0;
    for (const auto& p : L.entries()) {
      INFO(p.name << " at offset " << p.offset << ", " << p.size << " elements");
      CHECK(p.offset % 16 == 0);
      CHECK(p.offset * sizeof(float) % 16 == 0);
      odd_sizes += p.size % 4 != 0;
    }
    return odd_sizes;
  };
  nn::DiTConfig c = nn::DiTConfig::preset("tiny", 8, 3, 5);  // patch 1, 3 channels: a 3-float bias
  c.patch = 1;
  nn::DiT<cpu::Backend<float>> dit(be, c);
  CHECK(check(dit.layout()) > 0);  // the case matters: some tensors are not a multiple of 4 floats
  nn::MlpNetConfig m;
  m.dim = 3;
  m.hidden = 37;
  nn::MlpNet<cpu::Backend<float>> mlp(be, m);
  CHECK(check(mlp.layout()) > 0);
}
