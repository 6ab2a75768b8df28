// Compiled by the no-stb tests (tests/CMakeLists.txt) with tests/no_stb/poison first on the include
// path, where stb/stb_image_write.h is an #error: the umbrella header and the one-call sampler must
// compile without stb (target shortcut::shortcut), and with WITH_PNG the PNG header must not (which
// shows that the poison works: the pair fails if either side is wrong). The function below is
// README's library section, so its snippets are compiled too.
#include <shortcut/shortcut.hpp>
#ifdef WITH_PNG
#include <shortcut/io/png.hpp>
#endif

// README's "Using the library" snippets, which therefore compile (instantiated, never run).
void readme_snippets() {
  using Be = shortcut::cpu::Backend<float>;
  Be be;
  shortcut::ShortcutModel<shortcut::nn::DiT<Be>> model(be, shortcut::nn::DiTConfig::preset("small"), /*seed=*/0);
  shortcut::Trainer<decltype(model)> trainer(model, shortcut::ShortcutConfig{}, shortcut::AdamWConfig{},
                                            shortcut::TrainerConfig{.out_dir = "run"});
  trainer.run([&](shortcut::Rng& rng, int B, std::vector<float>& x, std::vector<int32_t>& y) { /* fill a batch */ });

  auto g = shortcut::load_generator<Be>(be, "run/checkpoints/last");
  std::vector<float> x = g.sample(/*labels=*/{0, 1, 2}, /*steps=*/4, /*guidance=*/1.5, /*seed=*/0);  // [3, sample]
  (void)x;
}
