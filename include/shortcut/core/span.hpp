// Typed views at the API boundary: DeviceSpan<T, Be> is memory the backend Be computes on (its
// Buffer<T>: cudaMalloc'd for cuda::Backend, aligned host memory for cpu::Backend), HostSpan<T> is
// ordinary host memory. They are distinct types so that handing a std::vector to an entry point that
// wants device memory stops at compile time on every backend, not with a crash once the code is
// switched to CUDA: cpu::Backend's Buffer has its own allocator, so a plain std::vector is not one
// even where the "device" is the host.
//
// A DeviceSpan comes from a Be::Buffer (implicitly), from another DeviceSpan (non-const to const,
// subspan), or from DeviceSpan::adopt(ptr, n), the one explicit promise that a raw pointer is Be's
// memory (e.g. cudaMalloc'd by the caller). Sizes travel with the data, so entry points check shapes
// instead of trusting a separate B.
#pragma once
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "shortcut/core/error.hpp"

namespace shortcut {

template <class T>
using HostSpan = std::span<T>;

namespace detail {
template <class>
inline constexpr bool host_memory_passed_as_device = false;
// Whether Be's Buffer memory is the host's (false when unknown: callers then copy, right for any memory).
template <class Be>
constexpr bool host_memory() {
  if constexpr (requires { Be::host_memory; }) return Be::host_memory;
  return false;
}
}  // namespace detail

template <class T, class Be>
class DeviceSpan {
 public:
  using element_type = T;
  using value_type = std::remove_const_t<T>;
  using Buffer = typename Be::template Buffer<value_type>;

  DeviceSpan() = default;
  DeviceSpan(Buffer& b) : p_(b.data()), n_(b.size()) {}  // NOLINT: implicit by design
  DeviceSpan(const Buffer& b)
    requires std::is_const_v<T>
      : p_(b.data()), n_(b.size()) {}
  template <class U>
    requires(std::is_const_v<T> && std::same_as<const U, T> && !std::is_const_v<U>)
  DeviceSpan(DeviceSpan<U, Be> o) : p_(o.data()), n_(o.size()) {}  // NOLINT: T* -> const T*
  // Host vectors are not device memory: a readable error rather than "no viable conversion".
  template <class A>
    requires(!std::same_as<std::vector<value_type, A>, Buffer>)
  DeviceSpan(const std::vector<value_type, A>&) {
    static_assert(detail::host_memory_passed_as_device<A>,
                  "host memory (a std::vector) passed where the backend wants device memory: copy it into a "
                  "Backend::Buffer with shortcut::upload(be, host) or be.to_device, or pass a HostSpan where "
                  "the entry point takes host data");
  }

  // The caller's promise that p points to n values of Be's memory.
  static DeviceSpan adopt(T* p, size_t n) {
    DeviceSpan s;
    s.p_ = p;
    s.n_ = n;
    return s;
  }

  T* data() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  DeviceSpan subspan(size_t offset, size_t count) const {
    if (offset > n_ || count > n_ - offset)
      throw ShapeError(cat("subspan [", offset, ", ", offset + count, ") of a device span of ", n_, " values"));
    return adopt(p_ + offset, count);
  }
  DeviceSpan first(size_t count) const { return subspan(0, count); }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// A device copy of host data.
template <class Be, class T>
typename Be::template Buffer<std::remove_const_t<T>> upload(const Be& be, HostSpan<T> host) {
  typename Be::template Buffer<std::remove_const_t<T>> d;
  d.resize(host.size());
  if (!host.empty()) be.to_device(d.data(), host.data(), host.size());
  return d;
}
template <class Be, class T, class A>
typename Be::template Buffer<T> upload(const Be& be, const std::vector<T, A>& host) {
  return upload(be, HostSpan<const T>(host));
}

// A host copy of device data.
template <class Be, class T>
std::vector<std::remove_const_t<T>> download(const Be& be, DeviceSpan<T, Be> dev) {
  std::vector<std::remove_const_t<T>> h(dev.size());
  if (!dev.empty()) be.to_host(h.data(), dev.data(), dev.size());
  return h;
}

// A host copy of a whole device buffer of Be.
template <class Be, class Buf>
  requires std::same_as<Buf, typename Be::template Buffer<typename Buf::value_type>>
std::vector<typename Buf::value_type> download(const Be& be, const Buf& dev) {
  return download(be, DeviceSpan<const typename Buf::value_type, Be>(dev));
}

// Throws ShapeError unless `what` holds `expected` values.
inline void check_size(const char* what, size_t got, size_t expected) {
  if (got != expected) throw ShapeError(cat(what, " holds ", got, " values, expected ", expected));
}

// Labels must lie in [0, classes], `classes` being the null label: a label past the table would read
// out of bounds on every backend.
inline void check_labels(const int32_t* labels, size_t n, int classes) {
  for (size_t r = 0; r < n; ++r)
    if (labels[r] < 0 || labels[r] > classes)
      throw ConfigError(cat("label ", labels[r], " of row ", r, " is outside [0, ", classes, "] (", classes,
                            " = the null label)"));
}
inline void check_labels(HostSpan<const int32_t> labels, int classes) {
  check_labels(labels.data(), labels.size(), classes);
}
// Device labels are checked on a host copy (B values: negligible beside a forward pass).
template <class Be>
void check_labels(const Be& be, DeviceSpan<const int32_t, Be> labels, int classes) {
  if constexpr (detail::host_memory<Be>()) {
    check_labels(labels.data(), labels.size(), classes);
  } else {
    const std::vector<int32_t> h = download(be, labels);
    check_labels(h.data(), h.size(), classes);
  }
}

}  // namespace shortcut
