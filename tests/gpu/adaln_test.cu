// LayerNorm + adaLN modulation and the gated residual, forward and backward, against the double CPU
// backend. Shapes cover one token per sample (the MLP network), odd token counts and widths under,
// at and over a warp, and modulation rows wider than the vectors read (the DiT's 6D and 2D).
#include "gpu_test_util.hpp"

using namespace shortcut;
using namespace gputest;
using testutil::randn;

namespace {

struct Shape {
  int B, Tn, D, stride_mult;
};

std::string label(const char* what, const Shape& s) {
  return std::string(what) + " B=" + std::to_string(s.B) + " T=" + std::to_string(s.Tn) + " D=" + std::to_string(s.D) +
         " stride=" + std::to_string(s.stride_mult) + "D";
}

}  // namespace

TEST_CASE("LayerNorm + modulate forward/backward match the CPU backend", "[adaln]") {
  for (Shape s : {Shape{1, 1, 5, 2}, Shape{3, 7, 33, 6}, Shape{2, 49, 64, 6}, Shape{2, 197, 384, 6},
                  Shape{1024, 1, 256, 3}, Shape{1, 300, 72, 2}}) {
    const int B = s.B, Tn = s.Tn, D = s.D, M = s.stride_mult * D;  // M: modulation row stride
    const size_t n = size_t(B) * Tn * D;
    auto x = randn(n, 1.5), mod = randn(size_t(B) * M, 0.5), dout = randn(n), dx0 = randn(n);
    auto dmod0 = randn(size_t(B) * M);
    for (auto& v : x) v += 0.7;  // rows with a non-zero mean
    compare_backends(label("ln_modulate", s), [&](auto& be) {
      using S = typename std::decay_t<decltype(be)>::Scalar;
      auto dx_in = upload(be, x), dm = upload(be, mod), dg = upload(be, dout);
      auto out = poisoned(be, n), mean = poisoned(be, size_t(B) * Tn), rstd = poisoned(be, size_t(B) * Tn);
      be.ln_modulate_forward(out.data(), mean.data(), rstd.data(), dx_in.data(), dm.data(), dm.data() + D, M, B, Tn, D,
                             S(1e-6));
      auto dx = upload(be, dx0), gmod = upload(be, dmod0);  // both accumulate
      be.ln_modulate_backward(dx.data(), gmod.data(), gmod.data() + D, dg.data(), dx_in.data(), mean.data(),
                              rstd.data(), dm.data() + D, M, B, Tn, D);
      return Outputs{{"out", download(be, out)},   {"mean", download(be, mean)},
                     {"rstd", download(be, rstd)}, {"dx (+=)", download(be, dx)},
                     {"dshift, dscale (+=)", download(be, gmod)}};
    }, kReductionTol);
  }
}

TEST_CASE("gated residual forward/backward match the CPU backend", "[adaln]") {
  for (Shape s : {Shape{1, 1, 5, 2}, Shape{3, 7, 33, 6}, Shape{2, 197, 384, 6}, Shape{1024, 1, 256, 3}}) {
    const int B = s.B, Tn = s.Tn, D = s.D, M = s.stride_mult * D;  // M: modulation row stride
    const size_t n = size_t(B) * Tn * D;
    auto x = randn(n), y = randn(n), mod = randn(size_t(B) * M), dxo = randn(n), dmod0 = randn(size_t(B) * M);
    const int g = M >= 3 * D ? 2 * D : D;  // the gate's offset in a modulation row
    compare_backends(label("gated_residual", s), [&](auto& be) {
      auto dx = upload(be, x), dy_in = upload(be, y), dm = upload(be, mod), dg = upload(be, dxo);
      be.gated_residual_forward(dx.data(), dm.data() + g, dy_in.data(), M, B, Tn, D);
      auto dy = poisoned(be, n), gmod = upload(be, dmod0);
      be.gated_residual_backward(dy.data(), gmod.data() + g, dg.data(), dm.data() + g, dy_in.data(), M, B, Tn, D);
      return Outputs{{"x (+=)", download(be, dx)}, {"dy", download(be, dy)}, {"dgate (+=)", download(be, gmod)}};
    }, kReductionTol);
  }
}
