// Recorded work: CUDA graphs captured from the backend's stream and launched.
//  - The runtime's side (on a GPU as in the emulation): capture records without running, a launch
//    runs the recorded work again, a synchronizing call or the legacy stream breaks the capture,
//    cudaGraphExecUpdate patches an executable graph from a capture of the same topology and refuses
//    another, and a thread-local capture is not broken by another thread's allocations (a global one
//    is). The emulator also refuses cudaMalloc and copies from pageable memory inside a capture
//    (tagged [emulation]: what a GPU reports for those differs between versions).
//  - The backend's side (cuda::Backend::run_captured, graphs.hpp) as OdeSampler uses it: every call
//    captures its body again and patches the last executable graph, so the samples are those of
//    eager sampling bit for bit, in fp32 and bf16, after a weight change (the replay reads the new
//    weights, and their bf16 copies' refresh) and after the buffers were freed and reallocated; a body
//    that cannot be captured runs eagerly, exactly once per call; a buffer freed during a capture is
//    freed once the graph ran (not leaked, not freed under it).
#include <functional>
#include <thread>
#include <vector>

#include "gpu_test_util.hpp"
#include "model_runs.hpp"

using namespace shortcut;
using namespace gputest;
using testutil::randn;

namespace graphs_test {

// A created stream and a device buffer of n floats, for the runtime-level cases.
struct StreamAndBuffer {
  cudaStream_t s = nullptr;
  cuda::DeviceBuffer<float> y;
  explicit StreamAndBuffer(size_t n) : y(n) { SHORTCUT_CUDA_CHECK(cudaStreamCreate(&s)); }
  ~StreamAndBuffer() { cudaStreamDestroy(s); }
  std::vector<float> host() const {
    std::vector<float> h(y.size());
    SHORTCUT_CUDA_CHECK(cudaStreamSynchronize(s));
    SHORTCUT_CUDA_CHECK(cudaMemcpy(h.data(), y.data(), y.bytes(), cudaMemcpyDeviceToHost));
    return h;
  }
};

// Ends the capture on s and expects it broken: no graph, an error, and the error state clean after.
void expect_broken_capture(cudaStream_t s) {
  cudaGraph_t g = nullptr;
  CHECK(cudaStreamEndCapture(s, &g) != cudaSuccess);
  CHECK(g == nullptr);
  cudaGetLastError();
  cudaStreamCaptureStatus st{};
  REQUIRE(cudaStreamIsCapturing(s, &st) == cudaSuccess);
  CHECK(st == cudaStreamCaptureStatusNone);
}

nn::DiTConfig small_dit() {
  nn::DiTConfig c;  // 16 tokens, head dim 32
  c.image = 8; c.channels = 2; c.patch = 2; c.hidden = 64; c.depth = 2; c.heads = 2; c.classes = 3;
  return c;
}

using Model = ShortcutModel<nn::DiT<Gpu>>;

// One model and sampler on a backend, sampling from fixed noise into device buffers per batch size.
struct Sampling {
  Gpu& be;
  Model m;
  OdeSampler<Model> sampler{SamplingSchedule{}};
  Sampling(Gpu& b, const std::vector<double>& P, const std::vector<double>& E) : be(b), m(b, small_dit(), 3) {
    weights(P, E);
  }
  void weights(const std::vector<double>& P, const std::vector<double>& E) {
    m.arena().from_host(Role::Param, std::vector<float>(P.begin(), P.end()));
    m.arena().from_host(Role::Ema, std::vector<float>(E.begin(), E.end()));
  }
  // x1 for labels and settings s, from the noise of (seed 7, stream 0), on device buffers x, y.
  // (`with`: another sampler on the same model instead of this one's)
  std::vector<float> run(const std::vector<int32_t>& labels, const SamplerConfig& s, cuda::DeviceBuffer<float>& x,
                         cuda::DeviceBuffer<int32_t>& y, OdeSampler<Model>* with = nullptr) {
    const auto x0 = sample_noise<float>(m.sample_size(), 0, int64_t(labels.size()), 7, 0);
    nn::ensure(x, x0.size());
    nn::ensure(y, labels.size());
    be.to_device(x.data(), x0.data(), x0.size());
    be.to_device(y.data(), labels.data(), labels.size());
    (with ? *with : sampler).sample(m, x, y, s);
    std::vector<float> out(x0.size());
    be.to_host(out.data(), x.data(), out.size());
    return out;
  }
};

}  // namespace graphs_test

using namespace graphs_test;

TEST_CASE("a captured stream records without running, and each graph launch runs the work again", "[graphs]") {
  StreamAndBuffer sb(1000);
  const size_t n = sb.y.size();
  cuda::DeviceBuffer<float> x(n);
  kernels::fill(x.data(), 0.5f, n, sb.s);
  kernels::fill(sb.y.data(), 1.0f, n, sb.s);
  SHORTCUT_CUDA_CHECK(cudaStreamSynchronize(sb.s));

  REQUIRE(cudaStreamBeginCapture(sb.s, cudaStreamCaptureModeGlobal) == cudaSuccess);
  cudaStreamCaptureStatus st{};
  REQUIRE(cudaStreamIsCapturing(sb.s, &st) == cudaSuccess);
  CHECK(st == cudaStreamCaptureStatusActive);
  kernels::axpy(sb.y.data(), 2.0f, x.data(), n, sb.s);                                             // y += 1
  SHORTCUT_CUDA_CHECK(cudaMemcpyAsync(x.data(), sb.y.data(), 4 * sizeof(float), cudaMemcpyDeviceToDevice, sb.s));
  cudaGraph_t g = nullptr;
  REQUIRE(cudaStreamEndCapture(sb.s, &g) == cudaSuccess);
  REQUIRE(g != nullptr);
  size_t nodes = 0;
  REQUIRE(cudaGraphGetNodes(g, nullptr, &nodes) == cudaSuccess);
  CHECK(nodes == 2);
  CHECK(sb.host() == std::vector<float>(n, 1.0f));  // nothing ran at capture

  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, g, 0) == cudaSuccess);
  SHORTCUT_CUDA_CHECK(cudaGraphDestroy(g));  // the executable graph stands on its own
  for (int i = 0; i < 3; ++i) SHORTCUT_CUDA_CHECK(cudaGraphLaunch(exec, sb.s));
  // replays read what the earlier ones wrote: y = 1 + 1 + 1 + 1 except where x took y's values
  // after the first launch (x[0..4) = 2, then y[0..4) = 2 + 4 = 6, x = 6, y = 6 + 12 = 18)
  const auto y = sb.host();
  CHECK(y[0] == 18.0f);
  CHECK(y[3] == 18.0f);
  CHECK(y[4] == 4.0f);
  CHECK(y[n - 1] == 4.0f);
  SHORTCUT_CUDA_CHECK(cudaGraphExecDestroy(exec));
}

TEST_CASE("a synchronization or the legacy stream inside a capture breaks it", "[graphs]") {
  StreamAndBuffer sb(64);
  SECTION("cudaStreamSynchronize") {
    REQUIRE(cudaStreamBeginCapture(sb.s, cudaStreamCaptureModeGlobal) == cudaSuccess);
    kernels::fill(sb.y.data(), 2.0f, sb.y.size(), sb.s);
    CHECK(cudaStreamSynchronize(sb.s) != cudaSuccess);
    expect_broken_capture(sb.s);
  }
  SECTION("work on the legacy default stream") {
    REQUIRE(cudaStreamBeginCapture(sb.s, cudaStreamCaptureModeGlobal) == cudaSuccess);
    CHECK(cudaMemsetAsync(sb.y.data(), 0, sb.y.bytes(), cudaStreamLegacy) != cudaSuccess);
    expect_broken_capture(sb.s);
  }
  // the stream works normally afterwards
  kernels::fill(sb.y.data(), 3.0f, sb.y.size(), sb.s);
  CHECK(sb.host() == std::vector<float>(sb.y.size(), 3.0f));
}

TEST_CASE("emulation: cudaMalloc and pageable copies inside a capture break it", "[graphs][emulation]") {
  StreamAndBuffer sb(64);
  SECTION("cudaMalloc") {
    REQUIRE(cudaStreamBeginCapture(sb.s, cudaStreamCaptureModeGlobal) == cudaSuccess);
    void* p = nullptr;
    CHECK(cudaMalloc(&p, 256) == cudaErrorStreamCaptureUnsupported);
    expect_broken_capture(sb.s);
  }
  SECTION("a copy from pageable memory") {
    const std::vector<float> h(sb.y.size(), 1.0f);
    REQUIRE(cudaStreamBeginCapture(sb.s, cudaStreamCaptureModeGlobal) == cudaSuccess);
    CHECK(cudaMemcpyAsync(sb.y.data(), h.data(), sb.y.bytes(), cudaMemcpyHostToDevice, sb.s) ==
          cudaErrorStreamCaptureUnsupported);
    expect_broken_capture(sb.s);
  }
}

TEST_CASE("cudaGraphExecUpdate patches a graph of the same topology and refuses another", "[graphs]") {
  StreamAndBuffer sb(256);
  const size_t n = sb.y.size();
  cuda::DeviceBuffer<float> a(n), b(n);
  kernels::fill(a.data(), 1.0f, n, sb.s);
  kernels::fill(b.data(), 10.0f, n, sb.s);
  kernels::fill(sb.y.data(), 0.0f, n, sb.s);
  SHORTCUT_CUDA_CHECK(cudaStreamSynchronize(sb.s));
  // y += w x, then a copy of y's first 4 values into x: two nodes, a kernel and a copy
  auto capture = [&](float w, const float* x, bool extra) {
    REQUIRE(cudaStreamBeginCapture(sb.s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    kernels::axpy(sb.y.data(), w, x, n, sb.s);
    if (extra) kernels::axpy(sb.y.data(), w, x, n, sb.s);
    cudaGraph_t g = nullptr;
    REQUIRE(cudaStreamEndCapture(sb.s, &g) == cudaSuccess);
    return g;
  };
  cudaGraph_t g1 = capture(2.0f, a.data(), false);
  cudaGraphExec_t exec = nullptr;
  REQUIRE(cudaGraphInstantiate(&exec, g1, 0) == cudaSuccess);
  SHORTCUT_CUDA_CHECK(cudaGraphLaunch(exec, sb.s));
  CHECK(sb.host() == std::vector<float>(n, 2.0f));
  // same topology, another scalar and another input buffer: patched, and the launch uses them
  cudaGraph_t g2 = capture(3.0f, b.data(), false);
  cudaGraphExecUpdateResultInfo info{};
  CHECK(cudaGraphExecUpdate(exec, g2, &info) == cudaSuccess);
  CHECK(info.result == cudaGraphExecUpdateSuccess);
  SHORTCUT_CUDA_CHECK(cudaGraphLaunch(exec, sb.s));
  CHECK(sb.host() == std::vector<float>(n, 32.0f));
  // one node more: refused (not a sticky error), and the executable graph stays g2's
  cudaGraph_t g3 = capture(1.0f, a.data(), true);
  CHECK(cudaGraphExecUpdate(exec, g3, &info) != cudaSuccess);
  CHECK(info.result == cudaGraphExecUpdateErrorTopologyChanged);
  cudaGetLastError();
  SHORTCUT_CUDA_CHECK(cudaGraphLaunch(exec, sb.s));
  CHECK(sb.host() == std::vector<float>(n, 62.0f));
  for (cudaGraph_t g : {g1, g2, g3}) SHORTCUT_CUDA_CHECK(cudaGraphDestroy(g));
  SHORTCUT_CUDA_CHECK(cudaGraphExecDestroy(exec));
}

// The runtime's rule: in thread-local mode only the capturing thread is kept from "potentially
// unsafe" calls (cudaMalloc, cudaFree); in global mode every thread is, and such a call breaks the
// capture. One backend per thread is supported, so the backend captures thread-locally.
TEST_CASE("a thread-local capture is not broken by another thread's cudaMalloc and cudaFree", "[graphs]") {
  StreamAndBuffer sb(64);
  for (auto mode : {cudaStreamCaptureModeThreadLocal, cudaStreamCaptureModeGlobal}) {
    const bool local = mode == cudaStreamCaptureModeThreadLocal;
    INFO((local ? "thread-local" : "global"));
    REQUIRE(cudaStreamBeginCapture(sb.s, mode) == cudaSuccess);
    kernels::fill(sb.y.data(), local ? 5.0f : 6.0f, sb.y.size(), sb.s);
    cudaError_t malloc_e = cudaSuccess, free_e = cudaSuccess;
    std::thread other([&] {
      void* p = nullptr;
      malloc_e = cudaMalloc(&p, 1024);
      if (malloc_e == cudaSuccess) free_e = cudaFree(p);
      cudaGetLastError();
    });
    other.join();
    cudaGraph_t g = nullptr;
    const cudaError_t end = cudaStreamEndCapture(sb.s, &g);
    if (local) {
      CHECK(malloc_e == cudaSuccess);
      CHECK(free_e == cudaSuccess);
      REQUIRE(end == cudaSuccess);
      cudaGraphExec_t exec = nullptr;
      REQUIRE(cudaGraphInstantiate(&exec, g, 0) == cudaSuccess);
      SHORTCUT_CUDA_CHECK(cudaGraphLaunch(exec, sb.s));
      CHECK(sb.host() == std::vector<float>(sb.y.size(), 5.0f));
      SHORTCUT_CUDA_CHECK(cudaGraphExecDestroy(exec));
      SHORTCUT_CUDA_CHECK(cudaGraphDestroy(g));
    } else {
      CHECK(malloc_e != cudaSuccess);
      CHECK(end != cudaSuccess);
      CHECK(g == nullptr);
      cudaGetLastError();
      CHECK(sb.host() == std::vector<float>(sb.y.size(), 5.0f));  // the broken capture's fill never ran
    }
  }
}

// One backend per thread is supported: two threads, each with its own backend, run captured bodies
// and host transfers at the same time. Whatever the runtime allows (here the emulation captures one
// stream at a time, so one thread's capture may find the other's running and run eagerly), every
// result is right and nothing throws. The backends and buffers are made before the threads start:
// a DeviceBuffer allocated, resized or copied runs work on the legacy stream, which is invalid while
// any blocking stream captures (cudaErrorStreamCaptureImplicit in that thread; docs/cuda.md).
TEST_CASE("two threads with a backend each capture and run side by side", "[graphs]") {
  const size_t n = 4096;
  constexpr int kCalls = 20;
  struct Side {
    Gpu be;
    Buf<Gpu> x, y;
    std::vector<float> out = std::vector<float>(4096);
    std::string error;
    Side() : x(upload_d(be, std::vector<double>(4096, 1.0))), y(upload_d(be, std::vector<double>(4096, 0.0))) {
      be.run_captured([&] { be.fill(y.data(), 0.0f, y.size()); });  // the first capture's own allocations
    }
  };
  Side one, two;
  auto work = [&](Side& side, float a) {
    try {
      auto& be = side.be;
      for (int i = 0; i < kCalls; ++i) {
        be.run_captured([&] { be.axpy(side.y.data(), a, side.x.data(), n); });
        if (i % 5 == 4) be.to_host(side.out.data(), side.y.data(), n);  // while the other may capture
      }
      be.to_host(side.out.data(), side.y.data(), n);
    } catch (const std::exception& e) {
      side.error = e.what();
    }
  };
  std::thread t1(work, std::ref(one), 1.0f), t2(work, std::ref(two), 2.0f);
  t1.join();
  t2.join();
  CHECK(one.error == "");
  CHECK(two.error == "");
  CHECK(one.out == std::vector<float>(n, float(kCalls)));
  CHECK(two.out == std::vector<float>(n, float(2 * kCalls)));
}

// The first call at new sizes sizes the network's buffers (an allocation: its capture breaks, and it
// runs eagerly); every later call is captured and launched, the first instantiated, the rest patched.
void check_sampling_stats(const cuda::GraphStats& st, uint64_t calls) {
  INFO("last refusal: " << st.last_refusal);
  CHECK(st.eager == 1);
  CHECK(st.refused == 1);
  CHECK(st.replays == calls - 1);
  CHECK(st.instantiated == 1);
  CHECK(st.updated == calls - 2);
}

TEST_CASE("sampling through captured graphs gives the eager samples bit for bit", "[graphs][sampler]") {
  Ref ref;
  nn::DiT<Ref> probe(ref, small_dit());
  const auto P = randn(probe.layout().total(), 0.05), E = randn(probe.layout().total(), 0.05);
  const std::vector<int32_t> labels{0, 2, 1, 3, 1};  // 3: the null label
  for (auto prec : {cuda::Precision::fp32, cuda::Precision::bf16}) {
    for (const SamplerConfig s : {SamplerConfig{1, 1.0, true}, SamplerConfig{4, 1.5, true}, SamplerConfig{2, 1.0, false}}) {
      INFO(cuda::precision_name(prec) << ", " << s.steps << " step(s), guidance " << s.guidance);
      Gpu eager_be(cuda::Options{.precision = prec, .graphs = false}), graph_be(cuda::Options{.precision = prec});
      REQUIRE(graph_be.graphs());
      Sampling eager(eager_be, P, E), graphed(graph_be, P, E);
      cuda::DeviceBuffer<float> ex, gx;
      cuda::DeviceBuffer<int32_t> ey, gy;
      const auto want = eager.run(labels, s, ex, ey);
      for (int call = 0; call < 4; ++call) {  // eager (sizes the buffers), then captured and launched
        INFO("call " << call);
        CHECK(graphed.run(labels, s, gx, gy) == want);
      }
      check_sampling_stats(graph_be.graph_stats(), 4);
      CHECK(eager_be.graph_stats().replays == 0);
#if defined(SHORTCUT_CUDA_EMULATION)
      // a call puts two pieces of work on the stream, whatever the step count: the labels' check (a
      // copy to the host) and the graph; the eager run puts every kernel
      auto queued = [&](Sampling& on, cuda::DeviceBuffer<float>& x, cuda::DeviceBuffer<int32_t>& y) {
        const uint64_t q0 = emu::queued_work();
        on.sampler.sample(on.m, x, y, s);
        return emu::queued_work() - q0;
      };
      CHECK(queued(graphed, gx, gy) == 2);
      CHECK(queued(eager, ex, ey) > 10);
#endif
    }
  }
}

TEST_CASE("a captured sampling loop reads the weights of its call, after any change", "[graphs][sampler]") {
  Ref ref;
  nn::DiT<Ref> probe(ref, small_dit());
  const size_t np = probe.layout().total();
  const auto P = randn(np, 0.05), E = randn(np, 0.05), E2 = randn(np, 0.05);
  const std::vector<int32_t> labels{1, 0, 2};
  const SamplerConfig s{2, 1.0, true};
  for (auto prec : {cuda::Precision::fp32, cuda::Precision::bf16}) {
    INFO(cuda::precision_name(prec));
    Gpu eager_be(cuda::Options{.precision = prec, .graphs = false}), graph_be(cuda::Options{.precision = prec});
    Sampling eager_old(eager_be, P, E), eager_new(eager_be, P, E2);
    cuda::DeviceBuffer<float> ex, gx;
    cuda::DeviceBuffer<int32_t> ey, gy;
    const auto want_old = eager_old.run(labels, s, ex, ey), want = eager_new.run(labels, s, ex, ey);
    REQUIRE(want != want_old);
    Sampling graphed(graph_be, P, E);
    CHECK(graphed.run(labels, s, gx, gy) == want_old);
    CHECK(graphed.run(labels, s, gx, gy) == want_old);  // captured
    const uint64_t replays = graph_be.graph_stats().replays;
    REQUIRE(replays >= 1);
    // a checkpoint load (in bf16 mode the weights' copies go stale: the next capture refreshes them)
    graphed.weights(P, E2);
    CHECK(graphed.run(labels, s, gx, gy) == want);
    CHECK(graphed.run(labels, s, gx, gy) == want);
    // and back
    graphed.weights(P, E);
    CHECK(graphed.run(labels, s, gx, gy) == want_old);
    const auto& st = graph_be.graph_stats();
    INFO("last refusal: " << st.last_refusal);
    CHECK(st.replays == replays + 3);  // every call after the first a graph launch
    CHECK(st.refused == 1);
  }
}

TEST_CASE("a captured sampling loop stays right after its buffers were freed and reallocated", "[graphs][sampler]") {
  Ref ref;
  nn::DiT<Ref> probe(ref, small_dit());
  const auto P = randn(probe.layout().total(), 0.05), E = randn(probe.layout().total(), 0.05);
  const std::vector<int32_t> five{0, 1, 2, 0, 1}, three{2, 2, 0};
  const SamplerConfig s{2, 1.5, true};
  Gpu eager_be(cuda::Options{.graphs = false}), graph_be;
  Sampling eager(eager_be, P, E), graphed(graph_be, P, E);
  cuda::DeviceBuffer<float> ex, gx5, gx3;
  cuda::DeviceBuffer<int32_t> ey, gy5, gy3;
  const auto want5 = eager.run(five, s, ex, ey), want3 = eager.run(three, s, ex, ey);
  CHECK(graphed.run(five, s, gx5, gy5) == want5);
  CHECK(graphed.run(five, s, gx5, gy5) == want5);  // captured: points into the model's B = 5 activations
  // another sampler at B = 3 resizes the model's activations: the memory the last graph pointed into
  // is freed and other memory allocated
  OdeSampler<Model> other{SamplingSchedule{}};
  CHECK(graphed.run(three, s, gx3, gy3, &other) == want3);
  CHECK(graphed.run(five, s, gx5, gy5) == want5);
  // x and y themselves freed and allocated again
  gx5 = cuda::DeviceBuffer<float>();
  gy5 = cuda::DeviceBuffer<int32_t>();
  CHECK(graphed.run(five, s, gx5, gy5) == want5);
  CHECK(graphed.run(five, s, gx5, gy5) == want5);
  const auto& st = graph_be.graph_stats();
  INFO("last refusal: " << st.last_refusal);
  CHECK(st.replays >= 3);
  CHECK(st.eager + st.replays == 6);
}

TEST_CASE("a body that cannot be captured runs eagerly, once per call", "[graphs]") {
  Gpu be;
  const size_t n = 300;
  auto x = upload_d(be, std::vector<double>(n, 0.25)), y = upload_d(be, std::vector<double>(n, 0.0));
  std::vector<float> seen(n);
  auto body = [&] {
    be.axpy(y.data(), 2.0f, x.data(), n);
    be.to_host(seen.data(), y.data(), n);  // a host transfer, which synchronizes: not capturable
  };
  for (int i = 0; i < 3; ++i) be.run_captured(body);
  CHECK(seen == std::vector<float>(n, 1.5f));  // three axpys of 0.5, none lost, none doubled
  const auto& st = be.graph_stats();
  CHECK(st.refused == 3);
  CHECK(st.eager == 3);
  CHECK(st.replays == 0);
  CHECK(!st.last_refusal.empty());
  // the backend works normally afterwards, and captures what it can
  be.run_captured([&] { be.axpy(y.data(), 4.0f, x.data(), n); });
  CHECK(st.replays == 1);
  CHECK(download_d(be, y) == std::vector<double>(n, 2.5));
}

// A buffer released while its thread captures can be neither freed then (cudaFree would break the
// capture and fail, leaking it) nor before the captured work that reads it has run: it is freed once
// the graph ran. The capture survives it.
TEST_CASE("a device buffer freed during a capture is freed after the graph ran, not leaked", "[graphs][device]") {
  Gpu be;
  const size_t n = 1 << 16;
  auto y = upload_d(be, std::vector<double>(n, 0.0));
  be.run_captured([&] { be.fill(y.data(), 0.0f, n); });  // the backend's own first-capture allocations
  size_t free0 = 0, free1 = 0, total = 0;
  SHORTCUT_CUDA_CHECK(cudaMemGetInfo(&free0, &total));
  auto x = std::make_unique<cuda::DeviceBuffer<float>>(upload_d(be, std::vector<double>(n, 0.5)));
  be.run_captured([&] {
    be.axpy(y.data(), 2.0f, x->data(), n);  // recorded: reads x when the graph runs
    x.reset();                                // freed while capturing
  });
  CHECK(download_d(be, y) == std::vector<double>(n, 1.0));
  const auto& st = be.graph_stats();
  INFO("last refusal: " << st.last_refusal);
  CHECK(st.replays == 2);
  CHECK(st.refused == 0);
  SHORTCUT_CUDA_CHECK(cudaMemGetInfo(&free1, &total));
  CHECK(free1 == free0);  // x's memory came back
}
