// The DiT velocity network of DESIGN.md §4, conditioned on (t, k, y) through adaLN, with hand-written
// backward. Parameters live in a flat arena described by layout(); forward/backward take the base
// pointer of whichever weight set to use (raw or EMA) so that one network object serves both.
//
// The network interface that ShortcutModel<Net> relies on is the concept shortcut::VelocityNetwork
// (core/concepts.hpp, the one statement of it); DiT satisfies it for every ComputeBackend.
#pragma once
#include <vector>

#include "shortcut/core/patch_order.hpp"
#include "shortcut/nn/adaln_blocks.hpp"
#include "shortcut/nn/conditioner.hpp"
#include "shortcut/nn/dit_config.hpp"
#include "shortcut/nn/pos_embed.hpp"

namespace shortcut::nn {

template <ComputeBackend Be>
class DiT {
 public:
  using Backend = Be;
  using T = typename Be::Scalar;
  using Scalar = T;
  using Buf = typename Be::template Buffer<T>;
  using Config = DiTConfig;

  struct Block {
    Linear ada;
    AttentionBranch<Be> attn;
    MlpBranch<Be> mlp;
  };
  struct BlockCtx {
    Buf mod, dmod, mod_dot;
    typename AttentionBranch<Be>::Ctx attn;
    typename MlpBranch<Be>::Ctx mlp;
  };
  struct Context {
    int B = 0;
    Buf tok, xs, fo, dx, dfo, dtok, dsilu;
    Buf tok_dot, xs_dot, fo_dot;  // the tangent pass (xs_dot: two residual streams, ping-pong)
    typename Conditioner<Be>::Ctx cond;
    std::vector<BlockCtx> blocks;
    typename FinalLayer<Be>::Ctx fin;
  };

  DiT(Be& be, const DiTConfig& cfg) : be_(&be), cfg_(cfg) {
    cfg_.validate();
    const int D = cfg.hidden, C = cfg.channels, p = cfg.patch;
    embed_ = Linear(L_, "x_embedder.proj", C * p * p, D, Init::XavierUniform, true, {D, C, p, p});
    cond_ = Conditioner<Be>(L_, D, cfg.classes);
    for (int i = 0; i < cfg.depth; ++i) {
      std::string n = "blocks." + std::to_string(i);
      Block b;
      b.ada = Linear(L_, n + ".adaLN_modulation.1", D, 6 * D);
      b.attn = AttentionBranch<Be>(L_, n + ".attn", D, cfg.heads, T(cfg.scale()));
      b.mlp = MlpBranch<Be>(L_, n + ".mlp", D, cfg.mlp_hidden());
      blocks_.push_back(b);
    }
    final_ = FinalLayer<Be>(L_, D, p * p * C);
    pos_host_ = sincos_pos_embed<T>(cfg.grid(), D);
    pos_.resize(pos_host_.size());
    be.to_device(pos_.data(), pos_host_.data(), pos_host_.size());
  }

  const ParamLayout& layout() const { return L_; }
  const DiTConfig& config() const { return cfg_; }
  nlohmann::json config_json() const { return cfg_.to_json(); }
  std::vector<int64_t> sample_shape() const { return {cfg_.image, cfg_.image, cfg_.channels}; }
  int64_t sample_size() const { return int64_t(cfg_.image) * cfg_.image * cfg_.channels; }
  int num_classes() const { return cfg_.classes; }
  // The fixed position embedding [T, D] on the host (written into checkpoints as pos_embed).
  const std::vector<T>& pos_embed() const { return pos_host_; }

  // x [B,H,W,C], t [B], k [B], y [B] (device pointers) -> out [B,H,W,C]; P: a weight set of the arena
  void forward(Context& c, const T* P, const T* x, const T* t, const T* k, const int32_t* y, int B, T* out) const {
    const Be& be = *be_;
    const int D = cfg_.hidden, Tn = cfg_.tokens(), p = cfg_.patch, C = cfg_.channels, H = cfg_.image;
    const size_t act = size_t(B) * Tn * D;
    c.B = B;
    ensure(c.tok, size_t(B) * Tn * embed_.in);
    ensure(c.xs, act * (2 * cfg_.depth + 1));
    ensure(c.fo, size_t(B) * Tn * final_.linear.out);
    c.blocks.resize(cfg_.depth);
    be.patch_gather(c.tok.data(), x, B, H, H, C, p, PatchOrder::ChannelMajor);
    embed_.forward(be, P, c.xs.data(), c.tok.data(), B * Tn);
    be.add_rows(c.xs.data(), pos_.data(), B, Tn * D);
    cond_.forward(be, P, c.cond, t, k, y, B);
    const T* sc = c.cond.silu_c.data();
    const T eps = T(cfg_.ln_eps);
    for (int i = 0; i < cfg_.depth; ++i) {
      auto& b = blocks_[i];
      auto& bc = c.blocks[i];
      ensure(bc.mod, size_t(B) * 6 * D);
      b.ada.forward(be, P, bc.mod.data(), sc, B);
      T* x0 = c.xs.data() + act * (2 * i);
      b.attn.forward(be, P, bc.attn, x0, x0 + act, bc.mod.data(), 6 * D, B, Tn, eps);
      b.mlp.forward(be, P, bc.mlp, x0 + act, x0 + 2 * act, bc.mod.data() + 3 * D, 6 * D, B, Tn, eps);
    }
    final_.forward(be, P, c.fin, sc, c.xs.data() + act * 2 * cfg_.depth, c.fo.data(), B, Tn, eps);
    be.patch_scatter(out, c.fo.data(), B, H, H, C, p, PatchOrder::ChannelMinor);
  }

  // The forward mode (DESIGN.md §8), after forward on the same context: out_dot [B,H,W,C] = the
  // derivative of out along (x_dot [B,H,W,C], t_dot [B], k_dot [B]). What backward needs is untouched.
  void tangent(Context& c, const T* P, const T* x_dot, const T* t_dot, const T* k_dot, T* out_dot) const
    requires ForwardModeBackend<Be>
  {
    const Be& be = *be_;
    const int B = c.B, D = cfg_.hidden, Tn = cfg_.tokens(), p = cfg_.patch, C = cfg_.channels, H = cfg_.image;
    const size_t act = size_t(B) * Tn * D;
    ensure(c.tok_dot, c.tok.size());
    ensure(c.xs_dot, 2 * act);
    ensure(c.fo_dot, c.fo.size());
    T* cur = c.xs_dot.data();
    T* nxt = cur + act;
    be.patch_gather(c.tok_dot.data(), x_dot, B, H, H, C, p, PatchOrder::ChannelMajor);
    embed_.tangent(be, P, cur, c.tok_dot.data(), B * Tn);  // the position embedding is constant
    cond_.tangent(be, P, c.cond, t_dot, k_dot);
    const T* scd = c.cond.silu_c_dot.data();
    for (int i = 0; i < cfg_.depth; ++i) {
      auto& b = blocks_[i];
      auto& bc = c.blocks[i];
      ensure(bc.mod_dot, bc.mod.size());
      b.ada.tangent(be, P, bc.mod_dot.data(), scd, B);
      const T* x0 = c.xs.data() + act * (2 * i);
      b.attn.tangent(be, P, bc.attn, x0, cur, nxt, bc.mod.data(), bc.mod_dot.data(), 6 * D, B, Tn);
      b.mlp.tangent(be, P, bc.mlp, x0 + act, nxt, cur, bc.mod.data() + 3 * D, bc.mod_dot.data() + 3 * D, 6 * D, B, Tn);
    }
    final_.tangent(be, P, c.fin, scd, c.xs.data() + act * 2 * cfg_.depth, cur, c.fo_dot.data(), B, Tn);
    be.patch_scatter(out_dot, c.fo_dot.data(), B, H, H, C, p, PatchOrder::ChannelMinor);
  }

  // dout [B,H,W,C] -> parameter gradients += into G; dx (optional) = gradient of the input image
  void backward(Context& c, const T* P, T* G, const T* dout, T* dx = nullptr) const {
    const Be& be = *be_;
    const int B = c.B, D = cfg_.hidden, Tn = cfg_.tokens(), p = cfg_.patch, C = cfg_.channels, H = cfg_.image;
    const size_t act = size_t(B) * Tn * D;
    ensure(c.dx, act);
    ensure(c.dsilu, size_t(B) * D);
    ensure(c.dfo, c.fo.size());
    be.fill(c.dsilu.data(), T(0), c.dsilu.size());
    const T* sc = c.cond.silu_c.data();
    be.patch_gather(c.dfo.data(), dout, B, H, H, C, p, PatchOrder::ChannelMinor);
    final_.backward(be, P, G, c.fin, sc, c.xs.data() + act * 2 * cfg_.depth, c.dfo.data(), c.dx.data(),
                    c.dsilu.data(), B, Tn);
    for (int i = cfg_.depth - 1; i >= 0; --i) {
      auto& b = blocks_[i];
      auto& bc = c.blocks[i];
      ensure(bc.dmod, size_t(B) * 6 * D);
      be.fill(bc.dmod.data(), T(0), bc.dmod.size());
      const T* x0 = c.xs.data() + act * (2 * i);
      b.mlp.backward(be, P, G, bc.mlp, c.dx.data(), x0 + act, bc.mod.data() + 3 * D, bc.dmod.data() + 3 * D, 6 * D, B,
                     Tn);
      b.attn.backward(be, P, G, bc.attn, c.dx.data(), x0, bc.mod.data(), bc.dmod.data(), 6 * D, B, Tn);
      b.ada.backward(be, P, G, c.dsilu.data(), bc.dmod.data(), sc, B, true);
    }
    ensure(c.dtok, c.tok.size());
    embed_.backward(be, P, G, dx ? c.dtok.data() : nullptr, c.dx.data(), c.tok.data(), B * Tn);
    if (dx) be.patch_scatter(dx, c.dtok.data(), B, H, H, C, p, PatchOrder::ChannelMajor);
    cond_.backward(be, P, G, c.cond, c.dsilu.data());
  }

 private:
  Be* be_;
  DiTConfig cfg_;
  ParamLayout L_;
  Linear embed_;
  Conditioner<Be> cond_;
  std::vector<Block> blocks_;
  FinalLayer<Be> final_;
  std::vector<T> pos_host_;
  Buf pos_;
};

}  // namespace shortcut::nn
