// The two residual halves of a DiT block, each "x_out = x_in + gate * f(LN(x_in) * (1 + scale) + shift)":
// AttentionBranch with f = proj(attention(qkv(.))) and MlpBranch with f = fc2(GELU(fc1(.))). The MLP
// network for low-dimensional data reuses MlpBranch. shift/scale/gate are rows of the block's adaLN
// modulation output (stride mod_stride per sample); their gradients accumulate into dmod.
#pragma once
#include "shortcut/core/concepts.hpp"
#include "shortcut/nn/linear.hpp"

namespace shortcut::nn {

template <ComputeBackend Be>
struct MlpBranch {
  using T = typename Be::Scalar;
  using Buf = typename Be::template Buffer<T>;
  Linear fc1, fc2;
  struct Ctx {
    Buf mean, rstd, h, a, g, o, dh, da;
  };
  MlpBranch() = default;
  MlpBranch(ParamLayout& L, const std::string& name, int D, int hidden)
      : fc1(L, name + ".fc1", D, hidden), fc2(L, name + ".fc2", hidden, D) {}

  void forward(const Be& be, const T* P, Ctx& c, const T* x_in, T* x_out, const T* mod, int mod_stride, int B, int Tn,
               T eps) const {
    const int D = fc1.in, N = B * Tn;
    ensure(c.mean, N); ensure(c.rstd, N); ensure(c.h, size_t(N) * D);
    ensure(c.a, size_t(N) * fc1.out); ensure(c.g, size_t(N) * fc1.out); ensure(c.o, size_t(N) * D);
    be.ln_modulate_forward(c.h.data(), c.mean.data(), c.rstd.data(), x_in, mod, mod + D, mod_stride, B, Tn, D, eps);
    fc1.forward_gelu(be, P, c.g.data(), c.a.data(), c.h.data(), N);
    fc2.forward(be, P, c.o.data(), c.g.data(), N);
    if (x_out != x_in) be.copy(x_out, x_in, size_t(N) * D);
    be.gated_residual_forward(x_out, mod + 2 * D, c.o.data(), mod_stride, B, Tn, D);
  }
  // dx: gradient of x_out on entry, of x_in on return. dmod += the (shift, scale, gate) gradients.
  void backward(const Be& be, const T* P, T* G, Ctx& c, T* dx, const T* x_in, const T* mod, T* dmod, int mod_stride,
                int B, int Tn) const {
    const int D = fc1.in, N = B * Tn;
    ensure(c.dh, size_t(N) * D); ensure(c.da, size_t(N) * fc1.out);
    be.gated_residual_backward(c.dh.data(), dmod + 2 * D, dx, mod + 2 * D, c.o.data(), mod_stride, B, Tn, D);
    fc2.backward_gelu_input(be, P, G, c.da.data(), c.dh.data(), c.g.data(), c.a.data(), N);
    fc1.backward(be, P, G, c.dh.data(), c.da.data(), c.h.data(), N);
    be.ln_modulate_backward(dx, dmod, dmod + D, c.dh.data(), x_in, c.mean.data(), c.rstd.data(), mod + D, mod_stride, B,
                            Tn, D);
  }
};

template <ComputeBackend Be>
struct AttentionBranch {
  using T = typename Be::Scalar;
  using Buf = typename Be::template Buffer<T>;
  Linear qkv, proj;
  int heads = 1;
  T scale = 1;
  struct Ctx {
    Buf mean, rstd, h, qkv, att, lse, o, dh, dqkv, datt;
  };
  AttentionBranch() = default;
  AttentionBranch(ParamLayout& L, const std::string& name, int D, int heads_, T scale_)
      : qkv(L, name + ".qkv", D, 3 * D), proj(L, name + ".proj", D, D), heads(heads_), scale(scale_) {}

  void forward(const Be& be, const T* P, Ctx& c, const T* x_in, T* x_out, const T* mod, int mod_stride, int B, int Tn,
               T eps) const {
    const int D = proj.in, N = B * Tn, hd = D / heads;
    ensure(c.mean, N); ensure(c.rstd, N); ensure(c.h, size_t(N) * D); ensure(c.qkv, size_t(N) * 3 * D);
    ensure(c.att, size_t(N) * D); ensure(c.lse, size_t(B) * heads * Tn); ensure(c.o, size_t(N) * D);
    be.ln_modulate_forward(c.h.data(), c.mean.data(), c.rstd.data(), x_in, mod, mod + D, mod_stride, B, Tn, D, eps);
    qkv.forward(be, P, c.qkv.data(), c.h.data(), N);
    be.attention_forward(c.att.data(), c.lse.data(), c.qkv.data(), B, Tn, heads, hd, scale);
    proj.forward(be, P, c.o.data(), c.att.data(), N);
    if (x_out != x_in) be.copy(x_out, x_in, size_t(N) * D);
    be.gated_residual_forward(x_out, mod + 2 * D, c.o.data(), mod_stride, B, Tn, D);
  }
  void backward(const Be& be, const T* P, T* G, Ctx& c, T* dx, const T* x_in, const T* mod, T* dmod, int mod_stride,
                int B, int Tn) const {
    const int D = proj.in, N = B * Tn, hd = D / heads;
    ensure(c.dh, size_t(N) * D); ensure(c.dqkv, size_t(N) * 3 * D); ensure(c.datt, size_t(N) * D);
    be.gated_residual_backward(c.dh.data(), dmod + 2 * D, dx, mod + 2 * D, c.o.data(), mod_stride, B, Tn, D);
    proj.backward(be, P, G, c.datt.data(), c.dh.data(), c.att.data(), N);
    be.attention_backward(c.dqkv.data(), c.datt.data(), c.qkv.data(), c.att.data(), c.lse.data(), B, Tn, heads, hd,
                          scale);
    qkv.backward(be, P, G, c.dh.data(), c.dqkv.data(), c.h.data(), N);
    be.ln_modulate_backward(dx, dmod, dmod + D, c.dh.data(), x_in, c.mean.data(), c.rstd.data(), mod + D, mod_stride, B,
                            Tn, D);
  }
};

// The DiT's last layer: out = Linear(LN(x) (1 + scale) + shift), (shift, scale) = Linear(SiLU(c)),
// both linears zero at init so that a new model predicts zero velocity.
template <ComputeBackend Be>
struct FinalLayer {
  using T = typename Be::Scalar;
  using Buf = typename Be::template Buffer<T>;
  Linear ada, linear;
  struct Ctx {
    Buf mod, dmod, mean, rstd, h, dh;
  };
  FinalLayer() = default;
  FinalLayer(ParamLayout& L, int D, int out)
      : ada(L, "final_layer.adaLN_modulation.1", D, 2 * D, Init::Zero), linear(L, "final_layer.linear", D, out, Init::Zero) {}

  void forward(const Be& be, const T* P, Ctx& c, const T* silu_c, const T* x, T* out, int B, int Tn, T eps) const {
    const int D = ada.in, N = B * Tn;
    ensure(c.mod, size_t(B) * 2 * D); ensure(c.mean, N); ensure(c.rstd, N); ensure(c.h, size_t(N) * D);
    ada.forward(be, P, c.mod.data(), silu_c, B);
    be.ln_modulate_forward(c.h.data(), c.mean.data(), c.rstd.data(), x, c.mod.data(), c.mod.data() + D, 2 * D, B, Tn, D,
                           eps);
    linear.forward(be, P, out, c.h.data(), N);
  }
  // dx overwritten; d_silu_c accumulates
  void backward(const Be& be, const T* P, T* G, Ctx& c, const T* silu_c, const T* x, const T* dout, T* dx, T* d_silu_c,
                int B, int Tn) const {
    const int D = ada.in, N = B * Tn;
    ensure(c.dmod, size_t(B) * 2 * D); ensure(c.dh, size_t(N) * D);
    be.fill(c.dmod.data(), T(0), c.dmod.size());
    be.fill(dx, T(0), size_t(N) * D);
    linear.backward(be, P, G, c.dh.data(), dout, c.h.data(), N);
    be.ln_modulate_backward(dx, c.dmod.data(), c.dmod.data() + D, c.dh.data(), x, c.mean.data(), c.rstd.data(),
                            c.mod.data() + D, 2 * D, B, Tn, D);
    ada.backward(be, P, G, d_silu_c, c.dmod.data(), silu_c, B, true);
  }
};

}  // namespace shortcut::nn
