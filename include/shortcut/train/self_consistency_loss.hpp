// SelfConsistencyLoss: builds the shortcut training batch of DESIGN.md §2 (bootstrap rows first,
// then flow rows), computes the bootstrap targets from the EMA weights without gradient, the MSE
// loss with its flow and bootstrap parts, and the gradient into the model's arena.
//
// The random choices (t, labels dropped, noise stream) come from a counter-based Rng on the host;
// the noise itself is drawn on the device from (seed, stream), so both backends see the same numbers.
#pragma once
#include <algorithm>
#include <cmath>
#include <vector>

#include "shortcut/core/batch_slice.hpp"
#include "shortcut/core/capture.hpp"
#include "shortcut/core/rng.hpp"
#include "shortcut/core/staged.hpp"
#include "shortcut/train/objective.hpp"
#include "shortcut/train/shortcut_config.hpp"
#include "shortcut/train/shortcut_model.hpp"

namespace shortcut {

// The host-side plan of one batch (or of one rank's rows of it): what every row is queried with,
// and the bootstrap details. Rows [0, Bb) are bootstrap rows, their first n_cfg guided.
struct BatchPlan {
  int B = 0, Bb = 0, n_cfg = 0;
  BatchSlice slice;               // which rows of the global batch these are
  std::vector<float> t, k;        // [B] time and step index of the training query
  std::vector<int32_t> y;         // [B] labels of the training query (null where dropped)
  std::vector<int> k_b;           // [Bb] target index of each bootstrap row (d = 2^-k_b)
  std::vector<float> half_d;      // [Bb] d / 2
  uint64_t noise_stream = 0;      // x0 = normals of (seed, noise_stream)
};

// The plan of slice s of a batch of s.batch rows (labels: its rows' labels, in its order). The draws
// from rng are the whole batch's, whatever the slice.
inline BatchPlan plan_batch(const ShortcutConfig& cfg, const int32_t* labels, BatchSlice s, int classes, Rng& rng) {
  s.check();
  const int B = s.batch;
  cfg.validate(B);
  const int Bb = cfg.bootstrap_rows(B);
  const int L = cfg.levels(), M = cfg.denoise_timesteps;
  const bool uncond = cfg.cfg_scale == 0 || classes <= 1;
  const int32_t null = classes;
  check_labels(labels, size_t(s.rows()), classes);
  const int block = Bb / L, n_cfg = (cfg.bootstrap_cfg && !uncond) ? block : 0;
  std::vector<int> local(B, -1);  // global row -> this slice's row
  BatchPlan p;
  p.B = s.rows();
  p.slice = s;
  for (int i = 0; i < p.B; ++i) {
    const int g = s.global_row(i);
    local[g] = i;
    p.Bb += g < Bb;
    p.n_cfg += g < n_cfg;
  }
  p.t.resize(p.B); p.k.resize(p.B); p.y.resize(p.B); p.k_b.resize(p.Bb); p.half_d.resize(p.Bb);
  for (int r = 0; r < Bb; ++r) {
    int kb = r < block * L ? L - 1 - r / block : 0;
    int64_t sections = int64_t(1) << kb;
    const float t = float(rng.randint(sections)) / float(sections);
    const int i = local[r];
    if (i < 0) continue;
    p.k_b[i] = kb;
    p.half_d[i] = 0.5f / float(sections);
    p.t[i] = t;
    p.k[i] = float(kb);
    p.y[i] = uncond ? null : labels[i];
  }
  for (int r = Bb; r < B; ++r) {
    const float t = float(rng.randint(M)) / float(M);
    const bool drop = uncond || rng.uniform() < cfg.class_dropout_prob;
    const int i = local[r];
    if (i < 0) continue;
    p.t[i] = t;
    p.k[i] = float(L);
    p.y[i] = drop ? null : labels[i];
  }
  p.noise_stream = rng.next_stream();
  return p;
}
inline BatchPlan plan_batch(const ShortcutConfig& cfg, const int32_t* labels, int B, int classes, Rng& rng) {
  return plan_batch(cfg, labels, BatchSlice::all(B), classes, rng);
}

template <VelocityModel Model>
class SelfConsistencyLoss {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;
  using Buf = typename Backend::template Buffer<T>;
  using IBuf = typename Backend::template Buffer<int32_t>;
  using DSpan = DeviceSpan<const T, Backend>;  // training data x1 [rows, sample]

  using Result = LossResult;

  explicit SelfConsistencyLoss(const ShortcutConfig& cfg) : cfg_(cfg) { cfg_.validate(); }
  const ShortcutConfig& config() const { return cfg_; }
  const BatchPlan& plan() const { return plan_; }
  // Device buffers of the last built batch: inputs [B, n] and targets [B, n].
  const T* inputs() const { return rows_.xt(); }
  const T* targets() const { return rows_.target(); }

  // The TrainingObjective interface (train/objective.hpp); its settings are the ShortcutConfig.
  std::string name() const { return cfg_.objective == Objective::FlowMatching ? "flow_matching" : "shortcut"; }
  nlohmann::json to_json() const { return cfg_.to_json(); }
  const ShortcutConfig& sampling() const { return cfg_; }
  void validate(int B) const { cfg_.validate(B); }
  int bootstrap_rows(int B) const { return cfg_.bootstrap_rows(B); }
  void set_progress(const TrainingProgress&) {}  // the same targets all run long

  // Builds the training rows of slice s from its data x1 (device [s.rows(), n]) and labels y (host
  // [s.rows()]: the batch plan is drawn on the host).
  void build(Model& m, DSpan x1, HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    stage_step(m, x1, y, s, rng);
    inputs_on_device(m);
    targets(m, x1.data());
  }
  // The whole batch: y.size() rows.
  void build(Model& m, DSpan x1, HostSpan<const int32_t> y, Rng& rng) { build(m, x1, y, whole(y), rng); }

  // build + forward + loss + backward: gradients accumulate into the arena's Grad role. The loss is
  // the mean over the whole batch, so the gradients of all slices add up to the batch's gradient.
  // Everything after the host's part (stage_step) is device work that depends on the host only
  // through step_key, so it is recorded once per key and replayed (a CUDA graph on the CUDA backend:
  // core/capture.hpp); the loss sums are read back after it. TrainingStep records the optimizer's
  // update in the same body (train/training_step.hpp).
  Result step(Model& m, DSpan x1, HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    return step_in_parts(*this, m, x1, y, s, rng);
  }
  // The whole batch: y.size() rows.
  Result step(Model& m, DSpan x1, HostSpan<const int32_t> y, Rng& rng) { return step(m, x1, y, whole(y), rng); }

  // ---- step() in parts (RecordableObjective, train/training_step.hpp) ----------------------------
  // The host's part: the checks, the plan and every value the device work reads that changes from
  // step to step (the queries, the bootstrap queries' t, t + d/2, k, labels and d/2, the noise
  // stream), staged in fixed host memory (core/staged.hpp); buffers are sized here. No device work.
  void stage_step(Model& m, DSpan x1, HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    const int64_t n = m.sample_size();
    check_step_inputs(s, x1, y, n, m.num_classes());
    m.backend().synchronize();  // the previous step's uploads may still read the staged memory
    plan_ = plan_batch(cfg_, y.data(), s, m.num_classes(), rng);
    noise_.stage(s, rng.seed(), plan_.noise_stream, n);
    rows_.stage(m, plan_.t, plan_.k, plan_.y);
    if (plan_.Bb > 0) stage_bootstrap_queries(m);
  }
  // Everything the device work's host side decides from, x1 being the rows record_step reads.
  CaptureKey step_key(const Model& m, const T* x1) const {
    CaptureKey key(this, &m, x1, plan_.B, plan_.Bb, plan_.n_cfg);
    return noise_.add_to(key);
  }
  // The device work of the staged step: uploads, noise, rows, targets, forward, MSE, backward.
  void record_step(Model& m, const T* x1) {
    inputs_on_device(m);
    targets(m, x1);
    rows_.regress_on_device(m, plan_.B, plan_.slice.batch);
  }
  // The recorded step's row losses [plan().B] on the device, and their sums read back.
  const T* row_losses() const { return rows_.row_loss(); }
  Result step_losses(Model& m) {
    const BatchSlice& s = plan_.slice;
    return rows_.losses(m, plan_.B, plan_.Bb, s.batch, cfg_.bootstrap_rows(s.batch));
  }

 private:
  static BatchSlice whole(HostSpan<const int32_t> y) {
    if (y.empty()) throw ShapeError("training step: the batch must hold at least one row, got 0 labels");
    return BatchSlice::all(int(y.size()));
  }

  // The staged values' uploads and the slice's rows of the batch's noise.
  void inputs_on_device(Model& m) {
    const Backend& be = m.backend();
    rows_.upload(be);
    if (plan_.Bb > 0) boot_.upload(be);
    noise_.draw(be);
  }
  // The device's part: the flow rows and the bootstrap targets (no host data moves).
  void targets(Model& m, const T* x1) {
    m.backend().flow_rows(rows_.xt(), rows_.target(), x1, noise_.data(), rows_.t(), plan_.B, int(m.sample_size()));
    if (plan_.Bb > 0) bootstrap_targets(m);
  }

  // The bootstrap queries of the Bb rows, at k_b + 1 on the weights cfg_.bootstrap_ema names.
  void stage_bootstrap_queries(Model& m) {
    boot_.stage(m, plan_.Bb, plan_.n_cfg, plan_.t, plan_.half_d, plan_.y,
                [&](int r) { return float(plan_.k_b[r] + 1); });
  }
  void bootstrap_targets(Model& m) {
    const T* W = m.arena().data(cfg_.bootstrap_ema ? Role::Ema : Role::Param);
    boot_.targets(
        m, rows_,
        [&](const T* x, const T* t, const T* k, const int32_t* y, int Q, T* out) {
          m.net().forward(m.eval_context(), W, x, t, k, y, Q, out);
        },
        T(cfg_.cfg_scale), T(cfg_.target_clip));
  }

  ShortcutConfig cfg_;
  BatchPlan plan_;
  RegressionRows<Model> rows_;
  SliceNoise<Backend, T> noise_;
  BootstrapQueries<Model> boot_;
};

}  // namespace shortcut
