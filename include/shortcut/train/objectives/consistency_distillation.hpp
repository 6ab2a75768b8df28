// Consistency distillation (DESIGN.md §7; a teacher, the network does not read d): a trained
// flow-matching teacher takes one Euler step of 1/M from x_t, clipped to ±4, to x' at t' = t + 1/M;
// the student's EMA predicts the endpoint from there and the row is trained towards it:
//   x' = clip(x_t + s_teacher(x_t, t) / M),  x̂1 = x' + (1 - t') s_ema(x', t'),  target = (x̂1 - x_t) / (1 - t),
// t on the grid of multiples of 1/M below 1. Queries use k = L, so the sampler treats the model as
// flow matching does.
#pragma once
#include <string>
#include <vector>

#include "shortcut/train/objectives/consistency_training.hpp"
#include "shortcut/train/objectives/teacher.hpp"

namespace shortcut {

struct ConsistencyDistillationConfig {
  int denoise_timesteps = 128;      // M: the teacher's step is 1/M
  double class_dropout_prob = 0.1;  // rows' labels dropped to the null class
  bool target_ema = true;           // the endpoint from the student's EMA weights (false: raw)
  double step_clip = 4;             // x' clipped to ±step_clip
  std::string teacher;              // checkpoint folder or weights file of a flow-matching model

  void validate() const {
    ConsistencyTrainingConfig{denoise_timesteps, class_dropout_prob, target_ema}.validate();
    if (!(step_clip > 0)) throw ConfigError(cat("step_clip must be positive, got ", step_clip));
  }
  int levels() const { return ilog2(denoise_timesteps); }
  nlohmann::json to_json() const {
    return {{"name", "consistency_distillation"}, {"denoise_timesteps", denoise_timesteps},
            {"class_dropout_prob", class_dropout_prob}, {"target_ema", target_ema}, {"step_clip", step_clip},
            {"teacher", teacher}};
  }
};

template <VelocityModel Model>
class ConsistencyDistillation {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;

  explicit ConsistencyDistillation(const ConsistencyDistillationConfig& c) : c_((c.validate(), c)), teacher_(c.teacher) {}

  std::string name() const { return "consistency_distillation"; }
  nlohmann::json to_json() const { return c_.to_json(); }
  SamplingSchedule sampling() const { return sampling_config(false, c_.denoise_timesteps, c_.class_dropout_prob); }
  void validate(int B) const { check_batch_rows(B); }
  int bootstrap_rows(int) const { return 0; }
  void set_progress(const TrainingProgress&) {}
  void attach(Model& m) { teacher_.attach(m); }
  const ConsistencyPlan& plan() const { return plan_; }
  const T* inputs() const { return cr_.rows.xt(); }
  const T* targets() const { return cr_.rows.target(); }
  const T* later_points() const { return xp_.data(); }

  // x_t on each row's path, the teacher's clipped Euler step of 1/M to x', the endpoint the
  // student's EMA (or raw) weights predict from x', the regression towards it.
  LossResult step(Model& m, DeviceSpan<const T, Backend> x1, HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    if (!teacher_.attached()) teacher_.attach(m);
    const Backend& be = m.backend();
    const int64_t n = m.sample_size();
    check_step_inputs(s, x1, y, n, m.num_classes());
    const int M = c_.denoise_timesteps;
    plan_ = consistency_plan(s, y, m.num_classes(), M, 1.0 / M, float(c_.levels()), c_.class_dropout_prob, rng);
    const int B = s.rows();
    const size_t N = size_t(B) * size_t(n);
    nn::ensure(xp_, N); nn::ensure(vt_, N); nn::ensure(step_, size_t(B));
    cr_.start(m, plan_, s, rng.seed(), x1.data());
    RegressionRows<Model>& rows = cr_.rows;
    teacher_.forward(rows.xt(), rows.t(), rows.k(), rows.y(), B, vt_.data());
    // x' = clip(x_t + v / M): the bootstrap half step with no guidance and a step of 1/M per row
    be.fill(step_.data(), T(1.0 / M), size_t(B));
    be.bootstrap_half_step(xp_.data(), vt_.data(), rows.xt(), vt_.data(), nullptr, 0, T(1), step_.data(), B, int(n),
                           T(c_.step_clip));
    cr_.targets(m, xp_.data(), m.arena().data(c_.target_ema ? Role::Ema : Role::Param), B);
    return rows.regress(m, B, 0, s.batch, 0);
  }

 private:
  ConsistencyDistillationConfig c_;
  TeacherWeights<Model> teacher_;
  ConsistencyPlan plan_;
  ConsistencyRows<Model> cr_;
  typename Backend::template Buffer<T> xp_, vt_, step_;
};

}  // namespace shortcut
