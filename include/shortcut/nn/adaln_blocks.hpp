// The two residual halves of a DiT block, each "x_out = x_in + gate * f(LN(x_in) * (1 + scale) + shift)":
// AttentionBranch with f = proj(attention(qkv(.))) and MlpBranch with f = fc2(GELU(fc1(.))). The MLP
// network for low-dimensional data reuses MlpBranch. shift/scale/gate are rows of the block's adaLN
// modulation output (stride mod_stride per sample); their gradients accumulate into dmod. tangent()
// is the forward mode (DESIGN.md §8): run after forward on the same context, it reads the saved
// activations and carries the tangents of x and of the modulation rows.
#pragma once
#include "shortcut/core/concepts.hpp"
#include "shortcut/nn/linear.hpp"

namespace shortcut::nn {

// The tangent of x_out = x_in + gate * o: x_out_dot = x_in_dot + gate * o_dot + gate_dot * o.
template <ComputeBackend Be, class T>
void gated_residual_tangent(const Be& be, T* x_out_dot, const T* x_in_dot, const T* gate, const T* gate_dot,
                            const T* o, const T* o_dot, int mod_stride, int B, int Tn, int D) {
  be.copy(x_out_dot, x_in_dot, size_t(B) * Tn * D);
  be.gated_residual_forward(x_out_dot, gate, o_dot, mod_stride, B, Tn, D);
  be.gated_residual_forward(x_out_dot, gate_dot, o, mod_stride, B, Tn, D);
}

template <ComputeBackend Be>
struct MlpBranch {
  using T = typename Be::Scalar;
  using Buf = typename Be::template Buffer<T>;
  Linear fc1, fc2;
  struct Ctx {
    Buf mean, rstd, h, a, g, o, dh, da;
    Buf h_dot, a_dot, g_dot, o_dot;  // the tangent pass
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
  // The tangent of forward (after it, on the same context): x_out_dot from x_in_dot and the tangent
  // of the modulation rows mod_dot (same layout as mod); x_out_dot != x_in_dot.
  void tangent(const Be& be, const T* P, Ctx& c, const T* x_in, const T* x_in_dot, T* x_out_dot, const T* mod,
               const T* mod_dot, int mod_stride, int B, int Tn) const
    requires ForwardModeBackend<Be>
  {
    const int D = fc1.in, N = B * Tn;
    ensure(c.h_dot, c.h.size()); ensure(c.a_dot, c.a.size()); ensure(c.g_dot, c.g.size()); ensure(c.o_dot, c.o.size());
    be.ln_modulate_tangent(c.h_dot.data(), x_in, x_in_dot, c.mean.data(), c.rstd.data(), mod + D, mod_dot,
                           mod_dot + D, mod_stride, B, Tn, D);
    fc1.tangent(be, P, c.a_dot.data(), c.h_dot.data(), N);
    be.gelu_backward(c.g_dot.data(), c.a_dot.data(), c.a.data(), c.a.size());  // GELU'(a) a_dot
    fc2.tangent(be, P, c.o_dot.data(), c.g_dot.data(), N);
    gated_residual_tangent(be, x_out_dot, x_in_dot, mod + 2 * D, mod_dot + 2 * D, c.o.data(), c.o_dot.data(),
                           mod_stride, B, Tn, D);
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
    Buf h_dot, qkv_dot, att_dot, o_dot;  // the tangent pass
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
  // The tangent of forward, as MlpBranch::tangent.
  void tangent(const Be& be, const T* P, Ctx& c, const T* x_in, const T* x_in_dot, T* x_out_dot, const T* mod,
               const T* mod_dot, int mod_stride, int B, int Tn) const
    requires ForwardModeBackend<Be>
  {
    const int D = proj.in, N = B * Tn, hd = D / heads;
    ensure(c.h_dot, c.h.size()); ensure(c.qkv_dot, c.qkv.size()); ensure(c.att_dot, c.att.size());
    ensure(c.o_dot, c.o.size());
    be.ln_modulate_tangent(c.h_dot.data(), x_in, x_in_dot, c.mean.data(), c.rstd.data(), mod + D, mod_dot,
                           mod_dot + D, mod_stride, B, Tn, D);
    qkv.tangent(be, P, c.qkv_dot.data(), c.h_dot.data(), N);
    be.attention_tangent(c.att_dot.data(), c.qkv.data(), c.qkv_dot.data(), c.att.data(), c.lse.data(), B, Tn, heads,
                         hd, scale);
    proj.tangent(be, P, c.o_dot.data(), c.att_dot.data(), N);
    gated_residual_tangent(be, x_out_dot, x_in_dot, mod + 2 * D, mod_dot + 2 * D, c.o.data(), c.o_dot.data(),
                           mod_stride, B, Tn, D);
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
    Buf mod_dot, h_dot;  // the tangent pass
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
  // The tangent of forward along x_dot and silu_c_dot (the conditioning's tangent).
  void tangent(const Be& be, const T* P, Ctx& c, const T* silu_c_dot, const T* x, const T* x_dot, T* out_dot, int B,
               int Tn) const
    requires ForwardModeBackend<Be>
  {
    const int D = ada.in, N = B * Tn;
    ensure(c.mod_dot, c.mod.size()); ensure(c.h_dot, c.h.size());
    ada.tangent(be, P, c.mod_dot.data(), silu_c_dot, B);
    be.ln_modulate_tangent(c.h_dot.data(), x, x_dot, c.mean.data(), c.rstd.data(), c.mod.data() + D, c.mod_dot.data(),
                           c.mod_dot.data() + D, 2 * D, B, Tn, D);
    linear.tangent(be, P, out_dot, c.h_dot.data(), N);
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
