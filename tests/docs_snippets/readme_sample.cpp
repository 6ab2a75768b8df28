// README.md, "Using the library": one-call sampling, from the checkpoint readme_train leaves in the
// same working folder.
#include <cmath>
#include <cstdio>
#include <shortcut/shortcut.hpp>

int main() {
  using Be = shortcut::cpu::Backend<float>;  // as the README's training snippet declares them
  Be be;
  // [snippet begin]
  auto g = shortcut::load_generator<Be>(be, "run/checkpoints/last");
  std::vector<int32_t> labels(1000, 0);  // one row per label (one class: 0 = the null label)
  std::vector<float> x = g.sample(labels, /*steps=*/4, /*guidance=*/1.0, /*seed=*/0);  // [1000, sample]
  // [snippet end]
  if (x.size() != 1000 * size_t(g.sample_size())) return 1;
  for (float v : x)
    if (!std::isfinite(v)) return 1;
  std::printf("%zu values, finite\n", x.size());
  return 0;
}
