// ShortcutModel<Net>: any velocity network s(x, t, k, y) together with its parameter arena (raw
// weights, gradients, EMA weights, optimizer moments). Training forward/backward run on the raw
// weights; velocity() runs without gradient on either weight set, with classifier-free guidance.
// Net must satisfy shortcut::VelocityNetwork (core/concepts.hpp); the model then satisfies
// shortcut::VelocityModel, the contract of SelfConsistencyLoss, OdeSampler, generate and Trainer.
// To sample only, InferenceModel<Net> (train/inference_model.hpp) holds one weight set and nothing else.
#pragma once
#include <vector>

#include "shortcut/core/arena.hpp"
#include "shortcut/core/concepts.hpp"
#include "shortcut/nn/linear.hpp"
#include "shortcut/train/guided_velocity.hpp"

namespace shortcut {

template <VelocityNetwork Net>
class ShortcutModel {
 public:
  using Network = Net;
  using Backend = typename Net::Backend;
  using T = typename Net::Scalar;
  using Buf = typename Backend::template Buffer<T>;
  using IBuf = typename Backend::template Buffer<int32_t>;

  ShortcutModel(Backend& be, const typename Net::Config& cfg, uint64_t seed = 0)
      : be_(&be), net_(be, cfg), arena_(be, net_.layout()) {
    arena_.initialize(seed);
    arena_.copy_role(Role::Ema, Role::Param);
  }

  Backend& backend() const { return *be_; }
  Net& net() { return net_; }
  const Net& net() const { return net_; }
  ParamArena<Backend>& arena() { return arena_; }
  const ParamArena<Backend>& arena() const { return arena_; }
  int64_t sample_size() const { return net_.sample_size(); }
  int num_classes() const { return net_.num_classes(); }
  int32_t null_label() const { return net_.num_classes(); }

  // Training forward on the raw weights; keeps what backward() needs. Returns device [B, sample].
  const T* forward(const T* x, const T* t, const T* k, const int32_t* y, int B) {
    nn::ensure(out_, size_t(B) * sample_size());
    net_.forward(train_ctx_, arena_.data(Role::Param), x, t, k, y, B, out_.data());
    return out_.data();
  }
  // The training forward with its forward-mode tangent along (x_dot, t_dot, k_dot) (DESIGN.md §8):
  // out and out_dot, device [B, sample]. backward() afterwards runs on the primal, as after forward().
  struct WithTangent {
    const T* out;
    const T* out_dot;
  };
  WithTangent forward_tangent(const T* x, const T* t, const T* k, const int32_t* y, int B, const T* x_dot,
                              const T* t_dot, const T* k_dot)
    requires TangentNetwork<Net>
  {
    const T* out = forward(x, t, k, y, B);
    nn::ensure(out_dot_, out_.size());
    net_.tangent(train_ctx_, arena_.data(Role::Param), x_dot, t_dot, k_dot, out_dot_.data());
    return {out, out_dot_.data()};
  }
  // Accumulates parameter gradients into the arena's Grad role; dx (optional) gets the input gradient.
  void backward(const T* dout, T* dx = nullptr) {
    net_.backward(train_ctx_, arena_.data(Role::Param), arena_.data(Role::Grad), dout, dx);
  }

  // out[B, sample] = guided velocity, no gradient: v(null) + w (v(y) - v(null)), or v(y) when w == 1.
  // All inputs are device pointers, unchecked (the library's own loops); weights: Role::Param or Role::Ema.
  void velocity(T* out, const T* x, const T* t, const T* k, const int32_t* y, int B, T guidance, Role weights) {
    guided_(*be_, net_, arena_.data(weights), out, x, t, k, y, B, guidance);
  }
  // The same with typed device data (out, x [B, sample]; t, k, y [B], B = y.size()), shapes and
  // labels checked: the entry point for callers outside the library's own loops.
  void velocity(DeviceSpan<T, Backend> out, DeviceSpan<const T, Backend> x, DeviceSpan<const T, Backend> t,
                DeviceSpan<const T, Backend> k, DeviceSpan<const int32_t, Backend> y, T guidance, Role weights) {
    const int B = detail::check_velocity_args(*be_, sample_size(), num_classes(), out, x, t, k, y);
    velocity(out.data(), x.data(), t.data(), k.data(), y.data(), B, guidance, weights);
  }

  // A context for callers that run the network directly (e.g. bootstrap targets) without
  // disturbing the training context.
  typename Net::Context& eval_context() { return guided_.context(); }

 private:
  Backend* be_;
  Net net_;
  ParamArena<Backend> arena_;
  typename Net::Context train_ctx_;
  detail::GuidedVelocity<Net> guided_;  // the evaluation context and guidance scratch
  Buf out_, out_dot_;
};

}  // namespace shortcut
