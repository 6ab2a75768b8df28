// Training objectives as an extension point: what the rows of a batch are queried with and trained
// towards. SelfConsistencyLoss (shortcut and flow matching) and the baselines of DESIGN.md §7 each
// satisfy TrainingObjective; Trainer, the checkpoints' metadata and the sampler are generic over it.
//
// An objective builds its rows on the device from this rank's data rows x1 and host labels y, drawing
// every random choice from the Rng it is given (so that N ranks and resume reproduce one process),
// computes its targets without gradient, and regresses the model's training forward on them. The
// sampler needs one fact about it: whether the network was trained to read the step size d (then N
// steps query k = log2 N) or not (then every query uses k = L, as flow matching): sampling() says so
// as the ShortcutConfig the sampler and load_generator already read.
#pragma once
#include <algorithm>
#include <concepts>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "shortcut/core/batch_slice.hpp"
#include "shortcut/core/capture.hpp"
#include "shortcut/core/concepts.hpp"
#include "shortcut/core/rng.hpp"
#include "shortcut/core/span.hpp"
#include "shortcut/core/staged.hpp"
#include "shortcut/nn/linear.hpp"
#include "shortcut/train/shortcut_config.hpp"

namespace shortcut {

// One step's loss. "Bootstrap" rows are the rows whose targets cost network queries (the shortcut
// model's bootstrap rows, live reflow's reflow rows); a data-parallel run spreads them over the ranks.
struct LossResult {
  double loss = 0, flow_loss = 0, bootstrap_loss = 0;  // means over the batch's (bootstrap, other) rows
  // Sums of row losses over the rows computed here; the sums of all ranks make the batch's sums.
  double loss_sum = 0, flow_sum = 0, bootstrap_sum = 0;
  int batch = 0, bootstrap_rows = 0;  // the whole batch's rows and bootstrap rows
  // The means from the sums (after the sums were added up over the ranks).
  void set_means() {
    loss = loss_sum / batch;
    bootstrap_loss = bootstrap_rows ? bootstrap_sum / bootstrap_rows : 0;
    flow_loss = batch > bootstrap_rows ? flow_sum / (batch - bootstrap_rows) : 0;
  }
};

// Where the run is: objectives whose targets change over training (stages, a shrinking gap) read it.
struct TrainingProgress {
  int64_t step = 0;   // the optimizer steps done before the one being taken
  int64_t total = 0;  // the planned total (TrainerConfig::steps)
};

// What Trainer calls on an objective for a model:
//   name(), to_json()        how it is named and configured (checkpoint metadata; resume compares it)
//   sampling()               the ShortcutConfig the sampler reads (objective Shortcut: k = log2 N;
//                            FlowMatching: k = L) with M
//   validate(B), bootstrap_rows(B)   a batch of B rows is possible; how many rows cost queries
//   set_progress(p)          before every step
//   step(m, x1, y, slice, rng) -> LossResult   build, forward, loss / slice.batch, backward (+= grads)
template <class O, class Model>
concept TrainingObjective =
    VelocityModel<Model> &&
    requires(O& o, const O& co, Model& m, DeviceSpan<const typename Model::T, typename Model::Backend> x1,
             HostSpan<const int32_t> y, BatchSlice s, Rng& rng, int B, TrainingProgress p) {
      { co.name() } -> std::convertible_to<std::string>;
      { co.to_json() } -> std::convertible_to<nlohmann::json>;
      { co.sampling() } -> std::convertible_to<ShortcutConfig>;
      co.validate(B);
      { co.bootstrap_rows(B) } -> std::convertible_to<int>;
      o.set_progress(p);
      { o.step(m, x1, y, s, rng) } -> std::same_as<LossResult>;
    };

// The rows every objective regresses, and the regression: inputs x_t [B, n], targets [B, n] and the
// queries (t, k, y) [B] on the device; regress() runs the training forward, the MSE against the
// targets scaled by 1 / batch (so that the slices of all ranks add up to the batch's mean), the
// backward into the arena, and the loss sums split at the first `boot` rows.
template <VelocityModel Model>
class RegressionRows {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;

  // Sizes the buffers for B rows and uploads the queries (host t, k as float, labels).
  void prepare(Model& m, const std::vector<float>& t, const std::vector<float>& k, const std::vector<int32_t>& y) {
    size(m, y.size());
    const Backend& be = m.backend();
    t_.put(be, t);
    k_.put(be, k);
    y_.put(be, y);
  }
  // prepare() for recorded work (core/staged.hpp): stage() is the host's part, upload() queues the
  // copies up inside the recorded body.
  void stage(Model& m, const std::vector<float>& t, const std::vector<float>& k, const std::vector<int32_t>& y) {
    size(m, y.size());
    t_.set(t);
    k_.set(k);
    y_.set(y);
  }
  void upload(const Backend& be) {
    t_.upload(be);
    k_.upload(be);
    y_.upload(be);
  }
  T* xt() { return xt_.data(); }
  T* target() { return target_.data(); }
  const T* xt() const { return xt_.data(); }
  const T* target() const { return target_.data(); }
  const T* t() const { return t_.data(); }
  const T* k() const { return k_.data(); }
  const int32_t* y() const { return y_.data(); }
  // The last regression's loss of each row (device).
  const T* row_loss() const { return row_loss_.data(); }

  // rows local rows, `boot` of them first bootstrap rows; batch / boot_global: the whole batch's.
  LossResult regress(Model& m, int rows, int boot, int batch, int boot_global) {
    regress_on_device(m, rows, batch);
    return losses(m, rows, boot, batch, boot_global);
  }
  // regress() in two halves: the forward, the loss and the backward, which only queue device work
  // (so that a backend can record them: core/capture.hpp), and the loss sums read back after them.
  void regress_on_device(Model& m, int rows, int batch) {
    if (rows < 1 || batch < rows) throw ShapeError(cat("regression over ", rows, " rows of a batch of ", batch));
    Backend& be = m.backend();
    const int n = int(m.sample_size());
    nn::ensure(grad_, size_t(rows) * n);
    nn::ensure(row_loss_, size_t(rows));
    const T* pred = m.forward(xt_.data(), t_.data(), k_.data(), y_.data(), rows);
    be.mse_loss(grad_.data(), row_loss_.data(), pred, target_.data(), rows, n, T(1) / T(batch));
    m.backward(grad_.data());
  }
  LossResult losses(Model& m, int rows, int boot, int batch, int boot_global) {
    Backend& be = m.backend();
    std::vector<T> rl(static_cast<size_t>(rows));
    be.to_host(rl.data(), row_loss_.data(), size_t(rows));
    LossResult r;
    for (int i = 0; i < rows; ++i) {
      r.loss_sum += rl[i];
      (i < boot ? r.bootstrap_sum : r.flow_sum) += rl[i];
    }
    r.batch = batch;
    r.bootstrap_rows = boot_global;
    r.set_means();
    return r;
  }


 private:
  void size(Model& m, size_t B) {
    const size_t N = B * size_t(m.sample_size());
    nn::ensure(xt_, N);
    nn::ensure(target_, N);
  }
  typename Backend::template Buffer<T> xt_, target_, grad_, row_loss_;
  Staged<Backend, T> t_, k_;
  Staged<Backend, int32_t> y_;
};

// The bootstrap target of DESIGN.md §2 for the first Bb rows of a RegressionRows, as recorded work:
//   v1 = s(x_t, t, k); x2 = clip(x_t + d/2 v1); v2 = s(x2, t + d/2, k); target = clip((v1 + v2) / 2),
// the first n_cfg rows guided (queried again with the null label). stage() keeps each query's times
// t and t + d/2, step input k and label, and the half steps d/2, in fixed host memory; upload() and
// targets() run inside the recorded body, the velocity s given by the objective (the model's own
// weights for the shortcut loss, the teacher's for progressive distillation).
template <VelocityModel Model>
class BootstrapQueries {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;

  // t, y: per row (at least Bb); half_d: the Bb rows' d/2; k(r): the step input of row r.
  template <class K>
  void stage(Model& m, int Bb, int n_cfg, const std::vector<float>& t, const std::vector<float>& half_d,
             const std::vector<int32_t>& y, K k) {
    Bb_ = Bb;
    nc_ = n_cfg;
    const int Q = Bb + n_cfg;
    const size_t n = size_t(m.sample_size());
    T* qt = qt_.host(size_t(Q));
    T* qt2 = qt2_.host(size_t(Q));
    T* qk = qk_.host(size_t(Q));
    int32_t* qy = qy_.host(size_t(Q));
    for (int r = 0; r < Q; ++r) {
      const int s = r < Bb ? r : r - Bb;
      qt[r] = T(t[s]);
      qt2[r] = T(t[s] + half_d[s]);  // the float sum, then the scalar
      qk[r] = T(float(k(s)));
      qy[r] = r < Bb ? y[s] : m.null_label();
    }
    hd_.set(half_d);
    nn::ensure(qx_, size_t(Q) * n); nn::ensure(qv_, size_t(Q) * n);
    nn::ensure(x2_, size_t(Bb) * n); nn::ensure(v1_, size_t(Bb) * n);
  }
  void upload(const Backend& be) {
    for (auto* q : {&qt_, &qt2_, &qk_, &hd_}) q->upload(be);
    qy_.upload(be);
  }
  // velocity(x, t, k, y, rows, out): the velocity without gradient
  template <class V>
  void targets(Model& m, RegressionRows<Model>& rows, V velocity, T w, T clip) {
    Backend& be = m.backend();
    const int Bb = Bb_, nc = nc_, Q = Bb + nc;
    const int64_t n = m.sample_size();
    const size_t rows_n = size_t(Bb) * size_t(n), cfg_n = size_t(nc) * size_t(n);
    auto query = [&](const T* x, const T* t) {
      be.copy(qx_.data(), x, rows_n);
      be.copy(qx_.data() + rows_n, x, cfg_n);
      velocity(qx_.data(), t, qk_.data(), qy_.data(), Q, qv_.data());
    };
    query(rows.xt(), qt_.data());
    be.bootstrap_half_step(x2_.data(), v1_.data(), rows.xt(), qv_.data(), qv_.data() + rows_n, nc, w, hd_.data(), Bb,
                           int(n), clip);
    query(x2_.data(), qt2_.data());
    be.bootstrap_target(rows.target(), v1_.data(), qv_.data(), qv_.data() + rows_n, nc, w, Bb, int(n), clip);
  }

 private:
  int Bb_ = 0, nc_ = 0;
  Staged<Backend, T> qt_, qt2_, qk_, hd_;  // the queries' t, t + d/2, k; the half steps
  Staged<Backend, int32_t> qy_;            // their labels
  typename Backend::template Buffer<T> qx_, qv_, x2_, v1_;
};

// The noise x0 of a slice's rows, for recorded work: stage() keeps the step's Philox stream in fixed
// host memory (core/staged.hpp); draw(), inside the recorded body, uploads it and draws the slice's
// bootstrap rows, then its other rows, each at its place in the whole batch's sequence, so that every
// rank draws its rows of one batch. The seed and the slice are baked into the work: add_to puts them
// into the step's key.
template <class Be, class T>
class SliceNoise {
 public:
  void stage(const BatchSlice& s, uint64_t seed, uint64_t stream, int64_t sample_size) {
    slice_ = s;
    seed_ = seed;
    n_ = sample_size;
    nn::ensure(x0_, size_t(s.rows()) * size_t(sample_size));
    *stream_.host(1) = stream;
  }
  void draw(const Be& be) {
    stream_.upload(be);
    const size_t nb = size_t(slice_.boot_rows()) * size_t(n_);
    be.normal_staged(x0_.data(), nb, seed_, stream_.data(), uint64_t(slice_.boot_begin) * uint64_t(n_));
    be.normal_staged(x0_.data() + nb, x0_.size() - nb, seed_, stream_.data(),
                     uint64_t(slice_.flow_begin) * uint64_t(n_));
  }
  CaptureKey& add_to(CaptureKey& key) const {
    return key.add(seed_).add(slice_.batch).add(slice_.boot_begin).add(slice_.boot_rows()).add(slice_.flow_begin);
  }
  const BatchSlice& slice() const { return slice_; }
  const T* data() const { return x0_.data(); }

 private:
  BatchSlice slice_;
  uint64_t seed_ = 0;
  int64_t n_ = 0;
  Staged<Be, uint64_t> stream_;
  typename Be::template Buffer<T> x0_;
};

// step() of an objective that comes in parts (RecordableObjective, train/training_step.hpp): the
// host's part, the device work recorded once per key (core/capture.hpp), the loss sums read back.
template <class O, class Model, class X1>
LossResult step_in_parts(O& o, Model& m, X1 x1, HostSpan<const int32_t> y, const BatchSlice& s, Rng& rng) {
  o.stage_step(m, x1, y, s, rng);
  run_captured(m.backend(), o.step_key(m, x1.data()), [&] { o.record_step(m, x1.data()); });
  return o.step_losses(m);
}

// The checks every objective's step makes on its inputs: the slice, the data's and labels' sizes,
// the labels in [0, classes].
template <class T, class Be>
void check_step_inputs(const BatchSlice& s, DeviceSpan<const T, Be> x1, HostSpan<const int32_t> y, int64_t n,
                       int classes) {
  s.check();
  check_size("training data x1", x1.size(), size_t(s.rows()) * size_t(n));
  check_size("training labels y", y.size(), size_t(s.rows()));
  check_labels(y, classes);
}

// The settings every baseline objective shares: M (a power of two >= 2) and the label dropout.
inline void check_schedule(int denoise_timesteps, double class_dropout_prob) {
  if (!is_power_of_two(denoise_timesteps) || denoise_timesteps < 2)
    throw ConfigError(cat("denoise_timesteps must be a power of two >= 2, got ", denoise_timesteps));
  if (!(class_dropout_prob >= 0 && class_dropout_prob <= 1))
    throw ConfigError(cat("class_dropout_prob must lie in [0, 1], got ", class_dropout_prob));
}

// The stage of a staged objective (L stages of total / L steps, the remainder in the last) for the
// step about to be taken; a run shorter than L steps is refused, naming the objective.
inline int stage_of(const TrainingProgress& p, int L, const char* objective) {
  if (p.total < L)
    throw ConfigError(cat(objective, " runs ", L, " stages of steps / ", L, " steps each; ", p.total,
                          " steps make a stage shorter than one step (use at least ", L, " steps)"));
  return int(std::min<int64_t>(L - 1, p.step / (p.total / L)));
}

// What an objective tells the sampler: `reads_d` (N steps query k = log2 N) or not (k = L always,
// as flow matching), M, and the label dropout and guidance it trained with.
inline ShortcutConfig sampling_config(bool reads_d, int denoise_timesteps, double class_dropout_prob,
                                      double cfg_scale = ShortcutConfig{}.cfg_scale) {
  ShortcutConfig s;
  s.objective = reads_d ? Objective::Shortcut : Objective::FlowMatching;
  s.denoise_timesteps = denoise_timesteps;
  s.class_dropout_prob = class_dropout_prob;
  s.cfg_scale = cfg_scale;
  return s;
}

}  // namespace shortcut
