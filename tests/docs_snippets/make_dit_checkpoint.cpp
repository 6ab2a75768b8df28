// Not a snippet: writes the checkpoint the docs/checkpoints.md snippets read, run/checkpoints/last in
// the working folder, from two Trainer steps of a tiny DiT (8x8 images, 3 classes, so that the
// snippet's labels {0, 1, 2} are valid) on noise images. Seconds on a CPU.
#include <shortcut/shortcut.hpp>

int main() {
  using Be = shortcut::cpu::Backend<float>;
  Be be;
  shortcut::ShortcutModel<shortcut::nn::DiT<Be>> model(be, shortcut::nn::DiTConfig::preset("tiny", 8, 1, 3), 1);
  shortcut::Trainer<decltype(model)> trainer(
      model, shortcut::ShortcutConfig{}, shortcut::AdamWConfig{},
      shortcut::TrainerConfig{.steps = 2, .batch = 32, .out_dir = "run", .progress = false});
  trainer.run([](shortcut::Rng& rng, int B, std::vector<float>& x, std::vector<int32_t>& y) {
    x = shortcut::sample_noise<float>(64, 0, B, rng.seed(), rng.next_stream());
    y.resize(size_t(B));
    for (int i = 0; i < B; ++i) y[size_t(i)] = i % 3;
  });
  return 0;
}
