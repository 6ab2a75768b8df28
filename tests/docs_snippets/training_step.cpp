// docs/training.md "One step: TrainingStep": the Trainer's step driven by hand. Run by CTest; exit 0
// when ten steps lowered the loss and counted ten optimizer steps.
#include <shortcut/shortcut.hpp>

int main() {
  using Be = shortcut::cpu::Backend<float>;
  using Model = shortcut::ShortcutModel<shortcut::nn::MlpNet<Be>>;
  Be be;
  Model model(be, shortcut::nn::MlpNetConfig{.hidden = 32, .classes = 2}, /*seed=*/0);
  shortcut::SelfConsistencyLoss<Model> loss(shortcut::ShortcutConfig{});
  shortcut::AdamW opt(shortcut::AdamWConfig{.lr = 3e-3});
  const shortcut::EmaTracker ema(0.99);
  shortcut::Rng rng(1);
  const int B = 64;
  double first = 0, last = 0;
  // [snippet begin]
  shortcut::TrainingStep<Model, shortcut::SelfConsistencyLoss<Model>> step;  // keep it: it holds the device copy of the rows
  for (int i = 0; i < 10; ++i) {
    const std::vector<float> x1 = shortcut::data::sample_toy2d("8gaussians", B, rng);
    const std::vector<int32_t> labels(size_t(B), 1);
    shortcut::LossResult r = step.take(model, loss, opt, ema, shortcut::HostSpan<const float>(x1), labels,
                                       shortcut::BatchSlice::all(B), rng);  // or rows in device memory
    (i == 0 ? first : last) = r.loss;
  }
  // [snippet end]
  std::printf("loss %.4f -> %.4f after %lld steps\n", first, last, (long long)opt.step_count());
  return last < first && opt.step_count() == 10 ? 0 : 1;
}
