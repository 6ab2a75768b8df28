// What a trained network must be queried with when sampling, whatever objective trained it: every
// objective reports it (sampling()), the checkpoints carry it, and OdeSampler, load_generator and the
// PyTorch package read it.
//
// It is stored as the "shortcut" object of a checkpoint's "training" metadata, the name that object
// had when it held the whole shortcut configuration: files written before the split read unchanged
// (their extra shortcut fields are not the schedule's and are skipped), and "objective" there keeps
// its old meaning, "shortcut" for a network that reads d and "flow" for one that does not.
#pragma once
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "shortcut/core/error.hpp"

namespace shortcut {

inline bool is_power_of_two(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }
inline int ilog2(int64_t n) {
  int l = 0;
  while ((int64_t(1) << l) < n) ++l;
  return l;
}

// The number the network's step input reads: the index k = log2(1/d) of DESIGN.md §4 (the default,
// and every checkpoint written before the field), or the step size d itself through the same
// sinusoidal embedder (§8: the average-velocity objectives differentiate in d, which the index cannot
// do at d = 0).
enum class StepInput { Index, Size };

struct SamplingSchedule {
  bool reads_d = true;                      // trained on the step size: N steps query k = log2 N (or d = 1/N)
  StepInput step_input = StepInput::Index;  // what the step input reads: k, or d itself
  int denoise_timesteps = 128;              // M: the sampler takes at most M steps; L = log2 M
  double class_dropout_prob = 0.1;          // labels dropped in training (> 0: guidance has a null class to use)
  double cfg_scale = 1.5;                   // the guidance scale inside the training targets (0: none)

  int levels() const { return ilog2(denoise_timesteps); }  // L

  // The network's step input when sampling in `steps` steps: k = log2 N or d = 1/N for a network
  // that reads the step; for one that does not, the fixed query it was trained at (k = L, or d = 0).
  double step_input_for(int steps) const {
    const bool index = step_input == StepInput::Index;
    if (!reads_d) return index ? levels() : 0.0;
    return index ? double(ilog2(steps)) : 1.0 / steps;
  }

  void validate() const {
    if (!is_power_of_two(denoise_timesteps) || denoise_timesteps < 2 || denoise_timesteps > (1 << 20))
      throw ConfigError(cat("denoise_timesteps must be a power of two in [2, 2^20], got ", denoise_timesteps));
    if (!(class_dropout_prob >= 0 && class_dropout_prob <= 1))
      throw ConfigError(cat("class_dropout_prob must lie in [0, 1], got ", class_dropout_prob));
    if (!(cfg_scale >= 0) || !std::isfinite(cfg_scale)) throw ConfigError(cat("cfg_scale must be >= 0, got ", cfg_scale));
  }

  // step_input is written only when it is d, so that the metadata of index models reads as before.
  nlohmann::json to_json() const {
    nlohmann::json j = {{"objective", reads_d ? "shortcut" : "flow"},
                        {"denoise_timesteps", denoise_timesteps},
                        {"class_dropout_prob", class_dropout_prob},
                        {"cfg_scale", cfg_scale}};
    if (step_input == StepInput::Size) j["step_input"] = "d";
    return j;
  }
  // Reads both the schedule and the whole shortcut configuration that files before the split held.
  static SamplingSchedule from_json(const nlohmann::json& j) {
    SamplingSchedule s;
    const std::string o = j.value("objective", "shortcut");
    if (o != "shortcut" && o != "flow")
      throw ConfigError("objective must be 'shortcut' (reads d) or 'flow' (does not), got '" + o + "'");
    s.reads_d = o == "shortcut";
    s.denoise_timesteps = j.value("denoise_timesteps", s.denoise_timesteps);
    s.class_dropout_prob = j.value("class_dropout_prob", s.class_dropout_prob);
    s.cfg_scale = j.value("cfg_scale", s.cfg_scale);
    const std::string si = j.value("step_input", "index");
    if (si != "index" && si != "d") throw ConfigError("step_input must be 'index' or 'd', got '" + si + "'");
    s.step_input = si == "d" ? StepInput::Size : StepInput::Index;
    s.validate();
    return s;
  }
};

// The schedule of an objective from its M, label dropout (and guidance): `reads_d` or not.
inline SamplingSchedule sampling_config(bool reads_d, int denoise_timesteps, double class_dropout_prob,
                                        double cfg_scale = SamplingSchedule{}.cfg_scale) {
  return {.reads_d = reads_d, .denoise_timesteps = denoise_timesteps, .class_dropout_prob = class_dropout_prob,
          .cfg_scale = cfg_scale};
}

}  // namespace shortcut
