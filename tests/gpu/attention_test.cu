// Fused attention, forward (out and the saved lse) and backward (dq, dk, dv), against the double CPU
// backend, for every compiled head dim, sequence lengths from 1 to past several tiles (odd ones
// included, so that the last tile is partial), both logit scales of the DiT config, and inputs
// large enough to make the softmax peaked (the online max rescaling then matters).
#include "gpu_test_util.hpp"

using namespace shortcut;
using namespace gputest;
using testutil::randn;

namespace {

struct Shape {
  int B, Tn, H, hd;
};

// Column block `part` (0 = q, 1 = k, 2 = v) of a [rows, 3D] array, so each gradient is judged alone.
std::vector<double> part_of(const std::vector<double>& a, int D, int part) {
  const size_t rows = a.size() / (3 * size_t(D));
  std::vector<double> r(rows * D);
  for (size_t i = 0; i < rows; ++i)
    for (int j = 0; j < D; ++j) r[i * D + j] = a[i * 3 * D + part * D + j];
  return r;
}

void check_attention(const Shape& s) {
  for (bool inv_sqrt : {false, true}) {
    for (double sd : {1.0, 3.0}) {
      const int B = s.B, Tn = s.Tn, H = s.H, hd = s.hd, D = H * hd;
      const double scale = inv_sqrt ? 1.0 / std::sqrt(double(hd)) : 1.0 / hd;
      auto qkv = randn(size_t(B) * Tn * 3 * D, sd), dout = randn(size_t(B) * Tn * D);
      const std::string label = "attention B=" + std::to_string(B) + " T=" + std::to_string(Tn) + " H=" +
                                std::to_string(H) + " hd=" + std::to_string(hd) +
                                (inv_sqrt ? " scale=1/sqrt(hd)" : " scale=1/hd") + " sd=" + std::to_string(int(sd));
      compare_backends(label, [&](auto& be) {
        using S = typename std::decay_t<decltype(be)>::Scalar;
        auto dq = upload(be, qkv), dg = upload(be, dout);
        auto out = poisoned(be, size_t(B) * Tn * D), lse = poisoned(be, size_t(B) * H * Tn);
        auto dqkv = poisoned(be, qkv.size());
        be.attention_forward(out.data(), lse.data(), dq.data(), B, Tn, H, hd, S(scale));
        be.attention_backward(dqkv.data(), dg.data(), dq.data(), out.data(), lse.data(), B, Tn, H, hd, S(scale));
        auto g = download(be, dqkv);
        return Outputs{{"out", download(be, out)}, {"lse", download(be, lse)}, {"dq", part_of(g, D, 0)},
                       {"dk", part_of(g, D, 1)},   {"dv", part_of(g, D, 2)}};
      }, kReductionTol);
    }
  }
}

}  // namespace

// Every head dim, sequences within one tile and a few tiles long (small enough for racecheck).
TEST_CASE("attention forward/backward match the CPU backend", "[attention]") {
  for (Shape s : {Shape{1, 1, 1, 32}, Shape{2, 7, 2, 64}, Shape{2, 49, 3, 32}, Shape{3, 65, 2, 32},
                  Shape{1, 33, 1, 72}, Shape{2, 64, 2, 128}})
    check_attention(s);
}

// Longer sequences: DiT-S/2 on 32x32 latents (T = 256, 6 heads), T = 197 with a partial last tile.
TEST_CASE("attention forward/backward match the CPU backend on longer sequences", "[attention][large]") {
  for (Shape s : {Shape{1, 197, 2, 64}, Shape{1, 197, 1, 72}, Shape{1, 130, 1, 128}, Shape{1, 256, 6, 64}})
    check_attention(s);
}
