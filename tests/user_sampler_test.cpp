// The sampler as an extension point: a user's integrator, written here against the public headers
// only, satisfies shortcut::Sampler and plugs into generate() and Generator::sample_with. Heun's
// method (the trapezoid rule) on the closed-form linear network v = a x has the exact answer
// (1 + a/N + a^2 / (2 N^2))^N x0, which Euler's (1 + a/N)^N does not match.
#include <catch2/catch.hpp>

#include <shortcut/shortcut.hpp>

#include <cmath>

#include "linear_test_net.hpp"
#include "test_util.hpp"

using namespace shortcut;

namespace {

// ---- the user's sampler (what a user writes; nothing below needs a library change) ----
template <class Model>
class HeunSampler {
 public:
  using Be = typename Model::Backend;
  using T = typename Model::T;

  explicit HeunSampler(const SamplingSchedule& schedule) : schedule_(schedule) {}
  void check(const SamplerConfig& s) const { OdeSampler<Model>(schedule_).check(s); }

  void sample(Model& m, DeviceSpan<T, Be> x, DeviceSpan<const int32_t, Be> y, const SamplerConfig& s) {
    check(s);
    Be& be = m.backend();
    const int B = int(y.size());
    const size_t n = x.size();
    const T d = T(1.0 / s.steps);
    for (auto* b : {&v1_, &v2_, &xe_}) b->resize(n);
    k_ = upload(be, std::vector<T>(size_t(B), T(schedule_.step_input_for(s.steps))));
    const Role w = s.use_ema ? Role::Ema : Role::Param;
    for (int i = 0; i < s.steps; ++i) {
      auto t0 = upload(be, std::vector<T>(size_t(B), T(i) * d));
      auto t1 = upload(be, std::vector<T>(size_t(B), T(i + 1) * d));
      m.velocity(v1_, x, t0, k_, y, T(s.guidance), w);  // the typed, checked entry point
      be.copy(xe_.data(), x.data(), n);
      be.axpy(xe_.data(), d, v1_.data(), n);  // Euler predictor
      m.velocity(v2_, xe_, t1, k_, y, T(s.guidance), w);
      be.axpy(x.data(), d / 2, v1_.data(), n);  // trapezoid corrector
      be.axpy(x.data(), d / 2, v2_.data(), n);
    }
  }

 private:
  SamplingSchedule schedule_;
  typename Be::template Buffer<T> v1_, v2_, xe_, k_;
};
// ---- end of the user's sampler ----

using Net = LinearTestNet<double>;
using Model = ShortcutModel<Net>;
static_assert(Sampler<HeunSampler<Model>, Model> && Sampler<OdeSampler<Model>, Model>);
static_assert(Sampler<HeunSampler<InferenceModel<nn::MlpNet<cpu::Backend<float>>>>,
                      InferenceModel<nn::MlpNet<cpu::Backend<float>>>>);

}  // namespace

TEST_CASE("a user's Heun sampler plugs into generate and integrates v = a x to second order",
          "[sampler][extension]") {
  cpu::Backend<double> be;
  const int dim = 3, classes = 2, B = 5;
  Model m(be, LinearNetConfig{dim, classes}, 0);
  auto E = m.arena().to_host(Role::Ema);
  const double a = 0.8;
  E[m.net().a_] = a;
  m.arena().from_host(Role::Ema, E);
  const SamplingSchedule train;
  HeunSampler<Model> heun(train);
  const std::vector<int32_t> labels(B, 1);
  const auto x0 = sample_noise<double>(dim, 0, B, 3, 0);
  for (int N : {1, 2, 8}) {
    const auto x = generate(m, heun, labels, {N, 1.0, true}, 3, 0);
    const auto xe = generate(m, train, labels, {N, 1.0, true}, 3, 0);  // Euler, the library's
    const double heun_f = std::pow(1 + a / N + a * a / (2.0 * N * N), N), euler_f = std::pow(1 + a / N, N);
    for (size_t i = 0; i < x.size(); ++i) {
      CHECK(x[i] == Approx(heun_f * x0[i]).epsilon(1e-12));
      CHECK(xe[i] == Approx(euler_f * x0[i]).epsilon(1e-12));
    }
  }
  // the user's sampler inherits the boundary checks: a bad label stops it
  CHECK_THROWS_AS(generate(m, heun, std::vector<int32_t>{0, 3}, {1, 1.0, true}, 3, 0), ConfigError);
  CHECK_THROWS_AS(generate(m, heun, labels, {3, 1.0, true}, 3, 0), ConfigError);  // not a power of two
}

TEST_CASE("Generator::sample_with runs a user's sampler on a checkpoint", "[sampler][extension]") {
  using Bf = cpu::Backend<float>;
  Bf be;
  nn::MlpNetConfig c;
  c.hidden = 32;
  c.depth = 2;
  ShortcutModel<nn::MlpNet<Bf>> m(be, c, 4);
  // random weights everywhere (the zero-initialised last layer would make every sampler the identity)
  m.arena().from_host(Role::Ema, testutil::randn<float>(m.arena().size(), 0.3));
  const auto dir = testutil::scratch_dir("user_sampler") / "ckpt";
  io::TrainState st;
  io::SaveOptions so;
  so.metadata["training"] = nlohmann::json{{"shortcut", SamplingSchedule{}.to_json()}}.dump();
  io::save_checkpoint(dir.string(), m.net(), m.arena(), st, so);
  auto g = load_generator(be, dir);
  const std::vector<int32_t> labels(6, 0);
  const auto heun = g.sample_with<HeunSampler>(labels, 4, 1.0, 9);
  // the same sampler on the training model's EMA weights, from the same noise
  HeunSampler<ShortcutModel<nn::MlpNet<Bf>>> h(SamplingSchedule{});
  const auto ref = generate(m, h, labels, {4, 1.0, true}, 9, 0);
  REQUIRE(heun.size() == ref.size());
  for (size_t i = 0; i < ref.size(); ++i) CHECK(heun[i] == ref[i]);
  CHECK(heun != g.sample(labels, 4, 1.0, 9));  // Euler differs: the user's sampler really ran
}
