// OdeSampler: Euler integration of the shortcut model from noise (t = 0) to data (t = 1) in N steps,
// N a power of two up to M, every step queried with k = log2 N, or d = 1/N for a network whose step
// input is d (DESIGN.md §3, §8); classifier-free
// guidance; the seed's noise interpolation x0(n) = n xa + sqrt(1 - n^2) xb.
//
// Samplers are an extension point: anything that satisfies Sampler<S, Model> (below) plugs into
// generate() and Generator::sample_with; OdeSampler is the library's one, and tests/sampler_extension_test.cpp
// holds a user's second-order integrator in a few dozen lines.
#pragma once
#include <cmath>
#include <concepts>
#include <vector>

#include "shortcut/core/capture.hpp"
#include "shortcut/core/rng.hpp"
#include "shortcut/core/span.hpp"
#include "shortcut/train/sampling_schedule.hpp"
#include "shortcut/train/shortcut_model.hpp"

namespace shortcut {

struct SamplerConfig {
  int steps = 1;
  double guidance = 1.0;   // w: v(null) + w (v(y) - v(null)); 1 means no guidance
  bool use_ema = true;
};

// What generate() asks of a sampler: built from the model's SamplingSchedule (which fixes the step
// input of N steps), it refuses settings it cannot honour in check() (ConfigError), and sample()
// carries x (device [B, sample]: the noise on entry, the sample on return) with the device labels y
// [B] (y.size() = B) to the data, querying only m.velocity.
template <class S, class Model>
concept Sampler = SamplingModel<Model> && std::constructible_from<S, const SamplingSchedule&> &&
    requires(S& s, const S& cs, Model& m, DeviceSpan<typename Model::T, typename Model::Backend> x,
             DeviceSpan<const int32_t, typename Model::Backend> y, const SamplerConfig& c) {
      cs.check(c);
      s.sample(m, x, y, c);
    };

// Model: any SamplingModel (InferenceModel or ShortcutModel).
template <SamplingModel Model>
class OdeSampler {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;
  using Buf = typename Backend::template Buffer<T>;

  // The schedule tells the step input of N steps (SamplingSchedule::step_input_for) and the largest N.
  explicit OdeSampler(const SamplingSchedule& schedule) : schedule_(schedule) {}
  const SamplingSchedule& schedule() const { return schedule_; }

  void check(const SamplerConfig& s) const {
    const int M = schedule_.denoise_timesteps;
    if (!is_power_of_two(s.steps) || s.steps > M)
      throw ConfigError(cat("sampling steps must be a power of two in [1, ", M, "], got ", s.steps));
    if (!std::isfinite(s.guidance)) throw ConfigError("guidance scale must be finite");
  }

  // x: device [B, sample]; on entry the noise x0, on return the sample. y: device labels [B], checked.
  void sample(Model& m, DeviceSpan<T, Backend> x, DeviceSpan<const int32_t, Backend> y, const SamplerConfig& s) {
    check(s);
    Backend& be = m.backend();
    const int B = int(y.size());
    const size_t n = size_t(B) * size_t(m.sample_size());
    check_size("sampler input x", x.size(), n);
    check_labels(be, y, m.num_classes());
    nn::ensure(v_, n);
    nn::ensure(k_, size_t(B)); nn::ensure(t_, size_t(B));
    // the loop only queues device work (t and k filled on the device), so a backend may record it
    // and launch it as one (core/capture.hpp)
    run_captured(be, [&] {
      be.fill(k_.data(), T(schedule_.step_input_for(s.steps)), size_t(B));
      for (int i = 0; i < s.steps; ++i) {
        be.fill(t_.data(), T(double(i) / s.steps), size_t(B));
        m.velocity(v_.data(), x.data(), t_.data(), k_.data(), y.data(), B, T(s.guidance),
                   s.use_ema ? Role::Ema : Role::Param);
        be.axpy(x.data(), T(1.0 / s.steps), v_.data(), n);
      }
    });
  }

  // Draws x0 ~ N(0, I) for B samples into x from (seed, stream).
  static void noise(Backend& be, T* x, size_t n, uint64_t seed, uint64_t stream) { be.normal(x, n, seed, stream); }

  // x0(alpha) = alpha xa + sqrt(1 - alpha^2) xb, written into x.
  static void interpolate_noise(Backend& be, T* x, const T* xa, const T* xb, double alpha, size_t n) {
    if (!(alpha >= 0 && alpha <= 1)) throw ConfigError(cat("noise interpolation weight must lie in [0, 1], got ", alpha));
    be.fill(x, T(0), n);
    be.axpy(x, T(alpha), xa, n);
    be.axpy(x, T(std::sqrt(1 - alpha * alpha)), xb, n);
  }

 private:
  SamplingSchedule schedule_;
  Buf v_, k_, t_;
};

}  // namespace shortcut
