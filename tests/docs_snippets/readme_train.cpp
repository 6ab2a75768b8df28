// README.md, "Using the library": the training snippet. Run by CTest in its own folder, where it
// leaves run/checkpoints/last for readme_sample.
// The umbrella header is included here as well, because the snippet's own #include sits inside
// main(), where #pragma once makes it empty.
#include <shortcut/shortcut.hpp>

int main() {
  // [snippet begin]
  #include <shortcut/shortcut.hpp>
  using Be = shortcut::cpu::Backend<float>;
  Be be;
  shortcut::ShortcutModel<shortcut::nn::MlpNet<Be>> model(be, shortcut::nn::MlpNetConfig{.hidden = 64}, /*seed=*/0);
  shortcut::Trainer<decltype(model)> trainer(model, shortcut::ShortcutConfig{}, shortcut::AdamWConfig{.lr = 1e-3},
                                            shortcut::TrainerConfig{.steps = 200, .batch = 64, .out_dir = "run"});
  trainer.run([](shortcut::Rng& rng, int B, std::vector<float>& x, std::vector<int32_t>& y) {
    x = shortcut::data::sample_toy2d("checkerboard", B, rng);  // [B, sample]: draw from rng only (exact resume)
    y.assign(B, 0);  // labels in [0, classes); with one class any label means the null label
  });  // writes run/metrics.jsonl and run/checkpoints/last
  // [snippet end]
  return trainer.step() == 200 ? 0 : 1;
}
