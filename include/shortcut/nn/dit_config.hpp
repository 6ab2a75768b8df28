// DiT hyper-parameters and the named presets of DESIGN.md §4.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "shortcut/core/error.hpp"

namespace shortcut::nn {

enum class AttnScale { InvHeadDim, InvSqrtHeadDim };

struct DiTConfig {
  int image = 28;     // H = W
  int channels = 1;   // C
  int patch = 2;      // p
  int hidden = 384;   // D
  int depth = 12;
  int heads = 6;
  double mlp_ratio = 4.0;
  int classes = 10;   // the null label is `classes`
  AttnScale attn_scale = AttnScale::InvHeadDim;
  double ln_eps = 1e-6;

  int grid() const { return image / patch; }
  int tokens() const { return grid() * grid(); }
  int head_dim() const { return hidden / heads; }
  int mlp_hidden() const { return static_cast<int>(hidden * mlp_ratio); }
  double scale() const {
    return attn_scale == AttnScale::InvHeadDim ? 1.0 / head_dim() : 1.0 / std::sqrt(double(head_dim()));
  }

  void validate() const {
    auto bad = [&](const std::string& m) { throw ConfigError("DiT config: " + m); };
    if (image <= 0 || channels <= 0 || patch <= 0 || hidden <= 0 || depth <= 0 || heads <= 0 || classes <= 0)
      bad(cat("every size must be positive (image ", image, ", channels ", channels, ", patch ", patch, ", hidden ",
              hidden, ", depth ", depth, ", heads ", heads, ", classes ", classes, ")"));
    if (image % patch) bad(cat("image size ", image, " is not a multiple of the patch size ", patch));
    if (hidden % heads) bad(cat("hidden size ", hidden, " is not a multiple of the head count ", heads));
    if (hidden % 4) bad(cat("hidden size ", hidden, " must be a multiple of 4 for the 2-D position embedding"));
    if (mlp_ratio <= 0) bad("mlp_ratio must be positive");
  }

  // Presets: the paper's DiT sizes (any image/patch) and small ones for 28x28 data on a CPU.
  static DiTConfig preset(const std::string& name, int image = 28, int channels = 1, int classes = 10) {
    DiTConfig c;
    c.image = image;
    c.channels = channels;
    c.classes = classes;
    auto set = [&](int D, int depth, int heads, int patch) {
      c.hidden = D; c.depth = depth; c.heads = heads; c.patch = patch;
    };
    if (name == "DiT-S") set(384, 12, 6, 2);
    else if (name == "DiT-B") set(768, 12, 12, 2);
    else if (name == "DiT-L") set(1024, 24, 16, 2);
    else if (name == "DiT-XL") set(1152, 28, 16, 2);
    else if (name == "DiT-S/4") set(384, 12, 6, 4);
    else if (name == "tiny") set(64, 2, 2, 4);      // head dim 32; seconds per step on a CPU
    else if (name == "small") set(128, 4, 4, 4);    // head dim 32; the 20-minute CPU preset
    else if (name == "medium") set(256, 6, 8, 4);   // head dim 32
    else
      throw ConfigError("unknown DiT preset '" + name + "' (known: DiT-S, DiT-B, DiT-L, DiT-XL, DiT-S/4, tiny, small, medium)");
    c.validate();
    return c;
  }

  nlohmann::json to_json() const {
    return {{"model", "dit"},  {"image", image},         {"channels", channels},
            {"patch", patch},  {"hidden", hidden},       {"depth", depth},
            {"heads", heads},  {"mlp_ratio", mlp_ratio}, {"classes", classes},
            {"attn_scale", attn_scale == AttnScale::InvHeadDim ? "1/head_dim" : "1/sqrt(head_dim)"},
            {"ln_eps", ln_eps}};
  }
  static DiTConfig from_json(const nlohmann::json& j) {
    DiTConfig c;
    try {
      c.image = j.at("image"); c.channels = j.at("channels"); c.patch = j.at("patch"); c.hidden = j.at("hidden");
      c.depth = j.at("depth"); c.heads = j.at("heads"); c.mlp_ratio = j.at("mlp_ratio"); c.classes = j.at("classes");
      std::string s = j.value("attn_scale", "1/head_dim");
      if (s != "1/head_dim" && s != "1/sqrt(head_dim)") throw ConfigError("unknown attn_scale '" + s + "'");
      c.attn_scale = s == "1/head_dim" ? AttnScale::InvHeadDim : AttnScale::InvSqrtHeadDim;
      c.ln_eps = j.value("ln_eps", 1e-6);
    } catch (const nlohmann::json::exception& e) {
      throw ConfigError(std::string("DiT config JSON: ") + e.what());
    }
    c.validate();
    return c;
  }
};

}  // namespace shortcut::nn
