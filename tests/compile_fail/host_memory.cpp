// Compile-fail test of the typed data boundary (core/span.hpp): host memory handed to an entry point
// that wants device memory must not compile, on the CPU backend too (where it would run, and then
// crash once the same code is built for CUDA). As is, the samples are uploaded first and this
// compiles; with CF_BROKEN the host vector goes straight to OdeSampler::sample and the build must
// stop with the boundary's message (checked by check_compile.cmake).
#include <vector>

#include "shortcut/cpu/backend.hpp"
#include "shortcut/nn/mlp_net.hpp"
#include "shortcut/train/ode_sampler.hpp"

using Be = shortcut::cpu::Backend<float>;
using Model = shortcut::ShortcutModel<shortcut::nn::MlpNet<Be>>;

void sample_from_host_noise(Be& be, Model& m, std::vector<float>& noise) {
  const auto labels = shortcut::upload(be, std::vector<int32_t>(noise.size() / 2, 0));
  shortcut::OdeSampler<Model> sampler(shortcut::SamplingSchedule{});
#ifdef CF_BROKEN
  sampler.sample(m, noise, labels, {1, 1.0, true});
#else
  auto x = shortcut::upload(be, noise);
  sampler.sample(m, x, labels, {1, 1.0, true});
  noise = shortcut::download(be, x);
#endif
}
