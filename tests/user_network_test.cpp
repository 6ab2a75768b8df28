// The network as an extension point: a user's velocity network, written here against the public
// headers only, trains with the library's Trainer and samples with generate(). Its only weights are
// one point c_y per label, and its velocity (c_y - x) / (1 - t) is the exact flow towards c_y, so the
// method must drive c_y to the label's data point and one Euler step must land there.
#include <catch2/catch.hpp>

#include <shortcut/shortcut.hpp>

#include <cmath>

using namespace shortcut;

namespace {

// ---- the user's network (what a user writes; nothing below needs a library change) ----
struct PointsConfig {
  int dim = 2, classes = 3;
};

class PointsNet {
 public:
  using Backend = cpu::Backend<double>;  // raw loops over the pointers: host memory
  using Scalar = double;
  using Config = PointsConfig;
  struct Context {
    std::vector<double> inv;  // 1 / (1 - t) per row
    std::vector<int32_t> y;
  };

  PointsNet(Backend&, const Config& c) : c_(c) { c_off_ = L_.add("points", {c.classes + 1, c.dim}, Init::Zero); }
  const ParamLayout& layout() const { return L_; }
  nlohmann::json config_json() const { return {{"model", "points"}, {"dim", c_.dim}, {"classes", c_.classes}}; }
  std::vector<int64_t> sample_shape() const { return {c_.dim}; }
  int64_t sample_size() const { return c_.dim; }
  int num_classes() const { return c_.classes; }

  void forward(Context& ctx, const double* P, const double* x, const double* t, const double*, const int32_t* y,
               int B, double* out) const {
    ctx.inv.resize(size_t(B));
    ctx.y.assign(y, y + B);
    for (int b = 0; b < B; ++b) {
      ctx.inv[b] = 1 / (1 - t[b]);
      for (int i = 0; i < c_.dim; ++i)
        out[b * c_.dim + i] = (P[c_off_ + y[b] * c_.dim + i] - x[b * c_.dim + i]) * ctx.inv[b];
    }
  }
  void backward(Context& ctx, const double*, double* G, const double* dout, double* dx) const {
    for (size_t b = 0; b < ctx.y.size(); ++b)
      for (int i = 0; i < c_.dim; ++i) {
        const double g = dout[b * c_.dim + i] * ctx.inv[b];
        G[c_off_ + ctx.y[b] * c_.dim + i] += g;
        if (dx) dx[b * c_.dim + i] = -g;
      }
  }

 private:
  Config c_;
  ParamLayout L_;
  size_t c_off_ = 0;
};
// ---- end of the user's network ----

static_assert(VelocityNetwork<PointsNet> && VelocityModel<ShortcutModel<PointsNet>>);

}  // namespace

TEST_CASE("a user's network trains with Trainer and samples with generate", "[network][extension]") {
  cpu::Backend<double> be;
  const PointsConfig pc;
  const std::vector<std::vector<double>> point = {{1, 2}, {-2, 0.5}, {0.5, -1.5}};
  ShortcutModel<PointsNet> m(be, pc);
  ShortcutConfig sc;
  sc.denoise_timesteps = 8;
  // no null-label rows: the null label's best point is the data's mean, which no velocity of this
  // form fits exactly, and the loss would not go to zero
  sc.bootstrap_cfg = false;
  sc.class_dropout_prob = 0;
  AdamWConfig oc;
  oc.lr = 0.05;
  oc.weight_decay = 0;
  TrainerConfig tc;
  tc.steps = 300;
  tc.batch = 32;
  tc.ema_tau = 0.9;
  tc.progress = false;
  Trainer<ShortcutModel<PointsNet>> trainer(m, sc, oc, tc);
  trainer.run([&](Rng& rng, int B, std::vector<double>& x, std::vector<int32_t>& y) {
    x.resize(size_t(B) * 2);
    y.resize(size_t(B));
    for (int b = 0; b < B; ++b) {
      y[b] = int32_t(rng.randint(pc.classes));
      x[2 * b] = point[y[b]][0];
      x[2 * b + 1] = point[y[b]][1];
    }
  });
  CHECK(trainer.last().loss < 1e-3);
  const std::vector<int32_t> labels = {0, 1, 2, 0, 1, 2};
  for (int steps : {1, 4}) {
    const auto x = generate(m, sc.sampling(), labels, {steps, 1.0, true}, 5, 0);
    for (size_t r = 0; r < labels.size(); ++r)
      for (int i = 0; i < 2; ++i) CHECK(x[r * 2 + i] == Approx(point[labels[r]][i]).margin(0.02));
  }
}
