// The pieces the average-velocity objectives (DESIGN.md §8: MeanFlow, α-Flow) share:
//   AverageVelocityConfig  their settings: the (t, d) sampling, label dropout, the adaptive weight,
//                          guidance inside the target
//   average_velocity_plan  the rows' (t, d, label) drawn on the host
//   AverageVelocityRows    x_t, the (guided) velocity ṽ and the step input d on the device; the two
//                          targets (MeanFlow's from one forward with tangents, α-Flow's two-piece one
//                          from a query without gradient) and the adaptively weighted regression
//
// The network reads d itself (StepInput::Size): the derivative in d that the targets need does not
// exist for the index k at d = 0.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "shortcut/train/objective.hpp"
#include "shortcut/train/objectives/rows.hpp"

namespace shortcut {

struct AverageVelocityConfig {
  int denoise_timesteps = 128;       // M: the sampler's largest step count (N steps feed d = 1/N)
  double class_dropout_prob = 0.1;   // rows' labels dropped to the null class
  double flow_fraction = 0.75;       // rows with d = 0: their target is ṽ (flow matching)
  bool uniform_time = false;         // a, b ~ U(0, 1) instead of the logit-normal (the official option)
  double logit_mean = -0.4;          // a, b ~ sigmoid(N(logit_mean, logit_std^2)); t = 1 - max(a, b),
  double logit_std = 1.0;            //   d = |a - b|
  double norm_p = 1.0;               // adaptive weight w = 1 / (||u - u_tgt||^2 + norm_c)^norm_p
  double norm_c = 1e-3;
  double omega = 1.0;                // guidance in the target: ṽ = ω v + κ u(y) + (1 - ω - κ) u(null)
  double kappa = 0.0;                //   (ω = 1, κ = 0: none; effective scale ω / (1 - κ))
  double guidance_t_min = 0.0;       // rows with t in [min, max] and a kept label are guided
  double guidance_t_max = 1.0;

  void validate() const {
    check_schedule(denoise_timesteps, class_dropout_prob);
    if (!(flow_fraction >= 0 && flow_fraction < 1))
      throw ConfigError(cat("flow_fraction must lie in [0, 1), got ", flow_fraction));
    if (!std::isfinite(logit_mean) || !(logit_std > 0) || !std::isfinite(logit_std))
      throw ConfigError(cat("logit_std must be positive and logit_mean finite, got ", logit_mean, ", ", logit_std));
    if (!(norm_p >= 0) || !std::isfinite(norm_p) || !(norm_c > 0) || !std::isfinite(norm_c))
      throw ConfigError(cat("norm_p must be >= 0 and norm_c > 0, got ", norm_p, ", ", norm_c));
    if (!std::isfinite(omega) || !std::isfinite(kappa) || !(kappa >= 0 && kappa < 1))
      throw ConfigError(cat("omega must be finite and kappa in [0, 1), got ", omega, ", ", kappa));
    if (!(guidance_t_min >= 0 && guidance_t_min <= guidance_t_max && guidance_t_max <= 1))
      throw ConfigError(cat("the guidance interval must satisfy 0 <= min <= max <= 1, got [", guidance_t_min, ", ",
                            guidance_t_max, "]"));
  }
  bool guided() const { return omega != 1.0 || kappa != 0.0; }
  // Rows [0, average_rows(B)) have d > 0, the rest d = 0.
  int average_rows(int B) const { return B - int(B * flow_fraction); }
  // The slice's rows with d > 0: its first ones (a slice keeps the batch's row order).
  int average_rows(const BatchSlice& s) const {
    int n = 0;
    for (int i = 0; i < s.rows(); ++i) n += s.global_row(i) < average_rows(s.batch);
    return n;
  }
  nlohmann::json to_json() const {
    return {{"denoise_timesteps", denoise_timesteps}, {"class_dropout_prob", class_dropout_prob},
            {"flow_fraction", flow_fraction},         {"uniform_time", uniform_time},
            {"logit_mean", logit_mean},
            {"logit_std", logit_std},                 {"norm_p", norm_p},
            {"norm_c", norm_c},                       {"omega", omega},
            {"kappa", kappa},                         {"guidance_t_min", guidance_t_min},
            {"guidance_t_max", guidance_t_max}};
  }
  // What the sampler reads: the network reads d itself, N steps feed d = 1/N.
  SamplingSchedule sampling() const {
    SamplingSchedule s = sampling_config(true, denoise_timesteps, class_dropout_prob);
    s.step_input = StepInput::Size;
    return s;
  }
};

// One rank's rows of an average-velocity batch: time t, step d and label (null where dropped) of
// each row, whether its target is guided, and the noise stream. Every rank draws the whole batch's
// choices in global row order; rows [0, average_rows) of the batch have d > 0.
struct AverageVelocityPlan {
  std::vector<float> t, d;
  std::vector<int32_t> y;
  std::vector<char> guided;
  int guided_rows = 0;
  uint64_t noise_stream = 0;
};

inline AverageVelocityPlan average_velocity_plan(const AverageVelocityConfig& c, const BatchSlice& s,
                                                 HostSpan<const int32_t> y, int classes, Rng& rng) {
  const int B = s.batch, Ba = c.average_rows(B);
  std::vector<float> t(static_cast<size_t>(B)), d(static_cast<size_t>(B));
  std::vector<char> drop(static_cast<size_t>(B));
  auto end = [&] {
    return c.uniform_time ? double(rng.uniform()) : 1.0 / (1.0 + std::exp(-(c.logit_mean + c.logit_std * rng.normal())));
  };
  for (int r = 0; r < B; ++r) {
    const double a = end(), b = end();
    t[r] = float(1.0 - std::max(a, b));
    d[r] = r < Ba ? float(std::abs(a - b)) : 0.0f;
    drop[r] = classes <= 1 || rng.uniform() < c.class_dropout_prob;
  }
  AverageVelocityPlan p;
  for (int i = 0; i < s.rows(); ++i) {
    const int g = s.global_row(i);
    p.t.push_back(t[g]);
    p.d.push_back(d[g]);
    p.y.push_back(drop[g] ? int32_t(classes) : y[i]);
    const bool guided = c.guided() && !drop[g] && t[g] >= c.guidance_t_min && t[g] <= c.guidance_t_max;
    p.guided.push_back(char(guided));
    p.guided_rows += guided;
  }
  p.noise_stream = rng.next_stream();
  return p;
}

template <TangentModel Model>
class AverageVelocityRows {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;

  // x_t and v = x1 - (1 - 1e-5) x0 for every row (the flow rows of DESIGN.md §2), the queries
  // (t, d, y), then ṽ on the guided rows.
  void start(Model& m, const AverageVelocityConfig& c, const AverageVelocityPlan& p, const BatchSlice& s,
             uint64_t seed, const T* x1) {
    const Backend& be = m.backend();
    const int64_t n = m.sample_size();
    const int B = int(p.y.size());
    rows.prepare(m, p.t, p.d, p.y);
    nn::ensure(v_, size_t(B) * size_t(n));
    slice_noise(be, x0_, s, seed, p.noise_stream, n);
    be.flow_rows(rows.xt(), v_.data(), x1, x0_.data(), rows.t(), B, int(n));
    if (p.guided_rows > 0) guide(m, c, p);
  }
  const T* velocity() const { return v_.data(); }  // ṽ [B, n]

  // MeanFlow's target: one training forward with tangents (ṽ, 1, -1) in (x, t, d) gives u and
  // du/dt = ∂_x u ṽ + ∂_t u - ∂_d u; target = ṽ + d du/dt. Returns the prediction u.
  const T* jvp_target(Model& m) {
    const Backend& be = m.backend();
    const int B = rows_count(m);
    const size_t N = size_t(B) * size_t(m.sample_size());
    constants(m, B);
    auto [u, u_dot] = m.forward_tangent(rows.xt(), rows.t(), rows.k(), rows.y(), B, v_.data(), ones_.data(),
                                        minus_ones_.data());
    T* target = rows.target();
    be.copy(target, u_dot, N);
    be.scale_rows(target, rows.k(), B, int(m.sample_size()));  // d du/dt (the step input is d)
    be.add_inplace(target, v_.data(), N);
    return u;
  }

  // α-Flow's target: on the rows with d > 0 (the first `avg` rows),
  //   u_tgt = α ṽ + (1 - α) sg(u(x_t + α d ṽ, t + α d, (1 - α) d)),
  // the query on the current weights without gradient; the other rows' target is ṽ. Then the
  // training forward; returns its prediction.
  const T* two_piece_target(Model& m, const AverageVelocityPlan& p, int avg, double alpha) {
    const Backend& be = m.backend();
    const int B = rows_count(m);
    const int64_t n = m.sample_size();
    const size_t N = size_t(B) * size_t(n), Na = size_t(avg) * size_t(n);
    T* target = rows.target();
    be.copy(target, v_.data(), N);
    if (avg > 0) {
      std::vector<float> ad(avg), tq(avg), dq(avg);
      for (int r = 0; r < avg; ++r) {
        ad[r] = float(alpha * p.d[r]);
        tq[r] = float(p.t[r] + alpha * p.d[r]);
        dq[r] = float((1 - alpha) * p.d[r]);
      }
      put_on_device(be, ad_, ad);
      put_on_device(be, tq_, tq);
      put_on_device(be, dq_, dq);
      nn::ensure(xq_, Na);
      nn::ensure(uq_, Na);
      be.copy(xq_.data(), v_.data(), Na);
      be.scale_rows(xq_.data(), ad_.data(), avg, int(n));
      be.add_inplace(xq_.data(), rows.xt(), Na);  // x_t + α d ṽ
      m.net().forward(m.eval_context(), m.arena().data(Role::Param), xq_.data(), tq_.data(), dq_.data(), rows.y(),
                      avg, uq_.data());
      be.cfg_combine(target, v_.data(), uq_.data(), T(alpha), Na);  // uq + α (ṽ - uq)
    }
    return m.forward(rows.xt(), rows.t(), rows.k(), rows.y(), B);
  }

  // The regression of pred on the targets with MeanFlow's adaptive weight: the gradient of
  // sum_rows w ||Δ||^2 / batch with Δ = pred - target, w = 1 / (||Δ||^2 + c)^p held constant (sg),
  // backward into the arena. The loss reported is the plain mean squared error (per element, as every
  // objective reports it): the weighted one is about 1 on every row once ||Δ||^2 >> c, which says
  // nothing about progress. Loss sums split at the first `avg` rows (d > 0).
  LossResult regress(Model& m, const T* pred, int avg, int batch, int avg_global, double p, double c) {
    Backend& be = m.backend();
    const int B = rows_count(m), n = int(m.sample_size());
    nn::ensure(grad_, size_t(B) * n);
    nn::ensure(row_loss_, size_t(B));
    be.mse_loss(grad_.data(), row_loss_.data(), pred, rows.target(), B, n, T(1) / T(batch));
    std::vector<T> rl(static_cast<size_t>(B));
    be.to_host(rl.data(), row_loss_.data(), size_t(B));
    std::vector<double> scale(static_cast<size_t>(B));
    LossResult r;
    for (int i = 0; i < B; ++i) {
      const double sq = double(rl[i]) * n;  // ||Δ||^2 (mse_loss gives the mean)
      const double w = std::pow(sq + c, -p);
      scale[i] = w * n;  // mse_loss's gradient is 2 Δ / (n batch)
      r.loss_sum += rl[i];
      (i < avg ? r.bootstrap_sum : r.flow_sum) += rl[i];
    }
    put_on_device(be, scale_, scale);
    be.scale_rows(grad_.data(), scale_.data(), B, n);
    m.backward(grad_.data());
    r.batch = batch;
    r.bootstrap_rows = avg_global;
    r.set_means();
    return r;
  }

  RegressionRows<Model> rows;

 private:
  int rows_count(const Model& m) const { return int(v_.size() / size_t(m.sample_size())); }
  void constants(Model& m, int B) {
    if (ones_.size() == size_t(B)) return;
    put_on_device(m.backend(), ones_, std::vector<T>(size_t(B), T(1)));
    put_on_device(m.backend(), minus_ones_, std::vector<T>(size_t(B), T(-1)));
  }
  // ṽ = ω v + κ u(x_t, t, 0 | y) + (1 - ω - κ) u(x_t, t, 0 | null) on the guided rows, from one
  // forward of 2B rows on the current weights without gradient; the other rows keep v.
  void guide(Model& m, const AverageVelocityConfig& c, const AverageVelocityPlan& p) {
    const Backend& be = m.backend();
    const int B = int(p.y.size());
    const int64_t n = m.sample_size();
    const size_t N = size_t(B) * size_t(n);
    std::vector<T> qt(2 * size_t(B)), wv(B), wy(B), wn(B);
    std::vector<int32_t> qy(2 * size_t(B));
    for (int r = 0; r < B; ++r) {
      qt[r] = qt[B + r] = T(p.t[r]);
      qy[r] = p.y[r];
      qy[B + r] = m.null_label();
      wv[r] = p.guided[r] ? T(c.omega) : T(1);
      wy[r] = p.guided[r] ? T(c.kappa) : T(0);
      wn[r] = p.guided[r] ? T(1 - c.omega - c.kappa) : T(0);
    }
    put_on_device(be, gt_, qt);
    put_on_device(be, gy_, qy);
    put_on_device(be, gd_, std::vector<T>(2 * size_t(B), T(0)));
    put_on_device(be, wv_, wv);
    put_on_device(be, wy_, wy);
    put_on_device(be, wn_, wn);
    nn::ensure(gx_, 2 * N);
    nn::ensure(gu_, 2 * N);
    be.copy(gx_.data(), rows.xt(), N);
    be.copy(gx_.data() + N, rows.xt(), N);
    m.net().forward(m.eval_context(), m.arena().data(Role::Param), gx_.data(), gt_.data(), gd_.data(), gy_.data(),
                    2 * B, gu_.data());
    be.scale_rows(v_.data(), wv_.data(), B, int(n));
    be.scale_rows(gu_.data(), wy_.data(), B, int(n));
    be.scale_rows(gu_.data() + N, wn_.data(), B, int(n));
    be.add_inplace(v_.data(), gu_.data(), N);
    be.add_inplace(v_.data(), gu_.data() + N, N);
  }

  typename Backend::template Buffer<T> x0_, v_, ones_, minus_ones_, grad_, row_loss_, scale_;
  typename Backend::template Buffer<T> ad_, tq_, dq_, xq_, uq_;
  typename Backend::template Buffer<T> gt_, gd_, wv_, wy_, wn_, gx_, gu_;
  typename Backend::template Buffer<int32_t> gy_;
};

}  // namespace shortcut
