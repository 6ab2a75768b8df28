// Builds against the installed headers and runs one DiT forward and one training step.
#include <shortcut/shortcut.hpp>
#include <cstdio>

int main() {
  using Be = shortcut::cpu::Backend<float>;
  Be be;
  auto cfg = shortcut::nn::DiTConfig::preset("tiny", 8, 1, 3);
  shortcut::ShortcutModel<shortcut::nn::DiT<Be>> model(be, cfg, 1);
  std::vector<float> x(28 * 64, 0.5f);
  std::vector<int32_t> y(28, 1);
  shortcut::SelfConsistencyLoss<decltype(model)> loss(shortcut::ShortcutConfig{});
  shortcut::Rng rng(3);
  model.arena().zero_grad();
  auto r = loss.step(model, shortcut::upload(be, x), y, rng);
  std::printf("consumer ok: %zu parameters, loss %.4f\n", model.net().layout().count(), r.loss);
  return r.loss > 0 ? 0 : 1;
}
