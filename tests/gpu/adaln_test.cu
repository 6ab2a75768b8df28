// LayerNorm + adaLN modulation and the gated residual, forward and backward, against the double CPU
// backend. Shapes cover one token per sample (the MLP network), odd token counts and widths under,
// at and over a warp, and modulation rows wider than the vectors read (the DiT's 6D and 2D).
#include "op_cases.hpp"

using namespace gputest;

TEST_CASE("LayerNorm + modulate forward/backward match the CPU backend", "[adaln]") {
  for (AdaShape s : {AdaShape{1, 1, 5, 2}, AdaShape{3, 7, 33, 6}, AdaShape{2, 49, 64, 6}, AdaShape{2, 197, 384, 6},
                     AdaShape{1024, 1, 256, 3}, AdaShape{1, 300, 72, 2}})
    check_ln_modulate("ln_modulate", s, backend_ln_modulate);
}

TEST_CASE("gated residual forward/backward match the CPU backend", "[adaln]") {
  for (AdaShape s : {AdaShape{1, 1, 5, 2}, AdaShape{3, 7, 33, 6}, AdaShape{2, 197, 384, 6}, AdaShape{1024, 1, 256, 3}})
    check_gated_residual("gated_residual", s, backend_gated_residual);
}
