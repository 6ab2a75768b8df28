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
#include "shortcut/core/concepts.hpp"
#include "shortcut/core/rng.hpp"
#include "shortcut/core/span.hpp"
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
