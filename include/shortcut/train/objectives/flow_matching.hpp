// Flow matching (DESIGN.md §1): every row at a time t on the grid of M points, trained towards the
// straight path's velocity x1 - (1 - 1e-5) x0, with the network's step input fixed at k = L (it never
// learns to read the step size, so the sampler queries it at k = L whatever the number of steps).
#pragma once
#include <string>
#include <vector>

#include "shortcut/train/objective.hpp"
#include "shortcut/train/objectives/rows.hpp"

namespace shortcut {

struct FlowMatchingConfig {
  int denoise_timesteps = 128;      // M: t on the grid i / M, the sampler's largest step count
  double class_dropout_prob = 0.1;  // rows' labels dropped to the null class
  double cfg_scale = 1.5;           // 0: trained unconditional (every label the null class); else recorded for sampling

  void validate() const { sampling().validate(); }
  bool unconditional(int classes) const { return cfg_scale == 0 || classes <= 1; }
  SamplingSchedule sampling() const {
    return sampling_config(false, denoise_timesteps, class_dropout_prob, cfg_scale);
  }
  nlohmann::json to_json() const {
    return {{"name", "flow_matching"}, {"denoise_timesteps", denoise_timesteps},
            {"class_dropout_prob", class_dropout_prob}, {"cfg_scale", cfg_scale}};
  }
  static FlowMatchingConfig from_json(const nlohmann::json& j) {
    FlowMatchingConfig c;
    c.denoise_timesteps = j.value("denoise_timesteps", c.denoise_timesteps);
    c.class_dropout_prob = j.value("class_dropout_prob", c.class_dropout_prob);
    c.cfg_scale = j.value("cfg_scale", c.cfg_scale);
    c.validate();
    return c;
  }
};

// One rank's rows of a flow-matching batch: the queries (t, k = L, label or null) and the noise
// stream. Every rank draws the whole batch's choices in global row order.
struct FlowMatchingPlan {
  std::vector<float> t, k;
  std::vector<int32_t> y;
  uint64_t noise_stream = 0;
};

inline FlowMatchingPlan flow_matching_plan(const FlowMatchingConfig& c, const BatchSlice& s, HostSpan<const int32_t> y,
                                           int classes, Rng& rng) {
  const int M = c.denoise_timesteps;
  const float k = float(ilog2(M));  // L
  const bool uncond = c.unconditional(classes);
  std::vector<float> t(size_t(s.batch));
  std::vector<char> drop(size_t(s.batch));
  for (int r = 0; r < s.batch; ++r) {
    t[r] = float(rng.randint(M)) / float(M);
    drop[r] = uncond || rng.uniform() < c.class_dropout_prob;
  }
  FlowMatchingPlan p;
  for (int i = 0; i < s.rows(); ++i) {
    const int g = s.global_row(i);
    p.t.push_back(t[g]);
    p.k.push_back(k);
    p.y.push_back(drop[g] ? int32_t(classes) : y[i]);
  }
  p.noise_stream = rng.next_stream();
  return p;
}

template <VelocityModel Model>
class FlowMatching {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;

  explicit FlowMatching(const FlowMatchingConfig& c) : c_((c.validate(), c)) {}
  const FlowMatchingConfig& config() const { return c_; }

  std::string name() const { return "flow_matching"; }
  nlohmann::json to_json() const { return c_.to_json(); }
  SamplingSchedule sampling() const { return c_.sampling(); }
  void validate(int B) const { check_batch_rows(B); }
  int bootstrap_rows(int) const { return 0; }
  void set_progress(const TrainingProgress&) {}
  const FlowMatchingPlan& plan() const { return plan_; }
  const T* inputs() const { return rows_.xt(); }
  const T* targets() const { return rows_.target(); }

  LossResult step(Model& m, DeviceSpan<const T, Backend> x1, HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    const int64_t n = m.sample_size();
    check_step_inputs(s, x1, y, n, m.num_classes());
    plan_ = flow_matching_plan(c_, s, y, m.num_classes(), rng);
    rows_.prepare(m, plan_.t, plan_.k, plan_.y);
    slice_noise(m.backend(), x0_, s, rng.seed(), plan_.noise_stream, n);
    m.backend().flow_rows(rows_.xt(), rows_.target(), x1.data(), x0_.data(), rows_.t(), s.rows(), int(n));
    return rows_.regress(m, s.rows(), 0, s.batch, 0);
  }

 private:
  FlowMatchingConfig c_;
  FlowMatchingPlan plan_;
  RegressionRows<Model> rows_;
  typename Backend::template Buffer<T> x0_;
};

}  // namespace shortcut
