// The objective as an extension point: a user's objective, written here against the public headers
// only (under 100 lines), trains through Trainer, lands in the checkpoint's metadata and samples.
// It is flow matching rebuilt from the public pieces (plan_batch, RegressionRows, the backend's
// flow_rows), so through the same Trainer it must give the built-in flow matching's weights bit for bit.
#include <catch2/catch.hpp>

#include <shortcut/shortcut.hpp>

#include "test_util.hpp"

using namespace shortcut;
namespace fs = std::filesystem;
using Be = cpu::Backend<float>;
using Model = ShortcutModel<nn::MlpNet<Be>>;

namespace {

// ---- the user's objective ----
template <class M>
class MyFlowMatching {
 public:
  using T = typename M::T;
  explicit MyFlowMatching(int denoise_timesteps) {
    cfg_.objective = Objective::FlowMatching;
    cfg_.denoise_timesteps = denoise_timesteps;
  }
  std::string name() const { return "my_flow_matching"; }
  nlohmann::json to_json() const { return {{"name", name()}, {"denoise_timesteps", cfg_.denoise_timesteps}}; }
  ShortcutConfig sampling() const { return cfg_; }  // not conditioned on d: k = L when sampling
  void validate(int B) const { cfg_.validate(B); }
  int bootstrap_rows(int) const { return 0; }
  void set_progress(const TrainingProgress&) {}

  LossResult step(M& m, DeviceSpan<const T, typename M::Backend> x1, HostSpan<const int32_t> y, BatchSlice s,
                  Rng& rng) {
    auto& be = m.backend();
    const int64_t n = m.sample_size();
    check_step_inputs(s, x1, y, n, m.num_classes());
    const BatchPlan p = plan_batch(cfg_, y.data(), s, m.num_classes(), rng);
    rows_.prepare(m, p.t, p.k, p.y);
    x0_.resize(size_t(p.B * n));
    be.normal(x0_.data(), x0_.size(), rng.seed(), p.noise_stream, uint64_t(s.flow_begin) * uint64_t(n));
    be.flow_rows(rows_.xt(), rows_.target(), x1.data(), x0_.data(), rows_.t(), p.B, int(n));
    return rows_.regress(m, p.B, 0, s.batch, 0);
  }

 private:
  ShortcutConfig cfg_;
  RegressionRows<M> rows_;
  typename M::Backend::template Buffer<T> x0_;
};
// ---- end of the user's objective ----

static_assert(TrainingObjective<MyFlowMatching<Model>, Model>);

void toy_batch(Rng& rng, int B, std::vector<float>& x, std::vector<int32_t>& y) {
  x = data::sample_toy2d("8gaussians", B, rng);
  y.assign(size_t(B), 0);
}

}  // namespace

TEST_CASE("a user's objective trains through Trainer, is named in the checkpoint and samples",
          "[objectives][extension]") {
  Be be;
  nn::MlpNetConfig c;
  c.hidden = 16;
  c.depth = 2;
  AdamWConfig oc;
  oc.lr = 3e-3;
  TrainerConfig tc;
  tc.steps = 10;
  tc.batch = 32;
  tc.progress = false;
  tc.seed = testutil::gen()() % 1000;
  ShortcutConfig builtin;
  builtin.objective = Objective::FlowMatching;
  builtin.denoise_timesteps = 16;

  Model ours(be, c, 3), theirs(be, c, 3);
  const fs::path run_dir = testutil::scratch_dir("user_objective") / "run";
  tc.out_dir = run_dir.string();
  Trainer<Model, dist::LocalCommunicator, MyFlowMatching<Model>> t(ours, MyFlowMatching<Model>(16), oc, tc);
  t.run(toy_batch);
  tc.out_dir = "";
  Trainer<Model>(theirs, builtin, oc, tc).run(toy_batch);
  CHECK(ours.arena().to_host(Role::Param) == theirs.arena().to_host(Role::Param));  // bit for bit
  CHECK(ours.arena().to_host(Role::Param) != Model(be, c, 3).arena().to_host(Role::Param));  // it trained

  // the checkpoint names the objective and tells the sampler the convention
  const fs::path dir = run_dir / "checkpoints" / "last";
  const auto info = read_checkpoint_info(dir);
  CHECK(info.training_json.at("objective").at("name") == "my_flow_matching");
  CHECK(info.training.objective == Objective::FlowMatching);
  auto g = load_generator(be, dir);
  const std::vector<int32_t> labels(8, 0);
  CHECK(g.sample(labels, 4, 1.0, 2) == generate(ours, builtin, labels, {4, 1.0, true}, 2, 0));
}
