// AdamW parameter groups: per-tensor optimizer settings (weight decay on or off, a learning-rate
// scale, frozen) chosen by glob patterns over the tensor names of a ParamLayout
// ("blocks.0.attn.qkv.weight", "y_embedder.embedding_table.weight", ...).
//
// Pattern syntax (the whole name must match): '*' matches any run of characters, dots included
// ("*.bias", "blocks.*.attn.*"); '?' matches one character; every other character matches itself.
// Globs rather than regular expressions: tensor names are dotted paths, and a regex would make every
// '.' a wildcard unless escaped.
//
// A tensor takes the settings of the first group whose pattern matches it (later groups see only what
// the earlier ones left), and the defaults where none matches. A pattern that matches no tensor, or
// only tensors an earlier group took, is a ConfigError naming it: a typo must not silently train
// everything with the defaults.
#pragma once
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "shortcut/core/error.hpp"
#include "shortcut/core/param_layout.hpp"

namespace shortcut {

struct ParamGroup {
  std::string pattern;
  bool decay = true;      // false: no weight decay on these tensors (biases, norms, embeddings)
  double lr_scale = 1.0;  // their learning rate is the schedule's times this
  bool frozen = false;    // not updated at all: weights and Adam moments stay as they are

  nlohmann::json to_json() const {
    return {{"pattern", pattern}, {"decay", decay}, {"lr_scale", lr_scale}, {"frozen", frozen}};
  }
  static ParamGroup from_json(const nlohmann::json& j) {
    ParamGroup g;
    g.pattern = j.at("pattern").get<std::string>();
    g.decay = j.value("decay", true);
    g.lr_scale = j.value("lr_scale", 1.0);
    g.frozen = j.value("frozen", false);
    return g;
  }
  bool operator==(const ParamGroup&) const = default;
};

// Whether name matches the glob pattern ('*' any run, '?' one character), iteratively with one
// backtrack point: linear in practice, no recursion on long names.
inline bool glob_match(std::string_view pattern, std::string_view name) {
  size_t p = 0, n = 0, star = std::string_view::npos, resume = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++p;
      ++n;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = n;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      n = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

// A stretch of the flat arena [offset, offset + size) whose tensors share one setting.
struct ParamRun {
  size_t offset = 0, size = 0;
  bool decay = true;
  double lr_scale = 1.0;
  bool frozen = false;
};

inline void validate_groups(const std::vector<ParamGroup>& groups) {
  for (auto& g : groups) {
    if (g.pattern.empty()) throw ConfigError("AdamW parameter group with an empty pattern");
    if (!(g.lr_scale >= 0) || !std::isfinite(g.lr_scale))
      throw ConfigError(cat("AdamW parameter group '", g.pattern, "': lr_scale must be finite and non-negative, got ",
                            g.lr_scale));
  }
}

// The runs of the layout's flat buffer under the groups: neighbouring tensors with the same settings
// form one run, so a layout with no groups (or groups that change nothing) is one run, the flat pass.
// A tensor's run covers its alignment padding too (zeros in the weights and gradients, as in the flat
// pass).
inline std::vector<ParamRun> resolve_groups(const std::vector<ParamGroup>& groups, const ParamLayout& L) {
  validate_groups(groups);
  const auto& e = L.entries();
  std::vector<int> owner(e.size(), -1);
  for (size_t g = 0; g < groups.size(); ++g) {
    bool any = false, taken = false;
    for (size_t i = 0; i < e.size(); ++i) {
      if (!glob_match(groups[g].pattern, e[i].name)) continue;
      if (owner[i] >= 0) {
        taken = true;
        continue;
      }
      owner[i] = int(g);
      any = true;
    }
    if (!any)
      throw ConfigError(taken ? cat("AdamW parameter group '", groups[g].pattern,
                                    "' matches only tensors that an earlier group already took")
                              : cat("AdamW parameter group '", groups[g].pattern, "' matches no tensor (names look like '",
                                    e.empty() ? std::string() : e.front().name, "')"));
  }
  std::vector<ParamRun> runs;
  for (size_t i = 0; i < e.size(); ++i) {
    ParamRun r;
    r.offset = e[i].offset;
    r.size = (i + 1 < e.size() ? e[i + 1].offset : L.total()) - e[i].offset;
    if (owner[i] >= 0) {
      const ParamGroup& g = groups[size_t(owner[i])];
      r.decay = g.decay;
      r.lr_scale = g.lr_scale;
      r.frozen = g.frozen;
    }
    if (!runs.empty() && runs.back().decay == r.decay && runs.back().lr_scale == r.lr_scale &&
        runs.back().frozen == r.frozen && runs.back().offset + runs.back().size == r.offset)
      runs.back().size += r.size;
    else
      runs.push_back(r);
  }
  return runs;
}

}  // namespace shortcut
