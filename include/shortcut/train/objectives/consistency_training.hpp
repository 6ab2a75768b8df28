// Consistency training (DESIGN.md §7; no teacher, the network does not read d): every row starts at
// x_t on the data path and is trained towards the endpoint that the EMA weights predict from the
// later point x' = x_{t+d} of the same path (same x0 and x1):
//   x̂1 = x' + (1 - t') s_ema(x', t'),  target = (x̂1 - x_t) / (1 - t),  t' = t + d,
// with the gap d = 2^-s shrinking over L stages (stage s = floor(S / (S_max / L)), S the step) and t
// a multiple of d. At s = 0 the gap is the whole path and the target is flow matching's x1 - x0.
// The network is always queried at k = L, so the sampler treats the model as flow matching does.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "shortcut/train/objective.hpp"
#include "shortcut/train/objectives/rows.hpp"

namespace shortcut {

struct ConsistencyTrainingConfig {
  int denoise_timesteps = 128;     // M: L = log2 M stages, the sampler's largest step count
  double class_dropout_prob = 0.1;  // rows' labels dropped to the null class
  bool target_ema = true;          // targets from the EMA weights (false: the raw weights)

  void validate() const {
    check_schedule(denoise_timesteps, class_dropout_prob);
  }
  int levels() const { return ilog2(denoise_timesteps); }
  nlohmann::json to_json() const {
    return {{"name", "consistency_training"}, {"denoise_timesteps", denoise_timesteps},
            {"class_dropout_prob", class_dropout_prob}, {"target_ema", target_ema}};
  }
};

// The host plan of one rank's rows of a consistency batch: query time t on the grid of `sections`
// points, the later time t' = t + gap, the constant step input k, labels (null where dropped) and
// the noise stream. Every rank draws the whole batch's choices in global row order.
struct ConsistencyPlan {
  int stage = 0;
  std::vector<float> t, tp, k;
  std::vector<int32_t> y;
  uint64_t noise_stream = 0;
};

inline ConsistencyPlan consistency_plan(const BatchSlice& s, HostSpan<const int32_t> y, int classes, int64_t sections,
                                        double gap, float k, double dropout, Rng& rng) {
  ConsistencyPlan p;
  std::vector<float> t(size_t(s.batch));
  std::vector<char> drop(size_t(s.batch));
  for (int r = 0; r < s.batch; ++r) {
    t[r] = float(rng.randint(sections)) / float(sections);
    drop[r] = classes <= 1 || rng.uniform() < dropout;
  }
  for (int i = 0; i < s.rows(); ++i) {
    const int g = s.global_row(i);
    p.t.push_back(t[g]);
    p.tp.push_back(float(t[g] + gap));
    p.k.push_back(k);
    p.y.push_back(drop[g] ? int32_t(classes) : y[i]);
  }
  p.noise_stream = rng.next_stream();
  return p;
}

// What both consistency objectives' steps share: the rows (queries t, k, labels on the device), the
// later times t', the slice's noise, and x_t put on each row's path; then the consistency target of
// the rows from later points xp at t' on the weights W:
//   x̂1 = xp + (1 - t') s_W(xp, t'),  target = (x̂1 - x_t) / (1 - t).
template <VelocityModel Model>
struct ConsistencyRows {
  using Backend = typename Model::Backend;
  using T = typename Model::T;
  RegressionRows<Model> rows;
  typename Backend::template Buffer<T> tp, x0, v;

  void start(Model& m, const ConsistencyPlan& p, const BatchSlice& s, uint64_t seed, const T* x1) {
    const Backend& be = m.backend();
    const int64_t n = m.sample_size();
    rows.prepare(m, p.t, p.k, p.y);
    put_on_device(be, tp, p.tp);
    slice_noise(be, x0, s, seed, p.noise_stream, n);
    be.flow_rows(rows.xt(), nullptr, x1, x0.data(), rows.t(), s.rows(), int(n));
  }
  void targets(Model& m, const T* xp, const T* W, int B) {
    const int n = int(m.sample_size());
    nn::ensure(v, size_t(B) * size_t(n));
    m.net().forward(m.eval_context(), W, xp, tp.data(), rows.k(), rows.y(), B, v.data());
    m.backend().consistency_target(rows.target(), rows.xt(), xp, v.data(), rows.t(), tp.data(), B, n);
  }
};

template <VelocityModel Model>
class ConsistencyTraining {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;
  using DSpan = DeviceSpan<const T, Backend>;

  using Plan = ConsistencyPlan;

  explicit ConsistencyTraining(const ConsistencyTrainingConfig& c) : c_(c) { c_.validate(); }

  std::string name() const { return "consistency_training"; }
  nlohmann::json to_json() const { return c_.to_json(); }
  SamplingSchedule sampling() const { return sampling_config(false, c_.denoise_timesteps, c_.class_dropout_prob); }
  void validate(int B) const { check_batch_rows(B); }
  int bootstrap_rows(int) const { return 0; }  // every row costs one query
  void set_progress(const TrainingProgress& p) { stage_ = stage_of(p, c_.levels(), "consistency training"); }
  int stage() const { return stage_; }
  const Plan& plan() const { return plan_; }
  const T* inputs() const { return cr_.rows.xt(); }
  const T* targets() const { return cr_.rows.target(); }

  // x_t and x' = x_{t+d} on each row's path (the same x0 and x1), the endpoint the EMA (or raw)
  // weights predict from x', the regression towards it.
  LossResult step(Model& m, DSpan x1, HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    const int64_t n = m.sample_size();
    check_step_inputs(s, x1, y, n, m.num_classes());
    const int64_t sections = int64_t(1) << stage_;
    plan_ = consistency_plan(s, y, m.num_classes(), sections, 1.0 / double(sections), float(c_.levels()),
                             c_.class_dropout_prob, rng);
    plan_.stage = stage_;
    const int B = s.rows();
    cr_.start(m, plan_, s, rng.seed(), x1.data());
    nn::ensure(xp_, size_t(B) * size_t(n));
    m.backend().flow_rows(xp_.data(), nullptr, x1.data(), cr_.x0.data(), cr_.tp.data(), B, int(n));
    cr_.targets(m, xp_.data(), m.arena().data(c_.target_ema ? Role::Ema : Role::Param), B);
    return cr_.rows.regress(m, B, 0, s.batch, 0);
  }

 private:
  ConsistencyTrainingConfig c_;
  int stage_ = 0;
  Plan plan_;
  ConsistencyRows<Model> cr_;
  typename Backend::template Buffer<T> xp_;
};

}  // namespace shortcut
