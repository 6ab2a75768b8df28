// Finite-difference checks (double) of the whole DiT and MLP network: every parameter tensor and
// the input, on random weights (the real init zeroes the final layer, which would hide upstream
// errors) and random inputs.
#include <catch2/catch.hpp>
#include <iostream>

#include "shortcut/cpu/backend.hpp"
#include "shortcut/nn/dit.hpp"
#include "shortcut/nn/mlp_net.hpp"
#include "test_util.hpp"

using namespace shortcut;
using Be = cpu::Backend<double>;

template <class Net>
void check_network(Net& net, int B, std::vector<int32_t> y, const char* label) {
  const auto& L = net.layout();
  auto P = testutil::randn(L.total(), 0.3);
  const size_t n = size_t(B) * net.sample_size();
  auto x = testutil::randn(n), R = testutil::randn(n);
  std::vector<double> t(B), k(B);
  for (int b = 0; b < B; ++b) {
    t[b] = double(b) / B;
    k[b] = double(b % 8);
  }
  typename Net::Context ctx;
  std::vector<double> out(n);
  auto loss = [&] {
    net.forward(ctx, P.data(), x.data(), t.data(), k.data(), y.data(), B, out.data());
    return testutil::dot(R, out.data());
  };
  loss();
  std::vector<double> G(L.total(), 0.0), dx(n);
  net.backward(ctx, P.data(), G.data(), R.data(), dx.data());
  double worst = 0;
  for (auto& p : L.entries()) {
    double e = testutil::fd_error(P.data() + p.offset, p.size, G.data() + p.offset, loss, 24);
    INFO(label << " parameter " << p.name << " rel err " << e);
    CHECK(e < 1e-6);
    worst = std::max(worst, e);
  }
  double ex = testutil::fd_error(x.data(), n, dx.data(), loss, 64);
  INFO(label << " input rel err " << ex);
  CHECK(ex < 1e-6);
  std::cout << label << ": " << L.entries().size() << " parameter tensors, max rel err " << worst
            << ", input rel err " << ex << "\n";
}

TEST_CASE("DiT backward matches finite differences for every parameter and the input", "[grad][dit]") {
  Be be;
  nn::DiTConfig c;
  c.image = 8; c.channels = 2; c.patch = 2; c.hidden = 16; c.depth = 2; c.heads = 2; c.classes = 3;
  nn::DiT<Be> net(be, c);
  check_network(net, 3, {0, 2, 3}, "DiT");
}

TEST_CASE("DiT backward with 1/sqrt(head_dim) attention scale", "[grad][dit]") {
  Be be;
  nn::DiTConfig c;
  c.image = 4; c.channels = 1; c.patch = 1; c.hidden = 8; c.depth = 1; c.heads = 2; c.classes = 2;
  c.attn_scale = nn::AttnScale::InvSqrtHeadDim;
  nn::DiT<Be> net(be, c);
  check_network(net, 2, {1, 2}, "DiT(1/sqrt)");
}

TEST_CASE("MLP network backward matches finite differences for every parameter and the input", "[grad][mlp]") {
  Be be;
  nn::MlpNetConfig c;
  c.dim = 3; c.hidden = 12; c.depth = 2; c.classes = 2;
  nn::MlpNet<Be> net(be, c);
  check_network(net, 4, {0, 1, 2, 2}, "MlpNet");
}

TEST_CASE("MLP network with Fourier input features and a t scale: backward matches finite differences",
          "[grad][mlp]") {
  Be be;
  nn::MlpNetConfig c;
  c.dim = 2; c.hidden = 12; c.depth = 2; c.classes = 2;
  c.fourier = 8; c.fourier_scale = 1.7; c.t_scale = 3.0;
  nn::MlpNet<Be> net(be, c);
  auto plain = c;
  plain.fourier = 0;
  CHECK(net.layout().entries().size() == nn::MlpNet<Be>(be, plain).layout().entries().size() + 2);  // weight, bias
  check_network(net, 4, {0, 1, 2, 2}, "MlpNet(fourier)");
}

TEST_CASE("MLP network config: the Fourier and t-scale fields default to the plain network and round-trip",
          "[mlp]") {
  nn::MlpNetConfig plain;
  auto j = plain.to_json();
  CHECK_FALSE(j.contains("fourier"));
  CHECK_FALSE(j.contains("t_scale"));
  // metadata written before the fields existed
  nlohmann::json old = {{"model", "mlp"}, {"dim", 2}, {"hidden", 128}, {"depth", 3},
                        {"mlp_ratio", 2.0}, {"classes", 1}, {"ln_eps", 1e-6}};
  auto o = nn::MlpNetConfig::from_json(old);
  CHECK(o.fourier == 0);
  CHECK(o.t_scale == 1.0);
  nn::MlpNetConfig f;
  f.fourier = 32; f.fourier_scale = 16; f.t_scale = 1000;
  auto r = nn::MlpNetConfig::from_json(f.to_json());
  CHECK(r.fourier == 32);
  CHECK(r.fourier_scale == 16);
  CHECK(r.t_scale == 1000);
  f.fourier = 3;
  CHECK_THROWS_AS(f.validate(), ConfigError);
}
