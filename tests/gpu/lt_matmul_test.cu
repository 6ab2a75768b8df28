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

// The MLP pair: fc1 + GELU (linear_gelu_forward), fc2, and their backward (gelu_linear_backward takes
// fc2's backward through GELU's derivative, linear_backward fc1's). Inputs bf16-representable.
struct MlpPair {
  int N, I, H, O;
  std::vector<double> x, W1, b1, W2, b2, dout;
};
inline MlpPair mlp_pair(int N, int I, int H, int O) {
  return {N, I, H, O, rounded(randn(size_t(N) * I)), rounded(randn(size_t(H) * I, 0.3)), randn(H),
          rounded(randn(size_t(O) * H, 0.3)), randn(O), rounded(randn(size_t(N) * O))};
}
struct MlpRun {
  std::vector<double> a, g, y, da, dW2, db2, dx, dW1, db1;
};
template <class Be>
MlpRun run_mlp_pair(const Be& be, const MlpPair& M) {
  const int N = M.N, I = M.I, H = M.H, O = M.O;
  auto x = upload_d(be, M.x), W1 = upload_d(be, M.W1), b1 = upload_d(be, M.b1), W2 = upload_d(be, M.W2),
       b2 = upload_d(be, M.b2), dout = upload_d(be, M.dout);
  auto a = poisoned(be, size_t(N) * H), g = poisoned(be, size_t(N) * H), y = poisoned(be, size_t(N) * O);
  auto da = poisoned(be, size_t(N) * H), dx = poisoned(be, size_t(N) * I);
  auto dW1 = upload_d(be, std::vector<double>(M.W1.size(), 0.0)), db1 = upload_d(be, std::vector<double>(H, 0.0));
  auto dW2 = upload_d(be, std::vector<double>(M.W2.size(), 0.0)), db2 = upload_d(be, std::vector<double>(O, 0.0));
  be.linear_gelu_forward(g.data(), a.data(), x.data(), W1.data(), b1.data(), N, I, H);
  be.linear_forward(y.data(), g.data(), W2.data(), b2.data(), N, H, O);
  be.gelu_linear_backward(da.data(), dW2.data(), db2.data(), dout.data(), g.data(), a.data(), W2.data(), N, H, O);
  be.linear_backward(dx.data(), dW1.data(), db1.data(), da.data(), x.data(), W1.data(), N, I, H, false);
  return {download_d(be, a), download_d(be, g), download_d(be, y), download_d(be, da), download_d(be, dW2),
          download_d(be, db2), download_d(be, dx), download_d(be, dW1), download_d(be, db1)};
}
// Each stage against the double reference run on what the bf16 products read: the GPU's own g and da
// rounded to bf16 (products of bf16 operands summed in fp32: kReductionTol). `db1_from_bf16`: fc1's
// bias gradient sums the bf16 copy of da (cuBLASLt's BGRADB) rather than the fp32 da.
inline void check_mlp_pair(const MlpRun& got, const MlpPair& M, bool db1_from_bf16) {
  Ref ref;
  const int N = M.N, I = M.I, H = M.H, O = M.O;
  auto up = [&](const std::vector<double>& v) { return upload_d(ref, v); };
  auto x = up(M.x), W1 = up(M.W1), b1 = up(M.b1), W2 = up(M.W2), b2 = up(M.b2), dout = up(M.dout);
  auto a = poisoned(ref, size_t(N) * H), g = poisoned(ref, size_t(N) * H), y = poisoned(ref, size_t(N) * O);
  ref.linear_gelu_forward(g.data(), a.data(), x.data(), W1.data(), b1.data(), N, I, H);
  check_close("a = x W1^T + b1", got.a, download_d(ref, a), kReductionTol);
  check_close("g = GELU(a)", got.g, download_d(ref, g), kReductionTol);
  auto gb = up(rounded(got.g)), ga = up(got.a);
  ref.linear_forward(y.data(), gb.data(), W2.data(), b2.data(), N, H, O);
  check_close("y = bf16(g) W2^T + b2", got.y, download_d(ref, y), kReductionTol);
  auto da = poisoned(ref, size_t(N) * H);
  auto dW2 = up(std::vector<double>(M.W2.size(), 0.0)), db2 = up(std::vector<double>(O, 0.0));
  ref.gelu_linear_backward(da.data(), dW2.data(), db2.data(), dout.data(), gb.data(), ga.data(), W2.data(), N, H, O);
  check_close("da = (dout W2) GELU'(a)", got.da, download_d(ref, da), kReductionTol);
  check_close("dW2", got.dW2, download_d(ref, dW2), kReductionTol);
  check_close("db2", got.db2, download_d(ref, db2), kReductionTol);
  auto dab = up(rounded(got.da)), da32 = up(got.da);
  auto dx = poisoned(ref, size_t(N) * I), dW1 = up(std::vector<double>(M.W1.size(), 0.0)),
       db1 = up(std::vector<double>(H, 0.0));
  ref.linear_backward(dx.data(), dW1.data(), nullptr, dab.data(), x.data(), W1.data(), N, I, H, false);
  ref.linear_backward(nullptr, nullptr, db1.data(), db1_from_bf16 ? dab.data() : da32.data(), x.data(), W1.data(), N,
                      I, H, false);
  check_close("dx = bf16(da) W1", got.dx, download_d(ref, dx), kReductionTol);
  check_close("dW1", got.dW1, download_d(ref, dW1), kReductionTol);
  check_close("db1", got.db1, download_d(ref, db1), kReductionTol);
}

#if defined(SHORTCUT_CUDA_EMULATION)
// The emulation's cuBLASLt knobs, for one test's duration: the heuristic finds no algorithm for any
// problem; cublasLtMatmul refuses products with one epilogue (NOT_SUPPORTED).
struct HeuristicFindsNothing {
  HeuristicFindsNothing() { emu::lt_heuristic_finds_nothing(true); }
  ~HeuristicFindsNothing() { emu::lt_heuristic_finds_nothing(false); }
};
struct MatmulRefuses {
  explicit MatmulRefuses(uint32_t epilogue) { emu::lt_matmul_refuses(epilogue); }
  ~MatmulRefuses() { emu::lt_matmul_refuses(0); }
};
#endif

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

TEST_CASE("bf16 mode: the MLP's GELU rides in cuBLASLt's epilogues (GELU_AUX_BIAS forward, DGELU backward)",
          "[bf16][linear][lt]") {
  using namespace lt_matmul;
  Gpu be(cuda::Options{.precision = cuda::Precision::bf16});
  const MlpPair M = mlp_pair(37, 24, 40, 29);  // the hidden width a multiple of 8, the rest not
  check_mlp_pair(run_mlp_pair(be, M), M, true);
  // fc1 + GELU, fc2 (BIAS), fc2's data gradient (DGELU) and weight gradient (BGRADB), fc1's weight
  // gradient (BGRADB): five cuBLASLt products, nothing fell back
  CHECK(be.lt_stats().products == 5);
  CHECK(be.lt_stats().fallbacks == 0);

  SECTION("a hidden width that is no multiple of 8 (the GELU input's leading dimension): the product and the "
          "GELU kernels") {
    const MlpPair Q = mlp_pair(37, 24, 36, 29);
    const cuda::LtStats before = be.lt_stats();
    check_mlp_pair(run_mlp_pair(be, Q), Q, true);
    CHECK(be.lt_stats().fallbacks - before.fallbacks == 2);
    CHECK(be.lt_stats().products - before.products == 3);
    CHECK(be.lt_stats().last_refusal.find("not a multiple of 8") != std::string::npos);
  }
  SECTION("Options::lt_epilogues off: cuBLAS, the GELU kernels and the column sums of the fp32 gradients") {
    Gpu off(cuda::Options{.precision = cuda::Precision::bf16, .lt_epilogues = false});
    check_mlp_pair(run_mlp_pair(off, M), M, false);
    CHECK(off.lt_stats().products == 0);
  }
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
  const HeuristicFindsNothing knob;
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

TEST_CASE("emulation: where cuBLASLt has no algorithm for the GELU epilogues, the MLP pair runs on cuBLAS and the "
          "GELU kernels", "[bf16][linear][lt][emulation]") {
  using namespace lt_matmul;
  const HeuristicFindsNothing knob;
  Gpu be(cuda::Options{.precision = cuda::Precision::bf16});
  const MlpPair M = mlp_pair(37, 24, 40, 29);
  check_mlp_pair(run_mlp_pair(be, M), M, false);
  CHECK(be.lt_stats().products == 0);
  CHECK(be.lt_stats().fallbacks == 5);
}

TEST_CASE("emulation: a cuBLASLt product refused at its first run falls back, and its plan with it",
          "[bf16][linear][lt][emulation]") {
  // The heuristic gave an algorithm, cublasLtMatmul answers NOT_SUPPORTED (documented for operations
  // the device's kernels do not support): the DGELU product falls back to cuBLAS and the GELU kernel,
  // the others stay on cuBLASLt, the results are unchanged, and the plan is not tried again.
  using namespace lt_matmul;
  const MatmulRefuses knob(CUBLASLT_EPILOGUE_DGELU);
  Gpu be(cuda::Options{.precision = cuda::Precision::bf16});
  const MlpPair M = mlp_pair(37, 24, 40, 29);
  check_mlp_pair(run_mlp_pair(be, M), M, true);
  CHECK(be.lt_stats().products == 4);
  CHECK(be.lt_stats().fallbacks == 1);
  CHECK(be.lt_stats().last_refusal.find("NOT_SUPPORTED at the plan's first run") != std::string::npos);
  const uint64_t plans = be.lt_stats().plans;
  check_mlp_pair(run_mlp_pair(be, M), M, true);
  CHECK(be.lt_stats().products == 8);
  CHECK(be.lt_stats().fallbacks == 2);
  CHECK(be.lt_stats().plans == plans);
}
#endif
