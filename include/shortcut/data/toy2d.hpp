// 2-D toy distributions generated in code, for the demo that trains a shortcut model in seconds.
// Every sample is a pure function of (Rng seed, one stream taken from the Rng, point index), so a
// fixed seed and Rng position give the same points on any machine, and a prefix of a larger draw
// equals a smaller draw from the same position.
//
// Each distribution is scaled to a spread of about 1-2.3 per axis, so that a flow from N(0, I) has
// to move mass a distance comparable to the noise itself, and all of it lies in (or, for the Gaussian
// tails, very near) [-4, 4]^2, the range that the bootstrap targets' intermediate points are clipped to.
//
//   checkerboard  uniform on the 8 filled squares of a 4x4 board of side-2 squares covering [-4, 4]^2.
//                 Square (i, j) = (floor((x + 4) / 2), floor((y + 4) / 2)), i, j in 0..3, is filled
//                 ("black") when i + j is even: the bottom-left square [-4,-2) x [-4,-2) is filled.
//                 This is the FFJORD / flow-matching checkerboard. Std per axis 8 / sqrt(12) = 2.31.
//   8gaussians    a mixture of 8 equally weighted isotropic Gaussians, centres at radius 2 sqrt(2)
//                 and angles 2 pi k / 8 (k = 0..7, centre 0 on the +x axis), std 0.5 / sqrt(2) per axis
//                 (the FFJORD scale 4 / sqrt(2) with std 0.5 / sqrt(2)). Std per axis 2.03.
//   two_moons     theta ~ U[0, pi]; upper moon (cos theta, sin theta), lower moon
//                 (1 - cos theta, 1/2 - sin theta), each with probability 1/2, plus N(0, 0.1^2 I) noise;
//                 then p -> 2 (p - (1/2, 1/4)), which centres the pair. Std 1.74 (x), 1.01 (y).
//   spiral        two interleaved arms: phi = 3 pi sqrt(u), u ~ U(0, 1), arm sign s = +-1 with
//                 probability 1/2, p = s (-phi cos phi, phi sin phi) / 3 + N(0, 0.1^2 I) (FFJORD's
//                 "2spirals" without its uniform jitter). Radius up to pi. Std per axis ~1.6.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "shortcut/core/error.hpp"
#include "shortcut/core/rng.hpp"

namespace shortcut::data {

// The names sample_toy2d accepts, in a fixed order (the demo's flags list them).
inline const std::vector<std::string>& toy2d_names() {
  static const std::vector<std::string> names{"checkerboard", "8gaussians", "two_moons", "spiral"};
  return names;
}

inline bool is_toy2d_name(const std::string& name) {
  for (const auto& n : toy2d_names())
    if (n == name) return true;
  return false;
}

// Whether (x, y) lies on a filled ("black") square of the checkerboard defined above. Points outside
// [-4, 4)^2 are off the board; the upper edges x = 4 and y = 4 belong to no square (a measure-zero
// set), which keeps the square index inside 0..3.
inline bool on_board(double x, double y) {
  if (!(x >= -4.0 && x < 4.0 && y >= -4.0 && y < 4.0)) return false;  // also rejects NaN
  int i = static_cast<int>(std::floor((x + 4.0) / 2.0)), j = static_cast<int>(std::floor((y + 4.0) / 2.0));
  return ((i + j) & 1) == 0;
}

namespace detail {

// Per-point draws: point i uses uniforms 4i..4i+3 and normals 2i, 2i+1 of one stream, so every
// point is independent of n and of the other points.
struct Toy2dDraw {
  uint64_t seed, stream;
  float u(int64_t i, int k) const { return philox_uniform(seed, stream, 4 * static_cast<uint64_t>(i) + k); }
  float z(int64_t i, int k) const { return philox_normal(seed, stream, 2 * static_cast<uint64_t>(i) + k); }
};

inline std::array<float, 2> toy2d_point(int which, const Toy2dDraw& r, int64_t i) {
  constexpr double kPi = 3.14159265358979323846;
  switch (which) {
    case 0: {  // checkerboard: one of 8 filled squares uniformly, then uniform inside it
      int sq = std::min(7, static_cast<int>(r.u(i, 0) * 8.0f));
      int col = sq >> 1;                      // i in 0..3
      int row = 2 * (sq & 1) + (col & 1);     // j in 0..3 with i + j even
      double x = -4.0 + 2.0 * col + 2.0 * r.u(i, 1);
      double y = -4.0 + 2.0 * row + 2.0 * r.u(i, 2);
      return {static_cast<float>(x), static_cast<float>(y)};
    }
    case 1: {  // 8gaussians
      int k = std::min(7, static_cast<int>(r.u(i, 0) * 8.0f));
      double a = 2.0 * kPi * k / 8.0, rad = 2.0 * std::sqrt(2.0), sd = 0.5 / std::sqrt(2.0);
      return {static_cast<float>(rad * std::cos(a) + sd * r.z(i, 0)),
              static_cast<float>(rad * std::sin(a) + sd * r.z(i, 1))};
    }
    case 2: {  // two_moons
      double th = kPi * r.u(i, 0);
      bool lower = r.u(i, 1) < 0.5f;
      double x = lower ? 1.0 - std::cos(th) : std::cos(th);
      double y = lower ? 0.5 - std::sin(th) : std::sin(th);
      x += 0.1 * r.z(i, 0);
      y += 0.1 * r.z(i, 1);
      return {static_cast<float>(2.0 * (x - 0.5)), static_cast<float>(2.0 * (y - 0.25))};
    }
    default: {  // spiral
      double phi = 3.0 * kPi * std::sqrt(static_cast<double>(r.u(i, 0)));
      double s = r.u(i, 1) < 0.5f ? 1.0 : -1.0;
      return {static_cast<float>(s * (-phi * std::cos(phi)) / 3.0 + 0.1 * r.z(i, 0)),
              static_cast<float>(s * (phi * std::sin(phi)) / 3.0 + 0.1 * r.z(i, 1))};
    }
  }
}

inline int toy2d_index(const std::string& name) {
  const auto& names = toy2d_names();
  for (size_t k = 0; k < names.size(); ++k)
    if (names[k] == name) return static_cast<int>(k);
  std::string valid;
  for (size_t k = 0; k < names.size(); ++k) valid += (k ? ", " : "") + names[k];
  throw ConfigError(cat("unknown toy distribution '", name, "'; valid names: ", valid));
}

}  // namespace detail

// n points [n, 2] (row-major) of the named distribution. Takes one stream from rng (advances its
// position by 1), so consecutive calls give fresh points and a stored position replays them.
inline std::vector<float> sample_toy2d(const std::string& name, int64_t n, Rng& rng) {
  int which = detail::toy2d_index(name);
  if (n < 0) throw ConfigError(cat("sample_toy2d: negative point count ", n));
  detail::Toy2dDraw r{rng.seed(), rng.next_stream()};
  std::vector<float> out(static_cast<size_t>(2 * n));
  for (int64_t i = 0; i < n; ++i) {
    auto p = detail::toy2d_point(which, r, i);
    out[2 * i] = p[0];
    out[2 * i + 1] = p[1];
  }
  return out;
}

}  // namespace shortcut::data
