// The CPU backend's thread count (cpu::BackendOptions::threads) changes how fast, never what: the
// products split by output rows at Eigen's row-panel multiples, the loops by rows or fixed chunks, so
// one thread and several give the same bits (exact resume on another machine relies on it).
#include <catch2/catch.hpp>

#include <shortcut/shortcut.hpp>

#include "test_util.hpp"

using namespace shortcut;
using Be = cpu::Backend<float>;

namespace {

Be with_threads(int n) { return Be(cpu::BackendOptions{.threads = n}); }

}  // namespace

TEST_CASE("cpu backend: products and attention give the same bits on one thread and on several",
          "[cpu][threads]") {
  const Be one = with_threads(1), two = with_threads(2), three = with_threads(3);
  // sizes large enough for several threads (kWorkPerThread), rows no multiple of the grain
  const int N = 500, I = 200, O = 300;
  const auto x = testutil::randn<float>(size_t(N) * I), W = testutil::randn<float>(size_t(O) * I),
             b = testutil::randn<float>(O), dout = testutil::randn<float>(size_t(N) * O);
  auto products = [&](const Be& be) {
    std::vector<float> y(size_t(N) * O), din(size_t(N) * I, 0.5f), dW(size_t(O) * I, 0.25f), db(O, 0.0f);
    be.linear_forward(y.data(), x.data(), W.data(), b.data(), N, I, O);
    be.linear_backward(din.data(), dW.data(), db.data(), dout.data(), x.data(), W.data(), N, I, O, true);
    y.insert(y.end(), din.begin(), din.end());
    y.insert(y.end(), dW.begin(), dW.end());
    y.insert(y.end(), db.begin(), db.end());
    return y;
  };
  const auto p1 = products(one);
  CHECK(products(two) == p1);
  CHECK(products(three) == p1);

  const int B = 48, Tn = 64, H = 4, hd = 32, D = H * hd;
  const auto qkv = testutil::randn<float>(size_t(B) * Tn * 3 * D), dO = testutil::randn<float>(size_t(B) * Tn * D);
  auto attention = [&](const Be& be) {
    std::vector<float> out(size_t(B) * Tn * D), lse(size_t(B) * H * Tn), dqkv(qkv.size());
    be.attention_forward(out.data(), lse.data(), qkv.data(), B, Tn, H, hd, 1.0f / hd);
    be.attention_backward(dqkv.data(), dO.data(), qkv.data(), out.data(), lse.data(), B, Tn, H, hd, 1.0f / hd);
    out.insert(out.end(), dqkv.begin(), dqkv.end());
    return out;
  };
  CHECK(attention(two) == attention(one));
}

TEST_CASE("cpu backend: training steps give the same weights on one thread and on two", "[cpu][threads]") {
  auto train = [](int threads) {
    Be be = with_threads(threads);
    nn::MlpNetConfig c;
    c.hidden = 256; c.depth = 2; c.classes = 3; c.fourier = 8;
    ShortcutModel<nn::MlpNet<Be>> m(be, c, 5);
    AdamWConfig oc;
    oc.lr = 1e-3;
    TrainerConfig tc;
    tc.steps = 2; tc.batch = 512; tc.progress = false; tc.log_every = 0;
    Trainer<decltype(m)>(m, ShortcutConfig{}, oc, tc).run([](Rng& rng, int B, std::vector<float>& x,
                                                             std::vector<int32_t>& y) {
      x.resize(size_t(B) * 2);
      for (auto& v : x) v = rng.normal();
      y.resize(size_t(B));
      for (auto& l : y) l = int32_t(rng.randint(3));
    });
    return m.arena().to_host(Role::Param);
  };
  CHECK(train(2) == train(1));
}

TEST_CASE("cpu backend: a negative thread count is refused", "[cpu][threads]") {
  CHECK_THROWS_AS(Be(cpu::BackendOptions{.threads = -1}), ConfigError);
  CHECK(Be().options().threads == 0);
  CHECK(with_threads(2).options().threads == 2);
}
