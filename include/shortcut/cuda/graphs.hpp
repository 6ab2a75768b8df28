// GraphCache: the CUDA backend's recorded work (shortcut/core/capture.hpp): op sequences that repeat,
// captured into CUDA graphs and replayed, so that an N-step sampling loop of a few hundred kernels
// costs one launch.
//
// Per key: the first call runs eagerly (it sizes every buffer and scratch the work needs), the
// second captures the body on the backend's stream and launches the graph, later calls only launch.
// A graph holds device pointers and the host-side decisions of its capture, so it is dropped when
// the validity token the backend supplies changed since: a device buffer was freed anywhere (its
// pointers may dangle or alias new memory), or a kept bf16 weight copy went stale (the graph would
// read it without refreshing it). A body that cannot be captured (it synchronizes, moves host data,
// allocates) breaks the capture: the cache ends it, runs the body eagerly, and runs that key
// eagerly from then on (GraphStats::refused says how often, last_refusal why).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <exception>
#include <map>
#include <string>
#include <utility>

#include "shortcut/core/capture.hpp"
#include "shortcut/cuda/check.hpp"

namespace shortcut::cuda {

struct GraphStats {
  uint64_t eager = 0;     // bodies run without a graph (first sight of a key, refused keys)
  uint64_t captures = 0;  // graphs captured and instantiated
  uint64_t replays = 0;   // graph launches (the launch right after a capture included)
  uint64_t dropped = 0;   // graphs dropped because their validity token changed (or evicted)
  uint64_t refused = 0;   // captures the body broke
  std::string last_refusal;
};

class GraphCache {
 public:
  static constexpr size_t kCapacity = 16;  // graphs kept; the least recently used goes first

  GraphCache() = default;
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;
  ~GraphCache() { clear(); }

  // body() on stream s, as described above. token() -> uint64_t: the validity token now;
  // on_refusal(): undoes what a broken capture's host side left behind (it ran, its work did not).
  template <class F, class Token, class OnRefusal>
  void run(cudaStream_t s, const CaptureKey& key, F&& body, Token&& token, OnRefusal&& on_refusal) {
    auto it = entries_.find(key);
    if (it != entries_.end() && it->second.token != token()) {
      destroy(it->second);
      ++stats_.dropped;
      entries_.erase(it);
      it = entries_.end();
    }
    if (it == entries_.end()) {
      evict_if_full();
      body();
      ++stats_.eager;
      entries_.emplace(key, Entry{token(), nullptr, false, ++clock_});
      return;
    }
    Entry& e = it->second;
    e.last_use = ++clock_;
    if (e.refused) {
      body();
      ++stats_.eager;
      return;
    }
    if (!e.exec && !capture(s, e, body)) {
      on_refusal();
      body();
      ++stats_.eager;
      return;
    }
    note_launch("CUDA graph (recorded work)");
    SHORTCUT_CUDA_CHECK(cudaGraphLaunch(e.exec, s));
    ++stats_.replays;
  }

  void clear() noexcept {
    for (auto& [k, e] : entries_) destroy(e);
    entries_.clear();
  }
  const GraphStats& stats() const { return stats_; }

 private:
  struct Entry {
    uint64_t token;
    cudaGraphExec_t exec;
    bool refused;
    uint64_t last_use;
  };
  std::map<CaptureKey, Entry> entries_;
  GraphStats stats_;
  uint64_t clock_ = 0;

  template <class F>
  bool capture(cudaStream_t s, Entry& e, F& body) {
    SHORTCUT_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    std::string why;
    try {
      body();
    } catch (const std::exception& ex) {
      why = ex.what();
    }
    cudaGraph_t g = nullptr;
    const cudaError_t end = cudaStreamEndCapture(s, &g);
    if (why.empty() && end != cudaSuccess) why = cat("cudaStreamEndCapture: ", cudaGetErrorString(end));
    if (!why.empty()) {
      if (g) cudaGraphDestroy(g);
      cudaGetLastError();  // a broken capture is not a device fault: clear it so later checks start clean
      e.refused = true;
      ++stats_.refused;
      stats_.last_refusal = why;
      return false;
    }
    cudaGraphExec_t exec = nullptr;
    const cudaError_t inst = cudaGraphInstantiate(&exec, g, 0);
    cudaGraphDestroy(g);
    check_cuda(inst, "cudaGraphInstantiate", __FILE__, __LINE__);
    e.exec = exec;
    ++stats_.captures;
    return true;
  }
  static void destroy(Entry& e) noexcept {
    if (e.exec) cudaGraphExecDestroy(e.exec);
    e.exec = nullptr;
  }
  void evict_if_full() {
    if (entries_.size() < kCapacity) return;
    auto oldest = entries_.begin();
    for (auto it = entries_.begin(); it != entries_.end(); ++it)
      if (it->second.last_use < oldest->second.last_use) oldest = it;
    destroy(oldest->second);
    ++stats_.dropped;
    entries_.erase(oldest);
  }
};

}  // namespace shortcut::cuda
