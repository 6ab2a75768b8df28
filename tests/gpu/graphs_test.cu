// Recorded work: CUDA graphs captured from the backend's stream and replayed.
//  - The runtime's side (on a GPU as in the emulation): capture records without running, a launch
//    runs the recorded work again, a synchronizing call or the legacy stream breaks the capture. The
//    emulator also refuses cudaMalloc and copies from pageable memory inside a capture (tagged
//    [emulation]: what a GPU reports for those differs between versions; the library does neither).
//  - The backend's side (cuda::Backend::run_captured, graphs.hpp) as OdeSampler uses it: the samples
//    of replayed graphs are those of eager sampling bit for bit, in fp32 and bf16; a graph is dropped
//    and recorded again after a weight load that left the bf16 copies stale, and after the buffers it
//    points into were freed; a body that cannot be captured runs eagerly, exactly once per call.
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

// Training steps through replayed graphs against the same steps eager. The backward's atomics (bias,
// adaLN and label-table gradients over tokens) add in whatever order the blocks run, so two eager
// runs differ in the last bits too: those stay within `tol` relative, a replay of stale work goes far
// outside it. Only the first step starts from equal weights (its losses bit for bit); every later
// step starts from weights that carry those last bits, and so do its losses (1e-6).
template <class Run>
void check_steps_close(const Run& got, const Run& want, double tol) {
  CHECK(std::vector<double>(got.losses.begin(), got.losses.begin() + 3) ==
        std::vector<double>(want.losses.begin(), want.losses.begin() + 3));
  check_close("losses", got.losses, want.losses, 1e-6);
  check_close("weights", got.param, want.param, tol);
  check_close("EMA weights", got.ema, want.ema, tol);
  check_close("gradients", got.grad, want.grad, tol);
}

// One key's history: an eager first call (it sized the buffers), one capture, then only replays.
void check_one_capture(const cuda::GraphStats& st, uint64_t replays) {
  INFO("last refusal: " << st.last_refusal);
  CHECK(st.eager == 1);
  CHECK(st.captures == 1);
  CHECK(st.replays == replays);
  CHECK(st.refused == 0);
  CHECK(st.dropped == 0);
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
  OdeSampler<Model> sampler{ShortcutConfig{}};
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

TEST_CASE("sampling from replayed graphs gives the eager samples bit for bit", "[graphs][sampler]") {
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
      for (int call = 0; call < 4; ++call) {  // eager, captured + launched, replayed, replayed
        INFO("call " << call);
        CHECK(graphed.run(labels, s, gx, gy) == want);
      }
      const auto& st = graph_be.graph_stats();
      CHECK(st.eager == 1);
      CHECK(st.captures == 1);
      CHECK(st.replays == 3);
      CHECK(st.refused == 0);
      CHECK(eager_be.graph_stats().replays == 0);
    }
  }
}

// SelfConsistencyLoss::step records everything after its host part (the plan's uploads and the
// noise): the flow rows, both bootstrap queries, the training forward, the loss and the backward.
// Four steps with AdamW and the EMA between them (outside the graph): losses, weights and gradients
// those of the eager run to the last bits the backward's atomics leave open, with one eager step, one
// capture, three launches.
TEST_CASE("training steps through replayed graphs equal eager steps", "[graphs][training]") {
  const nn::DiTConfig c = small_dit();
  Ref ref;
  nn::DiT<Ref> probe(ref, c);
  const int B = 32;  // one bootstrap row per step size, guided ones among them
  const auto P0 = randn(probe.layout().total(), 0.1);
  const auto x1 = randn(size_t(B) * probe.sample_size());
  const auto y = random_ids(B, c.classes);
  for (auto prec : {cuda::Precision::fp32, cuda::Precision::bf16}) {
    INFO(cuda::precision_name(prec));
    Gpu eager_be(cuda::Options{.precision = prec, .graphs = false}), graph_be(cuda::Options{.precision = prec});
    const StepRun want = run_training(eager_be, c, P0, x1, y, B, 4);
    const StepRun got = run_training(graph_be, c, P0, x1, y, B, 4);
    // two eager runs differ by about 1e-9 relative (the backward's atomics), so does graph vs eager
    check_steps_close(got, want, 1e-6);
    for (double l : got.losses) REQUIRE(std::isfinite(l));
    check_one_capture(graph_be.graph_stats(), 3);
  }
}

TEST_CASE("a graph is recorded again after a weight load left the bf16 copies stale", "[graphs][bf16]") {
  Ref ref;
  nn::DiT<Ref> probe(ref, small_dit());
  const size_t np = probe.layout().total();
  const auto P = randn(np, 0.05), E = randn(np, 0.05), E2 = randn(np, 0.05);
  const std::vector<int32_t> labels{1, 0, 2};
  const SamplerConfig s{2, 1.0, true};
  Gpu eager_be(cuda::Options{.precision = cuda::Precision::bf16, .graphs = false});
  Gpu graph_be(cuda::Options{.precision = cuda::Precision::bf16});
  // the references first: nothing that frees device memory may run between the capture and the
  // load below, so that only the stale copies (not a freed buffer) can tell the graph to go
  Sampling eager_old(eager_be, P, E), eager_new(eager_be, P, E2);
  cuda::DeviceBuffer<float> ex, gx;
  cuda::DeviceBuffer<int32_t> ey, gy;
  const auto want_old = eager_old.run(labels, s, ex, ey), want = eager_new.run(labels, s, ex, ey);
  Sampling graphed(graph_be, P, E);
  CHECK(graphed.run(labels, s, gx, gy) == want_old);
  CHECK(graphed.run(labels, s, gx, gy) == want_old);  // captured: reads the EMA weights' bf16 copy
  REQUIRE(graph_be.graph_stats().captures == 1);
  graphed.weights(P, E2);  // a checkpoint load: the copies go stale
  CHECK(graphed.run(labels, s, gx, gy) == want);  // eager again (the graph was dropped) ...
  CHECK(graphed.run(labels, s, gx, gy) == want);  // ... recorded again ...
  CHECK(graphed.run(labels, s, gx, gy) == want);  // ... and replayed
  const auto& st = graph_be.graph_stats();
  CHECK(st.dropped == 1);
  CHECK(st.captures == 2);
  CHECK(st.replays == 3);
  CHECK(want != want_old);
}

TEST_CASE("a graph is recorded again after the buffers it points into were freed", "[graphs][sampler]") {
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
  // another sampler at B = 3 resizes the model's activations: the B = 5 graph's pointers into them
  // dangle, while its key (this sampler, its buffers, x, y, B, the settings) is unchanged
  OdeSampler<Model> other{ShortcutConfig{}};
  CHECK(graphed.run(three, s, gx3, gy3, &other) == want3);
  CHECK(graphed.run(five, s, gx5, gy5) == want5);  // eager: the graph was dropped
  CHECK(graphed.run(five, s, gx5, gy5) == want5);  // recorded again
  const auto& st = graph_be.graph_stats();
  CHECK(st.eager == 3);
  CHECK(st.dropped == 1);
  CHECK(st.captures == 2);
  CHECK(st.replays == 2);
}

TEST_CASE("a body that cannot be captured runs eagerly, once per call", "[graphs]") {
  Gpu be;
  const size_t n = 300;
  auto x = upload_d(be, std::vector<double>(n, 0.25)), y = upload_d(be, std::vector<double>(n, 0.0));
  std::vector<float> seen(n);
  auto body = [&] {
    be.axpy(y.data(), 2.0f, x.data(), n);
    be.to_host(seen.data(), y.data(), n);  // a host transfer: not capturable
  };
  const CaptureKey key(y.data(), n);
  for (int i = 0; i < 3; ++i) be.run_captured(key, body);
  CHECK(seen == std::vector<float>(n, 1.5f));  // three axpys of 0.5, none lost, none doubled
  const auto& st = be.graph_stats();
  CHECK(st.refused == 1);
  CHECK(st.captures == 0);
  CHECK(st.eager == 3);
  CHECK(!st.last_refusal.empty());
  // the backend works normally afterwards
  be.axpy(y.data(), 4.0f, x.data(), n);
  CHECK(download_d(be, y) == std::vector<double>(n, 2.5));
}

namespace graphs_test {

// A whole training step (TrainingStep: zero_grad, targets, forward, loss, backward, AdamW, EMA) on
// host data, steps times, with a learning rate that changes every step (warm-up) and groups; the
// objective made from `cfg` at `progress` (the shortcut loss unless another is given).
struct WholeSteps {
  std::vector<double> losses, param, ema, moment, grad;
  std::vector<uint64_t> queued;  // emulation: pieces of stream work each step put on the stream
};
template <class Obj = SelfConsistencyLoss<Model>, class Cfg = ShortcutConfig>
WholeSteps whole_steps(Gpu& be, const std::vector<double>& P0, const std::vector<float>& x1,
                       const std::vector<int32_t>& y, int steps, int nan_at = -1, const Cfg& cfg = {},
                       TrainingProgress progress = {}) {
  Model m(be, small_dit(), 7);
  m.arena().from_host(Role::Param, std::vector<float>(P0.begin(), P0.end()));
  m.arena().copy_role(Role::Ema, Role::Param);
  Obj loss(cfg);
  loss.set_progress(progress);
  AdamWConfig oc;
  oc.lr = 1e-3; oc.warmup_steps = 8;
  oc.groups = {ParamGroup{.pattern = "*.bias", .decay = false, .lr_scale = 0.5}};
  AdamW opt(oc);
  const EmaTracker ema(0.9);
  Rng rng(99);
  TrainingStep<Model, Obj> step;
  STATIC_REQUIRE(TrainingStep<Model, Obj>::kRecorded);
  WholeSteps r;
  const int B = int(y.size());
  for (int s = 0; s < steps; ++s) {
    std::vector<float> xs = x1;
    if (s == nan_at) xs[3] = std::nanf("");
#if defined(SHORTCUT_CUDA_EMULATION)
    const uint64_t q0 = emu::queued_work();
#endif
    const LossResult l = step.take(m, loss, opt, ema, HostSpan<const float>(xs), y, BatchSlice::all(B), rng);
#if defined(SHORTCUT_CUDA_EMULATION)
    r.queued.push_back(emu::queued_work() - q0);
#endif
    r.losses.insert(r.losses.end(), {l.loss, l.flow_loss, l.bootstrap_loss});
  }
  r.param = host_doubles(m.arena(), Role::Param);
  r.ema = host_doubles(m.arena(), Role::Ema);
  r.moment = host_doubles(m.arena(), Role::AdamV);
  r.grad = host_doubles(m.arena(), Role::Grad);
  CHECK(opt.step_count() == steps - (nan_at >= 0 ? 1 : 0));
  return r;
}

// Random weights for small_dit() (its zero-initialised final layer would leave most gradients zero),
// B rows of data and their labels.
struct StepData {
  std::vector<double> P0;
  std::vector<float> x1;
  std::vector<int32_t> y;
};
StepData step_data(int B) {
  const nn::DiTConfig c = small_dit();
  Ref ref;
  nn::DiT<Ref> probe(ref, c);
  const auto x1 = randn(size_t(B) * probe.sample_size());
  return {randn(probe.layout().total(), 0.1), std::vector<float>(x1.begin(), x1.end()), random_ids(B, c.classes)};
}

}  // namespace graphs_test

TEST_CASE("a whole training step with AdamW and the EMA is one graph launch", "[graphs][training]") {
  using namespace graphs_test;
  const StepData d = step_data(32);
  const auto& [P0, x1, y] = d;
  for (auto prec : {cuda::Precision::fp32, cuda::Precision::bf16}) {
    INFO(cuda::precision_name(prec));
    Gpu eager_be(cuda::Options{.precision = prec, .graphs = false}), graph_be(cuda::Options{.precision = prec});
    const WholeSteps want = whole_steps(eager_be, P0, x1, y, 5);
    const WholeSteps got = whole_steps(graph_be, P0, x1, y, 5);
    // AdamW's normalised update carries the atomics' last bits into the weights further than plain
    // steps did (up to 1.1e-7 relative over six emulated fp32 runs: bound 1e-5); replays of a stale
    // noise stream: 1.9e-3
    check_steps_close(got, want, 1e-5);
    check_close("second moments", got.moment, want.moment, 1e-5);
    check_one_capture(graph_be.graph_stats(), 4);
#if defined(SHORTCUT_CUDA_EMULATION)
    // a replayed step puts two pieces of work on the stream: the graph and the loss read-back
    for (size_t s = 1; s < got.queued.size(); ++s) CHECK(got.queued[s] == 2);
    CHECK(want.queued[1] > 100);  // eagerly: every kernel (the count can tell)
#endif
  }
}

TEST_CASE("a consistency-training step (DESIGN.md §7) is one graph launch too", "[graphs][training]") {
  using namespace graphs_test;
  const StepData d = step_data(32);
  const auto& [P0, x1, y] = d;
  const TrainingProgress stage3{30, 70};  // stage 3 of 7: every row's t and t' = t + 1/8 change each step
  Gpu eager_be(cuda::Options{.precision = cuda::Precision::bf16, .graphs = false});
  Gpu graph_be(cuda::Options{.precision = cuda::Precision::bf16});
  using CT = ConsistencyTraining<Model>;
  const WholeSteps want = whole_steps<CT>(eager_be, P0, x1, y, 4, -1, ConsistencyTrainingConfig{}, stage3);
  const WholeSteps got = whole_steps<CT>(graph_be, P0, x1, y, 4, -1, ConsistencyTrainingConfig{}, stage3);
  check_steps_close(got, want, 1e-5);
  check_one_capture(graph_be.graph_stats(), 3);
#if defined(SHORTCUT_CUDA_EMULATION)
  for (size_t s = 1; s < got.queued.size(); ++s) CHECK(got.queued[s] == 2);
#endif
}

TEST_CASE("a replayed training step whose loss is not finite leaves weights, moments and EMA as they were",
          "[graphs][training]") {
  using namespace graphs_test;
  const StepData d = step_data(32);
  const auto& [P0, x1, y] = d;
  Gpu be;
  const WholeSteps two = whole_steps(be, P0, x1, y, 2);
  const WholeSteps bad = whole_steps(be, P0, x1, y, 3, 2);  // the third step (a replay) sees a NaN
  CHECK(std::isnan(bad.losses[6]));
  // the gradients are NaN, the rest is the state after two steps (within the backward's atomics)
  check_close("weights", bad.param, two.param, 1e-5);
  check_close("EMA weights", bad.ema, two.ema, 1e-5);
  check_close("second moments", bad.moment, two.moment, 1e-5);
  for (double v : bad.param) REQUIRE(std::isfinite(v));
  CHECK(be.graph_stats().replays >= 1);
}
