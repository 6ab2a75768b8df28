// AdamW (decoupled weight decay, as torch.optim.AdamW) over the whole parameter arena in one flat
// pass, with an optional linear warm-up and cosine decay of the learning rate. With parameter groups
// (train/param_groups.hpp: no decay, an lr scale or frozen, by tensor-name pattern) the same backend
// op runs once per contiguous run of tensors that share their settings, and skips frozen runs.
#pragma once
#include <cmath>
#include <nlohmann/json.hpp>
#include <vector>

#include "shortcut/core/arena.hpp"
#include "shortcut/core/bias_correction.hpp"
#include "shortcut/core/concepts.hpp"
#include "shortcut/train/param_groups.hpp"

namespace shortcut {

struct AdamWConfig {
  double lr = 1e-4, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.1;
  int64_t warmup_steps = 0;  // linear warm-up from 0 to lr over these steps
  int64_t cosine_steps = 0;  // if > 0: cosine decay from lr to min_lr over these steps (after warm-up)
  double min_lr = 0;
  std::vector<ParamGroup> groups;  // first match wins; tensors no group matches take the settings above

  void validate() const {
    if (!(lr > 0)) throw ConfigError(cat("learning rate must be positive, got ", lr));
    if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1))
      throw ConfigError(cat("AdamW betas must lie in [0, 1), got ", beta1, ", ", beta2));
    if (!(eps > 0) || !(weight_decay >= 0) || warmup_steps < 0 || cosine_steps < 0 || min_lr < 0)
      throw ConfigError("AdamW: eps must be positive; weight decay, warm-up, cosine steps and min_lr non-negative");
    validate_groups(groups);
  }
  // "param_groups" only when there are groups: the JSON of a config without them stays what older
  // checkpoints hold, so resuming them compares equal.
  nlohmann::json to_json() const {
    nlohmann::json j = {{"lr", lr}, {"beta1", beta1}, {"beta2", beta2}, {"eps", eps}, {"weight_decay", weight_decay},
                        {"warmup_steps", warmup_steps}, {"cosine_steps", cosine_steps}, {"min_lr", min_lr}};
    if (!groups.empty()) {
      nlohmann::json g = nlohmann::json::array();
      for (auto& x : groups) g.push_back(x.to_json());
      j["param_groups"] = g;
    }
    return j;
  }
};

class AdamW {
 public:
  explicit AdamW(const AdamWConfig& c = {}) : c_(c) { c_.validate(); }
  const AdamWConfig& config() const { return c_; }
  int64_t step_count() const { return step_; }
  void set_step_count(int64_t s) { step_ = s; }

  // The learning rate used for optimizer step number `step` (1-based).
  double lr_at(int64_t step) const {
    if (c_.warmup_steps > 0 && step <= c_.warmup_steps) return c_.lr * double(step) / double(c_.warmup_steps);
    if (c_.cosine_steps > 0) {
      double p = std::min(1.0, double(step - c_.warmup_steps) / double(c_.cosine_steps));
      return c_.min_lr + 0.5 * (c_.lr - c_.min_lr) * (1 + std::cos(M_PI * p));
    }
    return c_.lr;
  }

  // The runs the groups cut the layout into; a ConfigError names a pattern that matches nothing.
  // Called by the Trainer at construction so that a bad pattern fails before any step.
  const std::vector<ParamRun>& bind(const ParamLayout& L) {
    if (bound_ != &L || bound_total_ != L.total()) {
      runs_ = resolve_groups(c_.groups, L);
      bound_ = &L;
      bound_total_ = L.total();
    }
    return runs_;
  }

  // One update of the arena's parameters from its gradients; the moments live in the arena too.
  template <ComputeBackend Be>
  void step(ParamArena<Be>& a) {
    using T = typename Be::Scalar;
    a.enable(Role::AdamM);
    a.enable(Role::AdamV);
    ++step_;
    const double lr = lr_at(step_);
    T *p = a.data(Role::Param), *m = a.data(Role::AdamM), *v = a.data(Role::AdamV);
    const T* g = a.data(Role::Grad);
    for (const ParamRun& r : runs(a)) {
      if (r.frozen) continue;
      a.backend().adamw_step(p + r.offset, g + r.offset, m + r.offset, v + r.offset, r.size, T(lr * r.lr_scale),
                             T(c_.beta1), T(c_.beta2), T(c_.eps), T(r.decay ? c_.weight_decay : 0.0), step_);
    }
  }

 private:
  // The runs of one setting: the groups' (bind), or the whole arena as one.
  template <class Be>
  const std::vector<ParamRun>& runs(const ParamArena<Be>& a) {
    if (!c_.groups.empty()) return bind(a.layout());
    if (whole_.size() != 1 || whole_[0].size != a.size()) whole_ = {ParamRun{0, a.size()}};
    return whole_;
  }
  AdamWConfig c_;
  std::vector<ParamRun> whole_;
  int64_t step_ = 0;
  const ParamLayout* bound_ = nullptr;
  size_t bound_total_ = 0;
  std::vector<ParamRun> runs_;
};

}  // namespace shortcut
