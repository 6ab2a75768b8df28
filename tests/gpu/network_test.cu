// Whole networks, forward and backward: nn::DiT and nn::MlpNet on the CUDA backend against the same
// networks on the double CPU backend, same random weights and inputs; the output, the input gradient
// and every parameter tensor's gradient are compared.
//
// Tolerance, derived from the problem as flash-attention's tests do: the error of the same network on
// the float CPU backend (fp32 arithmetic in another order) measures what fp32 can do on this input;
// the GPU may be up to 10 times worse than that, or 2e-4, whichever is larger. A tensor whose
// gradient is ill-conditioned (large cancellations) thus gets a proportionally larger allowance.
#include "gpu_test_util.hpp"

using namespace shortcut;
using namespace gputest;
using testutil::randn;

namespace {

struct Inputs {
  std::vector<double> P, x, t, k, dout;
  std::vector<int32_t> y;
  int B;
};

struct Run {
  std::vector<double> out, grad, dx;
};

// One forward and backward of `net` on backend `be`; gradients start at zero as in training.
template <class Net, class Be>
Run run_net(Be& be, const Net& net, const Inputs& in) {
  using S = typename Be::Scalar;
  const size_t n = in.x.size();
  auto P = upload_d(be, in.P), x = upload_d(be, in.x), t = upload_d(be, in.t), k = upload_d(be, in.k), R = upload_d(be, in.dout);
  auto y = upload_ids(be, in.y);
  auto out = poisoned(be, n), dx = poisoned(be, n);
  Buf<Be> G(in.P.size());
  be.fill(G.data(), S(0), G.size());
  typename Net::Context ctx;
  net.forward(ctx, P.data(), x.data(), t.data(), k.data(), y.data(), in.B, out.data());
  net.backward(ctx, P.data(), G.data(), R.data(), dx.data());
  return {download_d(be, out), download_d(be, G), download_d(be, dx)};
}

template <template <class> class Net, class Config>
void check_network(const Config& cfg, int B, const std::string& label) {
  Ref ref;
  cpu::Backend<float> f32;
  Net<Ref> net_ref(ref, cfg);
  Net<cpu::Backend<float>> net_f32(f32, cfg);
  Net<Gpu> net_gpu(gpu(), cfg);
  const ParamLayout& L = net_ref.layout();
  REQUIRE(L.total() == net_gpu.layout().total());

  Inputs in;
  in.B = B;
  in.P = randn(L.total(), 0.1);  // random everywhere: the zero-initialised final layer would hide errors
  in.x = randn(size_t(B) * net_ref.sample_size());
  in.dout = randn(in.x.size());
  in.t = uniform(B, 0.0, 1.0);
  in.k.resize(B);
  in.y = random_ids(B, net_ref.num_classes() + 1);  // the null label included
  for (int b = 0; b < B; ++b) in.k[b] = double(b % 8);

  const Run want = run_net(ref, net_ref, in), f = run_net(f32, net_f32, in), got = run_net(gpu(), net_gpu, in);
  auto slice = [](const std::vector<double>& v, const ParamInfo& p) {
    return std::vector<double>(v.begin() + p.offset, v.begin() + p.offset + p.size);
  };
  auto check = [&](const std::string& what, const std::vector<double>& g, const std::vector<double>& f32v,
                   const std::vector<double>& r) { check_close_to_fp32(label + " " + what, g, f32v, r); };
  check("output", got.out, f.out, want.out);
  check("input gradient", got.dx, f.dx, want.dx);
  for (const auto& p : L.entries()) check("d " + p.name, slice(got.grad, p), slice(f.grad, p), slice(want.grad, p));
}

}  // namespace

TEST_CASE("DiT forward/backward on the GPU matches the CPU backend", "[network][dit]") {
  nn::DiTConfig c;  // 64 tokens, head dim 32, two blocks
  c.image = 16; c.channels = 3; c.patch = 2; c.hidden = 64; c.depth = 2; c.heads = 2; c.classes = 5;
  check_network<nn::DiT>(c, 3, "DiT(T=64, hd=32)");

  nn::DiTConfig d;  // 49 tokens (odd: a partial attention tile), head dim 64, 1/sqrt(head_dim)
  d.image = 14; d.channels = 1; d.patch = 2; d.hidden = 128; d.depth = 1; d.heads = 2; d.classes = 10;
  d.attn_scale = nn::AttnScale::InvSqrtHeadDim;
  check_network<nn::DiT>(d, 2, "DiT(T=49, hd=64)");
}

TEST_CASE("MLP network forward/backward on the GPU matches the CPU backend", "[network][mlp]") {
  nn::MlpNetConfig c;  // one token per sample: the adaLN kernels' T = 1 path
  c.dim = 2; c.hidden = 64; c.depth = 2; c.classes = 1;
  check_network<nn::MlpNet>(c, 37, "MlpNet");
}
