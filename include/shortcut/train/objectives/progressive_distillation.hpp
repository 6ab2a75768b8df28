// Progressive distillation (DESIGN.md §7; a teacher, the network does not read d): training runs in
// L stages; in stage s = floor(S / (S_max / L)) every row takes a step d = 2^-(L-1-s) from x_t (t a
// multiple of d) and is trained towards the teacher's two half steps of d/2, averaged (the bootstrap
// target of DESIGN.md §2 applied to every row, guided with cfg_scale in the first stage only). The
// teacher starts as a trained flow-matching checkpoint and becomes the current model (its EMA
// weights when teacher_ema) at every stage boundary, so each stage halves the steps the last one
// needed: stage L-1 distils one step. A checkpoint carries the teacher (teacher.safetensors and the
// stage it belongs to), so a resumed run continues with the teacher it had.
#pragma once
#include <algorithm>
#include <fstream>
#include <string>
#include <vector>

#include "shortcut/train/objectives/consistency_training.hpp"
#include "shortcut/train/objectives/teacher.hpp"

namespace shortcut {

struct ProgressiveDistillationConfig {
  int denoise_timesteps = 128;      // M: L = log2 M stages
  double class_dropout_prob = 0.1;  // rows' labels dropped to the null class
  double cfg_scale = 1.5;           // guidance of the first stage's targets (0: none)
  double target_clip = 4;           // the half step and the target clipped to ±target_clip
  bool teacher_ema = true;          // at a stage boundary the teacher becomes the EMA (false: raw) weights
  std::string teacher;              // checkpoint folder or weights file of a flow-matching model

  void validate() const {
    check_schedule(denoise_timesteps, class_dropout_prob);
    if (!std::isfinite(cfg_scale) || cfg_scale < 0) throw ConfigError(cat("cfg_scale must be >= 0, got ", cfg_scale));
    if (!(target_clip > 0)) throw ConfigError(cat("target_clip must be positive, got ", target_clip));
  }
  int levels() const { return ilog2(denoise_timesteps); }
  nlohmann::json to_json() const {
    return {{"name", "progressive_distillation"}, {"denoise_timesteps", denoise_timesteps},
            {"class_dropout_prob", class_dropout_prob}, {"cfg_scale", cfg_scale}, {"target_clip", target_clip},
            {"teacher_ema", teacher_ema}, {"teacher", teacher}};
  }
};

template <VelocityModel Model>
class ProgressiveDistillation {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;
  static constexpr const char* kStageFile = "teacher_stage.json";

  // The host plan of this rank's rows.
  struct Plan {
    int stage = 0, n_cfg = 0;
    std::vector<float> t, k, half_d;
    std::vector<int32_t> y;
    uint64_t noise_stream = 0;
  };

  explicit ProgressiveDistillation(const ProgressiveDistillationConfig& c) : c_((c.validate(), c)), teacher_(c.teacher) {}

  std::string name() const { return "progressive_distillation"; }
  nlohmann::json to_json() const { return c_.to_json(); }
  SamplingSchedule sampling() const {  // queried at k = L throughout
    return sampling_config(false, c_.denoise_timesteps, c_.class_dropout_prob, c_.cfg_scale);
  }
  void validate(int B) const { check_batch_rows(B); }
  int bootstrap_rows(int) const { return 0; }  // every row costs the same two teacher queries
  void attach(Model& m) { teacher_.attach(m); }

  // Stage of the step about to be taken; crossing into a later stage makes the model the teacher.
  void set_progress(const TrainingProgress& p) {
    stage_ = stage_of(p, c_.levels(), "progressive distillation");
    if (teacher_.attached() && stage_ > teacher_stage_) {
      teacher_.assign(c_.teacher_ema ? Role::Ema : Role::Param);
      teacher_stage_ = stage_;
    }
  }
  int stage() const { return stage_; }
  int teacher_stage() const { return teacher_stage_; }
  const TeacherWeights<Model>& teacher() const { return teacher_; }
  const Plan& plan() const { return plan_; }
  const T* inputs() const { return rows_.xt(); }
  const T* targets() const { return rows_.target(); }

  // The teacher travels with the checkpoints (Trainer::save / resume call these).
  void save_state(const std::string& dir) const {
    if (!teacher_.attached()) return;
    teacher_.save(dir);
    std::ofstream(std::filesystem::path(dir) / kStageFile) << nlohmann::json{{"stage", teacher_stage_}}.dump();
  }
  void load_state(const std::string& dir) {
    const auto f = std::filesystem::path(dir) / TeacherWeights<Model>::kFile;
    const auto sf = std::filesystem::path(dir) / kStageFile;
    std::ifstream in(sf);
    if (!in || !std::filesystem::exists(f))
      throw FileError("checkpoint " + dir + " has no teacher (" + f.filename().string() + ", " + kStageFile +
                      "): was it saved by progressive distillation?");
    nlohmann::json j;
    try {
      in >> j;
      teacher_stage_ = j.at("stage").get<int>();
    } catch (const nlohmann::json::exception& e) {
      throw FileError(sf.string() + ": " + e.what());
    }
    teacher_.load(f);
  }

  // x_t on each row's path, the teacher's two half steps of d/2 averaged (guided in the first
  // stage), the regression towards them.
  LossResult step(Model& m, DeviceSpan<const T, Backend> x1, HostSpan<const int32_t> y, BatchSlice s, Rng& rng) {
    if (!teacher_.attached()) teacher_.attach(m);
    const int64_t n = m.sample_size();
    check_step_inputs(s, x1, y, n, m.num_classes());
    make_plan(m, s, y, rng);
    const int B = s.rows();
    rows_.prepare(m, plan_.t, plan_.k, plan_.y);
    slice_noise(m.backend(), x0_, s, rng.seed(), plan_.noise_stream, n);
    m.backend().flow_rows(rows_.xt(), nullptr, x1.data(), x0_.data(), rows_.t(), B, int(n));
    boot_.compute(
        m, rows_, B, plan_.n_cfg, plan_.t, plan_.half_d, plan_.k, plan_.y,
        [&](const T* x, const T* t, const T* k, const int32_t* yq, int Q, T* out) { teacher_.forward(x, t, k, yq, Q, out); },
        T(c_.cfg_scale), T(c_.target_clip));
    return rows_.regress(m, B, 0, s.batch, 0);
  }

 private:
  void make_plan(const Model& m, const BatchSlice& s, HostSpan<const int32_t> y, Rng& rng) {
    const int L = c_.levels(), classes = m.num_classes();
    const int64_t sections = int64_t(1) << (L - 1 - stage_);
    // the rows and their draws are consistency training's, with the step d in place of the gap
    ConsistencyPlan c = consistency_plan(s, y, classes, sections, 1.0 / double(sections), float(L),
                                         c_.class_dropout_prob, rng);
    Plan p;
    p.stage = stage_;
    p.t = std::move(c.t);
    p.k = std::move(c.k);
    p.y = std::move(c.y);
    p.noise_stream = c.noise_stream;
    p.half_d.assign(p.t.size(), 0.5f / float(sections));
    const bool guided = stage_ == 0 && c_.cfg_scale > 0 && classes > 1;
    p.n_cfg = guided ? s.rows() : 0;
    plan_ = std::move(p);
  }

  ProgressiveDistillationConfig c_;
  TeacherWeights<Model> teacher_;
  int stage_ = 0, teacher_stage_ = 0;
  Plan plan_;
  RegressionRows<Model> rows_;
  BootstrapTarget<Model> boot_;  // the teacher's two half steps
  typename Backend::template Buffer<T> x0_;
};

}  // namespace shortcut
