// __nv_bfloat16 of the emulation: 16 bits (the top half of an fp32), conversions from fp32 round to
// nearest even as the device's __float2bfloat16 does; NaN stays NaN.
#pragma once
#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  uint16_t bits;
  __nv_bfloat16() = default;
  explicit __nv_bfloat16(float f);
  explicit operator float() const;
};

inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t u = uint32_t(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  __nv_bfloat16 h;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    h.bits = uint16_t((u >> 16) | 0x40);  // a quiet NaN
  } else {
    u += 0x7fffu + ((u >> 16) & 1u);     // round to nearest, ties to even
    h.bits = uint16_t(u >> 16);
  }
  return h;
}
inline __nv_bfloat16::__nv_bfloat16(float f) : bits(__float2bfloat16(f).bits) {}
inline __nv_bfloat16::operator float() const { return __bfloat162float(*this); }
