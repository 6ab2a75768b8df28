// Recorded work: a backend that can record a sequence of its ops and launch it as one (cuda::Backend:
// a CUDA graph, one launch instead of hundreds) offers run_captured(body); on any other backend
// shortcut::run_captured just calls body. OdeSampler runs its N-step loop this way.
//
// The backend records body anew at every call and launches what it recorded, so the recording is
// always the work this call asked for: there is no key to keep, and nothing the caller must stage.
// What body may do: queue ops on the backend (kernels, device-to-device copies, fills). It must not
// move host data (to_device, to_host) or synchronize; a backend that finds body doing so runs it
// without recording instead (and says so in its statistics).
#pragma once
#include <utility>

namespace shortcut {

template <class Be>
concept CapturesWork = requires(const Be& be, void (*body)()) { be.run_captured(body); };

// body() on be, recorded and launched where the backend can (CapturesWork), else called directly.
template <class Be, class F>
void run_captured(const Be& be, F&& body) {
  if constexpr (CapturesWork<Be>)
    be.run_captured(std::forward<F>(body));
  else
    std::forward<F>(body)();
}

}  // namespace shortcut
