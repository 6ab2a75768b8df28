// One allocation per role (parameters, gradients, EMA weights, Adam moments), all sharing one
// ParamLayout, so that AdamW and EMA are single flat loops (one kernel each on the GPU) and a
// checkpoint is a walk over named views.
#pragma once
#include <cstddef>
#include <utility>
#include <vector>

#include "shortcut/core/param_layout.hpp"

namespace shortcut {

enum class Role { Param = 0, Grad, Ema, AdamM, AdamV };
inline constexpr int kRoles = 5;
inline const char* role_name(Role r) {
  static const char* n[] = {"param", "grad", "ema", "adam_m", "adam_v"};
  return n[static_cast<int>(r)];
}

// A backend that keeps reduced-precision copies of the weights its products read (cuda::Backend in
// bf16 mode): the arena registers its raw and EMA weights with it while they are allocated.
template <class Be>
concept KeepsWeightCopies = requires(const Be& be, const typename Be::Scalar* p, size_t n) {
  be.keep_weight_copy(p, n);
  be.drop_weight_copy(p);
};

// Backend: any shortcut::ComputeBackend (only its memory ops are used). Not constrained here, because
// core/concepts.hpp builds on this header (VelocityModel names ParamArena); its users are constrained.
template <class Backend>
class ParamArena {
 public:
  using T = typename Backend::Scalar;
  using Buf = typename Backend::template Buffer<T>;

  ParamArena(Backend& be, const ParamLayout& layout) : be_(&be), layout_(layout) {
    for (int r = 0; r < 2; ++r) enable(static_cast<Role>(r));
  }
  ~ParamArena() { forget_weights(); }
  ParamArena(const ParamArena& o) : be_(o.be_), layout_(o.layout_) {
    for (int r = 0; r < kRoles; ++r) bufs_[r] = o.bufs_[r];
    keep_weights();
  }
  ParamArena& operator=(const ParamArena& o) {
    if (this != &o) *this = ParamArena(o);
    return *this;
  }
  // The allocations move, and their registration with them; the moved-from arena holds none.
  ParamArena(ParamArena&& o) noexcept : be_(o.be_), layout_(std::move(o.layout_)) {
    for (int r = 0; r < kRoles; ++r) bufs_[r] = std::move(o.bufs_[r]);
  }
  ParamArena& operator=(ParamArena&& o) noexcept {
    if (this != &o) {
      forget_weights();
      be_ = o.be_;
      layout_ = std::move(o.layout_);
      for (int r = 0; r < kRoles; ++r) bufs_[r] = std::move(o.bufs_[r]);
    }
    return *this;
  }
  const ParamLayout& layout() const { return layout_; }
  size_t size() const { return layout_.total(); }
  Backend& backend() const { return *be_; }

  // Allocates a role (zero-filled) if it is not there yet.
  void enable(Role r) {
    auto& b = bufs_[static_cast<int>(r)];
    if (b.size() != size()) {
      if (is_weights(r)) forget(b);
      b.resize(size());
      be_->fill(b.data(), T(0), size());
      if (is_weights(r)) keep(b);
    }
  }
  bool has(Role r) const { return bufs_[static_cast<int>(r)].size() == size(); }
  // Bytes held by the allocated roles (what the weights, gradients, EMA and moments occupy).
  size_t allocated_bytes() const {
    size_t n = 0;
    for (auto& b : bufs_) n += b.size() * sizeof(T);
    return n;
  }
  T* data(Role r) {
    if (!has(r)) throw Error(cat("parameter arena: role '", role_name(r), "' is not allocated"));
    return bufs_[static_cast<int>(r)].data();
  }
  const T* data(Role r) const { return const_cast<ParamArena*>(this)->data(r); }
  T* view(Role r, const std::string& name) { return data(r) + layout_.at(name).offset; }

  void initialize(uint64_t seed) {
    std::vector<T> h(size());
    layout_.initialize(h.data(), seed);
    be_->to_device(data(Role::Param), h.data(), size());
  }
  void zero_grad() { be_->fill(data(Role::Grad), T(0), size()); }
  std::vector<T> to_host(Role r) const {
    std::vector<T> h(size());
    be_->to_host(h.data(), data(r), size());
    return h;
  }
  void from_host(Role r, const std::vector<T>& h) {
    if (h.size() != size()) throw ShapeError(cat("arena ", role_name(r), ": expected ", size(), " values, got ", h.size()));
    enable(r);
    be_->to_device(data(r), h.data(), size());
  }
  void copy_role(Role dst, Role src) {
    enable(dst);
    be_->copy(data(dst), data(src), size());
  }

 private:
  Backend* be_;
  ParamLayout layout_;
  Buf bufs_[kRoles];

  static bool is_weights(Role r) { return r == Role::Param || r == Role::Ema; }
  void keep(const Buf& b) {
    if constexpr (KeepsWeightCopies<Backend>)
      if (b.size()) be_->keep_weight_copy(b.data(), b.size());
  }
  void forget(const Buf& b) {
    if constexpr (KeepsWeightCopies<Backend>)
      if (b.size()) be_->drop_weight_copy(b.data());
  }
  void keep_weights() {
    for (Role r : {Role::Param, Role::Ema}) keep(bufs_[static_cast<int>(r)]);
  }
  void forget_weights() {
    for (Role r : {Role::Param, Role::Ema}) forget(bufs_[static_cast<int>(r)]);
  }
};

}  // namespace shortcut
