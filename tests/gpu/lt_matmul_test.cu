// bf16 mode's linear layer through cuBLASLt (include/shortcut/cuda/lt_matmul.hpp): the bias added in
// the forward product's epilogue, the bias gradient summed by the weight-gradient product, a plan per
// operand alignment, and the fallback to cuBLAS plus the separate kernels where the heuristic finds
// nothing.
//
// Tolerances (bf16_mode_test.cu's header): the operands are bf16-representable, so every product is
// exact products summed in fp32 and the fp32 reduction tolerance holds (kReductionTol) against the
// double reference; the bias gradient, summed from the bf16 copy of dout, is pinned against the
// double sum of the bf16-rounded dout to the same tolerance.
#include "model_runs.hpp"

#if defined(SHORTCUT_CUDA_EMULATION)
#include <cublasLt.h>
#endif

using namespace shortcut;
using namespace gputest;
using testutil::randn;

namespace lt_matmul {

struct LtLayer {
  int N, I, O;
  std::vector<double> in, W, b, dout, dW0, db0;
};
// Random operands; `round_dout` false leaves dout as fp32 values (the bias gradient then sums their
// bf16 copies, the rest of the layer is unaffected since its products read the copies anyway).
inline LtLayer lt_layer(int N, int I, int O, bool round_dout = true) {
  LtLayer L{N, I, O, rounded(randn(size_t(N) * I)), rounded(randn(size_t(O) * I, 0.2)), randn(O),
          randn(size_t(N) * O), randn(size_t(O) * I), randn(O)};
  if (round_dout) L.dout = rounded(L.dout);
  return L;
}

struct LayerRun {
  std::vector<double> out, din, dW, db;
};
// Forward and backward of the layer on `be`, every array `off` elements into its allocation (off 1:
// the fp32 outputs, dW and the bias only 4-byte aligned).
template <class Be>
LayerRun run_lt_layer(const Be& be, const LtLayer& L, size_t off, bool with_bias = true) {
  auto up = [&](const std::vector<double>& h) {
    std::vector<double> p(off, 0.0);
    p.insert(p.end(), h.begin(), h.end());
    return upload_d(be, p);
  };
  auto in = up(L.in), W = up(L.W), b = up(L.b), g = up(L.dout), dW = up(L.dW0), db = up(L.db0);
  auto out = poisoned(be, off + size_t(L.N) * L.O), din = poisoned(be, off + size_t(L.N) * L.I);
  be.linear_forward(out.data() + off, in.data() + off, W.data() + off, with_bias ? b.data() + off : nullptr, L.N, L.I,
                    L.O);
  be.linear_backward(din.data() + off, dW.data() + off, with_bias ? db.data() + off : nullptr, g.data() + off,
                     in.data() + off, W.data() + off, L.N, L.I, L.O, false);
  auto tail = [&](const auto& buf) {
    const auto v = download_d(be, buf);
    return std::vector<double>(v.begin() + off, v.end());
  };
  return {tail(out), tail(din), tail(dW), tail(db)};
}

inline void check_lt_run(const LayerRun& got, const LayerRun& want, bool with_bias = true) {
  check_close("out", got.out, want.out, kReductionTol);
  check_close("din", got.din, want.din, kReductionTol);
  check_close("dW", got.dW, want.dW, kReductionTol);
  if (with_bias) check_close("db", got.db, want.db, kReductionTol);
}

}  // namespace lt_matmul

TEST_CASE("bf16 mode: the linear layer's bias and bias gradient ride in cuBLASLt's epilogues", "[bf16][linear][lt]") {
  using namespace lt_matmul;
  Gpu be(cuda::Options{.precision = cuda::Precision::bf16});
  const LtLayer L = lt_layer(37, 48, 29);  // no multiple of 8 or 16
  Ref ref;
  const LayerRun want = run_lt_layer(ref, L, 0);
  for (size_t off : {size_t(0), size_t(1)}) {
    INFO("arrays " << off << " elements into their allocations");
    const cuda::LtStats before = be.lt_stats();
    check_lt_run(run_lt_layer(be, L, off), want);
    // the forward (BIAS) and the weight gradient (BGRADB) as cuBLASLt products, nothing fell back
    CHECK(be.lt_stats().products - before.products == 2);
    CHECK(be.lt_stats().fallbacks == 0);
  }
  // a plan per alignment: the 4-byte aligned output and bias are not given the aligned plans
  CHECK(be.lt_stats().plans == 4);

  SECTION("the bias gradient is summed from the bf16 copy of dout, in fp32") {
    const LtLayer F = lt_layer(37, 48, 29, false);
    LtLayer R = F;
    R.dout = rounded(F.dout);
    const LayerRun got = run_lt_layer(be, F, 0), want_rounded = run_lt_layer(ref, R, 0), want_exact = run_lt_layer(ref, F, 0);
    check_close("db against the sum of bf16(dout)", got.db, want_rounded.db, kReductionTol);
    const double e = rel_err(got.db, want_exact.db);
    INFO("db against the sum of the fp32 dout: rel err " << e);
    CHECK(e < 1e-2);
  }
  SECTION("a layer without a bias: the forward's plain product, the weight gradient through cuBLAS") {
    const cuda::LtStats before = be.lt_stats();
    LayerRun r = run_lt_layer(be, L, 0, false), w = run_lt_layer(ref, L, 0, false);
    check_lt_run(r, w, false);
    CHECK(be.lt_stats().products - before.products == 1);
  }
}

TEST_CASE("bf16 mode: a DiT training step runs every bias-carrying layer through cuBLASLt", "[bf16][lt]") {
  // The step's numerics against the double reference are bf16_mode_test.cu's; here: every layer of a
  // real network (shapes, weights at their offsets in the arena) got a cuBLASLt plan, none fell back,
  // and the step's losses stay within that test's bound.
  nn::DiTConfig c;
  c.image = 8; c.channels = 2; c.patch = 2; c.hidden = 64; c.depth = 2; c.heads = 2; c.classes = 3;
  Ref ref;
  nn::DiT<Ref> probe(ref, c);
  const int B = 32;  // one bootstrap row per step size
  const auto P0 = randn(probe.layout().total(), 0.1);
  const auto x1 = randn(size_t(B) * probe.sample_size());
  const auto y = random_ids(B, c.classes);
  Gpu be(cuda::Options{.precision = cuda::Precision::bf16});
  const StepRun got = run_training(be, c, P0, x1, y, B, 1), want = run_training(ref, c, P0, x1, y, B, 1);
  const double e = rel_err(got.losses, want.losses);
  INFO("losses: rel err " << e);
  CHECK(e < 3e-2);
  CHECK(be.lt_stats().fallbacks == 0);
  // at least the forward and the weight gradient of qkv, proj, fc1, fc2 per block and the final linear
  CHECK(be.lt_stats().products >= uint64_t(2 * (4 * c.depth + 1)));
}

TEST_CASE("bf16 mode with Options::lt_epilogues off: the layer runs on cuBLAS and the bias kernels",
          "[bf16][linear][lt]") {
  using namespace lt_matmul;
  Gpu be(cuda::Options{.precision = cuda::Precision::bf16, .lt_epilogues = false});
  const LtLayer L = lt_layer(37, 48, 29, false);  // fp32 dout: the column sum reads it, not its bf16 copy
  Ref ref;
  LtLayer R = L;
  R.dout = rounded(L.dout);  // what the products read
  const LayerRun got = run_lt_layer(be, L, 0), want = run_lt_layer(ref, R, 0), exact = run_lt_layer(ref, L, 0);
  check_close("out", got.out, want.out, kReductionTol);
  check_close("din", got.din, want.din, kReductionTol);
  check_close("dW", got.dW, want.dW, kReductionTol);
  check_close("db, the fp32 column sum of the fp32 dout", got.db, exact.db, kReductionTol);
  CHECK(be.lt_stats().products == 0);
  CHECK(be.lt_stats().plans == 0);
}

#if defined(SHORTCUT_CUDA_EMULATION)
TEST_CASE("emulation: where cuBLASLt's heuristic finds no algorithm, the layer runs on cuBLAS and the kernels",
          "[bf16][linear][lt][emulation]") {
  using namespace lt_matmul;
  struct Knob {
    Knob() { emu::lt_heuristic_finds_nothing(true); }
    ~Knob() { emu::lt_heuristic_finds_nothing(false); }
  } knob;
  Gpu be(cuda::Options{.precision = cuda::Precision::bf16});
  const LtLayer L = lt_layer(37, 48, 29);
  Ref ref;
  check_lt_run(run_lt_layer(be, L, 0), run_lt_layer(ref, L, 0));
  CHECK(be.lt_stats().products == 0);
  CHECK(be.lt_stats().fallbacks == 2);
  CHECK(be.lt_stats().last_refusal.find("CUBLAS_STATUS_NOT_SUPPORTED") != std::string::npos);
  // asked once per problem: a second run falls back without planning again
  check_lt_run(run_lt_layer(be, L, 0), run_lt_layer(ref, L, 0));
  CHECK(be.lt_stats().plans == 2);
  CHECK(be.lt_stats().fallbacks == 4);
}
#endif
