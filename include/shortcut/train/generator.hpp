// One call from a checkpoint to samples:
//
//   shortcut::cpu::Backend<float> be;
//   auto g = shortcut::load_generator(be, "run/checkpoints/last");
//   std::vector<float> x = g.sample(labels, /*steps=*/4, /*guidance=*/1.5, /*seed=*/0);   // [N, sample]
//
// The network type and its config, the objective and M all come from the file's metadata
// (docs/checkpoints.md lists the keys): "config" (the network config; its "model" names the type,
// "dit" or "mlp") and "training" (Trainer::training_json(): its "shortcut" object is the
// SamplingSchedule). Anything missing, malformed or inconsistent between a folder's files is a
// FileError naming the file and the key; nothing falls back to defaults. Behind the generator is an
// InferenceModel: the one weight set asked for (EMA by default) and activations only.
#pragma once
#include <algorithm>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "shortcut/core/progress.hpp"
#include "shortcut/io/checkpoint.hpp"
#include "shortcut/nn/dit.hpp"
#include "shortcut/nn/mlp_net.hpp"
#include "shortcut/train/generate.hpp"
#include "shortcut/train/inference_model.hpp"
#include "shortcut/train/sampling_schedule.hpp"

namespace shortcut {

// What load_generator reads, and what it lets the caller decide.
struct GeneratorOptions {
  // Role::Ema (a folder's ema.safetensors) or Role::Param (its model.safetensors, the raw weights).
  Role weights = Role::Ema;
  // How the model samples, for files without "training" metadata (e.g. saved from PyTorch without
  // training=): used instead of the metadata. Unset (the default): the metadata must be there.
  std::optional<SamplingSchedule> sampling;
  io::LoadOptions load;  // finite-value checks etc. of the weights
};

// Everything a checkpoint's metadata says about sampling from it.
struct CheckpointInfo {
  std::filesystem::path file;             // the weights file read
  Role weights = Role::Ema;               // the weight set it holds
  std::string network;                    // "dit" or "mlp" (the config's "model")
  nlohmann::json network_config;          // the file's "config"
  SamplingSchedule sampling;              // the "shortcut" object of "training" (or GeneratorOptions::sampling)
  nlohmann::json training_json;           // all of "training" (null when GeneratorOptions::sampling replaced it)
  int64_t step = -1;                      // the file's "step" (-1: none)
};

// The network types load_generator knows (the config's "model" key).
inline const std::vector<std::string>& generator_networks() {
  static const std::vector<std::string> n = {"dit", "mlp"};
  return n;
}

namespace detail {

inline nlohmann::json json_metadata(const io::SafetensorsReader& r, const std::string& key) {
  const std::string* s = r.metadata(key);
  if (!s) return nullptr;
  try {
    return nlohmann::json::parse(*s);
  } catch (const nlohmann::json::exception& e) {
    io::detail::file_fail(r.path(), "__metadata__ '" + key + "' is not valid JSON: " + e.what());
  }
}

// The SamplingSchedule of a "training" metadata object; the keys that decide sampling must be there.
inline SamplingSchedule sampling_schedule(const io::SafetensorsReader& r, const nlohmann::json& t) {
  const char* what = " (the SamplingSchedule that Trainer::save writes)";
  if (!t.is_object() || !t.contains("shortcut") || !t["shortcut"].is_object())
    io::detail::file_fail(r.path(), std::string("__metadata__ 'training' has no object 'shortcut'") + what);
  const nlohmann::json& s = t["shortcut"];
  for (const char* k : {"objective", "denoise_timesteps"})
    if (!s.contains(k))
      io::detail::file_fail(r.path(), cat("__metadata__ 'training' has no 'shortcut.", k, "'", what,
                                          ": the sampler needs it"));
  try {
    return SamplingSchedule::from_json(s);
  } catch (const nlohmann::json::exception& e) {
    io::detail::file_fail(r.path(), std::string("__metadata__ 'training': ") + e.what());
  } catch (const ConfigError& e) {
    io::detail::file_fail(r.path(), std::string("__metadata__ 'training': ") + e.what());
  }
}

}  // namespace detail

// Reads and checks the metadata of a weights file or checkpoint folder without loading any weights.
// In a folder, every other file present (model, ema, optimizer) must carry the same "config",
// "training" and "step" as the one read.
inline CheckpointInfo read_checkpoint_info(const std::filesystem::path& path_or_dir, const GeneratorOptions& opt = {}) {
  namespace fs = std::filesystem;
  CheckpointInfo info;
  info.file = io::weights_file(path_or_dir, opt.weights);
  io::SafetensorsReader r(info.file);
  const std::string* content = r.metadata("content");
  if (content && *content == "optimizer")
    io::detail::file_fail(r.path(), "is an optimizer state file (content 'optimizer'), not weights");
  std::error_code ec;
  if (fs::is_directory(path_or_dir, ec)) {
    info.weights = opt.weights;
  } else {
    // a single file holds the set its "content" says: "model" the raw weights, anything else EMA/plain weights
    info.weights = content && *content == "model" ? Role::Param : Role::Ema;
    if (opt.weights == Role::Param && info.weights != Role::Param)
      io::detail::file_fail(r.path(), cat("holds one weight set (content '", content ? *content : std::string("?"),
                                          "'), not the raw weights asked for: give a checkpoint folder with ",
                                          io::kModelFile, " for the raw weights"));
  }

  info.network_config = io::detail::file_config(r);
  if (info.network_config.is_null())
    io::detail::file_fail(r.path(), "has no network config in its metadata ('config'): the network cannot be built");
  if (!info.network_config.is_object() || !info.network_config.contains("model") ||
      !info.network_config["model"].is_string())
    io::detail::file_fail(r.path(), "__metadata__ 'config' has no string 'model' naming the network type (dit or mlp)");
  info.network = info.network_config["model"].get<std::string>();
  const auto& known = generator_networks();
  if (std::find(known.begin(), known.end(), info.network) == known.end())
    io::detail::file_fail(r.path(), "__metadata__ 'config' names the network type '" + info.network +
                                        "', which load_generator does not know (known: dit, mlp)");

  info.training_json = detail::json_metadata(r, "training");
  if (opt.sampling) {
    opt.sampling->validate();
    info.sampling = *opt.sampling;
  } else {
    if (info.training_json.is_null())
      io::detail::file_fail(r.path(), "has no 'training' metadata (the training configuration Trainer::save writes: "
                                      "the objective and M decide the sampler's step index); a file saved without "
                                      "it needs GeneratorOptions::sampling");
    info.sampling = detail::sampling_schedule(r, info.training_json);
  }
  if (r.metadata("step")) info.step = io::detail::parse_number<int64_t>(r, "step", true, 0);

  // the folder's other files must come from the same save of the same run
  if (fs::is_directory(path_or_dir, ec)) {
    for (const char* f : {io::kEmaFile, io::kModelFile, io::kOptimizerFile}) {
      const fs::path p = path_or_dir / f;
      if (p == info.file || !fs::exists(p, ec)) continue;
      io::SafetensorsReader o(p);
      auto inconsistent = [&](const std::string& what) {
        throw FileError("checkpoint folder " + io::detail::quote(path_or_dir) + " is inconsistent: " + f + " and " +
                        info.file.filename().string() + " " + what);
      };
      const std::string d = io::detail::config_diff(io::detail::file_config(o), info.network_config);
      if (!d.empty()) inconsistent("hold different network configs (" + d + ")");
      if (detail::json_metadata(o, "training") != info.training_json)
        inconsistent("hold different 'training' metadata");
      const int64_t s = o.metadata("step") ? io::detail::parse_number<int64_t>(o, "step", true, 0) : -1;
      if (s != info.step) inconsistent(cat("are from steps ", s, " and ", info.step, " (an interrupted save?)"));
    }
  }
  return info;
}

// A checkpoint loaded for sampling on backend Be: an InferenceModel of the network its metadata
// names, and the training configuration the sampler needs. Be must outlive the generator.
template <ComputeBackend Be>
class Generator {
 public:
  using T = typename Be::Scalar;
  using Dit = InferenceModel<nn::DiT<Be>>;
  using Mlp = InferenceModel<nn::MlpNet<Be>>;

  // How sample() works through the rows.
  struct SampleOptions {
    int chunk = 256;           // rows per network batch
    uint64_t stream = 0;       // the Philox stream of the noise (with the seed)
    ProgressBar* bar = nullptr;
  };

  Generator(Be& be, const std::filesystem::path& path_or_dir, const GeneratorOptions& opt = {})
      : info_(read_checkpoint_info(path_or_dir, opt)) {
    try {
      if (info_.network == "dit")
        model_ = std::make_unique<Dit>(be, nn::DiTConfig::from_json(info_.network_config), info_.file, info_.weights,
                                       opt.load);
      else
        model_ = std::make_unique<Mlp>(be, nn::MlpNetConfig::from_json(info_.network_config), info_.file,
                                       info_.weights, opt.load);
    } catch (const FileError&) {
      throw;
    } catch (const Error& e) {  // a config the network refuses
      io::detail::file_fail(info_.file, std::string("__metadata__ 'config': ") + e.what());
    }
  }

  // Samples one row per label (labels in [0, classes], classes = unconditional) in `steps` Euler
  // steps (a power of two up to M) with guidance scale `guidance` (1: none), from the noise of
  // (seed, stream): [labels.size(), sample_size()] on the host.
  std::vector<T> sample(const std::vector<int32_t>& labels, int steps, double guidance = 1.0, uint64_t seed = 0,
                        const SampleOptions& so = {}) {
    return run<OdeSampler>(labels, steps, guidance, seed, so, nullptr);
  }
  // The same from given noise [labels.size(), sample_size()] (host).
  std::vector<T> sample_from(const std::vector<T>& noise, const std::vector<int32_t>& labels, int steps,
                             double guidance = 1.0, const SampleOptions& so = {}) {
    return run<OdeSampler>(labels, steps, guidance, 0, so, &noise);
  }
  // sample() with another sampler: S<Model> must be a Sampler for each model type this generator may
  // hold (built from the checkpoint's training configuration), e.g. g.sample_with<MyHeun>(labels, 8).
  template <template <class> class S>
  std::vector<T> sample_with(const std::vector<int32_t>& labels, int steps, double guidance = 1.0, uint64_t seed = 0,
                             const SampleOptions& so = {}) {
    return run<S>(labels, steps, guidance, seed, so, nullptr);
  }

  const CheckpointInfo& info() const { return info_; }
  const SamplingSchedule& sampling() const { return info_.sampling; }
  const std::string& network() const { return info_.network; }
  Role weights() const { return info_.weights; }
  int64_t sample_size() const { return visit([](auto& m) { return m.sample_size(); }); }
  std::vector<int64_t> sample_shape() const { return visit([](auto& m) { return m.sample_shape(); }); }
  int num_classes() const { return visit([](auto& m) { return m.num_classes(); }); }
  size_t weight_bytes() const { return visit([](auto& m) { return m.weight_bytes(); }); }
  // The model, when it is of that type (InferenceModel<nn::DiT<Be>> or <nn::MlpNet<Be>>), else null.
  template <class Model>
  Model* model() {
    auto* p = std::get_if<std::unique_ptr<Model>>(&model_);
    return p ? p->get() : nullptr;
  }

 private:
  template <class F>
  auto visit(F&& f) const {
    return std::visit([&](auto& m) { return f(*m); }, model_);
  }
  template <template <class> class S>
  std::vector<T> run(const std::vector<int32_t>& labels, int steps, double guidance, uint64_t seed,
                     const SampleOptions& so, const std::vector<T>* noise) {
    if (so.chunk < 1) throw ConfigError(cat("chunk must be positive, got ", so.chunk));
    const SamplerConfig s{steps, guidance, info_.weights == Role::Ema};
    return std::visit(
        [&](auto& m) {
          using Model = std::remove_reference_t<decltype(*m)>;
          static_assert(Sampler<S<Model>, Model>, "S<Model> must satisfy shortcut::Sampler (train/ode_sampler.hpp)");
          S<Model> sampler(info_.sampling);
          return generate(*m, sampler, labels, s, seed, so.stream, so.chunk, noise, so.bar);
        },
        model_);
  }

  CheckpointInfo info_;
  std::variant<std::unique_ptr<Dit>, std::unique_ptr<Mlp>> model_;
};

// Loads a checkpoint folder (EMA weights by default) or a weights file for sampling on `be`.
template <ComputeBackend Be>
Generator<Be> load_generator(Be& be, const std::filesystem::path& path_or_dir, const GeneratorOptions& opt = {}) {
  return Generator<Be>(be, path_or_dir, opt);
}

}  // namespace shortcut
