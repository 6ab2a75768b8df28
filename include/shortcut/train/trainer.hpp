// Trainer: the training loop that composes ShortcutModel, SelfConsistencyLoss, AdamW and EmaTracker,
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
#pragma once
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "shortcut/core/progress.hpp"
#include "shortcut/dist/agreement.hpp"
#include "shortcut/dist/communicator.hpp"
#include "shortcut/dist/reduce_buffer.hpp"
#include "shortcut/io/checkpoint.hpp"
#include "shortcut/train/adamw.hpp"
#include "shortcut/train/ema.hpp"
#include "shortcut/train/self_consistency_loss.hpp"

namespace shortcut {

struct TrainerConfig {
  int64_t steps = 1000;           // total optimizer steps (a resumed run continues up to this)
  int batch = 256;
  double ema_tau = 0.999;
  int64_t log_every = 10;         // metrics line every N steps (0: never)
  int64_t checkpoint_every = 0;   // checkpoint folder every N steps (0: only at the end if out_dir set)
  std::string out_dir;            // metrics.jsonl and checkpoints/ go here ("" : nothing written)
  uint64_t seed = 0;
  bool progress = true;
  std::string label = "train";
  double max_seconds = 0;         // stop after the step that passes this much wall time (0: no limit)
};

template <VelocityModel Model, dist::Communicator Comm = dist::LocalCommunicator>
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

  Trainer(Model& m, const ShortcutConfig& sc, const AdamWConfig& oc, const TrainerConfig& tc)
    requires std::same_as<Comm, dist::LocalCommunicator>
      : Trainer(m, sc, oc, tc, local_) {
    comm_ = nullptr;  // its own: communicator() then stays right when the trainer is copied or moved
  }
  // Data-parallel training over comm (which must outlive the trainer): tc.batch is the global batch.
  Trainer(Model& m, const ShortcutConfig& sc, const AdamWConfig& oc, const TrainerConfig& tc, Comm& comm)
      : m_(&m), comm_(&comm), loss_(sc), opt_(oc), ema_(tc.ema_tau), tc_(tc), rng_(tc.seed) {
    sc.validate(tc.batch);
    if (tc.steps < 0) throw ConfigError(cat("steps must be non-negative, got ", tc.steps));
    if (!(tc.max_seconds >= 0)) throw ConfigError(cat("max_seconds must be non-negative, got ", tc.max_seconds));
    slice_ = BatchSlice::of_rank(tc.batch, sc.bootstrap_rows(tc.batch), comm.rank(), comm.size());
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
  const SelfConsistencyLoss<Model>& loss() const { return loss_; }
  const typename SelfConsistencyLoss<Model>::Result& last() const { return last_; }

  // The training configuration stored with checkpoints (beside the network config, which every
  // weights file carries so that it can be loaded on its own).
  nlohmann::json training_json() const {
    return {{"shortcut", loss_.config().to_json()},
            {"adamw", opt_.config().to_json()},
            {"ema_tau", tc_.ema_tau},
            {"batch", tc_.batch}};
  }

  void save(const std::string& dir) const {
    io::TrainState s;
    s.step = opt_.step_count();
    s.rng_seed = rng_.seed();
    s.rng_position = rng_.position();
    s.extra = training_json();
    io::SaveOptions opt;
    opt.metadata["training"] = s.extra.dump();  // every file says how its model was trained
    io::save_checkpoint(dir, m_->net(), m_->arena(), s, opt);
  }
  // Restores weights, EMA, moments, step and RNG position; the network config must match.
  void resume(const std::string& dir) {
    io::TrainState s = io::load_checkpoint(dir, m_->net(), m_->arena());
    opt_.set_step_count(s.step);
    rng_ = Rng(s.rng_seed, s.rng_position);
  }

  // Runs until `steps` optimizer steps are done, or max_seconds have passed (then step() < steps;
  // the metrics line and the "last" checkpoint are written for the step reached).
  void run(const BatchFn& data, const StepFn& on_step = {}) {
    const size_t n = size_t(m_->sample_size());
    run_rows(
        [&](Rng& rng, const BatchSlice& s, std::vector<T>& x1, std::vector<int32_t>& y) {
          data(rng, s.batch, x1, y);
          if (x1.size() != size_t(s.batch) * n || y.size() != size_t(s.batch))
            throw ShapeError(cat("batch function returned ", x1.size(), " values and ", y.size(), " labels; expected ",
                                 size_t(s.batch) * n, " and ", s.batch));
          if (s.whole()) return;
          for (int i = 0; i < s.rows(); ++i) {  // local row i <- global row g >= i
            const size_t g = size_t(s.global_row(i));
            std::copy(x1.begin() + ptrdiff_t(g * n), x1.begin() + ptrdiff_t((g + 1) * n), x1.begin() + ptrdiff_t(i * n));
            y[size_t(i)] = y[g];
          }
          x1.resize(size_t(s.rows()) * n);
          y.resize(size_t(s.rows()));
        },
        on_step);
  }
  void run(const RowsFn& data, const StepFn& on_step = {}) { run_rows(data, on_step); }

 private:
  void run_rows(const RowsFn& data, const StepFn& on_step) {
    namespace fs = std::filesystem;
    Backend& be = m_->backend();
    Comm& comm = communicator();
    const bool lead = comm.rank() == 0, distributed = comm.size() > 1;
    if (distributed) agree_and_broadcast();
    std::ofstream log;
    if (lead && !tc_.out_dir.empty()) {
      fs::create_directories(tc_.out_dir);
      log.open(fs::path(tc_.out_dir) / "metrics.jsonl", std::ios::app);
      if (!log) throw FileError("cannot write " + (fs::path(tc_.out_dir) / "metrics.jsonl").string());
    }
    ProgressBar bar(tc_.label, tc_.steps, step(), tc_.progress && lead);
    std::vector<T> x1;
    std::vector<int32_t> y;
    typename Backend::template Buffer<T> dx1;
    const BatchSlice slice = slice_;
    const size_t rows_n = size_t(slice.rows()) * size_t(m_->sample_size());
    bool stop = false;
    while (step() < tc_.steps && !stop) {
      data(rng_, slice, x1, y);
      if (x1.size() != rows_n || y.size() != size_t(slice.rows()))
        throw ShapeError(cat("batch function returned ", x1.size(), " values and ", y.size(), " labels for ",
                             slice.rows(), " rows of the batch; expected ", rows_n, " and ", slice.rows()));
      nn::ensure(dx1, x1.size());
      be.to_device(dx1.data(), x1.data(), x1.size());
      m_->arena().zero_grad();
      last_ = loss_.step(*m_, dx1, y, slice, rng_);
      // the bar's clock started with the run; rank 0's clock decides for every rank
      stop = lead && tc_.max_seconds > 0 && bar.elapsed() >= tc_.max_seconds;
      if (distributed) {
        const auto t0 = std::chrono::steady_clock::now();
        reducer_.sum(comm, be, m_->arena().data(Role::Grad), m_->arena().size());
        double sums[4] = {last_.loss_sum, last_.flow_sum, last_.bootstrap_sum, stop ? 1.0 : 0.0};
        comm.all_reduce(sums, 4, dist::ReduceOp::Sum);
        last_.loss_sum = sums[0];
        last_.flow_sum = sums[1];
        last_.bootstrap_sum = sums[2];
        last_.set_means();
        stop = sums[3] > 0;
        allreduce_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      if (!std::isfinite(last_.loss))
        throw Error(cat("training diverged: loss is ", last_.loss, " at step ", step() + 1,
                        " (try a lower learning rate)"));
      opt_.step(m_->arena());
      ema_.update(m_->arena());
      const int64_t s = step();
      // built apart from the call: nvcc 13.0 mis-parses f(x, {{"a", v}}) with a dependent v
      const std::vector<std::pair<std::string, double>> shown = {
          {"loss", last_.loss}, {"flow", last_.flow_loss}, {"boot", last_.bootstrap_loss}};
      bar.update(s, shown);
      if (log.is_open() && tc_.log_every > 0 && (s % tc_.log_every == 0 || s == tc_.steps || stop)) {
        nlohmann::json j = {{"step", s},
                            {"loss", last_.loss},
                            {"flow_loss", last_.flow_loss},
                            {"bootstrap_loss", last_.bootstrap_loss},
                            {"lr", opt_.lr_at(s)},
                            {"steps_per_s", bar.rate(s)},
                            {"seconds", bar.elapsed()}};
        if (distributed) {
          j["ranks"] = comm.size();
          j["allreduce_seconds"] = allreduce_s_;
        }
        log << j.dump() << "\n";
        log.flush();
      }
      if (lead && !tc_.out_dir.empty() && tc_.checkpoint_every > 0 && s % tc_.checkpoint_every == 0)
        save((fs::path(tc_.out_dir) / "checkpoints" / cat("step_", s)).string());
      if (on_step) on_step(s);
    }
    bar.finish();
    if (lead && !tc_.out_dir.empty()) save((fs::path(tc_.out_dir) / "checkpoints" / "last").string());
    comm.barrier();  // the run ends together: "last" exists for every rank once run() returns
  }

  // Every rank must start from the same configuration and resume point; then rank 0's weights,
  // EMA and moments are every rank's.
  void agree_and_broadcast() {
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
  SelfConsistencyLoss<Model> loss_;
  AdamW opt_;
  EmaTracker ema_;
  TrainerConfig tc_;
  Rng rng_;
  typename SelfConsistencyLoss<Model>::Result last_;
};

}  // namespace shortcut
