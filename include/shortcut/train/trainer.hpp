// Trainer: the training loop that composes ShortcutModel, SelfConsistencyLoss, AdamW and EmaTracker,
// with a progress bar, metrics as JSON lines, checkpoints every N steps, and exact resume: the data
// order and every random draw come from one counter-based Rng whose position is checkpointed, so N
// steps straight and N/2 + resume + N/2 give the same weights.
#pragma once
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "shortcut/core/progress.hpp"
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

template <VelocityModel Model>
class Trainer {
 public:
  using T = typename Model::T;
  using Backend = typename Model::Backend;
  // Fills one batch of data (host, [B, sample]) and labels [B], drawing from rng only.
  using BatchFn = std::function<void(Rng& rng, int B, std::vector<T>& x1, std::vector<int32_t>& y)>;
  // Called after every step (e.g. to write sample grids every K steps).
  using StepFn = std::function<void(int64_t step)>;

  Trainer(Model& m, const ShortcutConfig& sc, const AdamWConfig& oc, const TrainerConfig& tc)
      : m_(&m), loss_(sc), opt_(oc), ema_(tc.ema_tau), tc_(tc), rng_(tc.seed) {
    sc.validate(tc.batch);
    if (tc.steps < 0) throw ConfigError(cat("steps must be non-negative, got ", tc.steps));
    if (!(tc.max_seconds >= 0)) throw ConfigError(cat("max_seconds must be non-negative, got ", tc.max_seconds));
  }

  int64_t step() const { return opt_.step_count(); }
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
    namespace fs = std::filesystem;
    Backend& be = m_->backend();
    std::ofstream log;
    if (!tc_.out_dir.empty()) {
      fs::create_directories(tc_.out_dir);
      log.open(fs::path(tc_.out_dir) / "metrics.jsonl", std::ios::app);
      if (!log) throw FileError("cannot write " + (fs::path(tc_.out_dir) / "metrics.jsonl").string());
    }
    ProgressBar bar(tc_.label, tc_.steps, step(), tc_.progress);
    std::vector<T> x1;
    std::vector<int32_t> y;
    typename Backend::template Buffer<T> dx1;
    const int B = tc_.batch;
    bool stop = false;
    while (step() < tc_.steps && !stop) {
      data(rng_, B, x1, y);
      if (x1.size() != size_t(B) * m_->sample_size() || y.size() != size_t(B))
        throw ShapeError(cat("batch function returned ", x1.size(), " values and ", y.size(), " labels; expected ",
                             size_t(B) * m_->sample_size(), " and ", B));
      nn::ensure(dx1, x1.size());
      be.to_device(dx1.data(), x1.data(), x1.size());
      m_->arena().zero_grad();
      last_ = loss_.step(*m_, dx1.data(), y.data(), B, rng_);
      if (!std::isfinite(last_.loss))
        throw Error(cat("training diverged: loss is ", last_.loss, " at step ", step() + 1,
                        " (try a lower learning rate)"));
      opt_.step(m_->arena());
      ema_.update(m_->arena());
      const int64_t s = step();
      stop = tc_.max_seconds > 0 && bar.elapsed() >= tc_.max_seconds;  // the bar's clock started with the run
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
        log << j.dump() << "\n";
        log.flush();
      }
      if (!tc_.out_dir.empty() && tc_.checkpoint_every > 0 && s % tc_.checkpoint_every == 0)
        save((fs::path(tc_.out_dir) / "checkpoints" / cat("step_", s)).string());
      if (on_step) on_step(s);
    }
    bar.finish();
    if (!tc_.out_dir.empty()) save((fs::path(tc_.out_dir) / "checkpoints" / "last").string());
  }

 private:
  Model* m_;
  SelfConsistencyLoss<Model> loss_;
  AdamW opt_;
  EmaTracker ema_;
  TrainerConfig tc_;
  Rng rng_;
  typename SelfConsistencyLoss<Model>::Result last_;
};

}  // namespace shortcut
