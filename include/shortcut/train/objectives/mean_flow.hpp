// MeanFlow (DESIGN.md §8; Geng et al. 2025): the network reads the step size d itself and learns the
// average velocity u over [t, t + d] through the MeanFlow identity u = v + d du/dt, du/dt being one
// forward-mode derivative of the current network at (x_t, t, d) along (ṽ, 1, -1):
//   u_tgt = sg(ṽ + d (∂_x u ṽ + ∂_t u - ∂_d u)),   loss = sg(w) ||u_θ - u_tgt||^2,   w = 1 / (||Δ||^2 + c)^p.
// One training forward carries the tangents beside the activations (ShortcutModel::forward_tangent);
// the gradient flows through the primal output only, by the ordinary backward. Rows with d = 0
// (flow_fraction of the batch) are flow matching rows: their target is ṽ.
//
// Where this differs from the official code (github Gsunshine/meanflow, meanflow.py) and why:
//  - time runs from noise (t = 0) to data here: their (t, r), t the noisier end, are our (1 - t, d = t - r),
//    and their tangent (v, 1, 0) in (z, t, r) is (v, 1, -1) in our (x, t, d); v = x1 - (1 - 1e-5) x0;
//  - labels are dropped row by row with probability p (theirs: the first Binomial(B, p) rows, the
//    same distribution of the count), as every other objective here drops them;
//  - c = 1e-3 by default (DESIGN.md §8; theirs 1e-2) and no guidance in the target by default
//    (ω = 1, κ = 0; their ImageNet setting is ω = 1, κ = 0.5): both are config fields;
//  - the guidance queries u(x_t, t, 0 | y) and u(x_t, t, 0 | null) run on every row of a batch that
//    has a guided row (theirs: all rows too), the mix applied only where the row is guided.
#pragma once
#include <string>

#include "shortcut/train/objectives/average_velocity.hpp"

namespace shortcut {

// MeanFlow has no settings beyond those the average-velocity objectives share.
using MeanFlowConfig = AverageVelocityConfig;

template <TangentModel Model>
class MeanFlow {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;

  explicit MeanFlow(const MeanFlowConfig& c) : c_((c.validate(), c)) {}

  std::string name() const { return "meanflow"; }
  nlohmann::json to_json() const {
    nlohmann::json j = c_.to_json();
    j["name"] = "meanflow";
    return j;
  }
  SamplingSchedule sampling() const { return c_.sampling(); }
  void validate(int B) const { check_batch_rows(B); }
  int bootstrap_rows(int B) const { return c_.average_rows(B); }  // the rows with d > 0 come first
  void set_progress(const TrainingProgress&) {}
  const AverageVelocityPlan& plan() const { return plan_; }
  const T* inputs() const { return rows_.rows.xt(); }
  const T* targets() const { return rows_.rows.target(); }

  LossResult step(Model& m, DeviceSpan<const T, Backend> x1, HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    check_step_inputs(s, x1, y, m.sample_size(), m.num_classes());
    plan_ = average_velocity_plan(c_, s, y, m.num_classes(), rng);
    rows_.start(m, c_, plan_, s, rng.seed(), x1.data());
    const T* u = rows_.jvp_target(m);
    return rows_.regress(m, u, c_.average_rows(s), s.batch, c_.average_rows(s.batch), c_.norm_p, c_.norm_c);
  }

 private:
  MeanFlowConfig c_;
  AverageVelocityPlan plan_;
  AverageVelocityRows<Model> rows_;
};

}  // namespace shortcut
