// The derivative of sinusoidal features. The features of a scalar a are [cos(a f_j) | sin(a f_j)]
// (backend timestep_embedding, f_j = 10000^(-j / (F/2))); their derivative in a is
// [-f_j sin(a f_j) | f_j cos(a f_j)]: the features themselves times a constant F x F matrix. Both the
// MLP network's input gradient through its Fourier features and every tangent through a sinusoidal
// embedding (t, d, the Fourier features) are that product, so it is written once here.
#pragma once
#include <cmath>
#include <vector>

#include "shortcut/core/concepts.hpp"

namespace shortcut::nn {

// W [F, F] with features W^T = d features / da, laid out as a linear layer's weight (out, in).
template <class T>
std::vector<T> sinusoid_derivative_weight(int F) {
  const int half = F / 2;
  std::vector<T> w(size_t(F) * F, T(0));
  for (int j = 0; j < half; ++j) {
    const T f = T(std::exp(-std::log(10000.0) * double(j) / double(half)));
    w[size_t(j) * F + half + j] = -f;  // d cos(a f) / da = -f sin(a f)
    w[size_t(half + j) * F + j] = f;   // d sin(a f) / da = f cos(a f)
  }
  return w;
}

// The tangent of sinusoidal features: feat_dot[N, F] = (d feat / da) a_dot[N]. Holds the device copy
// of the derivative matrix, made at the first use.
template <ComputeBackend Be>
struct SinusoidTangent {
  using T = typename Be::Scalar;
  typename Be::template Buffer<T> w;

  void apply(const Be& be, T* feat_dot, const T* feat, const T* a_dot, int N, int F)
    requires ForwardModeBackend<Be>
  {
    if (w.size() != size_t(F) * F) {
      const auto host = sinusoid_derivative_weight<T>(F);
      w.resize(host.size());
      be.to_device(w.data(), host.data(), host.size());
    }
    be.linear_forward(feat_dot, feat, w.data(), static_cast<const T*>(nullptr), N, F, F);
    be.scale_rows(feat_dot, a_dot, N, F);
  }
};

}  // namespace shortcut::nn
