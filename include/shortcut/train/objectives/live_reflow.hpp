// Live reflow (DESIGN.md §7; no teacher, the network reads d): a share of the batch (a quarter by
// default) are reflow rows: their noise x0 is carried to x̂1 by 8 Euler steps of the current raw
// weights at k = L, guided with cfg_scale on the rows' labels; a reflow row is the straight path
// between x0 and x̂1 at a grid t, with target x̂1 - x0, queried at k = 0 (one step of d = 1). The
// other rows are flow rows (k = L, labels dropped with class_dropout_prob). The sampler queries N
// steps at k = log2 N, as for a shortcut model.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "shortcut/train/objective.hpp"
#include "shortcut/train/objectives/rows.hpp"

namespace shortcut {

struct LiveReflowConfig {
  int denoise_timesteps = 128;      // M: t on the grid of multiples of 1/M; L = log2 M
  double reflow_fraction = 0.25;    // share of each batch that are reflow rows
  int euler_steps = 8;              // steps that carry x0 to x̂1
  double class_dropout_prob = 0.1;  // flow rows' labels dropped to the null class
  double cfg_scale = 1.5;           // guidance of the reflow rows' generation (0: unconditional)

  void validate() const {
    check_schedule(denoise_timesteps, class_dropout_prob);
    if (!(reflow_fraction >= 0 && reflow_fraction <= 1))
      throw ConfigError(cat("reflow_fraction must lie in [0, 1], got ", reflow_fraction));
    if (euler_steps < 1) throw ConfigError(cat("euler_steps must be at least 1, got ", euler_steps));
    if (!std::isfinite(cfg_scale) || cfg_scale < 0) throw ConfigError(cat("cfg_scale must be >= 0, got ", cfg_scale));
  }
  int levels() const { return ilog2(denoise_timesteps); }
  int reflow_rows(int B) const { return int(double(B) * reflow_fraction); }
  nlohmann::json to_json() const {
    return {{"name", "live_reflow"}, {"denoise_timesteps", denoise_timesteps}, {"reflow_fraction", reflow_fraction},
            {"euler_steps", euler_steps}, {"class_dropout_prob", class_dropout_prob}, {"cfg_scale", cfg_scale}};
  }
};

template <VelocityModel Model>
class LiveReflow {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;

  struct Plan {
    int Br = 0;  // this rank's reflow rows (its first rows)
    std::vector<float> t, k;
    std::vector<int32_t> y;
    uint64_t noise_stream = 0;
  };

  explicit LiveReflow(const LiveReflowConfig& c) : c_((c.validate(), c)) {}

  std::string name() const { return "live_reflow"; }
  nlohmann::json to_json() const { return c_.to_json(); }
  SamplingSchedule sampling() const {  // it reads d: N steps query k = log2 N
    return sampling_config(true, c_.denoise_timesteps, c_.class_dropout_prob, c_.cfg_scale);
  }
  void validate(int B) const { check_batch_rows(B); }
  int bootstrap_rows(int B) const { return c_.reflow_rows(B); }  // they cost euler_steps queries each
  void set_progress(const TrainingProgress&) {}
  const Plan& plan() const { return plan_; }
  const T* inputs() const { return rows_.xt(); }
  const T* targets() const { return rows_.target(); }
  const T* reflow_endpoints() const { return x1r_.data(); }

  // The reflow rows' endpoints x̂1 from their noise, then both kinds of rows on their straight paths
  // (reflow rows from x0 to x̂1, flow rows from x0 to the data), the regression.
  LossResult step(Model& m, DeviceSpan<const T, Backend> x1, HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    const Backend& be = m.backend();
    const int64_t n = m.sample_size();
    check_step_inputs(s, x1, y, n, m.num_classes());
    make_plan(m, s, y, rng);
    const int B = s.rows(), Br = plan_.Br;
    const size_t Nr = size_t(Br) * size_t(n);
    rows_.prepare(m, plan_.t, plan_.k, plan_.y);
    slice_noise(be, x0_, s, rng.seed(), plan_.noise_stream, n);
    const T* x0 = x0_.data();
    if (Br > 0) generate_endpoints(m, Br);
    be.flow_rows(rows_.xt(), rows_.target(), x1r_.data(), x0, rows_.t(), Br, int(n));
    be.flow_rows(rows_.xt() + Nr, rows_.target() + Nr, x1.data() + Nr, x0 + Nr, rows_.t() + Br, B - Br, int(n));
    return rows_.regress(m, B, Br, s.batch, c_.reflow_rows(s.batch));
  }

 private:
  void make_plan(const Model& m, const BatchSlice& s, HostSpan<const int32_t> y, Rng& rng) {
    const int classes = m.num_classes(), L = c_.levels(), M = c_.denoise_timesteps;
    const int Br = c_.reflow_rows(s.batch);
    const bool uncond = c_.cfg_scale == 0 || classes <= 1;
    std::vector<float> t(size_t(s.batch));
    std::vector<char> drop(size_t(s.batch));
    for (int r = 0; r < s.batch; ++r) {
      t[r] = float(rng.randint(M)) / float(M);
      drop[r] = r < Br ? uncond : (classes <= 1 || rng.uniform() < c_.class_dropout_prob);
    }
    Plan p;
    for (int i = 0; i < s.rows(); ++i) {
      const int g = s.global_row(i);
      p.Br += g < Br;
      p.t.push_back(t[g]);
      p.k.push_back(g < Br ? 0.f : float(L));
      p.y.push_back(drop[g] ? int32_t(classes) : y[i]);
    }
    p.noise_stream = rng.next_stream();
    plan_ = std::move(p);
  }

  // x̂1 of the reflow rows: euler_steps guided Euler steps of the raw weights at k = L from their x0.
  void generate_endpoints(Model& m, int Br) {
    Backend& be = m.backend();
    const size_t Nr = size_t(Br) * size_t(m.sample_size());
    const int S = c_.euler_steps;
    nn::ensure(x1r_, Nr); nn::ensure(v_, Nr); nn::ensure(tq_, size_t(Br)); nn::ensure(kq_, size_t(Br));
    const T w = T(c_.cfg_scale == 0 || m.num_classes() <= 1 ? 1.0 : c_.cfg_scale);  // 1: one unguided query
    be.copy(x1r_.data(), x0_.data(), Nr);
    be.fill(kq_.data(), T(c_.levels()), size_t(Br));
    for (int i = 0; i < S; ++i) {
      be.fill(tq_.data(), T(double(i) / S), size_t(Br));  // in stream order: the last query has read it
      m.velocity(v_.data(), x1r_.data(), tq_.data(), kq_.data(), rows_.y(), Br, w, Role::Param);
      be.axpy(x1r_.data(), T(1.0 / S), v_.data(), Nr);
    }
  }

  LiveReflowConfig c_;
  Plan plan_;
  RegressionRows<Model> rows_;
  typename Backend::template Buffer<T> x0_, x1r_, v_, tq_, kq_;
};

}  // namespace shortcut
