// ShortcutModel<Net>: any velocity network s(x, t, k, y) together with its parameter arena (raw
// weights, gradients, EMA weights, optimizer moments). Training forward/backward run on the raw
// weights; velocity() runs without gradient on either weight set, with classifier-free guidance.
// Net must satisfy shortcut::VelocityNetwork (core/concepts.hpp); the model then satisfies
// shortcut::VelocityModel, the contract of SelfConsistencyLoss, OdeSampler, generate and Trainer.
#pragma once
#include <vector>

#include "shortcut/core/arena.hpp"
#include "shortcut/core/concepts.hpp"
#include "shortcut/nn/linear.hpp"

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
  // Accumulates parameter gradients into the arena's Grad role; dx (optional) gets the input gradient.
  void backward(const T* dout, T* dx = nullptr) {
    net_.backward(train_ctx_, arena_.data(Role::Param), arena_.data(Role::Grad), dout, dx);
  }

  // out[B, sample] = guided velocity, no gradient: v(null) + w (v(y) - v(null)), or v(y) when w == 1.
  // All inputs are device pointers; weights: Role::Param or Role::Ema.
  void velocity(T* out, const T* x, const T* t, const T* k, const int32_t* y, int B, T guidance, Role weights) {
    const T* P = arena_.data(weights);
    const size_t n = size_t(B) * sample_size();
    if (guidance == T(1)) {
      net_.forward(eval_ctx_, P, x, t, k, y, B, out);
      return;
    }
    // One forward of 2B rows: [x; x] with labels [y; null].
    nn::ensure(gx_, 2 * n); nn::ensure(gt_, 2 * size_t(B)); nn::ensure(gk_, 2 * size_t(B));
    nn::ensure(gy_, 2 * size_t(B)); nn::ensure(gv_, 2 * n);
    be_->copy(gx_.data(), x, n); be_->copy(gx_.data() + n, x, n);
    be_->copy(gt_.data(), t, size_t(B)); be_->copy(gt_.data() + B, t, size_t(B));
    be_->copy(gk_.data(), k, size_t(B)); be_->copy(gk_.data() + B, k, size_t(B));
    be_->copy(gy_.data(), y, size_t(B));
    std::vector<int32_t> nulls(B, null_label());
    be_->to_device(gy_.data() + B, nulls.data(), size_t(B));
    net_.forward(eval_ctx_, P, gx_.data(), gt_.data(), gk_.data(), gy_.data(), 2 * B, gv_.data());
    be_->cfg_combine(out, gv_.data(), gv_.data() + n, guidance, n);
  }

  // A context for callers that run the network directly (e.g. bootstrap targets) without
  // disturbing the training context.
  typename Net::Context& eval_context() { return eval_ctx_; }

 private:
  Backend* be_;
  Net net_;
  ParamArena<Backend> arena_;
  typename Net::Context train_ctx_, eval_ctx_;
  Buf out_, gx_, gt_, gk_, gv_;
  IBuf gy_;
};

}  // namespace shortcut
