// A velocity network for low-dimensional data (the 2-D toy distributions): the DiT's conditioning
// and adaLN-modulated MLP blocks on a single token. x [B, dim] -> v [B, dim], conditioned on (t, k, y).
#pragma once
#include <nlohmann/json.hpp>
#include <vector>

#include "shortcut/nn/adaln_blocks.hpp"
#include "shortcut/nn/conditioner.hpp"

namespace shortcut::nn {

struct MlpNetConfig {
  int dim = 2;
  int hidden = 256;
  int depth = 4;
  double mlp_ratio = 2.0;
  int classes = 1;  // one class: unconditional, every label is the null label
  double ln_eps = 1e-6;

  void validate() const {
    if (dim <= 0 || hidden <= 0 || depth <= 0 || classes <= 0 || mlp_ratio <= 0)
      throw ConfigError(cat("MLP net config: every size must be positive (dim ", dim, ", hidden ", hidden, ", depth ",
                            depth, ", classes ", classes, ", mlp_ratio ", mlp_ratio, ")"));
  }
  nlohmann::json to_json() const {
    return {{"model", "mlp"}, {"dim", dim}, {"hidden", hidden}, {"depth", depth},
            {"mlp_ratio", mlp_ratio}, {"classes", classes}, {"ln_eps", ln_eps}};
  }
  static MlpNetConfig from_json(const nlohmann::json& j) {
    MlpNetConfig c;
    try {
      c.dim = j.at("dim"); c.hidden = j.at("hidden"); c.depth = j.at("depth"); c.mlp_ratio = j.at("mlp_ratio");
      c.classes = j.at("classes"); c.ln_eps = j.value("ln_eps", 1e-6);
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
    Buf mod, dmod;
    typename MlpBranch<Be>::Ctx mlp;
  };
  struct Context {
    int B = 0;
    Buf x, xs, dx, dsilu;
    typename Conditioner<Be>::Ctx cond;
    std::vector<BlockCtx> blocks;
    typename FinalLayer<Be>::Ctx fin;
  };

  MlpNet(Be& be, const MlpNetConfig& cfg) : be_(&be), cfg_(cfg) {
    cfg_.validate();
    const int D = cfg.hidden;
    embed_ = Linear(L_, "x_embedder", cfg.dim, D);
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
    cond_.backward(be, P, G, c.cond, c.dsilu.data());
  }

 private:
  Be* be_;
  MlpNetConfig cfg_;
  ParamLayout L_;
  Linear embed_;
  Conditioner<Be> cond_;
  std::vector<Block> blocks_;
  FinalLayer<Be> final_;
};

}  // namespace shortcut::nn
