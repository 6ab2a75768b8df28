// α-Flow (DESIGN.md §8; Zhang et al. 2025): one family from flow matching to MeanFlow. With s = t + α d,
//   u_tgt = α ṽ + (1 - α) sg(u_θ(x_t + α d ṽ, s, (1 - α) d))
// on the rows with d > 0 (α = 1: flow matching on every row; α = 1/2: a shortcut-like two-piece
// target; α -> 0: MeanFlow, whose JVP target is used at α = 0). The curriculum holds α = 1 for the
// first alpha_start of training, moves it to 0 along a half cosine until alpha_end, and trains
// MeanFlow after. Rows, (t, d) sampling, guidance and the adaptive weight are MeanFlow's.
//
// The official code (snap-research/alphaflow) could not be fetched here: the target is DESIGN.md's
// and the curriculum's shape (a half cosine between two fractions of the run) is this library's
// choice; the paper anneals α with a sigmoid between two iteration counts. Near α = 0 the
// two-piece residual shrinks like α (u_tgt ≈ u + α (ṽ + d du/dt - u)); the adaptive weight
// (p = 1) rescales it, which is why the curriculum needs it.
#pragma once
#include <cmath>
#include <numbers>
#include <string>

#include "shortcut/train/objectives/average_velocity.hpp"

namespace shortcut {

struct AlphaFlowConfig : AverageVelocityConfig {
  double alpha_start = 0.25;  // fraction of the run at α = 1
  double alpha_end = 0.75;    // fraction of the run from which α = 0 (MeanFlow)

  void validate() const {
    AverageVelocityConfig::validate();
    if (!(alpha_start >= 0 && alpha_start <= alpha_end && alpha_end <= 1))
      throw ConfigError(cat("alpha_start and alpha_end must satisfy 0 <= start <= end <= 1, got ", alpha_start,
                            ", ", alpha_end));
  }
  // α for the step about to be taken.
  double alpha(const TrainingProgress& p) const {
    if (p.total <= 0) return 1.0;
    const double f = double(p.step) / double(p.total);
    if (f < alpha_start) return 1.0;
    if (f >= alpha_end) return 0.0;
    return 0.5 * (1 + std::cos(std::numbers::pi * (f - alpha_start) / (alpha_end - alpha_start)));
  }
  nlohmann::json to_json() const {
    nlohmann::json j = AverageVelocityConfig::to_json();
    j["name"] = "alpha_flow";
    j["alpha_start"] = alpha_start;
    j["alpha_end"] = alpha_end;
    return j;
  }
};

template <TangentModel Model>
class AlphaFlow {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;

  explicit AlphaFlow(const AlphaFlowConfig& c) : c_((c.validate(), c)) {}

  std::string name() const { return "alpha_flow"; }
  nlohmann::json to_json() const { return c_.to_json(); }
  SamplingSchedule sampling() const { return c_.sampling(); }
  void validate(int B) const { check_batch_rows(B); }
  int bootstrap_rows(int B) const { return c_.average_rows(B); }
  void set_progress(const TrainingProgress& p) { alpha_ = c_.alpha(p); }
  double alpha() const { return alpha_; }
  const AverageVelocityPlan& plan() const { return plan_; }
  const T* inputs() const { return rows_.rows.xt(); }
  const T* targets() const { return rows_.rows.target(); }

  LossResult step(Model& m, DeviceSpan<const T, Backend> x1, HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    check_step_inputs(s, x1, y, m.sample_size(), m.num_classes());
    plan_ = average_velocity_plan(c_, s, y, m.num_classes(), rng);
    rows_.start(m, c_, plan_, s, rng.seed(), x1.data());
    const T* u = alpha_ == 0 ? rows_.jvp_target(m) : rows_.two_piece_target(m, plan_, c_.average_rows(s), alpha_);
    return rows_.regress(m, u, c_.average_rows(s), s.batch, c_.average_rows(s.batch), c_.norm_p, c_.norm_c);
  }

 private:
  AlphaFlowConfig c_;
  double alpha_ = 1.0;
  AverageVelocityPlan plan_;
  AverageVelocityRows<Model> rows_;
};

}  // namespace shortcut
