// Training objectives as an extension point: what the rows of a batch are queried with and trained
// towards. The shortcut objective (SelfConsistencyLoss), flow matching and the baselines of DESIGN.md
// §7 and §8 each satisfy TrainingObjective; Trainer, the checkpoints' metadata and the sampler are
// generic over it.
//
// An objective builds its rows on the device from this rank's data rows x1 and host labels y, drawing
// every random choice from the Rng it is given (so that N ranks and resume reproduce one process),
// computes its targets without gradient, and regresses the model's training forward on them. The
// sampler needs to know how the trained network must be queried: sampling() reports it as the
// SamplingSchedule (train/sampling_schedule.hpp) that OdeSampler and load_generator read.
#pragma once
#include <concepts>
#include <nlohmann/json.hpp>
#include <string>

#include "shortcut/core/batch_slice.hpp"
#include "shortcut/core/concepts.hpp"
#include "shortcut/core/rng.hpp"
#include "shortcut/core/span.hpp"
#include "shortcut/train/sampling_schedule.hpp"

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
//   sampling()               the SamplingSchedule the sampler reads (reads_d: N steps query the
//                            step 1/N; else every query at k = L) with M
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
      { co.sampling() } -> std::convertible_to<SamplingSchedule>;
      co.validate(B);
      { co.bootstrap_rows(B) } -> std::convertible_to<int>;
      o.set_progress(p);
      { o.step(m, x1, y, s, rng) } -> std::same_as<LossResult>;
    };

}  // namespace shortcut
