// The objective as an extension point: a user's objective, written here against the public headers
// only (under 100 lines), trains through Trainer, lands in the checkpoint's metadata and samples.
// It is flow matching rebuilt from the public pieces (RegressionRows, the backend's flow_rows), so
// through the same Trainer it must give the built-in flow matching's weights bit for bit.
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
  explicit MyFlowMatching(int denoise_timesteps) : M_(denoise_timesteps) {}
  std::string name() const { return "my_flow_matching"; }
  nlohmann::json to_json() const { return {{"name", name()}, {"denoise_timesteps", M_}}; }
  // not conditioned on d: k = L when sampling
  SamplingSchedule sampling() const { return {.reads_d = false, .denoise_timesteps = M_}; }
  void validate(int) const {}
  int bootstrap_rows(int) const { return 0; }
  void set_progress(const TrainingProgress&) {}

  LossResult step(M& m, DeviceSpan<const T, typename M::Backend> x1, HostSpan<const int32_t> y, BatchSlice s,
                  Rng& rng) {
    auto& be = m.backend();
    const int64_t n = m.sample_size();
    const int classes = m.num_classes();
    check_step_inputs(s, x1, y, n, classes);
    // the whole batch's draws (t on the grid of M points, the label dropped or not), this slice's rows kept
    std::vector<float> t_all(size_t(s.batch)), t, k(size_t(s.rows()), float(ilog2(M_)));
    std::vector<char> drop(size_t(s.batch));
    for (int r = 0; r < s.batch; ++r) {
      t_all[r] = float(rng.randint(M_)) / float(M_);
      drop[r] = classes <= 1 || rng.uniform() < 0.1;
    }
    std::vector<int32_t> yq;
    for (int i = 0; i < s.rows(); ++i) {
      t.push_back(t_all[s.global_row(i)]);
      yq.push_back(drop[s.global_row(i)] ? classes : y[i]);
    }
    rows_.prepare(m, t, k, yq);
    x0_.resize(size_t(s.rows() * n));
    be.normal(x0_.data(), x0_.size(), rng.seed(), rng.next_stream(), uint64_t(s.flow_begin) * uint64_t(n));
    be.flow_rows(rows_.xt(), rows_.target(), x1.data(), x0_.data(), rows_.t(), s.rows(), int(n));
    return rows_.regress(m, s.rows(), 0, s.batch, 0);
  }

 private:
  int M_;
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
  FlowMatchingConfig builtin;
  builtin.denoise_timesteps = 16;

  Model ours(be, c, 3), theirs(be, c, 3);
  const fs::path run_dir = testutil::scratch_dir("user_objective") / "run";
  tc.out_dir = run_dir.string();
  Trainer<Model, dist::LocalCommunicator, MyFlowMatching<Model>> t(ours, MyFlowMatching<Model>(16), oc, tc);
  t.run(toy_batch);
  tc.out_dir = "";
  Trainer<Model, dist::LocalCommunicator, FlowMatching<Model>>(theirs, FlowMatching<Model>(builtin), oc, tc).run(toy_batch);
  CHECK(ours.arena().to_host(Role::Param) == theirs.arena().to_host(Role::Param));  // bit for bit
  CHECK(ours.arena().to_host(Role::Param) != Model(be, c, 3).arena().to_host(Role::Param));  // it trained

  // the checkpoint names the objective and tells the sampler the convention
  const fs::path dir = run_dir / "checkpoints" / "last";
  const auto info = read_checkpoint_info(dir);
  CHECK(info.training_json.at("objective").at("name") == "my_flow_matching");
  CHECK_FALSE(info.sampling.reads_d);
  auto g = load_generator(be, dir);
  const std::vector<int32_t> labels(8, 0);
  CHECK(g.sample(labels, 4, 1.0, 2) == generate(ours, builtin.sampling(), labels, {4, 1.0, true}, 2, 0));
}
