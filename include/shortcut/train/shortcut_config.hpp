// The shortcut objective's configuration, DESIGN.md §2; every default is a field here.
#pragma once
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>

#include "shortcut/core/error.hpp"
#include "shortcut/train/sampling_schedule.hpp"

namespace shortcut {

struct ShortcutConfig {
  int denoise_timesteps = 128;       // M, the number of smallest steps
  double bootstrap_fraction = 0.25;  // share of each batch used for self-consistency rows
  double class_dropout_prob = 0.1;   // flow rows' labels dropped to the null class
  double cfg_scale = 1.5;            // w of the guided bootstrap targets (0: unconditional)
  bool bootstrap_cfg = true;         // guide the first Bb/L bootstrap rows' targets
  bool bootstrap_ema = true;         // bootstrap targets from the EMA weights
  double target_clip = 4.0;          // clip of x'_{t+d} and of the bootstrap target

  int levels() const { return ilog2(denoise_timesteps); }  // L

  // The network reads the step index: N steps query k = log2 N.
  SamplingSchedule sampling() const {
    return sampling_config(true, denoise_timesteps, class_dropout_prob, cfg_scale);
  }

  void validate(int batch = 0) const {
    sampling().validate();
    if (!(bootstrap_fraction > 0 && bootstrap_fraction < 1))
      throw ConfigError(cat("bootstrap_fraction must lie in (0, 1), got ", bootstrap_fraction));
    if (!(target_clip > 0)) throw ConfigError(cat("target_clip must be positive, got ", target_clip));
    if (batch <= 0) return;
    const int bb = bootstrap_rows(batch);
    if (bb < levels())
      throw ConfigError(cat("batch size ", batch, " is too small: ", bb, " bootstrap rows (", bootstrap_fraction,
                            " of the batch) cannot fill one row for each of the ", levels(),
                            " step sizes; use a batch of at least ", int(std::ceil(levels() / bootstrap_fraction)),
                            " or a larger bootstrap_fraction"));
    if (bb >= batch) throw ConfigError(cat("batch size ", batch, " leaves no flow-matching rows"));
  }
  int bootstrap_rows(int batch) const { return int(batch * bootstrap_fraction); }

  nlohmann::json to_json() const {
    return {{"name", "shortcut"},
            {"denoise_timesteps", denoise_timesteps},
            {"bootstrap_fraction", bootstrap_fraction},
            {"class_dropout_prob", class_dropout_prob},
            {"cfg_scale", cfg_scale},
            {"bootstrap_cfg", bootstrap_cfg},
            {"bootstrap_ema", bootstrap_ema},
            {"target_clip", target_clip}};
  }
  // Also reads the "shortcut" object of files written before the split (there "objective":
  // "shortcut" stood where "name" stands now).
  static ShortcutConfig from_json(const nlohmann::json& j) {
    ShortcutConfig c;
    c.denoise_timesteps = j.value("denoise_timesteps", c.denoise_timesteps);
    c.bootstrap_fraction = j.value("bootstrap_fraction", c.bootstrap_fraction);
    c.class_dropout_prob = j.value("class_dropout_prob", c.class_dropout_prob);
    c.cfg_scale = j.value("cfg_scale", c.cfg_scale);
    c.bootstrap_cfg = j.value("bootstrap_cfg", c.bootstrap_cfg);
    c.bootstrap_ema = j.value("bootstrap_ema", c.bootstrap_ema);
    c.target_clip = j.value("target_clip", c.target_clip);
    c.validate();
    return c;
  }
};

}  // namespace shortcut
