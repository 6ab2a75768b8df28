// The named layout of a model's parameters inside one flat buffer. Networks register their tensors
// here at construction (with the PyTorch DiT's names and [out, in] layouts), so checkpoints, the
// optimizer and EMA all work on the same flat arena and look tensors up by name.
#pragma once
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "shortcut/core/error.hpp"
#include "shortcut/core/rng.hpp"

namespace shortcut {

enum class Init { Zero, XavierUniform, Normal002 };

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  size_t offset = 0;
  size_t size = 0;
  Init init = Init::Zero;
  int64_t fan_in = 0, fan_out = 0;  // for Xavier
};

class ParamLayout {
 public:
  // Registers a tensor and returns its offset in the flat buffer. fan_in / fan_out default to the
  // last and first dimensions (a [out, in] weight).
  size_t add(const std::string& name, std::vector<int64_t> shape, Init init, int64_t fan_in = 0, int64_t fan_out = 0) {
    if (index_.count(name)) throw ConfigError("parameter registered twice: " + name);
    ParamInfo p;
    p.name = name;
    p.shape = std::move(shape);
    p.size = 1;
    for (auto d : p.shape) {
      if (d <= 0) throw ShapeError("parameter " + name + " has a non-positive dimension " + shape_str(p.shape));
      p.size *= static_cast<size_t>(d);
    }
    p.offset = total_;
    p.init = init;
    p.fan_in = fan_in ? fan_in : p.shape.back();
    p.fan_out = fan_out ? fan_out : p.shape.front();
    // 16-element alignment keeps every tensor 64-byte aligned for vector loads on both backends.
    total_ += (p.size + 15) / 16 * 16;
    index_[name] = params_.size();
    params_.push_back(std::move(p));
    return params_.back().offset;
  }
  size_t total() const { return total_; }
  const std::vector<ParamInfo>& entries() const { return params_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const ParamInfo& at(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) throw Error("no parameter named " + name);
    return params_[it->second];
  }
  size_t count() const {
    size_t n = 0;
    for (auto& p : params_) n += p.size;
    return n;
  }

  // Fills a host buffer of total() elements with the initial values, deterministically from seed.
  template <class T>
  void initialize(T* host, uint64_t seed) const {
    for (size_t i = 0; i < total_; ++i) host[i] = T(0);
    uint64_t stream = 0;
    for (auto& p : params_) {
      ++stream;
      T* d = host + p.offset;
      if (p.init == Init::XavierUniform) {
        double a = std::sqrt(6.0 / double(p.fan_in + p.fan_out));
        for (size_t i = 0; i < p.size; ++i) d[i] = T(a * (2.0 * philox_uniform(seed, stream, i) - 1.0));
      } else if (p.init == Init::Normal002) {
        for (size_t i = 0; i < p.size; ++i) d[i] = T(0.02 * philox_normal(seed, stream, i));
      }
    }
  }

 private:
  std::vector<ParamInfo> params_;
  std::map<std::string, size_t> index_;
  size_t total_ = 0;
};

}  // namespace shortcut
