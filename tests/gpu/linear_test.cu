// The cuBLAS linear layer against the double CPU backend: forward with and without bias, backward
// with din overwritten, accumulated or skipped, dW and db accumulated onto random values; sizes from
// 1 x 1 x 1 to a DiT-S qkv projection, most not multiples of any tile.
#include "gpu_test_util.hpp"

using namespace shortcut;
using namespace gputest;
using testutil::randn;

namespace {

struct Shape {
  int N, I, O;
};

Outputs run_linear(auto& be, const Shape& s, const std::vector<std::vector<double>>& in) {
  const auto &x = in[0], &W = in[1], &b = in[2], &dout = in[3], &din0 = in[4], &dW0 = in[5], &db0 = in[6];
  const int N = s.N, I = s.I, O = s.O;
  auto dx = upload_d(be, x), dWt = upload_d(be, W), dbias = upload_d(be, b), dg = upload_d(be, dout);
  auto out = poisoned(be, size_t(N) * O), out_nb = poisoned(be, size_t(N) * O);
  be.linear_forward(out.data(), dx.data(), dWt.data(), dbias.data(), N, I, O);
  be.linear_forward(out_nb.data(), dx.data(), dWt.data(), nullptr, N, I, O);
  auto din = poisoned(be, size_t(N) * I), din_acc = upload_d(be, din0);
  auto gW = upload_d(be, dW0), gb = upload_d(be, db0);
  be.linear_backward(din.data(), gW.data(), gb.data(), dg.data(), dx.data(), dWt.data(), N, I, O);
  be.linear_backward(din_acc.data(), nullptr, nullptr, dg.data(), dx.data(), dWt.data(), N, I, O, true);
  auto gW2 = upload_d(be, dW0);  // din skipped, no bias
  be.linear_backward(nullptr, gW2.data(), nullptr, dg.data(), dx.data(), dWt.data(), N, I, O);
  return Outputs{{"out", download_d(be, out)},         {"out (no bias)", download_d(be, out_nb)},
                 {"din", download_d(be, din)},         {"din (+=)", download_d(be, din_acc)},
                 {"dW (+=)", download_d(be, gW)},      {"db (+=)", download_d(be, gb)},
                 {"dW (+=, no din)", download_d(be, gW2)}};
}

std::vector<std::vector<double>> random_linear_inputs(const Shape& s) {
  const size_t N = s.N, I = s.I, O = s.O;
  return {randn(N * I), randn(O * I, 0.1), randn(O), randn(N * O), randn(N * I), randn(O * I), randn(O)};
}

std::string label(const char* what, const Shape& s) {
  return std::string(what) + " N=" + std::to_string(s.N) + " I=" + std::to_string(s.I) + " O=" + std::to_string(s.O);
}

}  // namespace

TEST_CASE("linear forward/backward match the CPU backend", "[linear]") {
  for (Shape s : {Shape{1, 1, 1}, Shape{7, 13, 5}, Shape{197, 64, 192}, Shape{3, 256, 64}, Shape{1000, 384, 1152},
                  Shape{4099, 96, 6}}) {
    auto in = random_linear_inputs(s);
    compare_backends(label("linear", s), [&](auto& be) { return run_linear(be, s, in); }, kReductionTol);
  }
}

TEST_CASE("linear with TF32 stays within the TF32 error", "[linear][tf32]") {
  // TF32 keeps 10 mantissa bits: about 3e-4 relative error on random data (METHOD.md), so 3e-3.
  cuda::Backend tf(cuda::Options{.tf32 = true});
  Shape s{512, 384, 384};
  auto in = random_linear_inputs(s);
  compare_backends(label("linear tf32", s), [&](auto& be) { return run_linear(be, s, in); }, 3e-3, &tf);
}
