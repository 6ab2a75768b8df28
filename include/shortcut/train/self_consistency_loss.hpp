// SelfConsistencyLoss: builds the shortcut training batch of DESIGN.md §2 (bootstrap rows first,
// then flow rows), computes the bootstrap targets from the EMA weights without gradient, the MSE
// loss with its flow and bootstrap parts, and the gradient into the model's arena.
//
// The random choices (t, labels dropped, noise stream) come from a counter-based Rng on the host;
// the noise itself is drawn on the device from (seed, stream), so both backends see the same numbers.
#pragma once
#include <cmath>
#include <vector>

#include "shortcut/core/rng.hpp"
#include "shortcut/train/shortcut_config.hpp"
#include "shortcut/train/shortcut_model.hpp"

namespace shortcut {

// The host-side plan of one batch: what every row is queried with, and the bootstrap details.
struct BatchPlan {
  int B = 0, Bb = 0, n_cfg = 0;
  std::vector<float> t, k;        // [B] time and step index of the training query
  std::vector<int32_t> y;         // [B] labels of the training query (null where dropped)
  std::vector<int> k_b;           // [Bb] target index of each bootstrap row (d = 2^-k_b)
  std::vector<float> half_d;      // [Bb] d / 2
  uint64_t noise_stream = 0;      // x0 = normals of (seed, noise_stream)
};

inline BatchPlan plan_batch(const ShortcutConfig& cfg, const int32_t* labels, int B, int classes, Rng& rng) {
  cfg.validate(B);
  BatchPlan p;
  p.B = B;
  p.Bb = cfg.bootstrap_rows(B);
  const int L = cfg.levels(), M = cfg.denoise_timesteps;
  const bool uncond = cfg.cfg_scale == 0 || classes <= 1;
  const int32_t null = classes;
  check_labels(labels, size_t(B), classes);
  p.t.resize(B); p.k.resize(B); p.y.resize(B); p.k_b.resize(p.Bb); p.half_d.resize(p.Bb);
  const int block = p.Bb / L;
  for (int r = 0; r < p.Bb; ++r) {
    int kb = r < block * L ? L - 1 - r / block : 0;
    int64_t sections = int64_t(1) << kb;
    p.k_b[r] = kb;
    p.half_d[r] = 0.5f / float(sections);
    p.t[r] = float(rng.randint(sections)) / float(sections);
    p.k[r] = float(kb);
    p.y[r] = uncond ? null : labels[r];
  }
  p.n_cfg = (cfg.bootstrap_cfg && !uncond) ? block : 0;
  for (int r = p.Bb; r < B; ++r) {
    p.t[r] = float(rng.randint(M)) / float(M);
    p.k[r] = float(L);
    bool drop = uncond || rng.uniform() < cfg.class_dropout_prob;
    p.y[r] = drop ? null : labels[r];
  }
  p.noise_stream = rng.next_stream();
  return p;
}

template <VelocityModel Model>
class SelfConsistencyLoss {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;
  using Buf = typename Backend::template Buffer<T>;
  using IBuf = typename Backend::template Buffer<int32_t>;

  struct Result {
    double loss = 0, flow_loss = 0, bootstrap_loss = 0;
  };

  explicit SelfConsistencyLoss(const ShortcutConfig& cfg) : cfg_(cfg) { cfg_.validate(); }
  const ShortcutConfig& config() const { return cfg_; }
  const BatchPlan& plan() const { return plan_; }
  // Device buffers of the last built batch: inputs [B, n] and targets [B, n].
  const T* inputs() const { return xt_.data(); }
  const T* targets() const { return target_.data(); }

  // Builds the training rows for data x1 (device [B, n]) with host labels y.
  void build(Model& m, const T* x1, const int32_t* y, int B, Rng& rng) {
    Backend& be = m.backend();
    const int64_t n = m.sample_size();
    plan_ = plan_batch(cfg_, y, B, m.num_classes(), rng);
    const size_t N = size_t(B) * n;
    nn::ensure(x0_, N); nn::ensure(xt_, N); nn::ensure(target_, N);
    upload(be, t_, to_t(plan_.t)); upload(be, k_, to_t(plan_.k)); upload(be, y_, plan_.y);
    be.normal(x0_.data(), N, rng.seed(), plan_.noise_stream);
    be.flow_rows(xt_.data(), target_.data(), x1, x0_.data(), t_.data(), B, int(n));
    if (plan_.Bb > 0) bootstrap_targets(m);
  }

  // build + forward + loss + backward: gradients accumulate into the arena's Grad role.
  Result step(Model& m, const T* x1, const int32_t* y, int B, Rng& rng) {
    if (B < 1) throw ShapeError(cat("training step: the batch must hold at least one row, got ", B));
    build(m, x1, y, B, rng);
    Backend& be = m.backend();
    const int n = int(m.sample_size());
    nn::ensure(grad_, size_t(B) * n);
    nn::ensure(row_loss_, size_t(B));
    const T* pred = m.forward(xt_.data(), t_.data(), k_.data(), y_.data(), B);
    be.mse_loss(grad_.data(), row_loss_.data(), pred, target_.data(), B, n, T(1) / T(B));
    m.backward(grad_.data());
    std::vector<T> rl(B);
    be.to_host(rl.data(), row_loss_.data(), size_t(B));
    Result r;
    for (int i = 0; i < B; ++i) {
      r.loss += rl[i];
      (i < plan_.Bb ? r.bootstrap_loss : r.flow_loss) += rl[i];
    }
    r.loss /= B;
    if (plan_.Bb) r.bootstrap_loss /= plan_.Bb;
    if (B > plan_.Bb) r.flow_loss /= (B - plan_.Bb);
    return r;
  }

 private:
  template <class U>
  static void upload(Backend& be, typename Backend::template Buffer<U>& dst, const std::vector<U>& src) {
    nn::ensure(dst, src.size());
    be.to_device(dst.data(), src.data(), src.size());
  }

  // v1 = s(x_t, t, k_b+1); x2 = clip(x_t + d/2 v1); v2 = s(x2, t + d/2, k_b+1); target = clip((v1+v2)/2),
  // with the first n_cfg rows guided. Each query is one forward of Bb + n_cfg rows: the rows, then
  // the guided rows again with the null label.
  void bootstrap_targets(Model& m) {
    Backend& be = m.backend();
    const int Bb = plan_.Bb, nc = plan_.n_cfg, Q = Bb + nc;
    const int64_t n = m.sample_size();
    const size_t rows_n = size_t(Bb) * n, cfg_n = size_t(nc) * n;
    std::vector<float> qt(Q), qk(Q), hd(plan_.half_d);
    std::vector<int32_t> qy(Q);
    for (int r = 0; r < Q; ++r) {
      int s = r < Bb ? r : r - Bb;
      qt[r] = plan_.t[s];
      qk[r] = float(plan_.k_b[s] + 1);
      qy[r] = r < Bb ? plan_.y[s] : m.null_label();
    }
    upload(be, qt_, to_t(qt)); upload(be, qk_, to_t(qk)); upload(be, qy_, qy); upload(be, hd_, to_t(hd));
    nn::ensure(qx_, size_t(Q) * n); nn::ensure(qv_, size_t(Q) * n);
    nn::ensure(x2_, rows_n); nn::ensure(v1_, rows_n);
    const T* W = m.arena().data(cfg_.bootstrap_ema ? Role::Ema : Role::Param);
    auto query = [&](const T* x) {
      be.copy(qx_.data(), x, rows_n);
      be.copy(qx_.data() + rows_n, x, cfg_n);
      m.net().forward(m.eval_context(), W, qx_.data(), qt_.data(), qk_.data(), qy_.data(), Q, qv_.data());
    };
    const T w = T(cfg_.cfg_scale), clip = T(cfg_.target_clip);
    query(xt_.data());
    be.bootstrap_half_step(x2_.data(), v1_.data(), xt_.data(), qv_.data(), qv_.data() + rows_n, nc, w, hd_.data(), Bb,
                           int(n), clip);
    for (int r = 0; r < Q; ++r) qt[r] += plan_.half_d[r < Bb ? r : r - Bb];
    upload(be, qt_, to_t(qt));
    query(x2_.data());
    be.bootstrap_target(target_.data(), v1_.data(), qv_.data(), qv_.data() + rows_n, nc, w, Bb, int(n), clip);
  }
  static std::vector<T> to_t(const std::vector<float>& v) { return std::vector<T>(v.begin(), v.end()); }

  ShortcutConfig cfg_;
  BatchPlan plan_;
  Buf x0_, xt_, target_, t_, k_, grad_, row_loss_, qx_, qv_, qt_, qk_, hd_, x2_, v1_;
  IBuf y_, qy_;
};

}  // namespace shortcut
