// Staged<Be, U>: values the host decides anew for every run of recorded device work (core/capture.hpp)
// — a training step's batch plan, its noise stream, the optimizer's learning rate. The host writes
// them into fixed host memory (Be::HostBuffer: pinned on the CUDA backend, where the copy engines
// read it) and the recorded body's upload() copies them into fixed device memory: a replay copies
// what the host memory holds at the time, so each run reads its own values from the same graph.
//
// Both memories only grow (a graph's pointers into them stay valid while the count fits); growing
// frees the old memory, which drops the graphs that held it. The host may rewrite the values once
// the stream has passed the previous upload: stage after a synchronize (a step's loss read-back).
#pragma once
#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <vector>

namespace shortcut {

template <class Be, class U>
class Staged {
 public:
  // Host side, outside recorded work: room for n values (allocations happen here), written through
  // the pointer returned.
  U* host(size_t n) {
    if (host_.size() < n) host_.resize(n);
    if (dev_.size() < n) dev_.resize(n);
    n_ = n;
    return host_.data();
  }
  template <class V>
  void set(const std::vector<V>& v) {
    std::copy(v.begin(), v.end(), host(v.size()));  // converting (float plan values to the scalar)
  }
  // The copy up, queued on be (inside the recorded body).
  void upload(const Be& be) { be.upload(dev_.data(), host_.data(), n_); }
  // Eager, without the staging memory: values straight to the device (an objective that records
  // nothing uses the same buffers this way).
  template <class V>
  void put(const Be& be, const std::vector<V>& v) {
    if (dev_.size() < v.size()) dev_.resize(v.size());
    n_ = v.size();
    if constexpr (std::is_same_v<U, V>) {
      be.to_device(dev_.data(), v.data(), v.size());
    } else {
      const std::vector<U> c(v.begin(), v.end());
      be.to_device(dev_.data(), c.data(), c.size());
    }
  }
  // The device copy (what upload() wrote).
  const U* data() const { return dev_.data(); }
  U* data() { return dev_.data(); }
  size_t size() const { return n_; }

 private:
  typename Be::template HostBuffer<U> host_;
  typename Be::template Buffer<U> dev_;
  size_t n_ = 0;
};

}  // namespace shortcut
