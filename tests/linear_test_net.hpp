// A velocity network with a closed form, for testing the method independently of the DiT:
// v_i = a x_i + bt t + bk k + by[y]  (per element). Implements the Net interface on the CPU backend,
// forward mode included.
#pragma once
#include <nlohmann/json.hpp>
#include <vector>

#include "shortcut/cpu/backend.hpp"
#include "shortcut/core/param_layout.hpp"
#include "shortcut/nn/linear.hpp"

struct LinearNetConfig {
  int dim = 3, classes = 2;
};

template <class T>
class LinearTestNet {
 public:
  using Backend = shortcut::cpu::Backend<T>;
  using Scalar = T;
  using Config = LinearNetConfig;
  struct Context {
    int B = 0;
    std::vector<T> x, t, k;
    std::vector<int32_t> y;
  };
  LinearTestNet(Backend&, const Config& c) : c_(c) {
    a_ = L_.add("a", {1}, shortcut::Init::Zero);
    bt_ = L_.add("bt", {1}, shortcut::Init::Zero);
    bk_ = L_.add("bk", {1}, shortcut::Init::Zero);
    by_ = L_.add("by", {c.classes + 1}, shortcut::Init::Zero);
  }
  const shortcut::ParamLayout& layout() const { return L_; }
  std::vector<int64_t> sample_shape() const { return {c_.dim}; }
  int64_t sample_size() const { return c_.dim; }
  int num_classes() const { return c_.classes; }
  nlohmann::json config_json() const { return {{"model", "linear-test"}, {"dim", c_.dim}, {"classes", c_.classes}}; }

  // Every (t, k, y) this net was queried with, for tests that check what the method asked.
  mutable std::vector<T> seen_t, seen_k;
  mutable std::vector<int32_t> seen_y;

  void forward(Context& c, const T* P, const T* x, const T* t, const T* k, const int32_t* y, int B, T* out) const {
    c.B = B;
    c.x.assign(x, x + size_t(B) * c_.dim);
    c.t.assign(t, t + B);
    c.k.assign(k, k + B);
    c.y.assign(y, y + B);
    for (int b = 0; b < B; ++b) {
      seen_t.push_back(t[b]); seen_k.push_back(k[b]); seen_y.push_back(y[b]);
      for (int i = 0; i < c_.dim; ++i)
        out[b * c_.dim + i] = P[a_] * x[b * c_.dim + i] + P[bt_] * t[b] + P[bk_] * k[b] + P[by_ + y[b]];
    }
  }
  // The forward mode: out_dot_i = a x_dot_i + bt t_dot + bk k_dot (the average-velocity objectives).
  void tangent(Context& c, const T* P, const T* x_dot, const T* t_dot, const T* k_dot, T* out_dot) const {
    for (int b = 0; b < c.B; ++b)
      for (int i = 0; i < c_.dim; ++i)
        out_dot[b * c_.dim + i] = P[a_] * x_dot[b * c_.dim + i] + P[bt_] * t_dot[b] + P[bk_] * k_dot[b];
  }
  void backward(Context& c, const T*, T* G, const T* dout, T* = nullptr) const {
    for (int b = 0; b < c.B; ++b)
      for (int i = 0; i < c_.dim; ++i) {
        T g = dout[b * c_.dim + i];
        G[a_] += g * c.x[b * c_.dim + i];
        G[bt_] += g * c.t[b];
        G[bk_] += g * c.k[b];
        G[by_ + c.y[b]] += g;
      }
  }
  size_t a_, bt_, bk_, by_;

 private:
  Config c_;
  shortcut::ParamLayout L_;
};
