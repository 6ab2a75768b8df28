// TrainingStep: one optimizer step as the Trainer takes it on one process — zero the gradients, the
// objective's step (rows, targets, forward, MSE, backward), AdamW, the EMA update — where a step
// whose loss is not finite leaves the weights, moments and EMA as they were (the Trainer then stops
// with its divergence error, as it always did).
//
// An objective that comes in parts (RecordableObjective below; SelfConsistencyLoss and the §7
// baselines in objectives/ do) makes the whole step after the host's part one recorded body
// (core/capture.hpp): on the CUDA backend one graph launch a step, replayed from the second step of
// a batch shape on. What changes from step to
// step is staged by the host in fixed host memory (core/staged.hpp: the data rows, the batch plan,
// the noise stream, AdamW's learning rate and bias corrections) and uploaded by the body's first
// nodes; the update's guard is a flag the body computes from the row losses on the device, since the
// host reads the losses only after the launch. Other objectives take the same sequence eagerly.
#pragma once
#include <algorithm>
#include <cmath>
#include <concepts>

#include "shortcut/core/capture.hpp"
#include "shortcut/core/staged.hpp"
#include "shortcut/train/adamw.hpp"
#include "shortcut/train/ema.hpp"
#include "shortcut/train/objective.hpp"

namespace shortcut {

// An objective whose step() splits into the host's part and device work that can be recorded:
//   stage_step(m, x1, y, slice, rng)  the plan and every per-step value, staged; no device work
//   step_key(m, x1) -> CaptureKey     what record_step's host side decides from
//   record_step(m, x1)                the device work: uploads, rows, targets, forward, loss, backward
//   row_losses() -> device pointer    the rows' losses of that work, on the device
//   step_losses(m) -> LossResult      their sums, read back
template <class O, class Model>
concept RecordableObjective =
    TrainingObjective<O, Model> &&
    requires(O& o, const O& co, Model& m, const Model& cm, DeviceSpan<const typename Model::T, typename Model::Backend> x1,
             HostSpan<const int32_t> y, BatchSlice s, Rng& rng, const typename Model::T* p) {
      o.stage_step(m, x1, y, s, rng);
      { co.step_key(cm, p) } -> std::same_as<CaptureKey>;
      o.record_step(m, p);
      { co.row_losses() } -> std::convertible_to<const typename Model::T*>;
      { o.step_losses(m) } -> std::same_as<LossResult>;
    };

template <VelocityModel Model, class Obj>
  requires TrainingObjective<Obj, Model>
class TrainingStep {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;
  using DSpan = DeviceSpan<const T, Backend>;
  static constexpr bool kRecorded = RecordableObjective<Obj, Model>;

  // The step on the slice's data rows x1 in host memory ([s.rows(), sample]) with labels y.
  LossResult take(Model& m, Obj& loss, AdamW& opt, const EmaTracker& ema, HostSpan<const T> x1,
                  HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    check_size("training data x1", x1.size(), size_t(s.rows()) * size_t(m.sample_size()));
    const Backend& be = m.backend();
    if constexpr (kRecorded) {
      be.synchronize();  // the previous step's upload may still read the staged rows
      std::copy(x1.begin(), x1.end(), x1_.host(x1.size()));
      return recorded(m, loss, opt, ema, DSpan::adopt(x1_.data(), x1.size()), y, s, rng, true);
    } else {
      x1_.put(be, std::vector<T>(x1.begin(), x1.end()));
      return eager(m, loss, opt, ema, DSpan::adopt(x1_.data(), x1.size()), y, s, rng);
    }
  }
  // The same on rows already in device memory (a DeviceDataSource wrote them).
  LossResult take(Model& m, Obj& loss, AdamW& opt, const EmaTracker& ema, DSpan x1, HostSpan<const int32_t> y,
                  BatchSlice s, Rng& rng) {
    if constexpr (kRecorded)
      return recorded(m, loss, opt, ema, x1, y, s, rng, false);
    else
      return eager(m, loss, opt, ema, x1, y, s, rng);
  }

 private:
  LossResult eager(Model& m, Obj& loss, AdamW& opt, const EmaTracker& ema, DSpan x1, HostSpan<const int32_t> y,
                   BatchSlice s, Rng& rng) {
    m.arena().zero_grad();
    const LossResult r = loss.step(m, x1, y, s, rng);
    if (!std::isfinite(r.loss)) return r;
    opt.step(m.arena());
    ema.update(m.arena());
    return r;
  }

  LossResult recorded(Model& m, Obj& loss, AdamW& opt, const EmaTracker& ema, DSpan x1, HostSpan<const int32_t> y,
                      BatchSlice s, Rng& rng, bool upload_x1) {
    ParamArena<Backend>& a = m.arena();
    const Backend& be = m.backend();
    loss.stage_step(m, x1, y, s, rng);
    opt.stage(a, lr_);
    a.enable(Role::Ema);
    nn::ensure(skip_, 1);
    CaptureKey key = loss.step_key(m, x1.data());
    key.add(this).add(&opt).add(ema.tau()).add(a.data(Role::Param)).add(int(upload_x1)).add(int(lr_.size()));
    run_captured(be, key, [&] {
      if (upload_x1) x1_.upload(be);
      a.zero_grad();
      loss.record_step(m, x1.data());
      be.flag_nonfinite(skip_.data(), loss.row_losses(), size_t(s.rows()));
      opt.record(a, lr_, skip_.data());
      ema.update(a, skip_.data());
    });
    const LossResult r = loss.step_losses(m);
    if (std::isfinite(r.loss)) opt.commit();  // else the device skipped the update
    return r;
  }

  Staged<Backend, T> x1_;  // host data rows, staged
  Staged<Backend, T> lr_;  // AdamW's {lr, c1, c2} per run of parameters
  typename Backend::template Buffer<int32_t> skip_;  // 1 where the step's loss was not finite
};

}  // namespace shortcut
