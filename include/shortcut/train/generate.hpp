// Generating many samples in chunks: the noise of sample i is a function of (seed, stream, i) alone,
// so the images do not depend on the chunk size or the backend, and a grid can be regenerated.
#pragma once
#include <algorithm>
#include <vector>

#include "shortcut/core/progress.hpp"
#include "shortcut/train/ode_sampler.hpp"

namespace shortcut {

// The noise x0 for samples [first, first + count): [count, n] on the host.
template <class T>
std::vector<T> sample_noise(int64_t n, int64_t first, int64_t count, uint64_t seed, uint64_t stream) {
  std::vector<T> x(size_t(count * n));
  for (int64_t i = 0; i < count * n; ++i) x[size_t(i)] = T(philox_normal(seed, stream, uint64_t(first * n + i)));
  return x;
}

// Samples one image per label (host labels) with `sampler` (any Sampler: OdeSampler, or a user's)
// and its settings; returns [N, sample] on the host.
// noise (optional): [N, sample] host noise to start from instead of (seed, stream).
template <SamplingModel Model, Sampler<Model> S>
std::vector<typename Model::T> generate(Model& m, S& sampler, const std::vector<int32_t>& labels,
                                        const SamplerConfig& s, uint64_t seed, uint64_t stream, int chunk = 256,
                                        const std::vector<typename Model::T>* noise = nullptr,
                                        ProgressBar* bar = nullptr) {
  using T = typename Model::T;
  using Be = typename Model::Backend;
  Be& be = m.backend();
  const int64_t n = m.sample_size(), N = int64_t(labels.size());
  if (chunk < 1) throw ConfigError(cat("generate: the chunk must hold at least one sample, got ", chunk));
  if (noise && int64_t(noise->size()) != N * n)
    throw ShapeError(cat("generate: noise has ", noise->size(), " values, expected ", N * n));
  check_labels(labels.data(), labels.size(), m.num_classes());
  sampler.check(s);
  std::vector<T> out(size_t(N * n));
  typename Be::template Buffer<T> dx;
  typename Be::template Buffer<int32_t> dy;
  for (int64_t first = 0; first < N; first += chunk) {
    const int64_t c = std::min<int64_t>(chunk, N - first);
    std::vector<T> x0 = noise ? std::vector<T>(noise->begin() + first * n, noise->begin() + (first + c) * n)
                              : sample_noise<T>(n, first, c, seed, stream);
    nn::ensure(dx, x0.size());
    nn::ensure(dy, size_t(c));
    be.to_device(dx.data(), x0.data(), x0.size());
    be.to_device(dy.data(), labels.data() + first, size_t(c));
    sampler.sample(m, dx, dy, s);
    be.to_host(out.data() + first * n, dx.data(), x0.size());
    if (bar) bar->update(first + c);
  }
  return out;
}

// The same with the library's Euler sampler for a model with the sampling schedule `schedule`.
template <SamplingModel Model>
std::vector<typename Model::T> generate(Model& m, const SamplingSchedule& schedule, const std::vector<int32_t>& labels,
                                        const SamplerConfig& s, uint64_t seed, uint64_t stream, int chunk = 256,
                                        const std::vector<typename Model::T>* noise = nullptr,
                                        ProgressBar* bar = nullptr) {
  OdeSampler<Model> sampler(schedule);
  return generate(m, sampler, labels, s, seed, stream, chunk, noise, bar);
}

}  // namespace shortcut
