// Fused attention, forward (out and the saved lse) and backward (dq, dk, dv), against the double CPU
// backend, for every compiled head dim, sequence lengths from 1 to past several tiles (odd ones
// included, so that the last tile is partial), both logit scales of the DiT config, and inputs
// large enough to make the softmax peaked (the online max rescaling then matters).
#include "op_cases.hpp"

using namespace gputest;

// Every head dim, sequences within one tile and a few tiles long (small enough for racecheck).
TEST_CASE("attention forward/backward match the CPU backend", "[attention]") {
  for (AttnShape s : {AttnShape{1, 1, 1, 32}, AttnShape{2, 7, 2, 64}, AttnShape{2, 49, 3, 32}, AttnShape{3, 65, 2, 32},
                      AttnShape{1, 33, 1, 72}, AttnShape{2, 64, 2, 128}})
    check_attention("attention", s, backend_attention);
}

// Longer sequences: DiT-S/2 on 32x32 latents (T = 256, 6 heads), T = 197 with a partial last tile.
TEST_CASE("attention forward/backward match the CPU backend on longer sequences", "[attention][large]") {
  for (AttnShape s : {AttnShape{1, 197, 2, 64}, AttnShape{1, 197, 1, 72}, AttnShape{1, 130, 1, 128},
                      AttnShape{1, 256, 6, 64}})
    check_attention("attention", s, backend_attention);
}
