// The conditioning vector c = E_t(t) + E_d(k) + E_y(y) of DESIGN.md §4, shared by the DiT and the
// MLP network. E_t and E_d embed a raw scalar with 256 sinusoidal features then Linear, SiLU, Linear;
// E_y is a table of classes + 1 rows whose last row is the null label. The output is SiLU(c), the
// only form in which c is consumed (every adaLN modulation starts with SiLU).
#pragma once
#include <vector>

#include "shortcut/core/concepts.hpp"
#include "shortcut/nn/linear.hpp"
#include "shortcut/nn/sinusoid_tangent.hpp"

namespace shortcut::nn {

inline constexpr int kFreqDim = 256;

template <ComputeBackend Be>
struct TimestepEmbedder {
  using T = typename Be::Scalar;
  using Buf = typename Be::template Buffer<T>;
  Linear l0, l2;
  struct Ctx {
    Buf feat, h, s;
    Buf feat_dot, h_dot, s_dot;  // the tangent pass
    SinusoidTangent<Be> sin;
  };
  TimestepEmbedder() = default;
  TimestepEmbedder(ParamLayout& L, const std::string& name, int D)
      : l0(L, name + ".mlp.0", kFreqDim, D, Init::Normal002), l2(L, name + ".mlp.2", D, D, Init::Normal002) {}

  // out[B,D] = Linear(SiLU(Linear(freq(values))))
  void forward(const Be& be, const T* P, Ctx& c, const T* values, int B, T* out) const {
    ensure(c.feat, size_t(B) * kFreqDim);
    ensure(c.h, size_t(B) * l0.out);
    ensure(c.s, size_t(B) * l0.out);
    be.timestep_embedding(c.feat.data(), values, B, kFreqDim);
    l0.forward(be, P, c.h.data(), c.feat.data(), B);
    be.silu_forward(c.s.data(), c.h.data(), c.h.size());
    l2.forward(be, P, out, c.s.data(), B);
  }
  // The tangent of out along values_dot [B], after forward on the same context.
  void tangent(const Be& be, const T* P, Ctx& c, const T* values_dot, int B, T* out_dot) const
    requires ForwardModeBackend<Be>
  {
    ensure(c.feat_dot, c.feat.size());
    ensure(c.h_dot, c.h.size());
    ensure(c.s_dot, c.s.size());
    c.sin.apply(be, c.feat_dot.data(), c.feat.data(), values_dot, B, kFreqDim);
    l0.tangent(be, P, c.h_dot.data(), c.feat_dot.data(), B);
    be.silu_backward(c.s_dot.data(), c.h_dot.data(), c.h.data(), c.h.size());  // SiLU'(h) h_dot
    l2.tangent(be, P, out_dot, c.s_dot.data(), B);
  }
  // dout is consumed; ds is scratch of [B,D]
  void backward(const Be& be, const T* P, T* G, Ctx& c, const T* dout, T* scratch, int B) const {
    l2.backward(be, P, G, scratch, dout, c.s.data(), B);
    be.silu_backward(scratch, scratch, c.h.data(), c.h.size());
    l0.backward(be, P, G, static_cast<T*>(nullptr), scratch, c.feat.data(), B);
  }
};

template <ComputeBackend Be>
struct Conditioner {
  using T = typename Be::Scalar;
  using Buf = typename Be::template Buffer<T>;
  int D = 0, classes = 0;
  TimestepEmbedder<Be> t_emb, d_emb;
  size_t table = 0;
  struct Ctx {
    typename TimestepEmbedder<Be>::Ctx t, d;
    Buf c, tmp, silu_c, dc;
    Buf c_dot, tmp_dot, silu_c_dot;  // the tangent pass
    typename Be::template Buffer<int32_t> y, nulls;
    int B = 0;
  };
  Conditioner() = default;
  Conditioner(ParamLayout& L, int D_, int classes_)
      : D(D_), classes(classes_), t_emb(L, "t_embedder", D_), d_emb(L, "d_embedder", D_) {
    table = L.add("y_embedder.embedding_table.weight", {classes + 1, D}, Init::Normal002);
  }
  // silu_c [B,D] in the context; y are device labels in [0, classes] (classes = null).
  // With one class every label reads as the null label: training only ever sees the null label then
  // (DESIGN.md §2), so row 0 never learns, and a user who samples label 0 must still get the model's
  // best. Training is unchanged bit for bit, since its labels are already null.
  void forward(const Be& be, const T* P, Ctx& c, const T* t, const T* k, const int32_t* y, int B) const {
    c.B = B;
    size_t n = size_t(B) * D;
    ensure(c.c, n);
    ensure(c.tmp, n);
    ensure(c.silu_c, n);
    ensure(c.y, size_t(B));
    if (classes <= 1) {
      // uploaded only when the batch grows, so a recorded body (core/capture.hpp) moves no host data
      if (c.nulls.size() < size_t(B)) {
        const std::vector<int32_t> nulls(static_cast<size_t>(B), int32_t(classes));
        c.nulls.resize(size_t(B));
        be.to_device(c.nulls.data(), nulls.data(), size_t(B));
      }
      y = c.nulls.data();
    }
    be.copy(c.y.data(), y, size_t(B));
    t_emb.forward(be, P, c.t, t, B, c.c.data());
    d_emb.forward(be, P, c.d, k, B, c.tmp.data());
    be.add_inplace(c.c.data(), c.tmp.data(), n);
    be.embedding_forward(c.tmp.data(), P + table, c.y.data(), B, D);
    be.add_inplace(c.c.data(), c.tmp.data(), n);
    be.silu_forward(c.silu_c.data(), c.c.data(), n);
  }
  // The tangent of SiLU(c) along (t_dot, k_dot) [B] into silu_c_dot, after forward on the same
  // context (the label embedding is constant).
  void tangent(const Be& be, const T* P, Ctx& c, const T* t_dot, const T* k_dot) const
    requires ForwardModeBackend<Be>
  {
    const int B = c.B;
    const size_t n = size_t(B) * D;
    ensure(c.c_dot, n);
    ensure(c.tmp_dot, n);
    ensure(c.silu_c_dot, n);
    t_emb.tangent(be, P, c.t, t_dot, B, c.c_dot.data());
    d_emb.tangent(be, P, c.d, k_dot, B, c.tmp_dot.data());
    be.add_inplace(c.c_dot.data(), c.tmp_dot.data(), n);
    be.silu_backward(c.silu_c_dot.data(), c.c_dot.data(), c.c.data(), n);
  }
  // d_silu_c [B,D] is the summed gradient of every consumer of SiLU(c)
  void backward(const Be& be, const T* P, T* G, Ctx& c, const T* d_silu_c) const {
    int B = c.B;
    size_t n = size_t(B) * D;
    ensure(c.dc, n);
    be.silu_backward(c.dc.data(), d_silu_c, c.c.data(), n);
    be.embedding_backward(G + table, c.dc.data(), c.y.data(), B, D);
    t_emb.backward(be, P, G, c.t, c.dc.data(), c.tmp.data(), B);
    d_emb.backward(be, P, G, c.d, c.dc.data(), c.tmp.data(), B);
  }
};

}  // namespace shortcut::nn
