// A fully connected layer y = x W^T + b with weight [out, in] (the PyTorch layout), registered by
// name in the model's ParamLayout. Holds offsets, not memory: the same layer runs on the raw, the EMA
// or any other weight set of the arena.
#pragma once
#include <string>

#include "shortcut/core/concepts.hpp"
#include "shortcut/core/param_layout.hpp"

namespace shortcut::nn {

struct Linear {
  int in = 0, out = 0;
  size_t w = 0, b = 0;
  bool has_bias = true;

  Linear() = default;
  Linear(ParamLayout& L, const std::string& name, int in_, int out_, Init winit = Init::XavierUniform,
         bool bias = true, std::vector<int64_t> wshape = {})
      : in(in_), out(out_), has_bias(bias) {
    if (wshape.empty()) wshape = {out, in};
    w = L.add(name + ".weight", wshape, winit, in, out);
    if (bias) b = L.add(name + ".bias", {out}, Init::Zero);
  }
  // y[N,out] = x[N,in] W^T + b
  template <class Be, class T>
    requires BackendLinearOps<Be, T>
  void forward(const Be& be, const T* P, T* y, const T* x, int N) const {
    be.linear_forward(y, x, P + w, has_bias ? P + b : nullptr, N, in, out);
  }
  // The tangent of forward: y_dot[N,out] = x_dot W^T (the bias is constant)
  template <class Be, class T>
    requires BackendLinearOps<Be, T>
  void tangent(const Be& be, const T* P, T* y_dot, const T* x_dot, int N) const {
    be.linear_forward(y_dot, x_dot, P + w, static_cast<const T*>(nullptr), N, in, out);
  }
  // dx[N,in] (= or +=, null skips); dW, db += into the gradient arena G
  template <class Be, class T>
    requires BackendLinearOps<Be, T>
  void backward(const Be& be, const T* P, T* G, T* dx, const T* dy, const T* x, int N, bool accumulate = false) const {
    be.linear_backward(dx, G + w, has_bias ? G + b : nullptr, dy, x, P + w, N, in, out, accumulate);
  }
  // The layer followed by GELU: a[N,out] = x W^T + b (kept for backward_gelu_input), g = GELU(a)
  template <class Be, class T>
    requires BackendLinearOps<Be, T>
  void forward_gelu(const Be& be, const T* P, T* g, T* a, const T* x, int N) const {
    be.linear_gelu_forward(g, a, x, P + w, has_bias ? P + b : nullptr, N, in, out);
  }
  // The backward of a layer whose input x = GELU(a): da[N,in] (written); dW, db += into G
  template <class Be, class T>
    requires BackendLinearOps<Be, T>
  void backward_gelu_input(const Be& be, const T* P, T* G, T* da, const T* dy, const T* x, const T* a, int N) const {
    be.gelu_linear_backward(da, G + w, has_bias ? G + b : nullptr, dy, x, a, P + w, N, in, out);
  }
};

// Resizes a backend buffer when the element count changed (activations are sized by the batch).
template <class Buf>
void ensure(Buf& b, size_t n) {
  if (b.size() != n) b.resize(n);
}

}  // namespace shortcut::nn
