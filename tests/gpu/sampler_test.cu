// The ODE sampler end to end on the GPU against the CPU backend: generate() (the library's sampling
// entry point, host noise from (seed, stream)) with 1, 4 and 128 Euler steps, with and without
// classifier-free guidance, on the raw and the EMA weights. The same random weights go to both
// backends; the tolerance is derived from the float CPU backend's own error, as in network_test.cu
// (128 steps compound 128 networks' worth of fp32 rounding, and that is what the allowance tracks).
// What is compared is the displacement x1 - x0 that the network's velocities made, not x1 itself:
// x1 holds the noise x0, which would dilute any error of the velocities in the relative error.
#include "model_runs.hpp"

using namespace shortcut;
using namespace gputest;
using testutil::randn;

TEST_CASE("the ODE sampler on the GPU matches the CPU backend", "[sampler]") {
  nn::DiTConfig c;  // 16 tokens, head dim 32
  c.image = 8; c.channels = 2; c.patch = 2; c.hidden = 64; c.depth = 2; c.heads = 2; c.classes = 3;
  Ref ref;
  cpu::Backend<float> f32;
  nn::DiT<Ref> probe(ref, c);
  // Random Param and a different EMA, scaled so that x moves by O(1) over the trajectory.
  const auto P = randn(probe.layout().total(), 0.05), E = randn(probe.layout().total(), 0.05);
#if defined(SHORTCUT_CUDA_EMULATION)
  // 7 rows in the CPU emulation (128 steps of three backends are its slowest case): still two chunks
  // of 5, the last one partial
  std::vector<int32_t> labels = random_ids(7, c.classes);
#else
  std::vector<int32_t> labels = random_ids(12, c.classes);
#endif
  labels[0] = c.classes;  // the null label too
  const uint64_t seed = testutil::gen()();

#if defined(__SANITIZE_ADDRESS__)
  // under AddressSanitizer (gpu_emulated_asan) the 128-step runs — the 4-step loop 32 times over, a
  // minute of CI — are left to the plain emulated build, which runs them
  const std::vector<int> step_counts{1, 4};
#else
  const std::vector<int> step_counts{1, 4, 128};
#endif
  for (int steps : step_counts) {
    for (double w : {1.0, 1.5}) {
      for (bool ema : {true, false}) {
        if (steps == 128 && !ema) continue;  // the weight choice is covered by the short runs
        const SamplerConfig s{steps, w, ema};
        const std::string what = cat("sampler ", steps, " step(s), guidance ", w, ema ? ", EMA" : ", raw weights");
        const auto want = sample_on(ref, c, P, E, labels, s, seed);
        const auto f = sample_on(f32, c, P, E, labels, s, seed);
        const auto got = sample_on(gpu(), c, P, E, labels, s, seed);
        // the velocities move x by O(1), so the comparison measures them (and not zeros against zeros)
        double moved = 0;
        for (double v : want) moved += v * v;
        REQUIRE(std::sqrt(moved / double(want.size())) > 0.05);
        check_close_to_fp32(what, got, f, want);
      }
    }
  }
}

TEST_CASE("the GPU sampler rejects bad settings like the CPU one", "[sampler][errors]") {
  nn::DiTConfig c;
  c.image = 8; c.channels = 2; c.patch = 2; c.hidden = 64; c.depth = 1; c.heads = 2; c.classes = 3;
  ShortcutModel<nn::DiT<Gpu>> m(gpu(), c, 1);
  const std::vector<int32_t> ok{0, 1}, bad{0, 4};
  CHECK_THROWS_AS(generate(m, SamplingSchedule{}, ok, SamplerConfig{3, 1.0, true}, 1, 0), ConfigError);
  CHECK_THROWS_AS(generate(m, SamplingSchedule{}, bad, SamplerConfig{1, 1.0, true}, 1, 0), ConfigError);
}
