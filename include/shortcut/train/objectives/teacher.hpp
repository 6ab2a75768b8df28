// A frozen teacher beside the student's arena, for the distillation objectives (DESIGN.md §7): the
// weights of a trained model with the student's network config, on the device, run through the
// student's own network object (same config, same layout) on the evaluation context. Loaded from a
// checkpoint folder (its EMA weights) or a weights file when the trainer attaches the model, so that
// a missing teacher or one of another shape stops the run before its first step, naming the file.
#pragma once
#include <filesystem>
#include <string>
#include <vector>

#include "shortcut/io/checkpoint.hpp"
#include "shortcut/train/objective.hpp"

namespace shortcut {

template <VelocityModel Model>
class TeacherWeights {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;
  static constexpr const char* kFile = "teacher.safetensors";  // in a checkpoint folder, when saved

  explicit TeacherWeights(std::filesystem::path path) : path_(std::move(path)) {
    if (path_.empty())
      throw ConfigError("this objective distils a teacher: give a trained flow-matching checkpoint (--teacher PATH)");
    std::error_code ec;
    if (!std::filesystem::exists(path_, ec)) throw FileError("teacher checkpoint " + path_.string() + " does not exist");
  }
  const std::filesystem::path& path() const { return path_; }

  // Loads the teacher for model m (the file's config must be the student's network config).
  void attach(Model& m) {
    m_ = &m;
    load(io::sampling_weights_file(path_));
  }
  bool attached() const { return m_ != nullptr; }
  const T* data() const { return w_.data(); }

  // The teacher becomes the student's weight set `r` (progressive distillation's stage boundary).
  void assign(Role r) {
    m_->arena().enable(r);
    m_->backend().copy(w_.data(), m_->arena().data(r), w_.size());
  }
  // out [B, n] = the teacher's velocity at (x, t, k, y) (all device [B]), without gradient.
  void forward(const T* x, const T* t, const T* k, const int32_t* y, int B, T* out) {
    m_->net().forward(m_->eval_context(), w_.data(), x, t, k, y, B, out);
  }

  void save(const std::filesystem::path& dir) const {
    const std::vector<T> h = host();
    io::save_weights((dir / kFile).string(), m_->net().layout(), h.data(), m_->net().config_json(),
                     io::fixed_tensors(m_->net()));
  }
  void load(const std::filesystem::path& file) {
    const nlohmann::json cfg = m_->net().config_json();
    const std::vector<T> h = io::load_weights<T>(file, m_->net().layout(), &cfg, io::fixed_tensors(m_->net()));
    w_.resize(h.size());
    m_->backend().to_device(w_.data(), h.data(), h.size());
  }
  std::vector<T> host() const {
    std::vector<T> h(w_.size());
    m_->backend().to_host(h.data(), w_.data(), w_.size());
    return h;
  }

 private:
  std::filesystem::path path_;
  Model* m_ = nullptr;
  typename Backend::template Buffer<T> w_;
};

}  // namespace shortcut
