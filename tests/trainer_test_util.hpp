// What the tests that drive a Trainer on a small MLP share (trainer_open_test.cpp, optimizer_test.cpp):
// the network, a quiet short run, a fast AdamW, a scratch folder, and random 2-D rows with 3 labels;
// and the editing of a checkpoint's metadata (generator_test.cpp too).
#pragma once
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "shortcut/shortcut.hpp"
#include "test_util.hpp"

namespace trainer_test {

using Model = shortcut::ShortcutModel<shortcut::nn::MlpNet<shortcut::cpu::Backend<float>>>;
using Rows = shortcut::Trainer<Model>::RowsFn;

inline shortcut::nn::MlpNetConfig small_net() {
  shortcut::nn::MlpNetConfig c;
  c.hidden = 8; c.depth = 1; c.classes = 3;
  return c;
}
inline shortcut::TrainerConfig quiet(int64_t steps, uint64_t seed = 1) {
  shortcut::TrainerConfig tc;
  tc.batch = 32; tc.steps = steps; tc.seed = seed; tc.progress = false; tc.ema_tau = 0.9;
  return tc;
}
inline shortcut::AdamWConfig fast() {
  shortcut::AdamWConfig oc;
  oc.lr = 3e-3; oc.warmup_steps = 2;
  return oc;
}
// An empty folder `name` in the test process's scratch folder `tag`.
inline std::filesystem::path temp_dir(const std::string& tag, const std::string& name) {
  std::filesystem::path d = testutil::scratch_dir(tag) / name;
  std::filesystem::remove_all(d);
  return d;
}
inline void toy_rows(shortcut::Rng& rng, const shortcut::BatchSlice& s, std::vector<float>& x,
                     std::vector<int32_t>& y) {
  x.resize(size_t(s.rows()) * 2);
  y.resize(size_t(s.rows()));
  for (auto& v : x) v = rng.normal();
  for (auto& l : y) l = int32_t(rng.randint(3));
}

// Rewrites a safetensors file with the same tensors and edited metadata.
inline void edit_metadata(const std::filesystem::path& p,
                          const std::function<void(std::map<std::string, std::string>&)>& edit) {
  shortcut::io::SafetensorsReader r(p);
  std::map<std::string, std::string> meta = r.metadata();
  edit(meta);
  shortcut::io::SafetensorsWriter w;
  std::vector<std::vector<float>> keep;
  for (auto& t : r.tensors()) {
    keep.push_back(r.read<float>(t.name));
    w.add(t.name, t.shape, keep.back().data());
  }
  for (auto& [k, v] : meta) w.add_metadata(k, v);
  w.write(p);
}
// The same edit on every file of a checkpoint folder.
inline void edit_folder(const std::filesystem::path& dir,
                        const std::function<void(std::map<std::string, std::string>&)>& edit) {
  namespace io = shortcut::io;
  for (const char* f : {io::kEmaFile, io::kModelFile, io::kOptimizerFile}) edit_metadata(dir / f, edit);
}

}  // namespace trainer_test
