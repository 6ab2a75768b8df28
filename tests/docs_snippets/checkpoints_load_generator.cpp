// docs/checkpoints.md, "Sampling from a checkpoint": run by CTest where make_dit_checkpoint wrote
// run/checkpoints/last. The umbrella header is included first: the snippet's own #include sits inside
// main(), where #pragma once makes it empty.
#include <cmath>
#include <shortcut/shortcut.hpp>

int main() {
  // [snippet begin]
  #include <shortcut/shortcut.hpp>
  using Be = shortcut::cpu::Backend<float>;
  Be be;
  auto g = shortcut::load_generator<Be>(be, "run/checkpoints/last");   // EMA weights
  std::vector<float> x = g.sample(/*labels=*/{0, 1, 2}, /*steps=*/4, /*guidance=*/1.5, /*seed=*/0);  // [3, sample]
  // [snippet end]
  if (x.size() != 3 * size_t(g.sample_size()) || g.network() != "dit") return 1;
  for (float v : x)
    if (!std::isfinite(v)) return 1;
  return 0;
}
