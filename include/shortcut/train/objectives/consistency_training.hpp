// Consistency training (DESIGN.md §7; no teacher, the network does not read d): every row starts at
// x_t on the data path and is trained towards the endpoint that the EMA weights predict from the
// later point x' = x_{t+d} of the same path (same x0 and x1):
//   x̂1 = x' + (1 - t') s_ema(x', t'),  target = (x̂1 - x_t) / (1 - t),  t' = t + d,
// with the gap d = 2^-s shrinking over L stages (stage s = floor(S / (S_max / L)), S the step) and t
// a multiple of d. At s = 0 the gap is the whole path and the target is flow matching's x1 - x0.
// The network is always queried at k = L, so the sampler treats the model as flow matching does.
// Its step comes in parts (RecordableObjective, train/training_step.hpp), as SelfConsistencyLoss's:
// the host's plan staged, the device work recorded once per key and replayed.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "shortcut/core/capture.hpp"
#include "shortcut/core/staged.hpp"
#include "shortcut/train/objective.hpp"

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

// The consistency target of the rows in `rows` (x_t, t, k, y uploaded) from the later points xp at
// tp: x̂1 = xp + (1 - tp) s_W(xp, tp), target = (x̂1 - x_t) / (1 - t). v: scratch [B, n].
template <VelocityModel Model, class Buf>
void consistency_targets(Model& m, RegressionRows<Model>& rows, const typename Model::T* xp,
                         const typename Model::T* tp, const typename Model::T* W, int B, Buf& v) {
  const int n = int(m.sample_size());
  nn::ensure(v, size_t(B) * size_t(n));
  m.net().forward(m.eval_context(), W, xp, tp, rows.k(), rows.y(), B, v.data());
  m.backend().consistency_target(rows.target(), rows.xt(), xp, v.data(), rows.t(), tp, B, n);
}

// What both consistency objectives' recorded steps share: the rows (queries t, k, labels), their later
// times t' and the noise staged by the host (stage); uploaded, the noise drawn and x_t put on each
// row's path inside the recorded body (start); the key of that work and the loss read back.
template <VelocityModel Model>
struct ConsistencyRows {
  using Backend = typename Model::Backend;
  using T = typename Model::T;
  RegressionRows<Model> rows;
  Staged<Backend, T> tp;  // the later times t'
  SliceNoise<Backend, T> noise;

  int count() const { return noise.slice().rows(); }
  void stage(Model& m, const ConsistencyPlan& p, const BatchSlice& s, uint64_t rng_seed) {
    noise.stage(s, rng_seed, p.noise_stream, m.sample_size());
    rows.stage(m, p.t, p.k, p.y);
    tp.set(p.tp);
  }
  void start(Model& m, const T* x1) {
    const Backend& be = m.backend();
    rows.upload(be);
    tp.upload(be);
    noise.draw(be);
    be.flow_rows(rows.xt(), nullptr, x1, noise.data(), rows.t(), count(), int(m.sample_size()));
  }
  CaptureKey key(const void* objective, const Model& m, const T* x1) const {
    CaptureKey k(objective, &m, x1, count());
    return noise.add_to(k);
  }
  void regress(Model& m) { rows.regress_on_device(m, count(), noise.slice().batch); }
  LossResult losses(Model& m) { return rows.losses(m, count(), 0, noise.slice().batch, 0); }
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
  ShortcutConfig sampling() const { return sampling_config(false, c_.denoise_timesteps, c_.class_dropout_prob); }
  void validate(int B) const {
    if (B < 1) throw ConfigError(cat("the batch must hold at least one row, got ", B));
  }
  int bootstrap_rows(int) const { return 0; }  // every row costs one query
  void set_progress(const TrainingProgress& p) { stage_ = stage_of(p, c_.levels(), "consistency training"); }
  int stage() const { return stage_; }
  const Plan& plan() const { return plan_; }
  const T* inputs() const { return cr_.rows.xt(); }
  const T* targets() const { return cr_.rows.target(); }

  // The plan, then the device work (recorded: core/capture.hpp), then the loss read back.
  LossResult step(Model& m, DSpan x1, HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    return step_in_parts(*this, m, x1, y, s, rng);
  }

  // ---- step() in parts (RecordableObjective) --------------------------------------------------------
  // The host's part: the checks, the plan, and what the device work reads that changes from step to
  // step (the queries t, k, labels, the later times t', the noise stream) staged; no device work.
  void stage_step(Model& m, DSpan x1, HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    const int64_t n = m.sample_size();
    check_step_inputs(s, x1, y, n, m.num_classes());
    m.backend().synchronize();  // the previous step's uploads may still read the staged memory
    const int64_t sections = int64_t(1) << stage_;
    plan_ = consistency_plan(s, y, m.num_classes(), sections, 1.0 / double(sections), float(c_.levels()),
                             c_.class_dropout_prob, rng);
    plan_.stage = stage_;
    cr_.stage(m, plan_, s, rng.seed());
    nn::ensure(xp_, size_t(s.rows()) * size_t(n));
  }
  // What the device work's host side decides from, x1 being the rows record_step reads.
  CaptureKey step_key(const Model& m, const T* x1) const {
    return cr_.key(this, m, x1).add(m.arena().data(c_.target_ema ? Role::Ema : Role::Param));
  }
  // The device work of the staged step: uploads, noise, both points of each path, the EMA's (or raw
  // weights') endpoint from the later one, forward, MSE, backward.
  void record_step(Model& m, const T* x1) {
    const int B = cr_.count();
    cr_.start(m, x1);
    m.backend().flow_rows(xp_.data(), nullptr, x1, cr_.noise.data(), cr_.tp.data(), B, int(m.sample_size()));
    consistency_targets(m, cr_.rows, xp_.data(), cr_.tp.data(),
                        m.arena().data(c_.target_ema ? Role::Ema : Role::Param), B, v_);
    cr_.regress(m);
  }
  // The recorded step's row losses [rows] on the device, and their sums read back.
  const T* row_losses() const { return cr_.rows.row_loss(); }
  LossResult step_losses(Model& m) { return cr_.losses(m); }

 private:
  ConsistencyTrainingConfig c_;
  int stage_ = 0;
  Plan plan_;
  ConsistencyRows<Model> cr_;
  typename Backend::template Buffer<T> xp_, v_;
};

}  // namespace shortcut
