// Model weights and training checkpoints (DESIGN.md §5) as safetensors files that a PyTorch DiT loads
// by name with strict=True: tensor names and shapes are the ParamLayout's (the PyTorch names and
// [out, in] layouts), the model config is JSON in __metadata__["config"], and fixed non-trainable
// tensors such as the DiT's pos_embed [1, T, D] are written beside the weights.
//
// A training checkpoint is a folder of three files, each written atomically:
//   ema.safetensors        EMA weights (the ones to sample with)
//   model.safetensors      raw weights
//   optimizer.safetensors  Adam moments exp_avg.<name> / exp_avg_sq.<name>, with the step, the RNG
//                          seed and position and free-form JSON ("extra") in __metadata__
// Every file carries the step, so a folder mixed from two saves (a crash between two renames) is
// detected on load instead of resuming from inconsistent state. Loading validates everything before
// it touches the arena: a failed load leaves the arena as it was.
#pragma once
#include <nlohmann/json.hpp>

#include <charconv>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "shortcut/core/arena.hpp"
#include "shortcut/core/concepts.hpp"
#include "shortcut/io/safetensors.hpp"

namespace shortcut::io {

inline constexpr const char* kEmaFile = "ema.safetensors";
inline constexpr const char* kModelFile = "model.safetensors";
inline constexpr const char* kOptimizerFile = "optimizer.safetensors";
inline constexpr const char* kExpAvgPrefix = "exp_avg.";
inline constexpr const char* kExpAvgSqPrefix = "exp_avg_sq.";

// A tensor that is part of the model but not trained (the DiT's sin-cos pos_embed): written with the
// weights so that the file loads into PyTorch with strict=True; on load its shape is checked and, when
// `values` is given, its values too (a different position embedding means a different model).
struct FixedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<double> values;
};

struct SaveOptions {
  DType dtype = DType::F32;                     // F32 (default), F64, F16 or BF16
  std::map<std::string, std::string> metadata;  // extra __metadata__ entries (the reserved keys win)
};

struct LoadOptions {
  bool check_finite = true;     // a nan or inf in any tensor is an error
  bool require_config = false;  // refuse files without __metadata__["config"] (e.g. saved from PyTorch)
  double fixed_tolerance = 1e-4;
};

// Everything besides the tensors that a run needs to resume exactly. The Trainer's extra is its
// training configuration (Trainer::training_json()) plus, when present, "data_source" (the data
// source's state) and "user" (what TrainerHooks::user_state returned); readers ignore keys they do
// not know, so checkpoints without them load as before.
struct TrainState {
  int64_t step = 0;
  uint64_t rng_seed = 0;
  uint64_t rng_position = 0;
  nlohmann::json extra = nlohmann::json::object();
};

namespace detail {

// Field-by-field differences between two configs, "" when they agree (numbers compare by value, so
// 4 and 4.0 agree).
inline std::string config_diff(const nlohmann::json& got, const nlohmann::json& want) {
  if (!got.is_object() || !want.is_object())
    return got == want ? "" : "the file has config " + got.dump() + ", expected " + want.dump();
  std::string out;
  auto add = [&](const std::string& s) { out += (out.empty() ? "" : "; ") + s; };
  for (auto& [k, w] : want.items()) {
    auto it = got.find(k);
    if (it == got.end()) add("field '" + k + "' is missing in the file (expected " + w.dump() + ")");
    else if (*it != w) add("field '" + k + "' is " + it->dump() + " in the file, expected " + w.dump());
  }
  for (auto& [k, g] : got.items())
    if (!want.contains(k)) add("the file has field '" + k + "' = " + g.dump() + ", which the expected config lacks");
  return out;
}

// The parsed config of a file, or null when it has none; malformed JSON is a damaged file.
inline nlohmann::json file_config(const SafetensorsReader& r) {
  const std::string* c = r.metadata("config");
  if (!c) return nullptr;
  try {
    return nlohmann::json::parse(*c);
  } catch (const nlohmann::json::exception& e) {
    file_fail(r.path(), std::string("__metadata__ 'config' is not valid JSON: ") + e.what());
  }
}

inline void check_config(const SafetensorsReader& r, const nlohmann::json* expected, const LoadOptions& opt) {
  nlohmann::json got = file_config(r);
  if (got.is_null()) {
    if (opt.require_config) file_fail(r.path(), "has no model config in its metadata ('config')");
    return;
  }
  if (!expected) return;
  std::string d = config_diff(got, *expected);
  if (!d.empty()) file_fail(r.path(), "config mismatch: " + d);
}

inline std::string name_list(const std::vector<std::string>& names, const char* what) {
  std::string s = names.size() == 1 ? cat(what, " '", names[0], "'") : cat(what, "s (", names.size(), "): ");
  if (names.size() > 1)
    for (size_t i = 0; i < names.size() && i < 4; ++i) s += (i ? ", '" : "'") + names[i] + "'";
  if (names.size() > 4) s += ", ...";
  return s;
}

// Reads the tensors `prefix + name` of every layout entry, for each prefix, into buffers in the
// layout's flat order (padding zero). Every other tensor must be one of `fixed` (checked, then
// ignored); anything missing, unexpected, of the wrong shape or not floating point is an error.
template <class T>
std::vector<std::vector<T>> read_groups(const SafetensorsReader& r, const ParamLayout& L,
                                        const std::vector<std::string>& prefixes,
                                        const std::vector<FixedTensor>& fixed, const LoadOptions& opt) {
  struct Want {
    size_t group;
    const ParamInfo* p;
  };
  std::map<std::string, Want> want;
  for (size_t g = 0; g < prefixes.size(); ++g)
    for (auto& p : L.entries()) want[prefixes[g] + p.name] = Want{g, &p};
  std::map<std::string, const FixedTensor*> fixed_by_name;
  for (auto& f : fixed) fixed_by_name[f.name] = &f;

  std::vector<std::string> unexpected, missing, problems;
  for (auto& t : r.tensors()) {
    const std::vector<int64_t>* shape = nullptr;
    if (auto it = want.find(t.name); it != want.end()) shape = &it->second.p->shape;
    else if (auto f = fixed_by_name.find(t.name); f != fixed_by_name.end()) shape = &f->second->shape;
    if (!shape) {
      unexpected.push_back(t.name);
      continue;
    }
    if (t.shape != *shape)
      problems.push_back(cat("wrong shape for tensor '", t.name, "': expected ", shape_str(*shape), ", got ",
                             shape_str(t.shape)));
    if (t.dtype != DType::F32 && t.dtype != DType::F64 && t.dtype != DType::F16 && t.dtype != DType::BF16)
      problems.push_back(cat("tensor '", t.name, "' has dtype ", dtype_name(t.dtype),
                             "; weights must be floating point (F32, F64, F16 or BF16)"));
  }
  for (auto& [name, w] : want)
    if (!r.contains(name)) missing.push_back(name);
  if (!missing.empty()) {
    // report in layout order, which reads like the model
    std::vector<std::string> ordered;
    for (auto& pre : prefixes)
      for (auto& p : L.entries())
        if (!r.contains(pre + p.name)) ordered.push_back(pre + p.name);
    problems.push_back(name_list(ordered, "missing tensor"));
  }
  if (!unexpected.empty()) {
    std::string s = name_list(unexpected, "unexpected tensor");
    if (prefixes.size() == 1 && prefixes[0].empty() && unexpected[0].rfind("exp_avg", 0) == 0)
      s += " (this looks like an optimizer state file, not weights)";
    problems.push_back(s);
  }
  if (!problems.empty()) {
    std::string s;
    for (auto& p : problems) s += (s.empty() ? "" : "; ") + p;
    file_fail(r.path(), s);
  }

  std::vector<std::vector<T>> out(prefixes.size(), std::vector<T>(L.total(), T(0)));
  for (auto& [name, w] : want) r.read_into(name, out[w.group].data() + w.p->offset, w.p->size, opt.check_finite);
  for (auto& f : fixed) {
    if (f.values.empty() || !r.contains(f.name)) continue;
    if (f.values.size() != r.info(f.name).numel())
      throw Error(cat("fixed tensor '", f.name, "': ", f.values.size(), " values for shape ", shape_str(f.shape)));
    std::vector<double> v = r.read<double>(f.name, opt.check_finite);
    // a file stored in half precision holds the values only to its own rounding
    const DType dt = r.info(f.name).dtype;
    const double rel = dt == DType::F16 ? std::ldexp(1.0, -11) : dt == DType::BF16 ? std::ldexp(1.0, -8) : 0.0;
    double worst = 0;
    for (size_t i = 0; i < v.size(); ++i)
      worst = std::max(worst, std::abs(v[i] - f.values[i]) - rel * std::abs(f.values[i]));
    if (!(worst <= opt.fixed_tolerance))
      file_fail(r.path(), cat("tensor '", f.name, "' differs from the values this model computes (max difference ",
                              worst, "): the file comes from a different model"));
  }
  return out;
}

template <class T>
void add_group(SafetensorsWriter& w, const ParamLayout& L, const std::string& prefix, const T* values, DType dt) {
  for (auto& p : L.entries()) w.add(prefix + p.name, p.shape, values + p.offset, dt);
}

inline void add_fixed(SafetensorsWriter& w, const std::vector<FixedTensor>& fixed, DType dt) {
  for (auto& f : fixed) {
    int64_t n = 1;
    for (auto d : f.shape) n *= d;
    if (size_t(n) != f.values.size())
      throw ShapeError(cat("fixed tensor '", f.name, "': ", f.values.size(), " values for shape ", shape_str(f.shape)));
    w.add(f.name, f.shape, f.values.data(), dt);
  }
}

inline void add_common_metadata(SafetensorsWriter& w, const nlohmann::json& config, const SaveOptions& opt,
                                const std::string& content) {
  for (auto& [k, v] : opt.metadata) w.add_metadata(k, v);
  // "pt" is the convention for tensors laid out for PyTorch (what HF loaders look for)
  w.add_metadata("format", "pt");
  w.add_metadata("producer", "shortcut");
  w.add_metadata("content", content);
  w.add_metadata("config", config.dump());
}

template <class U>
U parse_number(const SafetensorsReader& r, const std::string& key, bool required, U fallback) {
  const std::string* s = r.metadata(key);
  if (!s) {
    if (required) file_fail(r.path(), "has no '" + key + "' in its metadata");
    return fallback;
  }
  U v{};
  auto [end, ec] = std::from_chars(s->data(), s->data() + s->size(), v);
  if (ec != std::errc() || end != s->data() + s->size() || s->empty())
    file_fail(r.path(), "__metadata__ '" + key + "' is not an integer: '" + *s + "'");
  return v;
}

// The optimizer file's free-form JSON ("extra"), an empty object when it has none.
inline nlohmann::json file_extra(const SafetensorsReader& optim) {
  const std::string* x = optim.metadata("extra");
  if (!x) return nlohmann::json::object();
  try {
    return nlohmann::json::parse(*x);
  } catch (const nlohmann::json::exception& e) {
    file_fail(optim.path(), std::string("__metadata__ 'extra' is not valid JSON: ") + e.what());
  }
}

// A folder named by its absolute path: the relative one the user typed depends on a working directory
// that whoever reads the message (a log, a job's output) does not see.
inline std::string quote_absolute(const std::filesystem::path& p) {
  std::error_code ec;
  std::filesystem::path a = std::filesystem::absolute(p, ec);
  return quote(ec ? p : a.lexically_normal());
}

inline void check_checkpoint_dir(const std::filesystem::path& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto st = fs::status(dir, ec);
  if (ec || !fs::exists(st)) throw FileError("checkpoint folder " + quote_absolute(dir) + " does not exist");
  if (!fs::is_directory(st)) throw FileError("checkpoint " + quote_absolute(dir) + " is a file, not a folder");
  for (const char* f : {kEmaFile, kModelFile, kOptimizerFile})
    if (!fs::exists(dir / f, ec))
      throw FileError("checkpoint folder " + quote_absolute(dir) + " has no " + f +
                      " (incomplete or not a checkpoint)");
}

}  // namespace detail

// ---- single weights files -----------------------------------------------------------------------

// Writes the weights `values` (layout.total() elements in the layout's flat order) as one safetensors
// file named by the layout, plus the fixed tensors, with the config in __metadata__.
template <class T>
void save_weights(const std::filesystem::path& path, const ParamLayout& layout, const T* values,
                  const nlohmann::json& config, const std::vector<FixedTensor>& fixed = {},
                  const SaveOptions& opt = {}) {
  SafetensorsWriter w;
  detail::add_group(w, layout, "", values, opt.dtype);
  detail::add_fixed(w, fixed, opt.dtype);
  detail::add_common_metadata(w, config, opt, "weights");
  w.write(path);
}

// Reads a weights file into a host buffer of layout.total() elements. With expected_config, the
// file's config must agree field by field (a file without a config, e.g. saved from PyTorch, is only
// checked by its tensors unless opt.require_config).
template <class T>
std::vector<T> load_weights(const std::filesystem::path& path, const ParamLayout& layout,
                            const nlohmann::json* expected_config = nullptr,
                            const std::vector<FixedTensor>& fixed = {}, const LoadOptions& opt = {}) {
  SafetensorsReader r(path);
  detail::check_config(r, expected_config, opt);
  return std::move(detail::read_groups<T>(r, layout, {""}, fixed, opt)[0]);
}

// The file to sample from: a checkpoint folder's ema.safetensors, or the path itself.
inline std::filesystem::path sampling_weights_file(const std::filesystem::path& path_or_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(path_or_dir, ec)) return path_or_dir;
  fs::path f = path_or_dir / kEmaFile;
  if (!fs::exists(f, ec))
    throw FileError("checkpoint folder " + detail::quote_absolute(path_or_dir) + " has no " + kEmaFile +
                    " (is it a checkpoint folder?)");
  return f;
}

template <class T>
std::vector<T> load_sampling_weights(const std::filesystem::path& path_or_dir, const ParamLayout& layout,
                                     const nlohmann::json* expected_config = nullptr,
                                     const std::vector<FixedTensor>& fixed = {}, const LoadOptions& opt = {}) {
  return load_weights<T>(sampling_weights_file(path_or_dir), layout, expected_config, fixed, opt);
}

// The weights file of one weight set: a checkpoint folder's ema.safetensors (Role::Ema) or
// model.safetensors (Role::Param); a path that is not a folder is the file itself.
inline std::filesystem::path weights_file(const std::filesystem::path& path_or_dir, Role weights) {
  namespace fs = std::filesystem;
  if (weights != Role::Ema && weights != Role::Param)
    throw ConfigError(cat("weights to sample with must be Role::Ema or Role::Param, got '", role_name(weights), "'"));
  std::error_code ec;
  if (!fs::exists(path_or_dir, ec))
    throw FileError("checkpoint folder " + detail::quote_absolute(path_or_dir) + " does not exist");
  if (!fs::is_directory(path_or_dir, ec)) return path_or_dir;
  const char* name = weights == Role::Ema ? kEmaFile : kModelFile;
  fs::path f = path_or_dir / name;
  if (!fs::exists(f, ec))
    throw FileError(cat("checkpoint folder ", detail::quote_absolute(path_or_dir), " has no ", name, " (the ",
                        weights == Role::Ema ? "EMA" : "raw", " weights; is it a checkpoint folder?)"));
  return f;
}

// The model config stored in a weights file or checkpoint folder (to build the network before
// loading its weights).
inline nlohmann::json read_config(const std::filesystem::path& path_or_dir) {
  SafetensorsReader r(sampling_weights_file(path_or_dir));
  nlohmann::json c = detail::file_config(r);
  if (c.is_null()) detail::file_fail(r.path(), "has no model config in its metadata ('config')");
  return c;
}

// ---- training checkpoints -----------------------------------------------------------------------

// Writes a checkpoint folder (created if needed) from the arena's raw weights, EMA weights and Adam
// moments. The EMA role must be allocated; Adam moments that are not (no optimizer step yet) are
// written as zeros, which is what a fresh optimizer holds.
template <class Be>
void save_checkpoint(const std::filesystem::path& dir, const ParamArena<Be>& arena, const nlohmann::json& config,
                     const TrainState& state, const std::vector<FixedTensor>& fixed = {},
                     const SaveOptions& opt = {}) {
  using T = typename ParamArena<Be>::T;
  namespace fs = std::filesystem;
  if (!arena.has(Role::Ema))
    throw Error("save_checkpoint: the arena has no EMA weights (Role::Ema is not allocated); enable it and copy the "
                "parameters into it when training starts");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw FileError("cannot create checkpoint folder " + detail::quote(dir) + ": " + ec.message());
  const ParamLayout& L = arena.layout();
  const std::string step = std::to_string(state.step);

  {
    std::vector<T> m = arena.has(Role::AdamM) ? arena.to_host(Role::AdamM) : std::vector<T>(arena.size(), T(0));
    std::vector<T> v = arena.has(Role::AdamV) ? arena.to_host(Role::AdamV) : std::vector<T>(arena.size(), T(0));
    SafetensorsWriter w;
    detail::add_group(w, L, kExpAvgPrefix, m.data(), opt.dtype);
    detail::add_group(w, L, kExpAvgSqPrefix, v.data(), opt.dtype);
    detail::add_common_metadata(w, config, opt, "optimizer");
    w.add_metadata("step", step);
    w.add_metadata("rng_seed", std::to_string(state.rng_seed));
    w.add_metadata("rng_position", std::to_string(state.rng_position));
    w.add_metadata("extra", state.extra.dump());
    w.write(dir / kOptimizerFile);
  }
  // ema last: once it has the new step, the whole folder does
  for (auto [role, file, content] : {std::tuple{Role::Param, kModelFile, "model"}, std::tuple{Role::Ema, kEmaFile, "ema"}}) {
    std::vector<T> h = arena.to_host(role);
    SafetensorsWriter w;
    detail::add_group(w, L, "", h.data(), opt.dtype);
    detail::add_fixed(w, fixed, opt.dtype);
    detail::add_common_metadata(w, config, opt, content);
    w.add_metadata("step", step);
    w.write(dir / file);
  }
}

// The free-form JSON (TrainState::extra) of a checkpoint folder, read from its optimizer file's
// header alone: to decide whether to resume before any tensor is loaded.
inline nlohmann::json read_checkpoint_extra(const std::filesystem::path& dir) {
  detail::check_checkpoint_dir(dir);
  return detail::file_extra(SafetensorsReader(dir / kOptimizerFile));
}

// Loads a checkpoint folder into the arena (raw weights, EMA weights and both Adam moments; the roles
// are allocated as needed) and returns the training state to resume from.
template <class Be>
TrainState load_checkpoint(const std::filesystem::path& dir, ParamArena<Be>& arena,
                           const nlohmann::json* expected_config, const std::vector<FixedTensor>& fixed = {},
                           const LoadOptions& opt = {}) {
  using T = typename ParamArena<Be>::T;
  detail::check_checkpoint_dir(dir);
  SafetensorsReader ema(dir / kEmaFile), model(dir / kModelFile), optim(dir / kOptimizerFile);
  const SafetensorsReader* files[] = {&ema, &model, &optim};
  for (auto* r : files) detail::check_config(*r, expected_config, opt);
  // the three files must come from one save of one model
  nlohmann::json c0 = detail::file_config(ema);
  for (auto* r : {&model, &optim}) {
    std::string d = detail::config_diff(detail::file_config(*r), c0);
    if (!d.empty())
      throw FileError("checkpoint folder " + detail::quote_absolute(dir) + " is inconsistent: " +
                      r->path().filename().string() + " and " + kEmaFile + " hold different configs (" + d + ")");
  }
  TrainState st;
  st.step = detail::parse_number<int64_t>(optim, "step", true, 0);
  for (auto* r : {&ema, &model}) {
    int64_t s = detail::parse_number<int64_t>(*r, "step", true, 0);
    if (s != st.step)
      throw FileError(cat("checkpoint folder ", detail::quote_absolute(dir), " is inconsistent: ",
                          r->path().filename().string(), " is from step ", s, " but ", kOptimizerFile,
                          " from step ", st.step, " (an interrupted save?)"));
  }
  st.rng_seed = detail::parse_number<uint64_t>(optim, "rng_seed", true, 0);
  st.rng_position = detail::parse_number<uint64_t>(optim, "rng_position", true, 0);
  st.extra = detail::file_extra(optim);
  const ParamLayout& L = arena.layout();
  auto e = detail::read_groups<T>(ema, L, {""}, fixed, opt);
  auto m = detail::read_groups<T>(model, L, {""}, fixed, opt);
  auto o = detail::read_groups<T>(optim, L, {kExpAvgPrefix, kExpAvgSqPrefix}, {}, opt);
  arena.from_host(Role::Param, m[0]);
  arena.from_host(Role::Ema, e[0]);
  arena.from_host(Role::AdamM, o[0]);
  arena.from_host(Role::AdamV, o[1]);
  return st;
}

// ---- network-level conveniences -----------------------------------------------------------------

// The functions below take any shortcut::NamedNetwork (core/concepts.hpp): layout() and config_json().

// The fixed tensors a network writes beside its weights: the DiT's pos_embed [1, T, D]; none for
// networks without one.
template <NamedNetwork Net>
std::vector<FixedTensor> fixed_tensors(const Net& net) {
  if constexpr (requires { net.pos_embed(); net.config().hidden; }) {
    const auto& p = net.pos_embed();
    const int64_t D = net.config().hidden;
    return {FixedTensor{"pos_embed", {1, int64_t(p.size()) / D, D}, std::vector<double>(p.begin(), p.end())}};
  } else {
    return {};
  }
}

namespace detail {
template <class Net, class Be>
void check_same_layout(const Net& net, const ParamArena<Be>& arena) {
  const auto& a = net.layout().entries();
  const auto& b = arena.layout().entries();
  bool same = a.size() == b.size() && net.layout().total() == arena.layout().total();
  for (size_t i = 0; same && i < a.size(); ++i) same = a[i].name == b[i].name && a[i].shape == b[i].shape;
  if (!same) throw Error("checkpoint: the arena was not built from this network's layout");
}
}  // namespace detail

// One weight set of the arena (EMA by default: the sampling weights) as a single weights file.
template <NamedNetwork Net, class Be>
void save_weights(const std::filesystem::path& path, const Net& net, const ParamArena<Be>& arena,
                  Role role = Role::Ema, const SaveOptions& opt = {}) {
  detail::check_same_layout(net, arena);
  auto h = arena.to_host(role);
  save_weights(path, arena.layout(), h.data(), net.config_json(), fixed_tensors(net), opt);
}

template <NamedNetwork Net, class Be>
void save_checkpoint(const std::filesystem::path& dir, const Net& net, const ParamArena<Be>& arena,
                     const TrainState& state, const SaveOptions& opt = {}) {
  detail::check_same_layout(net, arena);
  save_checkpoint(dir, arena, net.config_json(), state, fixed_tensors(net), opt);
}

template <NamedNetwork Net, class Be>
TrainState load_checkpoint(const std::filesystem::path& dir, const Net& net, ParamArena<Be>& arena,
                           const LoadOptions& opt = {}) {
  detail::check_same_layout(net, arena);
  const nlohmann::json cfg = net.config_json();
  return load_checkpoint(dir, arena, &cfg, fixed_tensors(net), opt);
}

// Loads sampling weights (a checkpoint folder's EMA file, or a single weights file) into one role of
// the arena (EMA by default, as sampling uses the EMA weights).
template <NamedNetwork Net, class Be>
void load_sampling_weights(const std::filesystem::path& path_or_dir, const Net& net, ParamArena<Be>& arena,
                           Role into = Role::Ema, const LoadOptions& opt = {}) {
  detail::check_same_layout(net, arena);
  const nlohmann::json cfg = net.config_json();
  arena.from_host(into, load_sampling_weights<typename ParamArena<Be>::T>(path_or_dir, arena.layout(), &cfg,
                                                                          fixed_tensors(net), opt));
}

// ---- starting weights for fine-tuning -----------------------------------------------------------

// What load_initial_weights read, and what it filled in itself.
struct InitReport {
  std::filesystem::path weights_file;  // into Role::Param
  std::filesystem::path ema_file;      // into Role::Ema (the same file when there is only one)
  std::vector<std::string> zero_initialised;  // d_embedder tensors the file lacked
  int64_t step = 0;                           // the file's training step (0 when it has none)
};

namespace detail {
// Reads one weights file into a copy of `base` (the arena's current values, layout order). A file
// that lacks every d_embedder tensor (weights of a DiT without step-size conditioning) is accepted:
// the d_embedder keeps its values from `base` except its output layer, which is set to zero, so the
// loaded model computes what the file's model computed, at every step index.
template <class T>
std::vector<T> read_initial(const std::filesystem::path& file, const ParamLayout& L, const std::vector<T>& base,
                            const nlohmann::json& cfg, const std::vector<FixedTensor>& fixed, const LoadOptions& opt,
                            std::vector<std::string>& zeroed, int64_t& step) {
  SafetensorsReader r(file);
  check_config(r, &cfg, opt);
  step = r.metadata("step") ? parse_number<int64_t>(r, "step", false, 0) : 0;
  const std::string prefix = "d_embedder.";
  std::vector<const ParamInfo*> d_missing;
  size_t d_total = 0;
  for (auto& p : L.entries())
    if (p.name.rfind(prefix, 0) == 0) {
      ++d_total;
      if (!r.contains(p.name)) d_missing.push_back(&p);
    }
  if (d_missing.empty()) {
    zeroed.clear();
    return std::move(read_groups<T>(r, L, {""}, fixed, opt)[0]);
  }
  if (d_missing.size() != d_total) {
    std::vector<std::string> names;
    for (auto* p : d_missing) names.push_back(p->name);
    file_fail(file, name_list(names, "missing tensor") + " (the file has part of a d_embedder)");
  }
  ParamLayout sub;
  for (auto& p : L.entries())
    if (p.name.rfind(prefix, 0) != 0) sub.add(p.name, p.shape, p.init, p.fan_in, p.fan_out);
  std::vector<T> got = std::move(read_groups<T>(r, sub, {""}, fixed, opt)[0]);
  std::vector<T> out = base;
  for (auto& p : sub.entries()) std::copy_n(got.begin() + long(p.offset), p.size, out.begin() + long(L.at(p.name).offset));
  zeroed.clear();
  for (auto* p : d_missing) {
    zeroed.push_back(p->name);
    if (p->name.rfind(prefix + "mlp.2.", 0) == 0) std::fill_n(out.begin() + long(p->offset), p->size, T(0));
  }
  return out;
}
}  // namespace detail

// The starting point of a fine-tuning run (train_images --init): a weights file, or a checkpoint
// folder (its model.safetensors into Role::Param and its ema.safetensors into Role::Ema; either one
// for both when the other is missing; no optimizer state is read: the run starts at step 0 with a
// fresh optimizer and its learning-rate warm-up). Tensors are matched by name and shape; a missing
// d_embedder (weights of a DiT without step-size conditioning, e.g. facebookresearch/DiT's) keeps the
// network's fresh initialisation with a zero output layer and is reported; anything else missing or
// extra is a FileError. A file with a config must agree with the network's.
template <NamedNetwork Net, class Be>
InitReport load_initial_weights(const std::filesystem::path& path_or_dir, const Net& net, ParamArena<Be>& arena,
                                const LoadOptions& opt = {}) {
  namespace fs = std::filesystem;
  using T = typename ParamArena<Be>::T;
  detail::check_same_layout(net, arena);
  std::error_code ec;
  if (!fs::exists(path_or_dir, ec)) throw FileError("initial weights " + detail::quote(path_or_dir) + " do not exist");
  InitReport rep;
  if (fs::is_directory(path_or_dir, ec)) {
    const fs::path m = path_or_dir / kModelFile, e = path_or_dir / kEmaFile;
    const bool hm = fs::exists(m, ec), he = fs::exists(e, ec);
    if (!hm && !he)
      throw FileError("folder " + detail::quote(path_or_dir) + " has neither " + kModelFile + " nor " + kEmaFile +
                      " (is it a checkpoint folder?)");
    rep.weights_file = hm ? m : e;
    rep.ema_file = he ? e : m;
  } else {
    rep.weights_file = rep.ema_file = path_or_dir;
  }
  const nlohmann::json cfg = net.config_json();
  const auto fixed = fixed_tensors(net);
  const std::vector<T> base = arena.to_host(Role::Param);
  int64_t step = 0;
  std::vector<std::string> z2;
  std::vector<T> w = detail::read_initial<T>(rep.weights_file, arena.layout(), base, cfg, fixed, opt,
                                             rep.zero_initialised, rep.step);
  std::vector<T> e = rep.ema_file == rep.weights_file
                         ? w
                         : detail::read_initial<T>(rep.ema_file, arena.layout(), base, cfg, fixed, opt, z2, step);
  arena.from_host(Role::Param, w);
  arena.from_host(Role::Ema, e);
  return rep;
}

}  // namespace shortcut::io
