// EmaTracker: ema = tau * ema + (1 - tau) * param over the whole arena, one flat pass after every
// optimizer step (DESIGN.md §2). The EMA weights are what sampling and bootstrap targets use.
#pragma once
#include "shortcut/core/arena.hpp"
#include "shortcut/core/concepts.hpp"

namespace shortcut {

class EmaTracker {
 public:
  explicit EmaTracker(double tau = 0.999) : tau_(tau) {
    if (!(tau >= 0 && tau <= 1)) throw ConfigError(cat("EMA decay tau must lie in [0, 1], got ", tau));
  }
  double tau() const { return tau_; }
  // Starts the EMA at the current parameters.
  template <ComputeBackend Be>
  void reset(ParamArena<Be>& a) const { a.copy_role(Role::Ema, Role::Param); }
  template <ComputeBackend Be>
  void update(ParamArena<Be>& a) const {
    a.enable(Role::Ema);
    a.backend().ema_update(a.data(Role::Ema), a.data(Role::Param), typename Be::Scalar(tau_), a.size());
  }
 private:
  double tau_;
};

}  // namespace shortcut
