// InferenceModel<Net>: a velocity network with one weight set (the EMA weights by default, or the raw
// ones) and the activations of its forward pass, nothing else: no gradients, no second weight set, no
// optimiser moments, and no random initialisation (the weights come from a file or from the caller).
// It satisfies shortcut::SamplingModel (core/concepts.hpp), so OdeSampler and generate take it; its
// velocity is ShortcutModel's (detail::GuidedVelocity), so both sample the same values bit for bit.
// load_generator (train/generator.hpp) builds one from a checkpoint folder's metadata.
#pragma once
#include <filesystem>
#include <vector>

#include "shortcut/core/arena.hpp"
#include "shortcut/core/concepts.hpp"
#include "shortcut/io/checkpoint.hpp"
#include "shortcut/train/guided_velocity.hpp"

namespace shortcut {

template <VelocityNetwork Net>
class InferenceModel {
 public:
  using Network = Net;
  using Backend = typename Net::Backend;
  using T = typename Net::Scalar;

  // From host weights: layout().total() values in the layout's flat order (io::load_weights returns
  // them), the weight set `held` (Role::Ema or Role::Param; velocity() refuses the other one).
  InferenceModel(Backend& be, const typename Net::Config& cfg, const std::vector<T>& weights, Role held = Role::Ema)
      : be_(&be), net_(be, cfg), held_(check_role(held)) {
    upload(weights);
  }
  // From a weights file, or a checkpoint folder's ema.safetensors (held = Role::Ema) or
  // model.safetensors (held = Role::Param). The file is checked as io::load_weights checks it: its
  // config must equal cfg's, and every tensor must be there with its shape.
  InferenceModel(Backend& be, const typename Net::Config& cfg, const std::filesystem::path& path_or_dir,
                 Role held = Role::Ema, const io::LoadOptions& opt = {})
      : be_(&be), net_(be, cfg), held_(check_role(held)) {
    const nlohmann::json c = net_.config_json();
    upload(io::load_weights<T>(io::weights_file(path_or_dir, held_), net_.layout(), &c, io::fixed_tensors(net_), opt));
  }

  Backend& backend() const { return *be_; }
  const Net& net() const { return net_; }
  int64_t sample_size() const { return net_.sample_size(); }
  std::vector<int64_t> sample_shape() const { return net_.sample_shape(); }
  int num_classes() const { return net_.num_classes(); }
  int32_t null_label() const { return net_.num_classes(); }
  // The weight set this model holds (Role::Ema or Role::Param).
  Role weights() const { return held_; }
  // Device bytes of the weights (the only parameter memory this model holds).
  size_t weight_bytes() const { return w_.size() * sizeof(T); }
  // The weights on the host, in the layout's flat order.
  std::vector<T> weights_to_host() const {
    std::vector<T> h(w_.size());
    be_->to_host(h.data(), w_.data(), w_.size());
    return h;
  }

  // out[B, sample] = guided velocity: v(null) + w (v(y) - v(null)), or v(y) when w == 1. All inputs
  // are device pointers. `weights` must be the set this model holds.
  void velocity(T* out, const T* x, const T* t, const T* k, const int32_t* y, int B, T guidance, Role weights) {
    if (weights != held_)
      throw ConfigError(cat("this inference model holds the ", held_ == Role::Ema ? "EMA" : "raw", " weights ('",
                            role_name(held_), "') only; the ", role_name(weights),
                            " weights were asked for (SamplerConfig::use_ema = ", held_ == Role::Ema ? "true" : "false",
                            " samples with the weights it holds; load the others to sample with them)"));
    guided_(*be_, net_, w_.data(), out, x, t, k, y, B, guidance);
  }
  // The same with typed device data (out, x [B, sample]; t, k, y [B], B = y.size()), shapes and
  // labels checked: the entry point for callers outside the library's own loops.
  void velocity(DeviceSpan<T, Backend> out, DeviceSpan<const T, Backend> x, DeviceSpan<const T, Backend> t,
                DeviceSpan<const T, Backend> k, DeviceSpan<const int32_t, Backend> y, T guidance, Role weights) {
    const int B = detail::check_velocity_args(*be_, sample_size(), num_classes(), out, x, t, k, y);
    velocity(out.data(), x.data(), t.data(), k.data(), y.data(), B, guidance, weights);
  }

 private:
  static Role check_role(Role r) {
    if (r != Role::Ema && r != Role::Param)
      throw ConfigError(cat("an inference model holds Role::Ema or Role::Param weights, not '", role_name(r), "'"));
    return r;
  }
  void upload(const std::vector<T>& h) {
    const size_t n = net_.layout().total();
    if (h.size() != n) throw ShapeError(cat("inference model: expected ", n, " weights, got ", h.size()));
    w_.resize(n);
    be_->to_device(w_.data(), h.data(), n);
  }

  Backend* be_;
  Net net_;
  Role held_;
  typename Backend::template Buffer<T> w_;
  detail::GuidedVelocity<Net> guided_;
};

}  // namespace shortcut
