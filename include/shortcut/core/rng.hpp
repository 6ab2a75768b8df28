// Counter-based random numbers (Philox-4x32-10). Every draw is a pure function of (seed, stream,
// index), so the CPU and the CUDA backend produce the same numbers for the same seed, whatever the
// order or the thread that asks, and a run resumes exactly from a stored position.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SHORTCUT_HD __host__ __device__ __forceinline__
#else
#define SHORTCUT_HD inline
#endif

namespace shortcut {

struct Philox4 {
  uint32_t v[4];
};

SHORTCUT_HD uint32_t mulhilo32(uint32_t a, uint32_t b, uint32_t* hi) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(p >> 32);
  return static_cast<uint32_t>(p);
}

// Philox-4x32 with 10 rounds (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3").
SHORTCUT_HD Philox4 philox4x32(uint64_t key, uint64_t c_lo, uint64_t c_hi) {
  uint32_t c0 = static_cast<uint32_t>(c_lo), c1 = static_cast<uint32_t>(c_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(c_hi), c3 = static_cast<uint32_t>(c_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int r = 0; r < 10; ++r) {
    uint32_t hi0, hi1;
    uint32_t lo0 = mulhilo32(0xD2511F53u, c0, &hi0);
    uint32_t lo1 = mulhilo32(0xCD9E8D57u, c2, &hi1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// Uniform in (0, 1], 24 bits: never 0, so log() in Box-Muller is finite.
SHORTCUT_HD float u32_to_unit(uint32_t x) { return static_cast<float>((x >> 8) + 1) * (1.0f / 16777216.0f); }

// The i-th standard normal of (seed, stream). Pairs (2j, 2j+1) come from one Box-Muller transform;
// computed in float on both backends so that they agree to float rounding.
SHORTCUT_HD float philox_normal(uint64_t seed, uint64_t stream, uint64_t i) {
  Philox4 r = philox4x32(seed, i >> 1, stream);
  float u1 = u32_to_unit(r.v[0]), u2 = u32_to_unit(r.v[1]);
  float rad = sqrtf(-2.0f * logf(u1));
  float ang = 6.283185307179586f * u2;
  return (i & 1) ? rad * sinf(ang) : rad * cosf(ang);
}

// The i-th uniform in [0, 1) of (seed, stream).
SHORTCUT_HD float philox_uniform(uint64_t seed, uint64_t stream, uint64_t i) {
  Philox4 r = philox4x32(seed, i, stream ^ 0x5bd1e995ull);
  return static_cast<float>(r.v[0] >> 8) * (1.0f / 16777216.0f);
}

// A host-side generator: a seed and a running position. Each call takes a fresh stream, so the
// position is all that a checkpoint needs to resume the exact sequence.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0, uint64_t position = 0) : seed_(seed), pos_(position) {}
  uint64_t seed() const { return seed_; }
  uint64_t position() const { return pos_; }
  void set_position(uint64_t p) { pos_ = p; }
  // A stream id for one bulk draw (e.g. a noise tensor generated on the device).
  uint64_t next_stream() { return pos_++; }
  float uniform() { return philox_uniform(seed_, next_stream(), 0); }
  float normal() { return philox_normal(seed_, next_stream(), 0); }
  // Integer in [0, n).
  int64_t randint(int64_t n) {
    Philox4 r = philox4x32(seed_, 0, next_stream() ^ 0x9e3779b97f4a7c15ull);
    uint64_t x = (static_cast<uint64_t>(r.v[0]) << 32) | r.v[1];
    return static_cast<int64_t>(x % static_cast<uint64_t>(n));
  }

 private:
  uint64_t seed_, pos_;
};

}  // namespace shortcut
