// The image path: a DiT trained on a fixed batch lowers its loss, generation does not depend on the
// chunk size, the classifier's backward and the cross-entropy gradient match finite differences.
#include <catch2/catch.hpp>

#include "shortcut/shortcut.hpp"
#include "test_util.hpp"

using namespace shortcut;

TEST_CASE("DiT shortcut training on a fixed batch: loss finite and decreasing", "[images][train]") {
  using Be = cpu::Backend<float>;
  Be be;
  nn::DiTConfig c = nn::DiTConfig::preset("tiny", 8, 1, 4);
  c.patch = 2;
  ShortcutModel<nn::DiT<Be>> m(be, c, 3);
  ShortcutConfig sc;
  sc.denoise_timesteps = 8;
  SelfConsistencyLoss<decltype(m)> loss(sc);
  AdamWConfig oc;
  oc.lr = 3e-3;
  AdamW opt(oc);
  EmaTracker ema(0.9);
  const int B = 16;
  auto x1 = testutil::randn<float>(size_t(B) * 64, 0.5);
  std::vector<int32_t> y(B);
  for (int i = 0; i < B; ++i) y[i] = i % 4;
  std::vector<double> losses;
  for (int s = 0; s < 40; ++s) {
    Rng rng(11);  // the same rows, noise and targets' randomness every step: a fixed batch
    m.arena().zero_grad();
    auto r = loss.step(m, upload(m.backend(), x1), y, rng);
    REQUIRE(std::isfinite(r.loss));
    losses.push_back(r.loss);
    opt.step(m.arena());
    ema.update(m.arena());
  }
  INFO("first loss " << losses.front() << ", last " << losses.back());
  CHECK(losses.back() < 0.5 * losses.front());
  // the trend, over windows of 10 steps (single steps of Adam may go up)
  auto window = [&](size_t a) { return (losses[a] + losses[a + 1] + losses[a + 2] + losses[a + 3] + losses[a + 4]) / 5; };
  CHECK(window(10) < window(0));
  CHECK(window(35) < window(10));
}

TEST_CASE("generate: images depend on (seed, index), not on the chunk size", "[images][generate]") {
  using Be = cpu::Backend<double>;
  Be be;
  nn::DiTConfig c = nn::DiTConfig::preset("tiny", 8, 1, 3);
  ShortcutModel<nn::DiT<Be>> m(be, c, 1);
  auto P = testutil::randn(m.arena().size(), 0.1);
  m.arena().from_host(Role::Ema, P);
  std::vector<int32_t> labels = {0, 1, 2, 3, 0, 1, 2};
  ShortcutConfig sc;
  SamplerConfig s{2, 1.5, true};
  auto a = generate(m, sc.sampling(), labels, s, 5, 0, 3);
  auto b = generate(m, sc.sampling(), labels, s, 5, 0, 100);
  REQUIRE(a.size() == labels.size() * 64);
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == Approx(b[i]).margin(1e-12));
  auto other = generate(m, sc.sampling(), labels, s, 6, 0, 100);
  CHECK(other != a);
  CHECK_THROWS_WITH(generate(m, sc.sampling(), std::vector<int32_t>{4}, s, 5, 0), Catch::Matchers::Contains("label 4"));
}

TEST_CASE("classifier backward and cross-entropy match finite differences", "[images][grad]") {
  using Be = cpu::Backend<double>;
  Be be;
  nn::ClassifierConfig cc;
  cc.image = 3; cc.channels = 2; cc.classes = 4; cc.hidden1 = 7; cc.hidden2 = 5;
  nn::Classifier<Be> net(be, cc);
  auto P = testutil::randn(net.layout().total(), 0.5);
  const int B = 5;
  auto x = testutil::randn(size_t(B) * cc.inputs());
  std::vector<int32_t> y = {0, 3, 1, 1, 2};
  nn::Classifier<Be>::Context ctx;
  auto L = [&] { return nn::softmax_cross_entropy(net.forward(ctx, P.data(), x.data(), B), y.data(), B, cc.classes); };
  std::vector<double> dlog(size_t(B) * cc.classes), G(P.size(), 0.0);
  nn::softmax_cross_entropy(net.forward(ctx, P.data(), x.data(), B), y.data(), B, cc.classes, dlog.data());
  net.backward(ctx, P.data(), G.data(), dlog.data());
  for (auto& p : net.layout().entries()) {
    INFO(p.name);
    CHECK(testutil::fd_error(P.data() + p.offset, p.size, G.data() + p.offset, L) < 1e-6);
  }
}
