// TrainingStep: one optimizer step, written once for every objective and for one process or many:
//   zero the gradients; the objective's step (rows, targets, forward, MSE, backward); the gradient
//   reduction (data parallel: the sums over the ranks; one process: nothing); AdamW; the EMA update.
// A step whose loss is not finite is not applied: weights, moments, EMA and the step count stay as
// they were, and the caller (the Trainer) reports the divergence.
#pragma once
#include <cmath>
#include <utility>
#include <vector>

#include "shortcut/core/span.hpp"
#include "shortcut/nn/linear.hpp"
#include "shortcut/train/adamw.hpp"
#include "shortcut/train/ema.hpp"
#include "shortcut/train/objective.hpp"

namespace shortcut {

// The reduction of one process: the gradients and the loss sums are already the batch's.
struct NoReduction {
  void operator()(LossResult&) const {}
};

template <VelocityModel Model, class Obj>
  requires TrainingObjective<Obj, Model>
class TrainingStep {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;
  using DSpan = DeviceSpan<const T, Backend>;

  // The step on the slice's data rows x1 in device memory ([s.rows(), sample]) with labels y.
  // reduce(LossResult&) runs between the backward and AdamW: a data-parallel trainer sums the
  // arena's gradients and the loss sums over the ranks there.
  template <class Reduce = NoReduction>
  LossResult take(Model& m, Obj& loss, AdamW& opt, const EmaTracker& ema, DSpan x1, HostSpan<const int32_t> y,
                  BatchSlice s, Rng& rng, Reduce&& reduce = {}) {
    m.arena().zero_grad();
    LossResult r = loss.step(m, x1, y, s, rng);
    reduce(r);
    if (!std::isfinite(r.loss)) return r;
    opt.step(m.arena());
    ema.update(m.arena());
    return r;
  }
  // The same on rows in host memory, copied to the device first.
  template <class Reduce = NoReduction>
  LossResult take(Model& m, Obj& loss, AdamW& opt, const EmaTracker& ema, HostSpan<const T> x1,
                  HostSpan<const int32_t> y, BatchSlice s, Rng& rng, Reduce&& reduce = {}) {
    check_size("training data x1", x1.size(), size_t(s.rows()) * size_t(m.sample_size()));
    nn::ensure(x1_, x1.size());
    m.backend().to_device(x1_.data(), x1.data(), x1.size());
    return take(m, loss, opt, ema, DSpan::adopt(x1_.data(), x1.size()), y, s, rng, std::forward<Reduce>(reduce));
  }

 private:
  typename Backend::template Buffer<T> x1_;  // host data rows, on the device
};

}  // namespace shortcut
