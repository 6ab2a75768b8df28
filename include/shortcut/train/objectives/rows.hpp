// The pieces that objectives' steps are built from, as plain functions and device work on the
// model's backend:
//   check_step_inputs, check_batch_rows, check_schedule, stage_of
//                    the checks that every objective's step and config share
//   RegressionRows   the rows a step regresses (x_t, targets, queries t, k, y) and the regression
//                    itself: training forward, MSE, backward, the loss sums
//   slice_noise      this rank's rows of the whole batch's noise
//   BootstrapTarget  two half steps of d/2 averaged (DESIGN.md §2), which the shortcut loss takes
//                    from its EMA weights and progressive distillation from its teacher
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "shortcut/core/batch_slice.hpp"
#include "shortcut/core/concepts.hpp"
#include "shortcut/nn/linear.hpp"
#include "shortcut/train/objective.hpp"

namespace shortcut {

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

// An objective that can train on any batch of one row or more.
inline void check_batch_rows(int B) {
  if (B < 1) throw ConfigError(cat("the batch must hold at least one row, got ", B));
}

// The settings every baseline objective shares: M and the label dropout, checked as the schedule does.
inline void check_schedule(int denoise_timesteps, double class_dropout_prob) {
  SamplingSchedule{.denoise_timesteps = denoise_timesteps, .class_dropout_prob = class_dropout_prob}.validate();
}

// The stage of a staged objective (L stages of total / L steps, the remainder in the last) for the
// step about to be taken; a run shorter than L steps is refused, naming the objective.
inline int stage_of(const TrainingProgress& p, int L, const char* objective) {
  if (p.total < L)
    throw ConfigError(cat(objective, " runs ", L, " stages of steps / ", L, " steps each; ", p.total,
                          " steps make a stage shorter than one step (use at least ", L, " steps)"));
  return int(std::min<int64_t>(L - 1, p.step / (p.total / L)));
}

// dst <- the host values src, converted to the buffer's element type, resized to fit.
template <class Be, class Buf, class V>
void put_on_device(const Be& be, Buf& dst, const std::vector<V>& src) {
  using U = std::remove_pointer_t<decltype(dst.data())>;
  nn::ensure(dst, src.size());
  const std::vector<U> c(src.begin(), src.end());
  be.to_device(dst.data(), c.data(), c.size());
}

// The rows every objective regresses: inputs x_t [B, n], targets [B, n] and the queries (t, k, y) [B]
// on the device. regress() runs the training forward, the MSE against the targets scaled by
// 1 / batch (so that the slices of all ranks add up to the batch's mean), the backward into the
// arena, and reads back the loss sums split at the first `boot` rows.
template <VelocityModel Model>
class RegressionRows {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;

  // Sizes x_t and the targets for the rows and puts their queries on the device.
  void prepare(Model& m, const std::vector<float>& t, const std::vector<float>& k, const std::vector<int32_t>& y) {
    const Backend& be = m.backend();
    const size_t N = y.size() * size_t(m.sample_size());
    nn::ensure(xt_, N);
    nn::ensure(target_, N);
    put_on_device(be, t_, t);
    put_on_device(be, k_, k);
    put_on_device(be, y_, y);
  }
  T* xt() { return xt_.data(); }
  T* target() { return target_.data(); }
  const T* xt() const { return xt_.data(); }
  const T* target() const { return target_.data(); }
  const T* t() const { return t_.data(); }
  const T* k() const { return k_.data(); }
  const int32_t* y() const { return y_.data(); }

  // rows local rows, `boot` of them first bootstrap rows; batch / boot_global: the whole batch's.
  LossResult regress(Model& m, int rows, int boot, int batch, int boot_global) {
    if (rows < 1 || batch < rows) throw ShapeError(cat("regression over ", rows, " rows of a batch of ", batch));
    Backend& be = m.backend();
    const int n = int(m.sample_size());
    nn::ensure(grad_, size_t(rows) * n);
    nn::ensure(row_loss_, size_t(rows));
    const T* pred = m.forward(xt_.data(), t_.data(), k_.data(), y_.data(), rows);
    be.mse_loss(grad_.data(), row_loss_.data(), pred, target_.data(), rows, n, T(1) / T(batch));
    m.backward(grad_.data());
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
  typename Backend::template Buffer<T> xt_, target_, t_, k_, grad_, row_loss_;
  typename Backend::template Buffer<int32_t> y_;
};

// x0 <- the slice's rows of the batch's noise (normals of (seed, stream)): its bootstrap rows, then
// its other rows, each at its place in the whole batch's sequence, so that N ranks draw the rows of
// the one batch a single process draws.
template <class Be, class Buf>
void slice_noise(const Be& be, Buf& x0, const BatchSlice& s, uint64_t seed, uint64_t stream, int64_t n) {
  nn::ensure(x0, size_t(s.rows()) * size_t(n));
  const size_t nb = size_t(s.boot_rows()) * size_t(n);
  be.normal(x0.data(), nb, seed, stream, uint64_t(s.boot_begin) * uint64_t(n));
  be.normal(x0.data() + nb, x0.size() - nb, seed, stream, uint64_t(s.flow_begin) * uint64_t(n));
}

// The bootstrap target of DESIGN.md §2 for the first Bb rows of a RegressionRows (x_t on the device):
//   v1 = s(x_t, t, k); x2 = clip(x_t + d/2 v1); v2 = s(x2, t + d/2, k); target = clip((v1 + v2) / 2),
// the first n_cfg rows guided, v = v_null + w (v_y - v_null): each query is one forward of Bb + n_cfg
// rows, the rows and then the guided rows again with the null label. s has no gradient: the caller
// passes it as velocity(x, t, k, y, rows, out).
template <VelocityModel Model>
class BootstrapTarget {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;

  // t, half_d, k, y: the Bb rows' time, d/2, step input and label.
  template <class V>
  void compute(Model& m, RegressionRows<Model>& rows, int Bb, int n_cfg, const std::vector<float>& t,
               const std::vector<float>& half_d, const std::vector<float>& k, const std::vector<int32_t>& y,
               V velocity, T w, T clip) {
    Backend& be = m.backend();
    const int Q = Bb + n_cfg;
    const int64_t n = m.sample_size();
    const size_t rows_n = size_t(Bb) * size_t(n), cfg_n = size_t(n_cfg) * size_t(n);
    std::vector<float> qt(Q), qt2(Q), qk(Q);
    std::vector<int32_t> qy(Q);
    for (int r = 0; r < Q; ++r) {
      const int s = r < Bb ? r : r - Bb;
      qt[r] = t[s];
      qt2[r] = t[s] + half_d[s];
      qk[r] = k[s];
      qy[r] = r < Bb ? y[s] : m.null_label();
    }
    put_on_device(be, qt_, qt);
    put_on_device(be, qt2_, qt2);
    put_on_device(be, qk_, qk);
    put_on_device(be, qy_, qy);
    put_on_device(be, hd_, half_d);
    nn::ensure(qx_, size_t(Q) * n);
    nn::ensure(qv_, size_t(Q) * n);
    nn::ensure(x2_, rows_n);
    nn::ensure(v1_, rows_n);
    auto query = [&](const T* x, const T* tq) {
      be.copy(qx_.data(), x, rows_n);
      be.copy(qx_.data() + rows_n, x, cfg_n);
      velocity(qx_.data(), tq, qk_.data(), qy_.data(), Q, qv_.data());
    };
    query(rows.xt(), qt_.data());
    be.bootstrap_half_step(x2_.data(), v1_.data(), rows.xt(), qv_.data(), qv_.data() + rows_n, n_cfg, w, hd_.data(),
                           Bb, int(n), clip);
    query(x2_.data(), qt2_.data());
    be.bootstrap_target(rows.target(), v1_.data(), qv_.data(), qv_.data() + rows_n, n_cfg, w, Bb, int(n), clip);
  }

 private:
  typename Backend::template Buffer<T> qt_, qt2_, qk_, hd_, qx_, qv_, x2_, v1_;
  typename Backend::template Buffer<int32_t> qy_;
};

}  // namespace shortcut
