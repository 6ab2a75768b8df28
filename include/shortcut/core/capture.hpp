// Recorded work: a backend that can record a sequence of its ops once and replay it (cuda::Backend:
// a CUDA graph, one launch instead of hundreds) offers run_captured(key, body); on any other backend
// shortcut::run_captured just calls body. OdeSampler runs its N-step loop this way.
//
// What body may do: queue ops on the backend (kernels, device-to-device copies, fills). It must not
// move host data (to_device, to_host), synchronize, or allocate at the sizes of a call seen before:
// a replay repeats only the device work, so whatever the host side of body decides (pointers, sizes,
// scalars passed to the ops) must be a function of the key. A backend that finds body breaking this
// at capture runs it without recording instead (and says so in its statistics).
#pragma once
#include <bit>
#include <compare>
#include <concepts>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace shortcut {

// Everything the host side of a recorded body decides from: the pointers it is given, its sizes and
// the scalars it bakes into ops. Two calls with equal keys must queue the same work.
class CaptureKey {
 public:
  template <class... A>
  explicit CaptureKey(const A&... parts) {
    (add(parts), ...);
  }
  CaptureKey& add(const void* p) { return push(uint64_t(reinterpret_cast<uintptr_t>(p))); }
  CaptureKey& add(double v) { return push(std::bit_cast<uint64_t>(v)); }
  CaptureKey& add(float v) { return add(double(v)); }
  template <std::integral I>
  CaptureKey& add(I v) {
    return push(uint64_t(v));
  }
  auto operator<=>(const CaptureKey&) const = default;

 private:
  std::vector<uint64_t> parts_;
  CaptureKey& push(uint64_t v) {
    parts_.push_back(v);
    return *this;
  }
};

template <class Be>
concept CapturesWork = requires(const Be& be, const CaptureKey& key, void (*body)()) { be.run_captured(key, body); };

// body() on be, recorded and replayed where the backend can (CapturesWork), else called directly.
template <class Be, class F>
void run_captured(const Be& be, const CaptureKey& key, F&& body) {
  if constexpr (CapturesWork<Be>)
    be.run_captured(key, std::forward<F>(body));
  else
    std::forward<F>(body)();
}

}  // namespace shortcut
