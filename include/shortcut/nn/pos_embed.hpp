// The fixed 2-D sin-cos position embedding of DESIGN.md §4 (as the PyTorch DiT's pos_embed).
#pragma once
#include <cmath>
#include <vector>

namespace shortcut::nn {

// [G*G, D]; token index r*G + c. w_j = 10000^(-j/(D/4)), j < D/4:
// [sin(c w) | cos(c w) | sin(r w) | cos(r w)]
template <class T>
std::vector<T> sincos_pos_embed(int G, int D) {
  const int q = D / 4;
  std::vector<T> pos(size_t(G) * G * D);
  for (int r = 0; r < G; ++r)
    for (int c = 0; c < G; ++c) {
      T* p = pos.data() + (size_t(r) * G + c) * D;
      for (int j = 0; j < q; ++j) {
        double w = std::pow(10000.0, -double(j) / q);
        p[j] = T(std::sin(c * w));
        p[q + j] = T(std::cos(c * w));
        p[2 * q + j] = T(std::sin(r * w));
        p[3 * q + j] = T(std::cos(r * w));
      }
    }
  return pos;
}

}  // namespace shortcut::nn
