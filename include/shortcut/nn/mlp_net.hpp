// A velocity network for low-dimensional data (the 2-D toy distributions): the DiT's conditioning
// and adaLN-modulated MLP blocks on a single token. x [B, dim] -> v [B, dim], conditioned on (t, k, y).
//
// Two options for low-dimensional data, both off by default (the plain network of DESIGN.md §4):
//  - fourier = F > 0: the input embedding also sees F sinusoidal features of every coordinate,
//    [cos(a f_j), sin(a f_j)] with a = fourier_scale * x_i and f_j = 10000^(-j / (F/2)) (the
//    timestep features), through a second linear "x_fourier_embedder" [D, dim * F] added to the
//    linear "x_embedder" of x. An MLP fits the sharp edges of a 2-D density far faster from these.
//  - t_scale: E_t embeds t * t_scale instead of t (the sinusoid frequencies are at most 1 rad, so
//    t in [0, 1] alone reaches the network almost linearly); step_scale likewise for the step input
//    (for a network that reads d itself, DESIGN.md §8; the index k needs none).
#pragma once
#include <cmath>
#include <nlohmann/json.hpp>
#include <vector>

#include "shortcut/nn/adaln_blocks.hpp"
#include "shortcut/nn/conditioner.hpp"
#include "shortcut/nn/sinusoid_tangent.hpp"

namespace shortcut::nn {

struct MlpNetConfig {
  int dim = 2;
  int hidden = 256;
  int depth = 4;
  double mlp_ratio = 2.0;
  int classes = 1;  // one class: unconditional, every label is the null label
  double ln_eps = 1e-6;
  int fourier = 0;             // sinusoidal features per input coordinate (even; 0: none)
  double fourier_scale = 1.0;  // x is multiplied by this before the features
  double t_scale = 1.0;        // E_t embeds t * t_scale
  double step_scale = 1.0;     // E_d embeds the step input * step_scale

  void validate() const {
    if (dim <= 0 || hidden <= 0 || depth <= 0 || classes <= 0 || mlp_ratio <= 0)
      throw ConfigError(cat("MLP net config: every size must be positive (dim ", dim, ", hidden ", hidden, ", depth ",
                            depth, ", classes ", classes, ", mlp_ratio ", mlp_ratio, ")"));
    if (fourier < 0 || fourier % 2 != 0 || fourier == 2)
      throw ConfigError(cat("MLP net config: fourier must be 0 or an even number >= 4, got ", fourier));
    if (!(fourier_scale > 0) || !std::isfinite(fourier_scale) || !(t_scale > 0) || !std::isfinite(t_scale) ||
        !(step_scale > 0) || !std::isfinite(step_scale))
      throw ConfigError(cat("MLP net config: fourier_scale, t_scale and step_scale must be positive (", fourier_scale,
                            ", ", t_scale, ", ", step_scale, ")"));
  }
  // The new fields are written only when they differ from the plain network, so that a plain
  // network's metadata reads as before (and older readers still load it).
  nlohmann::json to_json() const {
    nlohmann::json j = {{"model", "mlp"}, {"dim", dim}, {"hidden", hidden}, {"depth", depth},
                        {"mlp_ratio", mlp_ratio}, {"classes", classes}, {"ln_eps", ln_eps}};
    if (fourier) {
      j["fourier"] = fourier;
      j["fourier_scale"] = fourier_scale;
    }
    if (t_scale != 1.0) j["t_scale"] = t_scale;
    if (step_scale != 1.0) j["step_scale"] = step_scale;
    return j;
  }
  static MlpNetConfig from_json(const nlohmann::json& j) {
    MlpNetConfig c;
    try {
      c.dim = j.at("dim"); c.hidden = j.at("hidden"); c.depth = j.at("depth"); c.mlp_ratio = j.at("mlp_ratio");
      c.classes = j.at("classes"); c.ln_eps = j.value("ln_eps", 1e-6);
      c.fourier = j.value("fourier", 0); c.fourier_scale = j.value("fourier_scale", 1.0);
      c.t_scale = j.value("t_scale", 1.0);
      c.step_scale = j.value("step_scale", 1.0);
    } catch (const nlohmann::json::exception& e) {
      throw ConfigError(std::string("MLP net config JSON: ") + e.what());
    }
    c.validate();
    return c;
  }
};

template <ComputeBackend Be>
class MlpNet {
 public:
  using Backend = Be;
  using T = typename Be::Scalar;
  using Scalar = T;
  using Buf = typename Be::template Buffer<T>;
  using Config = MlpNetConfig;

  struct Block {
    Linear ada;
    MlpBranch<Be> mlp;
  };
  struct BlockCtx {
    Buf mod, dmod, mod_dot;
    typename MlpBranch<Be>::Ctx mlp;
  };
  struct Context {
    int B = 0;
    Buf x, xs, dx, dsilu;
    Buf ts, ks;                        // t * t_scale, k * step_scale
    Buf fa, feat, femb, dfeat;         // fourier_scale * x [B*dim], its features [B*dim, F], embedding [B, D]
    Buf rot, ones, fd, fprod, fsum;    // the input gradient through the features (constants and scratch)
    Buf xs_dot, fa_dot, feat_dot, femb_dot, ts_dot, ks_dot;  // the tangent pass
    SinusoidTangent<Be> sin;
    typename Conditioner<Be>::Ctx cond;
    std::vector<BlockCtx> blocks;
    typename FinalLayer<Be>::Ctx fin;
  };

  MlpNet(Be& be, const MlpNetConfig& cfg) : be_(&be), cfg_(cfg) {
    cfg_.validate();
    const int D = cfg.hidden;
    embed_ = Linear(L_, "x_embedder", cfg.dim, D);
    if (cfg.fourier) fembed_ = Linear(L_, "x_fourier_embedder", cfg.dim * cfg.fourier, D);
    cond_ = Conditioner<Be>(L_, D, cfg.classes);
    for (int i = 0; i < cfg.depth; ++i) {
      std::string n = "blocks." + std::to_string(i);
      Block b;
      b.ada = Linear(L_, n + ".adaLN_modulation.1", D, 3 * D);
      b.mlp = MlpBranch<Be>(L_, n + ".mlp", D, int(D * cfg.mlp_ratio));
      blocks_.push_back(b);
    }
    final_ = FinalLayer<Be>(L_, D, cfg.dim);
  }

  const ParamLayout& layout() const { return L_; }
  const MlpNetConfig& config() const { return cfg_; }
  nlohmann::json config_json() const { return cfg_.to_json(); }
  std::vector<int64_t> sample_shape() const { return {cfg_.dim}; }
  int64_t sample_size() const { return cfg_.dim; }
  int num_classes() const { return cfg_.classes; }

  void forward(Context& c, const T* P, const T* x, const T* t, const T* k, const int32_t* y, int B, T* out) const {
    const Be& be = *be_;
    const int D = cfg_.hidden;
    const size_t act = size_t(B) * D;
    c.B = B;
    ensure(c.x, size_t(B) * cfg_.dim);
    ensure(c.xs, act * (cfg_.depth + 1));
    c.blocks.resize(cfg_.depth);
    be.copy(c.x.data(), x, c.x.size());
    embed_.forward(be, P, c.xs.data(), x, B);
    if (cfg_.fourier) {
      const size_t na = size_t(B) * cfg_.dim;
      ensure(c.feat, na * cfg_.fourier); ensure(c.femb, act);
      scale_into(be, c.fa, x, cfg_.fourier_scale, na);
      be.timestep_embedding(c.feat.data(), c.fa.data(), int(na), cfg_.fourier);
      fembed_.forward(be, P, c.femb.data(), c.feat.data(), B);
      be.add_inplace(c.xs.data(), c.femb.data(), act);
    }
    if (cfg_.t_scale != 1.0) t = scale_into(be, c.ts, t, cfg_.t_scale, size_t(B));
    if (cfg_.step_scale != 1.0) k = scale_into(be, c.ks, k, cfg_.step_scale, size_t(B));
    cond_.forward(be, P, c.cond, t, k, y, B);
    const T* sc = c.cond.silu_c.data();
    for (int i = 0; i < cfg_.depth; ++i) {
      auto& bc = c.blocks[i];
      ensure(bc.mod, size_t(B) * 3 * D);
      blocks_[i].ada.forward(be, P, bc.mod.data(), sc, B);
      T* x0 = c.xs.data() + act * i;
      blocks_[i].mlp.forward(be, P, bc.mlp, x0, x0 + act, bc.mod.data(), 3 * D, B, 1, T(cfg_.ln_eps));
    }
    final_.forward(be, P, c.fin, sc, c.xs.data() + act * cfg_.depth, out, B, 1, T(cfg_.ln_eps));
  }

  // The forward mode (DESIGN.md §8), after forward on the same context: out_dot [B, dim] along
  // (x_dot [B, dim], t_dot [B], k_dot [B]).
  void tangent(Context& c, const T* P, const T* x_dot, const T* t_dot, const T* k_dot, T* out_dot) const
    requires ForwardModeBackend<Be>
  {
    const Be& be = *be_;
    const int B = c.B, D = cfg_.hidden;
    const size_t act = size_t(B) * D;
    ensure(c.xs_dot, 2 * act);
    T* cur = c.xs_dot.data();
    T* nxt = cur + act;
    embed_.tangent(be, P, cur, x_dot, B);
    if (cfg_.fourier) {
      const size_t na = size_t(B) * cfg_.dim;
      ensure(c.feat_dot, c.feat.size()); ensure(c.femb_dot, act);
      scale_into(be, c.fa_dot, x_dot, cfg_.fourier_scale, na);
      c.sin.apply(be, c.feat_dot.data(), c.feat.data(), c.fa_dot.data(), int(na), cfg_.fourier);
      fembed_.tangent(be, P, c.femb_dot.data(), c.feat_dot.data(), B);
      be.add_inplace(cur, c.femb_dot.data(), act);
    }
    if (cfg_.t_scale != 1.0) t_dot = scale_into(be, c.ts_dot, t_dot, cfg_.t_scale, size_t(B));
    if (cfg_.step_scale != 1.0) k_dot = scale_into(be, c.ks_dot, k_dot, cfg_.step_scale, size_t(B));
    cond_.tangent(be, P, c.cond, t_dot, k_dot);
    const T* scd = c.cond.silu_c_dot.data();
    for (int i = 0; i < cfg_.depth; ++i) {
      auto& bc = c.blocks[i];
      ensure(bc.mod_dot, bc.mod.size());
      blocks_[i].ada.tangent(be, P, bc.mod_dot.data(), scd, B);
      blocks_[i].mlp.tangent(be, P, bc.mlp, c.xs.data() + act * i, cur, nxt, bc.mod.data(), bc.mod_dot.data(), 3 * D,
                             B, 1);
      std::swap(cur, nxt);
    }
    final_.tangent(be, P, c.fin, scd, c.xs.data() + act * cfg_.depth, cur, out_dot, B, 1);
  }

  void backward(Context& c, const T* P, T* G, const T* dout, T* dx = nullptr) const {
    const Be& be = *be_;
    const int B = c.B, D = cfg_.hidden;
    const size_t act = size_t(B) * D;
    ensure(c.dx, act);
    ensure(c.dsilu, act);
    be.fill(c.dsilu.data(), T(0), act);
    const T* sc = c.cond.silu_c.data();
    final_.backward(be, P, G, c.fin, sc, c.xs.data() + act * cfg_.depth, dout, c.dx.data(), c.dsilu.data(), B, 1);
    for (int i = cfg_.depth - 1; i >= 0; --i) {
      auto& bc = c.blocks[i];
      ensure(bc.dmod, size_t(B) * 3 * D);
      be.fill(bc.dmod.data(), T(0), bc.dmod.size());
      blocks_[i].mlp.backward(be, P, G, bc.mlp, c.dx.data(), c.xs.data() + act * i, bc.mod.data(), bc.dmod.data(),
                              3 * D, B, 1);
      blocks_[i].ada.backward(be, P, G, c.dsilu.data(), bc.dmod.data(), sc, B, true);
    }
    embed_.backward(be, P, G, dx, c.dx.data(), c.x.data(), B);
    if (cfg_.fourier) fourier_backward(c, P, G, dx);
    cond_.backward(be, P, G, c.cond, c.dsilu.data());
  }

 private:
  // dst <- scale * src (n values), sized to fit; returns dst's data (t, the step input, x before the
  // Fourier features, and their tangents).
  static T* scale_into(const Be& be, Buf& dst, const T* src, double scale, size_t n) {
    ensure(dst, n);
    be.fill(dst.data(), T(0), n);
    be.axpy(dst.data(), T(scale), src, n);
    return dst.data();
  }

  // dfeat = the features' gradient; dx += fourier_scale * sum_j dfeat_j * dfeat_j/da, composed of
  // existing backend ops: the derivative of [cos(a f), sin(a f)] is [-f sin(a f), f cos(a f)], the
  // features times a constant matrix; then an elementwise product and a row sum (a product with ones).
  void fourier_backward(Context& c, const T* P, T* G, T* dx) const {
    const Be& be = *be_;
    const int F = cfg_.fourier, N = c.B * cfg_.dim;
    ensure(c.dfeat, size_t(N) * F);
    fembed_.backward(be, P, G, dx ? c.dfeat.data() : nullptr, c.dx.data(), c.feat.data(), c.B);
    if (!dx) return;
    if (c.rot.size() != size_t(F) * F) {
      const std::vector<T> rot = sinusoid_derivative_weight<T>(F), ones(F, T(1));
      ensure(c.rot, rot.size()); ensure(c.ones, ones.size());
      be.to_device(c.rot.data(), rot.data(), rot.size());
      be.to_device(c.ones.data(), ones.data(), ones.size());
    }
    ensure(c.fd, size_t(N) * F); ensure(c.fprod, size_t(N) * F); ensure(c.fsum, size_t(N));
    be.linear_forward(c.fd.data(), c.feat.data(), c.rot.data(), nullptr, N, F, F);
    be.fill(c.fprod.data(), T(0), c.fprod.size());
    be.gated_residual_forward(c.fprod.data(), c.dfeat.data(), c.fd.data(), F, N, 1, F);
    be.linear_forward(c.fsum.data(), c.fprod.data(), c.ones.data(), nullptr, N, F, 1);
    be.axpy(dx, T(cfg_.fourier_scale), c.fsum.data(), size_t(N));
  }

  Be* be_;
  MlpNetConfig cfg_;
  ParamLayout L_;
  Linear embed_, fembed_;
  Conditioner<Be> cond_;
  std::vector<Block> blocks_;
  FinalLayer<Be> final_;
};

}  // namespace shortcut::nn
