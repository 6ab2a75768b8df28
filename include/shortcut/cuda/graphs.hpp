// CapturedWork: the CUDA backend's recorded work (shortcut/core/capture.hpp): a body of ops captured
// into a CUDA graph and launched as one, so that an N-step sampling loop of a few hundred kernels
// costs one launch instead of hundreds. Only sampling uses it (OdeSampler); training steps run
// eagerly.
//
// Every call captures the body again (tiny-cuda-nn's pattern, trainer.h / cuda_graph.h): the host side
// of the body runs every time and decides pointers, sizes and scalars afresh, so nothing an author
// writes (no key, no list of what the host side depends on) can make a replay stale. Capturing costs
// host time only; what it saves is the instantiation: where an executable graph from an earlier call
// exists, cudaGraphExecUpdate patches its node parameters from the new capture (same sequence of
// nodes: the same body at other pointers or scalars) and it is launched; where the driver refuses the
// update (the topology changed: another step count, another batch shape), a new one is instantiated.
//
// Capture is thread-local (cudaStreamCaptureModeThreadLocal): a cudaMalloc or cudaFree on another
// thread, with its own backend, does not break this thread's capture (Global mode would).
//
// A body that breaks its capture (it synchronizes, moves host data, allocates, or throws) is run
// again eagerly, once, after the broken capture is discarded (none of its device work ran), and
// counted (GraphStats::refused, last_refusal says why). The first call at new sizes usually does:
// sizing the network's buffers allocates. So the host side of a body must be repeatable: it may run
// twice in one call, its device work only once.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <exception>
#include <string>
#include <utility>

#include "shortcut/cuda/check.hpp"
#include "shortcut/cuda/device_buffer.hpp"

namespace shortcut::cuda {

struct GraphStats {
  uint64_t instantiated = 0;  // executable graphs built (the first capture, and each topology change)
  uint64_t updated = 0;       // captures patched into the existing executable graph (cudaGraphExecUpdate)
  uint64_t replays = 0;       // bodies captured into a graph and launched
  uint64_t eager = 0;         // bodies run without a graph (their capture broke)
  uint64_t refused = 0;       // captures the body broke
  std::string last_refusal;
};

class CapturedWork {
 public:
  CapturedWork() = default;
  CapturedWork(const CapturedWork&) = delete;
  CapturedWork& operator=(const CapturedWork&) = delete;
  ~CapturedWork() { clear(); }

  // body() on stream s, captured and launched as described above. on_refusal(): undoes what a
  // broken capture's host side left behind (it ran, its device work did not).
  template <class F, class OnRefusal>
  void run(cudaStream_t s, F&& body, OnRefusal&& on_refusal) {
    if (detail::capture_depth() > 0) {  // inside another capture on this thread: part of that graph
      body();
      return;
    }
    cudaGraph_t g = nullptr;
    std::string why = capture(s, body, &g);
    if (why.empty()) {
      try {
        launch(s, g);
      } catch (...) {
        cudaGraphDestroy(g);
        release_deferred(s);
        throw;
      }
      cudaGraphDestroy(g);
      release_deferred(s);
      return;
    }
    cudaGetLastError();  // a broken capture is not a device fault: clear it so later checks start clean
    ++stats_.refused;
    stats_.last_refusal = std::move(why);
    release_deferred(s);  // nothing captured ran: what the body freed is free to go
    on_refusal();
    body();
    ++stats_.eager;
  }

  void clear() noexcept {
    if (exec_) cudaGraphExecDestroy(exec_);
    exec_ = nullptr;
  }
  const GraphStats& stats() const { return stats_; }

 private:
  cudaGraphExec_t exec_ = nullptr;  // the last executable graph, patched by each later capture
  GraphStats stats_;

  // Captures body on s into *g; returns why the capture broke, or "" (then *g holds the graph).
  template <class F>
  static std::string capture(cudaStream_t s, F& body, cudaGraph_t* g) {
    // a capture that cannot begin (the emulation captures one stream at a time) is a refusal too
    const cudaError_t begin = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    if (begin != cudaSuccess) return cat("cudaStreamBeginCapture: ", cudaGetErrorString(begin));
    std::string why;
    {
      detail::CaptureScope scope;  // DeviceBuffers freed meanwhile wait for the captured work
      try {
        body();
      } catch (const std::exception& e) {
        why = e.what();
      } catch (...) {
        why = "an exception that is not a std::exception";
      }
    }
    const cudaError_t end = cudaStreamEndCapture(s, g);
    if (why.empty() && end != cudaSuccess) why = cat("cudaStreamEndCapture: ", cudaGetErrorString(end));
    if (!why.empty() && *g) {
      cudaGraphDestroy(*g);
      *g = nullptr;
    }
    return why;
  }

  // Patches the executable graph from g where the driver allows it, else builds a new one; launches it.
  void launch(cudaStream_t s, cudaGraph_t g) {
    if (exec_) {
      cudaGraphExecUpdateResultInfo info{};
      if (cudaGraphExecUpdate(exec_, g, &info) == cudaSuccess) {
        ++stats_.updated;
      } else {
        cudaGetLastError();  // a refused update is an answer, not an error
        clear();
      }
    }
    if (!exec_) {
      check_cuda(cudaGraphInstantiate(&exec_, g, 0), "cudaGraphInstantiate", __FILE__, __LINE__);
      ++stats_.instantiated;
    }
    note_launch("CUDA graph (recorded work)");
    SHORTCUT_CUDA_CHECK(cudaGraphLaunch(exec_, s));
    ++stats_.replays;
  }

  // Buffers freed during the capture may be read by the graph just launched: free them once it ran
  // (free_deferred waits for the device first).
  static void release_deferred(cudaStream_t) { detail::free_deferred(); }
};

}  // namespace shortcut::cuda
