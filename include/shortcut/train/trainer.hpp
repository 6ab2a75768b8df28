// Trainer: the training loop that composes ShortcutModel, a TrainingObjective (train/objective.hpp;
// SelfConsistencyLoss unless told otherwise), AdamW and EmaTracker,
// with a progress bar, metrics as JSON lines, checkpoints every N steps, and exact resume: the data
// order and every random draw come from one counter-based Rng whose position is checkpointed, so N
// steps straight and N/2 + resume + N/2 give the same weights.
//
// Data parallel: given a communicator of N ranks (shortcut/dist/), TrainerConfig::batch is the global
// batch and each rank computes its B/N rows of it (BatchSlice): the batch plan, the data order and
// the noise are the global batch's on every rank, the gradients are summed over the ranks (one
// all-reduce of the arena's flat gradient buffer a step), and AdamW and the EMA run on every rank on
// the same sums, so N ranks take the steps of one process with batch B (up to the summation order).
// Rank 0 alone draws the progress bar, writes metrics.jsonl and the checkpoints. At the start the
// ranks must agree on the configuration and the resume point (else DistributedError on every rank),
// and rank 0's weights are broadcast. The state (step, RNG position, weights, moments, EMA) does
// not depend on N, so a run resumes on any number of ranks.
//
// Open ends (docs/training.md): the data come from any DataSource (train/data_source.hpp; host rows,
// or rows written straight into device memory), whose own state, if it has one, travels with the
// checkpoints; resume() refuses a changed training configuration unless told otherwise
// (train/resume_policy.hpp); metrics.jsonl starts fresh for a new run and continues on resume
// (train/metrics_log.hpp); TrainerHooks report steps and checkpoints and add the user's own state to
// every checkpoint.
#pragma once
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "shortcut/core/progress.hpp"
#include "shortcut/dist/agreement.hpp"
#include "shortcut/dist/communicator.hpp"
#include "shortcut/dist/reduce_buffer.hpp"
#include "shortcut/io/checkpoint.hpp"
#include "shortcut/train/adamw.hpp"
#include "shortcut/train/data_source.hpp"
#include "shortcut/train/ema.hpp"
#include "shortcut/train/metrics_log.hpp"
#include "shortcut/train/resume_policy.hpp"
#include "shortcut/train/self_consistency_loss.hpp"
#include "shortcut/train/training_step.hpp"

namespace shortcut {

struct TrainerConfig {
  int64_t steps = 1000;           // total optimizer steps (a resumed run continues up to this)
  int batch = 256;
  double ema_tau = 0.999;
  int64_t log_every = 10;         // metrics line every N steps (0: never)
  int64_t checkpoint_every = 0;   // checkpoint folder every N steps (0: only at the end if out_dir set)
  int keep_checkpoints = 0;       // keep the newest N step_* folders (0: all); never "last" or the one resumed from
  std::string out_dir;            // metrics.jsonl and checkpoints/ go here ("" : nothing written)
  uint64_t seed = 0;
  bool progress = true;
  std::string label = "train";
  double max_seconds = 0;         // stop after the step that passes this much wall time (0: no limit)
};

// One optimizer step as the hooks see it: the same numbers on every rank (the losses are summed over
// the ranks before they are reported).
struct StepInfo {
  int64_t step = 0;  // 1-based: the step just taken
  double loss = 0, flow_loss = 0, bootstrap_loss = 0;
  double lr = 0;     // the learning rate this step used
};

// The user's own logging and state. Every hook is optional.
struct TrainerHooks {
  // After every step (its metrics line and checkpoint written), on every rank: a hook that talks to
  // the other ranks may, as every rank calls it at the same step.
  std::function<void(const StepInfo&)> on_step;
  // After each checkpoint folder the run writes (every checkpoint_every steps and "last") is
  // complete, on rank 0 only (the rank that writes them).
  std::function<void(int64_t step, const std::string& dir)> on_checkpoint;
  // Called at every save, on the rank that saves; the JSON is stored under "user" in the checkpoint
  // and is Trainer::resumed_user_state() after resume().
  std::function<nlohmann::json()> user_state;
};

template <VelocityModel Model, dist::Communicator Comm = dist::LocalCommunicator,
          class Obj = SelfConsistencyLoss<Model>>
  requires TrainingObjective<Obj, Model>
class Trainer {
 public:
  using T = typename Model::T;
  using Backend = typename Model::Backend;
  // Fills one whole batch of data (host, [B, sample]) and labels [B], drawing from rng only. With N
  // ranks every rank draws the whole batch and keeps its rows: simple, and wasteful where loading a
  // row costs much; then use RowsFn.
  using BatchFn = std::function<void(Rng& rng, int B, std::vector<T>& x1, std::vector<int32_t>& y)>;
  // Fills the slice's rows of the batch (x1 [s.rows(), sample], y [s.rows()]; local row i is global
  // row s.global_row(i)), advancing rng exactly as a whole batch would (ImageBatcher::rows_into does).
  using RowsFn = std::function<void(Rng& rng, const BatchSlice& s, std::vector<T>& x1, std::vector<int32_t>& y)>;
  // Called after every step, on every rank (e.g. to write sample grids every K steps on rank 0).
  using StepFn = std::function<void(int64_t step)>;

  // The shortcut model by its ShortcutConfig.
  Trainer(Model& m, const ShortcutConfig& sc, const AdamWConfig& oc, const TrainerConfig& tc)
    requires std::same_as<Comm, dist::LocalCommunicator> && std::same_as<Obj, SelfConsistencyLoss<Model>>
      : Trainer(m, Obj(sc), oc, tc, local_) {
    comm_ = nullptr;  // its own: communicator() then stays right when the trainer is copied or moved
  }
  Trainer(Model& m, const ShortcutConfig& sc, const AdamWConfig& oc, const TrainerConfig& tc, Comm& comm)
    requires std::same_as<Obj, SelfConsistencyLoss<Model>>
      : Trainer(m, Obj(sc), oc, tc, comm) {}
  // Any objective.
  Trainer(Model& m, Obj objective, const AdamWConfig& oc, const TrainerConfig& tc)
    requires std::same_as<Comm, dist::LocalCommunicator>
      : Trainer(m, std::move(objective), oc, tc, local_) {
    comm_ = nullptr;
  }
  // Data-parallel training over comm (which must outlive the trainer): tc.batch is the global batch.
  Trainer(Model& m, Obj objective, const AdamWConfig& oc, const TrainerConfig& tc, Comm& comm)
      : m_(&m), comm_(&comm), loss_(std::move(objective)), opt_(oc), ema_(tc.ema_tau), tc_(tc), rng_(tc.seed) {
    loss_.validate(tc.batch);
    if (tc.steps < 0) throw ConfigError(cat("steps must be non-negative, got ", tc.steps));
    if (!(tc.max_seconds >= 0)) throw ConfigError(cat("max_seconds must be non-negative, got ", tc.max_seconds));
    if (tc.keep_checkpoints < 0) throw ConfigError(cat("keep_checkpoints must be non-negative, got ", tc.keep_checkpoints));
    slice_ = BatchSlice::of_rank(tc.batch, loss_.bootstrap_rows(tc.batch), comm.rank(), comm.size());
    opt_.bind(m.net().layout());  // a parameter-group pattern that matches nothing fails here
    // a teacher that is missing or of another shape, or a schedule the run cannot hold, fails here
    if constexpr (requires { loss_.attach(m); }) loss_.attach(m);
    if (tc.steps > 0) loss_.set_progress({0, tc.steps});
  }

  int64_t step() const { return opt_.step_count(); }
  // This rank's rows of every batch.
  const BatchSlice& slice() const { return slice_; }
  Comm& communicator() {
    if constexpr (std::same_as<Comm, dist::LocalCommunicator>) {
      if (!comm_) return local_;
    }
    return *comm_;
  }
  // Seconds spent in the gradient and loss all-reduces so far (0 on one rank).
  double allreduce_seconds() const { return allreduce_s_; }
  Rng& rng() { return rng_; }
  const Obj& loss() const { return loss_; }
  const LossResult& last() const { return last_; }
  TrainerHooks& hooks() { return hooks_; }
  // What hooks().user_state returned when the checkpoint resumed from was saved (null if nothing).
  const nlohmann::json& resumed_user_state() const { return user_state_; }

  // The training configuration stored with checkpoints (beside the network config, which every
  // weights file carries so that it can be loaded on its own).
  // "shortcut" is the SamplingSchedule the sampler reads (the name is older than the schedule:
  // train/sampling_schedule.hpp), "objective" the objective's own settings.
  nlohmann::json training_json() const {
    return {{"shortcut", SamplingSchedule(loss_.sampling()).to_json()},
            {"objective", loss_.to_json()},
            {"adamw", opt_.config().to_json()},
            {"ema_tau", tc_.ema_tau},
            {"batch", tc_.batch}};
  }

  // The data source's state is the one of the last step the run took (none before the first run).
  void save(const std::string& dir) const {
    io::TrainState s;
    s.step = opt_.step_count();
    s.rng_seed = rng_.seed();
    s.rng_position = rng_.position();
    s.extra = training_json();
    io::SaveOptions opt;
    opt.metadata["training"] = s.extra.dump();  // every file says how its model was trained
    if (!data_state_.is_null()) s.extra[kDataSourceKey] = data_state_;
    if (hooks_.user_state) s.extra[kUserKey] = hooks_.user_state();
    // the folder replaced in one step: a run killed while saving leaves the previous save whole
    io::detail::write_folder_atomically(dir, [&](const std::filesystem::path& tmp) {
      io::save_checkpoint(tmp, m_->net(), m_->arena(), s, opt);
      if constexpr (requires { loss_.save_state(tmp.string()); }) loss_.save_state(tmp.string());  // e.g. a teacher
    });
  }
  // Restores weights, EMA, moments, step and RNG position, and the data source's state at the next
  // run(); the network config must match, and the training configuration too (ConfigError naming
  // each differing field) unless opt.allow_config_change (resume_policy.hpp says which fields).
  void resume(const std::string& dir, const ResumeOptions& opt = {}) {
    const std::string diff = training_config_diff(io::read_checkpoint_extra(dir), training_json());
    if (!diff.empty() && !opt.allow_config_change)
      throw ConfigError(cat("cannot resume from ", dir, ": the training configuration differs from the checkpoint's: ",
                            diff, " (ResumeOptions::allow_config_change continues under the new configuration)"));
    io::TrainState s = io::load_checkpoint(dir, m_->net(), m_->arena());
    resumed_from_ = std::filesystem::weakly_canonical(dir);
    if constexpr (requires { loss_.load_state(dir); }) loss_.load_state(dir);
    opt_.set_step_count(s.step);
    rng_ = Rng(s.rng_seed, s.rng_position);
    data_state_ = s.extra.is_object() ? s.extra.value(kDataSourceKey, nlohmann::json()) : nlohmann::json();
    restore_data_ = !data_state_.is_null();
    allow_config_change_ = opt.allow_config_change;
    user_state_ = s.extra.is_object() ? s.extra.value(kUserKey, nlohmann::json()) : nlohmann::json();
  }

  // Runs until `steps` optimizer steps are done, or max_seconds have passed (then step() < steps;
  // the metrics line and the "last" checkpoint are written for the step reached).
  // The callback forms stay as they were: adapters to a DataSource.
  void run(const BatchFn& data, const StepFn& on_step = {}) {
    BatchSource<T> src{data, size_t(m_->sample_size())};
    run_source(src, on_step);
  }
  void run(const RowsFn& data, const StepFn& on_step = {}) {
    RowsSource<T> src{data};
    run_source(src, on_step);
  }
  // Any data source (train/data_source.hpp); a stateful one is restored from the checkpoint that
  // resume() loaded, and its state goes into every checkpoint of the run.
  template <class Src>
    requires DataSource<std::remove_cvref_t<Src>, T, Backend>
  void run(Src&& data, const StepFn& on_step = {}) {
    run_source(data, on_step);
  }

 private:
  template <class Src>
  void run_source(Src& data, const StepFn& on_step) {
    namespace fs = std::filesystem;
    Comm& comm = communicator();
    const bool lead = comm.rank() == 0, distributed = comm.size() > 1;
    restore_data_state(data);
    capture_data_state(data);  // what a save before the first step, and the agreement, see
    if (distributed) agree_and_broadcast(data_state_);
    MetricsLog log;
    if (lead && !tc_.out_dir.empty()) log.open(tc_.out_dir, step());
    ProgressBar bar(tc_.label, tc_.steps, step(), tc_.progress && lead);
    std::vector<T> x1;
    std::vector<int32_t> y;
    typename Backend::template Buffer<T> dx1;
    const BatchSlice slice = slice_;
    const size_t rows_n = size_t(slice.rows()) * size_t(m_->sample_size());
    bool stop = false;
    // the bar's clock started with the run; with N ranks rank 0's clock decides for every rank
    const auto out_of_time = [&] { return lead && tc_.max_seconds > 0 && bar.elapsed() >= tc_.max_seconds; };
    while (step() < tc_.steps && !stop) {
      y.resize(size_t(slice.rows()));
      if constexpr (DeviceDataSource<Src, T, Backend>) {
        nn::ensure(dx1, rows_n);
        data.fill_device(rng_, slice, DeviceSpan<T, Backend>(dx1).first(rows_n), y);
        if (y.size() != size_t(slice.rows()))
          throw ShapeError(cat("data source returned ", y.size(), " labels for ", slice.rows(), " rows of the batch"));
      } else {
        data.fill(rng_, slice, x1, y);
        if (x1.size() != rows_n || y.size() != size_t(slice.rows()))
          throw ShapeError(cat("batch function returned ", x1.size(), " values and ", y.size(), " labels for ",
                               slice.rows(), " rows of the batch; expected ", rows_n, " and ", slice.rows()));
      }
      loss_.set_progress({step(), tc_.steps});
      // data parallel: the gradients and loss sums over the ranks, and whether any rank ran out of time
      const auto reduce = [&](LossResult& r) {
        stop = out_of_time();
        if (distributed) stop = all_reduce(r, stop);
      };
      if constexpr (DeviceDataSource<Src, T, Backend>)
        last_ = stepper_.take(*m_, loss_, opt_, ema_, DeviceSpan<const T, Backend>(dx1).first(rows_n), y, slice, rng_,
                              reduce);
      else
        last_ = stepper_.take(*m_, loss_, opt_, ema_, HostSpan<const T>(x1), y, slice, rng_, reduce);
      check_finite();  // a diverged step was not applied
      capture_data_state(data);
      const int64_t s = step();
      const StepInfo info{s, last_.loss, last_.flow_loss, last_.bootstrap_loss, opt_.lr_at(s)};
      // built apart from the call: nvcc 13.0 mis-parses f(x, {{"a", v}}) with a dependent v
      const std::vector<std::pair<std::string, double>> shown = {
          {"loss", last_.loss}, {"flow", last_.flow_loss}, {"boot", last_.bootstrap_loss}};
      bar.update(s, shown);
      if (log.is_open() && tc_.log_every > 0 && (s % tc_.log_every == 0 || s == tc_.steps || stop)) {
        nlohmann::json j = {{"step", s},
                            {"loss", info.loss},
                            {"flow_loss", info.flow_loss},
                            {"bootstrap_loss", info.bootstrap_loss},
                            {"lr", info.lr},
                            {"steps_per_s", bar.rate(s)},
                            {"seconds", bar.elapsed()}};
        if (distributed) {
          j["ranks"] = comm.size();
          j["allreduce_seconds"] = allreduce_s_;
        }
        log.write(j);
      }
      if (lead && !tc_.out_dir.empty() && tc_.checkpoint_every > 0 && s % tc_.checkpoint_every == 0)
        checkpoint(fs::path(tc_.out_dir) / "checkpoints" / cat("step_", s));
      if (hooks_.on_step) hooks_.on_step(info);
      if (on_step) on_step(s);
    }
    bar.finish();
    if (lead && !tc_.out_dir.empty()) checkpoint(fs::path(tc_.out_dir) / "checkpoints" / "last");
    comm.barrier();  // the run ends together: "last" exists for every rank once run() returns
  }

  // Sums the arena's gradients and the step's loss sums over the ranks; returns whether any rank
  // asked to stop.
  bool all_reduce(LossResult& r, bool stop) {
    Comm& comm = communicator();
    const auto t0 = std::chrono::steady_clock::now();
    reducer_.sum(comm, m_->backend(), m_->arena().data(Role::Grad), m_->arena().size());
    double sums[4] = {r.loss_sum, r.flow_sum, r.bootstrap_sum, stop ? 1.0 : 0.0};
    comm.all_reduce(sums, 4, dist::ReduceOp::Sum);
    r.loss_sum = sums[0];
    r.flow_sum = sums[1];
    r.bootstrap_sum = sums[2];
    r.set_means();
    allreduce_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return sums[3] > 0;
  }

  // The step's loss must be finite; the weights, moments and EMA are then still those before it.
  void check_finite() const {
    if (!std::isfinite(last_.loss))
      throw Error(cat("training diverged: loss is ", last_.loss, " at step ", step() + 1,
                      " (try a lower learning rate)"));
  }

  void checkpoint(const std::filesystem::path& dir) {
    save(dir.string());
    if (hooks_.on_checkpoint) hooks_.on_checkpoint(step(), dir.string());
    if (tc_.keep_checkpoints > 0) prune_checkpoints(dir.parent_path());
  }

  // Removes the oldest step_N folders beyond the newest keep_checkpoints, except the folder this run
  // resumed from. "last" is never a step_N folder. A folder is complete before an older one goes
  // (save() returned), so a kill at any moment leaves a "last" and the newest folders whole.
  void prune_checkpoints(const std::filesystem::path& root) {
    namespace fs = std::filesystem;
    std::vector<std::pair<int64_t, fs::path>> steps;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root, ec)) {
      const std::string name = e.path().filename().string();
      if (!e.is_directory(ec) || name.rfind("step_", 0) != 0) continue;
      const std::string digits = name.substr(5);
      if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
      steps.emplace_back(std::stoll(digits), e.path());
    }
    std::sort(steps.begin(), steps.end());
    const size_t keep = size_t(tc_.keep_checkpoints);
    for (size_t i = 0; i + keep < steps.size(); ++i)
      if (fs::weakly_canonical(steps[i].second, ec) != resumed_from_) fs::remove_all(steps[i].second, ec);
  }

  // The state a resumed checkpoint holds goes into the source before its first batch; a source
  // without state cannot take it, which is a different data pipeline than the one checkpointed.
  template <class Src>
  void restore_data_state(Src& data) {
    if (!restore_data_) return;
    restore_data_ = false;
    if constexpr (StatefulDataSource<Src>) {
      data.restore(data_state_);
    } else {
      if (!allow_config_change_)
        throw ConfigError("the checkpoint resumed from holds a data source's state (\"" + std::string(kDataSourceKey) +
                          "\"), but the source given to run() keeps none (it has no state() and restore()); "
                          "ResumeOptions::allow_config_change continues without it");
      data_state_ = nullptr;
    }
  }
  template <class Src>
  void capture_data_state(const Src& data) {
    if constexpr (StatefulDataSource<Src>) data_state_ = data.state();
    else data_state_ = nullptr;
  }

  // Every rank must start from the same configuration and resume point; then rank 0's weights,
  // EMA and moments are every rank's.
  void agree_and_broadcast(const nlohmann::json& data_state) {
    Comm& comm = communicator();
    ParamArena<Backend>& a = m_->arena();
    nlohmann::json config = training_json();
    config["network"] = m_->net().config_json();
    config["steps"] = tc_.steps;
    config["seed"] = tc_.seed;
    dist::require_same_on_all_ranks(comm, "the training configuration", config);
    // one host copy of each role serves the fingerprints and the broadcast
    a.enable(Role::Ema);
    const Role roles[] = {Role::Param, Role::Ema, Role::AdamM, Role::AdamV};
    std::vector<std::vector<T>> host(std::size(roles));
    for (size_t i = 0; i < host.size(); ++i)
      if (a.has(roles[i])) host[i] = a.to_host(roles[i]);
    nlohmann::json point = {{"step", step()}, {"rng_seed", rng_.seed()}, {"rng_position", rng_.position()}};
    if (!data_state.is_null()) point[kDataSourceKey] = data_state;
    if (step() > 0)  // resumed (or given weights): the weights too, not only the counters
      for (size_t i = 0; i < 2; ++i)
        point[role_name(roles[i])] = dist::fingerprint(host[i].data(), host[i].size() * sizeof(T));
    dist::require_same_on_all_ranks(comm, "the resume point (step, RNG position, weights)", point);
    for (size_t i = 0; i < host.size(); ++i) {
      if (host[i].empty()) continue;
      comm.broadcast(host[i].data(), host[i].size() * sizeof(T), 0);
      a.from_host(roles[i], host[i]);
    }
  }

  Model* m_;
  dist::LocalCommunicator local_;
  Comm* comm_;
  BatchSlice slice_;
  dist::BufferReducer<Backend> reducer_;
  double allreduce_s_ = 0;
  Obj loss_;
  AdamW opt_;
  EmaTracker ema_;
  TrainingStep<Model, Obj> stepper_;
  TrainerConfig tc_;
  Rng rng_;
  LossResult last_;
  TrainerHooks hooks_;
  nlohmann::json data_state_;       // the data source's state as of the last step (null: none)
  bool restore_data_ = false;       // resume() loaded a data state that the next run() restores
  bool allow_config_change_ = false;
  nlohmann::json user_state_;
  std::filesystem::path resumed_from_;  // the checkpoint folder resume() loaded (never pruned)
};

}  // namespace shortcut
