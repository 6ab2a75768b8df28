// OdeSampler: Euler integration of the shortcut model from noise (t = 0) to data (t = 1) in N steps,
// N a power of two up to M, every step queried with k = log2 N (DESIGN.md §3); classifier-free
// guidance; the seed's noise interpolation x0(n) = n xa + sqrt(1 - n^2) xb.
#pragma once
#include <cmath>
#include <vector>

#include "shortcut/core/rng.hpp"
#include "shortcut/train/shortcut_config.hpp"
#include "shortcut/train/shortcut_model.hpp"

namespace shortcut {

struct SamplerConfig {
  int steps = 1;
  double guidance = 1.0;   // w: v(null) + w (v(y) - v(null)); 1 means no guidance
  bool use_ema = true;
};

// Model: any SamplingModel (InferenceModel or ShortcutModel).
template <SamplingModel Model>
class OdeSampler {
 public:
  using Backend = typename Model::Backend;
  using T = typename Model::T;
  using Buf = typename Backend::template Buffer<T>;

  // `train` tells the step-index convention: flow matching models are always queried with k = L.
  explicit OdeSampler(const ShortcutConfig& train) : train_(train) {}

  void check(const SamplerConfig& s) const {
    const int M = train_.denoise_timesteps;
    if (!is_power_of_two(s.steps) || s.steps > M)
      throw ConfigError(cat("sampling steps must be a power of two in [1, ", M, "], got ", s.steps));
    if (!std::isfinite(s.guidance)) throw ConfigError("guidance scale must be finite");
  }

  // x: device [B, n]; on entry the noise x0, on return the sample. y: device labels [B].
  void sample(Model& m, T* x, const int32_t* y, int B, const SamplerConfig& s) {
    check(s);
    Backend& be = m.backend();
    const size_t n = size_t(B) * m.sample_size();
    const int k = train_.objective == Objective::FlowMatching ? train_.levels() : ilog2(s.steps);
    nn::ensure(v_, n);
    std::vector<T> kv(B, T(k)), tv(B);
    nn::ensure(k_, size_t(B)); nn::ensure(t_, size_t(B));
    be.to_device(k_.data(), kv.data(), size_t(B));
    for (int i = 0; i < s.steps; ++i) {
      std::fill(tv.begin(), tv.end(), T(double(i) / s.steps));
      be.to_device(t_.data(), tv.data(), size_t(B));
      m.velocity(v_.data(), x, t_.data(), k_.data(), y, B, T(s.guidance), s.use_ema ? Role::Ema : Role::Param);
      be.axpy(x, T(1.0 / s.steps), v_.data(), n);
    }
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
  ShortcutConfig train_;
  Buf v_, k_, t_;
};

}  // namespace shortcut
