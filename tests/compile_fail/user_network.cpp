// Compile-fail test of the network contract (shortcut::VelocityNetwork, core/concepts.hpp): a user's
// own velocity network plugged into ShortcutModel. Built twice by tests/CMakeLists.txt: as is, it must
// compile; with CF_BROKEN defined it lacks sample_size() and the build must fail with one error that
// names the concept and the missing member (checked by check_compile.cmake).
#include "shortcut/cpu/backend.hpp"
#include "shortcut/train/shortcut_model.hpp"

namespace {

using Be = shortcut::cpu::Backend<float>;

struct MyConfig {
  int dim = 2;
};

// v(x, t, k, y) = w x: the smallest network that satisfies the contract.
class MyNet {
 public:
  using Backend = Be;
  using Scalar = float;
  using Config = MyConfig;
  struct Context {
    int B = 0;
    std::vector<float> x;
  };

  MyNet(Be&, const MyConfig& c) : c_(c) { w_ = L_.add("w", {1}, shortcut::Init::Zero); }
  const shortcut::ParamLayout& layout() const { return L_; }
  nlohmann::json config_json() const { return {{"model", "mine"}, {"dim", c_.dim}}; }
  std::vector<int64_t> sample_shape() const { return {c_.dim}; }
#ifndef CF_BROKEN
  int64_t sample_size() const { return c_.dim; }
#endif
  int num_classes() const { return 1; }

  void forward(Context& c, const float* P, const float* x, const float*, const float*, const int32_t*, int B,
               float* out) const {
    c.B = B;
    c.x.assign(x, x + size_t(B) * c_.dim);
    for (size_t i = 0; i < c.x.size(); ++i) out[i] = P[w_] * x[i];
  }
  void backward(Context& c, const float*, float* G, const float* dout, float* dx) const {
    for (size_t i = 0; i < c.x.size(); ++i) G[w_] += dout[i] * c.x[i];
    if (dx) std::fill(dx, dx + c.x.size(), 0.f);
  }

 private:
  MyConfig c_;
  shortcut::ParamLayout L_;
  size_t w_ = 0;
};

}  // namespace

void train_my_net() {
  Be be;
  shortcut::ShortcutModel<MyNet> model(be, MyConfig{});
}
