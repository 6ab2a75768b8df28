// The guided velocity without gradient, shared by ShortcutModel and InferenceModel so that both
// compute it with the same operations in the same order (their samples agree bit for bit):
//   v = v(null) + w (v(y) - v(null)), or v(y) when w == 1,
// as one forward of 2B rows [x; x] with labels [y; null].
#pragma once
#include <cstdint>
#include <vector>

#include "shortcut/core/concepts.hpp"
#include "shortcut/core/span.hpp"
#include "shortcut/nn/linear.hpp"

namespace shortcut::detail {

template <VelocityNetwork Net>
class GuidedVelocity {
 public:
  using Backend = typename Net::Backend;
  using T = typename Net::Scalar;

  // out[B, sample] from the weights P (a weight set's base pointer); all inputs are device pointers.
  void operator()(Backend& be, Net& net, const T* P, T* out, const T* x, const T* t, const T* k, const int32_t* y,
                  int B, T guidance) {
    const size_t n = size_t(B) * size_t(net.sample_size());
    if (guidance == T(1)) {
      net.forward(ctx_, P, x, t, k, y, B, out);
      return;
    }
    nn::ensure(gx_, 2 * n); nn::ensure(gt_, 2 * size_t(B)); nn::ensure(gk_, 2 * size_t(B));
    nn::ensure(gy_, 2 * size_t(B)); nn::ensure(gv_, 2 * n);
    be.copy(gx_.data(), x, n); be.copy(gx_.data() + n, x, n);
    be.copy(gt_.data(), t, size_t(B)); be.copy(gt_.data() + B, t, size_t(B));
    be.copy(gk_.data(), k, size_t(B)); be.copy(gk_.data() + B, k, size_t(B));
    be.copy(gy_.data(), y, size_t(B));
    if (nulls_for_ != B || nulls_at_ != gy_.data()) {
      // the null labels are uploaded when the batch changes only: no host copy on the way of a
      // sampling loop that a backend records (core/capture.hpp)
      std::vector<int32_t> nulls(size_t(B), int32_t(net.num_classes()));
      be.to_device(gy_.data() + B, nulls.data(), size_t(B));
      nulls_for_ = B;
      nulls_at_ = gy_.data();
    }
    net.forward(ctx_, P, gx_.data(), gt_.data(), gk_.data(), gy_.data(), 2 * B, gv_.data());
    be.cfg_combine(out, gv_.data(), gv_.data() + n, guidance, n);
  }

  // The context the forward passes run in (what forward keeps for a backward that never comes).
  typename Net::Context& context() { return ctx_; }

 private:
  typename Net::Context ctx_;
  typename Backend::template Buffer<T> gx_, gt_, gk_, gv_;
  typename Backend::template Buffer<int32_t> gy_;
  int nulls_for_ = -1;                  // gy_[B, 2B) holds the null label for this B ...
  const int32_t* nulls_at_ = nullptr;  // ... in this allocation
};

// The typed velocity entry point's checks: out and x hold B = y.size() samples of n values, t and k
// B values, the labels lie in [0, classes]. Returns B.
template <class Be, class T>
int check_velocity_args(const Be& be, int64_t n, int classes, DeviceSpan<T, Be> out, DeviceSpan<const T, Be> x,
                        DeviceSpan<const T, Be> t, DeviceSpan<const T, Be> k, DeviceSpan<const int32_t, Be> y) {
  const size_t B = y.size();
  check_size("velocity output", out.size(), B * size_t(n));
  check_size("velocity input x", x.size(), B * size_t(n));
  check_size("velocity times t", t.size(), B);
  check_size("velocity step indices k", k.size(), B);
  check_labels(be, y, classes);
  return int(B);
}

}  // namespace shortcut::detail
