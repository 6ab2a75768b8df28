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
#include "shortcut/core/rng.hpp"
#include "shortcut/train/objective.hpp"
#include "shortcut/train/objectives/rows.hpp"
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
  std::string name() const { return "shortcut"; }
  nlohmann::json to_json() const { return cfg_.to_json(); }
  SamplingSchedule sampling() const { return cfg_.sampling(); }
  void validate(int B) const { cfg_.validate(B); }
  int bootstrap_rows(int B) const { return cfg_.bootstrap_rows(B); }
  void set_progress(const TrainingProgress&) {}  // the same targets all run long

  // The training rows of slice s of the batch (DESIGN.md §2): x_t for every row, flow targets
  // x1 - (1 - 1e-5) x0, and the bootstrap rows' targets from two half steps. x1: this slice's data
  // (device [s.rows(), n]); y: its labels (host [s.rows()]: the plan is drawn on the host).
  void build(Model& m, DSpan x1, HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    const int64_t n = m.sample_size();
    check_step_inputs(s, x1, y, n, m.num_classes());
    plan_ = plan_batch(cfg_, y.data(), s, m.num_classes(), rng);  // t, k and label of every row
    rows_.prepare(m, plan_.t, plan_.k, plan_.y);
    slice_noise(m.backend(), x0_, s, rng.seed(), plan_.noise_stream, n);
    m.backend().flow_rows(rows_.xt(), rows_.target(), x1.data(), x0_.data(), rows_.t(), plan_.B, int(n));
    if (plan_.Bb > 0) bootstrap_targets(m);  // the first Bb rows' targets replaced
  }
  // The whole batch: y.size() rows.
  void build(Model& m, DSpan x1, HostSpan<const int32_t> y, Rng& rng) { build(m, x1, y, whole(y), rng); }

  // build + forward + loss + backward: gradients accumulate into the arena's Grad role. The loss is
  // the mean over the whole batch, so the gradients of all slices add up to the batch's gradient.
  Result step(Model& m, DSpan x1, HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    build(m, x1, y, s, rng);
    return rows_.regress(m, plan_.B, plan_.Bb, s.batch, cfg_.bootstrap_rows(s.batch));
  }
  // The whole batch: y.size() rows.
  Result step(Model& m, DSpan x1, HostSpan<const int32_t> y, Rng& rng) { return step(m, x1, y, whole(y), rng); }

 private:
  static BatchSlice whole(HostSpan<const int32_t> y) {
    if (y.empty()) throw ShapeError("training step: the batch must hold at least one row, got 0 labels");
    return BatchSlice::all(int(y.size()));
  }

  // Two half steps at index k_b + 1 on the weights cfg_.bootstrap_ema names, no gradient.
  void bootstrap_targets(Model& m) {
    const T* W = m.arena().data(cfg_.bootstrap_ema ? Role::Ema : Role::Param);
    std::vector<float> k(size_t(plan_.Bb));
    for (int r = 0; r < plan_.Bb; ++r) k[r] = float(plan_.k_b[r] + 1);
    boot_.compute(
        m, rows_, plan_.Bb, plan_.n_cfg, plan_.t, plan_.half_d, k, plan_.y,
        [&](const T* x, const T* t, const T* kq, const int32_t* yq, int Q, T* out) {
          m.net().forward(m.eval_context(), W, x, t, kq, yq, Q, out);
        },
        T(cfg_.cfg_scale), T(cfg_.target_clip));
  }

  ShortcutConfig cfg_;
  BatchPlan plan_;
  RegressionRows<Model> rows_;
  BootstrapTarget<Model> boot_;
  Buf x0_;
};

}  // namespace shortcut
