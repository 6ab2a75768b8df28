// The training-target configuration of DESIGN.md §2; every default is a field here.
#pragma once
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>

#include "shortcut/core/error.hpp"
#include "shortcut/core/span.hpp"

namespace shortcut {

enum class Objective { Shortcut, FlowMatching };

// The number the network's step input reads: the index k = log2(1/d) of DESIGN.md §4 (the default,
// and every checkpoint written before the field), or the step size d itself through the same
// sinusoidal embedder (§8: the average-velocity objectives differentiate in d, which the index cannot
// do at d = 0). Sampling in N steps then feeds k = log2 N, or d = 1/N.
enum class StepInput { Index, Size };

inline bool is_power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }
inline int ilog2(int64_t n) {
  int l = 0;
  while ((int64_t(1) << l) < n) ++l;
  return l;
}

struct ShortcutConfig {
  Objective objective = Objective::Shortcut;  // FlowMatching: k ignored (always L), no bootstrap rows
  int denoise_timesteps = 128;                // M, the number of smallest steps
  double bootstrap_fraction = 0.25;           // share of each batch used for self-consistency rows
  double class_dropout_prob = 0.1;            // flow rows' labels dropped to the null class
  double cfg_scale = 1.5;                     // w of the guided bootstrap targets (0: unconditional)
  bool bootstrap_cfg = true;                  // guide the first Bb/L bootstrap rows' targets
  bool bootstrap_ema = true;                  // bootstrap targets from the EMA weights
  double target_clip = 4.0;                   // clip of x'_{t+d} and of the bootstrap target
  StepInput step_input = StepInput::Index;    // what the network's step input reads: k, or d itself

  // The network's step input when sampling in `steps` steps: k = log2 N or d = 1/N for a network
  // that reads the step; flow matching's fixed query (k = L, or d = 0) otherwise.
  double sampling_step_input(int steps) const {
    const bool index = step_input == StepInput::Index;
    if (objective == Objective::FlowMatching) return index ? levels() : 0.0;
    return index ? double(ilog2(steps)) : 1.0 / steps;
  }

  int levels() const { return ilog2(denoise_timesteps); }  // L

  void validate(int batch = 0) const {
    if (!is_power_of_two(denoise_timesteps) || denoise_timesteps < 2 || denoise_timesteps > (1 << 20))
      throw ConfigError(cat("denoise_timesteps must be a power of two in [2, 2^20], got ", denoise_timesteps));
    if (objective == Objective::Shortcut && !(bootstrap_fraction > 0 && bootstrap_fraction < 1))
      throw ConfigError(cat("bootstrap_fraction must lie in (0, 1), got ", bootstrap_fraction));
    if (!(class_dropout_prob >= 0 && class_dropout_prob <= 1))
      throw ConfigError(cat("class_dropout_prob must lie in [0, 1], got ", class_dropout_prob));
    if (!(cfg_scale >= 0) || !std::isfinite(cfg_scale)) throw ConfigError(cat("cfg_scale must be >= 0, got ", cfg_scale));
    if (!(target_clip > 0)) throw ConfigError(cat("target_clip must be positive, got ", target_clip));
    if (batch > 0) {
      if (objective == Objective::Shortcut) {
        int bb = bootstrap_rows(batch);
        if (bb < levels())
          throw ConfigError(cat("batch size ", batch, " is too small: ", bb, " bootstrap rows (", bootstrap_fraction,
                                " of the batch) cannot fill one row for each of the ", levels(),
                                " step sizes; use a batch of at least ",
                                int(std::ceil(levels() / bootstrap_fraction)), " or a larger bootstrap_fraction"));
        if (bb >= batch) throw ConfigError(cat("batch size ", batch, " leaves no flow-matching rows"));
      } else if (batch < 1) {
        throw ConfigError("batch size must be positive");
      }
    }
  }
  int bootstrap_rows(int batch) const {
    return objective == Objective::Shortcut ? int(batch * bootstrap_fraction) : 0;
  }

  // step_input is written only when it is d, so that metadata of index models reads as before (and
  // resume's comparison with checkpoints written before the field finds no change).
  nlohmann::json to_json() const {
    nlohmann::json j = {{"objective", objective == Objective::Shortcut ? "shortcut" : "flow"},
                        {"denoise_timesteps", denoise_timesteps},
                        {"bootstrap_fraction", bootstrap_fraction},
                        {"class_dropout_prob", class_dropout_prob},
                        {"cfg_scale", cfg_scale},
                        {"bootstrap_cfg", bootstrap_cfg},
                        {"bootstrap_ema", bootstrap_ema},
                        {"target_clip", target_clip}};
    if (step_input == StepInput::Size) j["step_input"] = "d";
    return j;
  }
  static ShortcutConfig from_json(const nlohmann::json& j) {
    ShortcutConfig c;
    std::string o = j.value("objective", "shortcut");
    if (o != "shortcut" && o != "flow") throw ConfigError("objective must be 'shortcut' or 'flow', got '" + o + "'");
    c.objective = o == "shortcut" ? Objective::Shortcut : Objective::FlowMatching;
    c.denoise_timesteps = j.value("denoise_timesteps", c.denoise_timesteps);
    c.bootstrap_fraction = j.value("bootstrap_fraction", c.bootstrap_fraction);
    c.class_dropout_prob = j.value("class_dropout_prob", c.class_dropout_prob);
    c.cfg_scale = j.value("cfg_scale", c.cfg_scale);
    c.bootstrap_cfg = j.value("bootstrap_cfg", c.bootstrap_cfg);
    c.bootstrap_ema = j.value("bootstrap_ema", c.bootstrap_ema);
    c.target_clip = j.value("target_clip", c.target_clip);
    const std::string si = j.value("step_input", "index");
    if (si != "index" && si != "d") throw ConfigError("step_input must be 'index' or 'd', got '" + si + "'");
    c.step_input = si == "d" ? StepInput::Size : StepInput::Index;
    c.validate();
    return c;
  }
};

}  // namespace shortcut
