// The elementwise, embedding, target and optimizer kernels against the double CPU backend, on fresh
// random inputs, with NaN-poisoned outputs, at sizes that are not multiples of any block size; the
// optimizer kernels' bf16 copies of the weights they update; and the vectorised kernels' two paths
// (16-byte packs, single elements) against each other at every alignment.
#include "gpu_test_util.hpp"

using namespace shortcut;
using namespace gputest;
using testutil::randn;

TEST_CASE("GELU and SiLU forward/backward match the CPU backend", "[ops][elementwise]") {
  for (size_t n : {size_t(1), size_t(1000), size_t(1 << 20) + 3}) {
    auto x = randn(n, 3.0), g = randn(n);
    compare_backends("activations n=" + std::to_string(n), [&](auto& be) {
      auto dx = upload_d(be, x), dg = upload_d(be, g);
      auto gf = poisoned(be, n), gb = poisoned(be, n), sf = poisoned(be, n), sb = poisoned(be, n);
      be.gelu_forward(gf.data(), dx.data(), n);
      be.gelu_backward(gb.data(), dg.data(), dx.data(), n);
      be.silu_forward(sf.data(), dx.data(), n);
      be.silu_backward(sb.data(), dg.data(), dx.data(), n);
      auto inplace = upload_d(be, g);  // the networks call gelu_backward(d, d, x)
      be.gelu_backward(inplace.data(), inplace.data(), dx.data(), n);
      return Outputs{{"gelu", download_d(be, gf)}, {"gelu'", download_d(be, gb)}, {"silu", download_d(be, sf)},
                     {"silu'", download_d(be, sb)}, {"gelu' in place", download_d(be, inplace)}};
    }, kElementwiseTol);
  }
}

TEST_CASE("add, axpy, add_rows, cfg_combine and fill match the CPU backend", "[ops][elementwise]") {
  const int B = 7, R = 333;
  const size_t n = size_t(B) * R;
  auto x = randn(n), y = randn(n), row = randn(R);
  const double a = testutil::randn(1)[0], w = 1.0 + std::abs(testutil::randn(1)[0]);
  compare_backends("elementwise", [&](auto& be) {
    using S = typename std::decay_t<decltype(be)>::Scalar;
    auto dy = upload_d(be, y), dx = upload_d(be, x), dr = upload_d(be, row);
    be.add_inplace(dy.data(), dx.data(), n);
    auto da = upload_d(be, y);
    be.axpy(da.data(), S(a), dx.data(), n);
    auto db = upload_d(be, x);
    be.add_rows(db.data(), dr.data(), B, R);
    auto dc = poisoned(be, n);
    be.cfg_combine(dc.data(), dx.data(), da.data(), S(w), n);
    auto df = poisoned(be, n);
    be.fill(df.data(), S(a), n);
    return Outputs{{"add_inplace", download_d(be, dy)}, {"axpy", download_d(be, da)}, {"add_rows", download_d(be, db)},
                   {"cfg_combine", download_d(be, dc)}, {"fill", download_d(be, df)}};
  }, kElementwiseTol);
}

TEST_CASE("timestep embedding and label embedding match the CPU backend", "[ops][embedding]") {
  const int B = 37, D = 48, rows = 11;
  auto t = uniform(B, 0.0, 1.0), k(t);
  for (int b = 0; b < B; ++b) k[b] = double(b % 8);  // step indices 0..7, as the network sees them
  auto ids = random_ids(B, rows);
  ids[0] = rows - 1;  // the null label
  auto table = randn(size_t(rows) * D), dout = randn(size_t(B) * D), dtable0 = randn(size_t(rows) * D);
  for (int dim : {256, 10}) {
    compare_backends("timestep embedding dim=" + std::to_string(dim), [&](auto& be) {
      auto dt = upload_d(be, t), dk = upload_d(be, k);
      auto et = poisoned(be, size_t(B) * dim), ek = poisoned(be, size_t(B) * dim);
      be.timestep_embedding(et.data(), dt.data(), B, dim);
      be.timestep_embedding(ek.data(), dk.data(), B, dim);
      return Outputs{{"of t", download_d(be, et)}, {"of k", download_d(be, ek)}};
    }, kElementwiseTol);
  }
  compare_backends("label embedding", [&](auto& be) {
    auto dtab = upload_d(be, table), dg = upload_d(be, dout), dT = upload_d(be, dtable0);
    auto dids = upload_ids(be, ids);
    auto out = poisoned(be, size_t(B) * D);
    be.embedding_forward(out.data(), dtab.data(), dids.data(), B, D);
    be.embedding_backward(dT.data(), dg.data(), dids.data(), B, D);  // += onto random values
    return Outputs{{"forward", download_d(be, out)}, {"backward (+=)", download_d(be, dT)}};
  }, kElementwiseTol);
}

TEST_CASE("patch gather and scatter match the CPU backend in both orders", "[ops][embedding]") {
  struct Geo { int B, H, W, C, p; };
  for (Geo g : {Geo{2, 12, 12, 3, 2}, Geo{1, 28, 28, 1, 4}, Geo{3, 10, 10, 2, 4}, Geo{1, 8, 8, 4, 1}}) {
    for (auto order : {PatchOrder::ChannelMajor, PatchOrder::ChannelMinor}) {
      const size_t n_img = size_t(g.B) * g.H * g.W * g.C;
      const size_t n_tok = size_t(g.B) * (g.H / g.p) * (g.W / g.p) * g.p * g.p * g.C;
      auto img = randn(n_img), tok = randn(n_tok);
      std::string label = "patch B=" + std::to_string(g.B) + " H=" + std::to_string(g.H) + " C=" +
                          std::to_string(g.C) + " p=" + std::to_string(g.p) +
                          (order == PatchOrder::ChannelMajor ? " channel-major" : " channel-minor");
      compare_backends(label, [&](auto& be) {
        auto di = upload_d(be, img), dt = upload_d(be, tok);
        auto gathered = poisoned(be, n_tok), scattered = poisoned(be, n_img);  // H=10, p=4: borders stay NaN
        be.patch_gather(gathered.data(), di.data(), g.B, g.H, g.W, g.C, g.p, order);
        be.patch_scatter(scattered.data(), dt.data(), g.B, g.H, g.W, g.C, g.p, order);
        return Outputs{{"gather", download_d(be, gathered)}, {"scatter", download_d(be, scattered)}};
      }, kElementwiseTol);
    }
  }
}

TEST_CASE("normal() draws the CPU backend's numbers", "[ops][targets]") {
  const uint64_t seed = testutil::gen()(), stream = testutil::gen()() >> 8;
  for (size_t n : {size_t(1), size_t(1001), size_t(65536)}) {
    compare_backends("normal n=" + std::to_string(n), [&](auto& be) {
      auto x = poisoned(be, n);
      be.normal(x.data(), n, seed, stream);
      return Outputs{{"x0", download_d(be, x)}};
    }, kElementwiseTol);
  }
  // a data-parallel rank draws numbers [first, first + n) of the stream: the tail of the whole draw
  const size_t first = 517, n = 1001;
  compare_backends("normal first=517", [&](auto& be) {
    auto x = poisoned(be, n);
    be.normal(x.data(), n, seed, stream, first);
    return Outputs{{"x0", download_d(be, x)}};
  }, kElementwiseTol);
}

TEST_CASE("flow rows, bootstrap steps and MSE loss match the CPU backend", "[ops][targets]") {
  const int rows = 13, n = 37;
  const size_t total = size_t(rows) * n;
  auto x1 = randn(total), x0 = randn(total), t = uniform(rows, 0.0, 1.0);
  // velocities of sd 3 and steps up to 0.5 push some x2 and targets past the clip at 4
  auto x = randn(total, 2.0), hd = uniform(rows, 0.0, 0.5);
  auto vc = randn(total, 3.0), vu = randn(total, 3.0), vc2 = randn(total, 3.0), vu2 = randn(total, 3.0);
  const double w = 1.5, clip = 4.0;
  compare_backends("flow_rows", [&](auto& be) {
    auto d1 = upload_d(be, x1), d0 = upload_d(be, x0), dt = upload_d(be, t);
    auto xt = poisoned(be, total), tg = poisoned(be, total), xt2 = poisoned(be, total);
    be.flow_rows(xt.data(), tg.data(), d1.data(), d0.data(), dt.data(), rows, n);
    be.flow_rows(xt2.data(), nullptr, d1.data(), d0.data(), dt.data(), rows, n);
    return Outputs{{"xt", download_d(be, xt)}, {"target", download_d(be, tg)}, {"xt (no target)", download_d(be, xt2)}};
  }, kElementwiseTol);
  for (int n_cfg : {0, 5}) {
    compare_backends("bootstrap n_cfg=" + std::to_string(n_cfg), [&](auto& be) {
      using S = typename std::decay_t<decltype(be)>::Scalar;
      auto dx = upload_d(be, x), dh = upload_d(be, hd);
      auto dc = upload_d(be, vc), du = upload_d(be, vu), dc2 = upload_d(be, vc2), du2 = upload_d(be, vu2);
      // unguided (n_cfg = 0): vu is never read, so it may be null
      const S* u = n_cfg ? du.data() : nullptr;
      const S* u2 = n_cfg ? du2.data() : nullptr;
      auto x2 = poisoned(be, total), v1 = poisoned(be, total), tg = poisoned(be, total);
      be.bootstrap_half_step(x2.data(), v1.data(), dx.data(), dc.data(), u, n_cfg, S(w), dh.data(), rows, n, S(clip));
      be.bootstrap_target(tg.data(), v1.data(), dc2.data(), u2, n_cfg, S(w), rows, n, S(clip));
      return Outputs{{"x2", download_d(be, x2)}, {"v1", download_d(be, v1)}, {"target", download_d(be, tg)}};
    }, kElementwiseTol);
  }
  // t up to 1 - 1/128 (the grid's last point), tp = t + d up to 1: the division by 1 - t is the
  // largest (128x) amplification of the inputs' rounding the op sees in training
  auto tc = uniform(rows, 0.0, 127.0 / 128), xp = randn(total, 2.0), vp = randn(total, 3.0);
  std::vector<double> tp(tc);
  for (auto& v : tp) v = std::min(1.0, v + 1.0 / 64);
  compare_backends("consistency_target", [&](auto& be) {
    auto dxt = upload_d(be, x), dxp = upload_d(be, xp), dv = upload_d(be, vp), dt = upload_d(be, tc), dtp = upload_d(be, tp);
    auto tg = poisoned(be, total);
    be.consistency_target(tg.data(), dxt.data(), dxp.data(), dv.data(), dt.data(), dtp.data(), rows, n);
    return Outputs{{"target", download_d(be, tg)}};
  }, kElementwiseTol);
  auto pred = randn(size_t(9) * 300), target = randn(size_t(9) * 300);
  compare_backends("mse_loss", [&](auto& be) {
    using S = typename std::decay_t<decltype(be)>::Scalar;
    auto dp = upload_d(be, pred), dt = upload_d(be, target);
    auto grad = poisoned(be, pred.size()), rl = poisoned(be, 9), rl2 = poisoned(be, 9);
    be.mse_loss(grad.data(), rl.data(), dp.data(), dt.data(), 9, 300, S(1.0 / 9));
    be.mse_loss(nullptr, rl2.data(), dp.data(), dt.data(), 9, 300, S(1.0 / 9));
    return Outputs{{"grad", download_d(be, grad)}, {"row loss", download_d(be, rl)},
                   {"row loss (no grad)", download_d(be, rl2)}};
  }, kReductionTol);
}

TEST_CASE("AdamW and EMA match the CPU backend", "[ops][optimizer]") {
  const size_t n = 10007;
  auto p = randn(n), g = randn(n), m = randn(n, 0.1), v = uniform(n, 0.0, 0.05);
  for (int64_t step : {int64_t(1), int64_t(3), int64_t(1000)}) {
    compare_backends("adamw step=" + std::to_string(step), [&](auto& be) {
      using S = typename std::decay_t<decltype(be)>::Scalar;
      auto dp = upload_d(be, p), dg = upload_d(be, g), dm = upload_d(be, m), dv = upload_d(be, v);
      be.adamw_step(dp.data(), dg.data(), dm.data(), dv.data(), n, S(1e-3), S(0.9), S(0.999), S(1e-8), S(0.1), step);
      return Outputs{{"p", download_d(be, dp)}, {"m", download_d(be, dm)}, {"v", download_d(be, dv)}};
    }, kElementwiseTol);
  }
  compare_backends("ema", [&](auto& be) {
    using S = typename std::decay_t<decltype(be)>::Scalar;
    auto de = upload_d(be, m), dp = upload_d(be, p);
    be.ema_update(de.data(), dp.data(), S(0.999), n);
    return Outputs{{"ema", download_d(be, de)}};
  }, kElementwiseTol);
}

// Mixed precision keeps fp32 master weights, moments and EMA and gives the products a bf16 copy: the
// optimizer kernels write it in the same pass. The fp32 results must be bit for bit those of the
// plain kernels, and the copy the round-to-nearest-even bf16 of each new value.
TEST_CASE("AdamW and EMA write the bf16 copy of what they update in the same pass", "[ops][optimizer][bf16]") {
  auto& be = gpu();
  for (size_t n : {size_t(1), size_t(33), size_t(10007)}) {
    const auto p = testutil::randn(n), g = testutil::randn(n), m = testutil::randn(n, 0.1);
    auto v = testutil::randn(n, 0.05);
    for (double& x : v) x = std::abs(x);
    auto run = [&](bool with_copy) {
      auto dp = upload_d(be, p), dg = upload_d(be, g), dm = upload_d(be, m), dv = upload_d(be, v);
      auto de = upload_d(be, m);
      auto pc = upload_bf16(std::vector<double>(n, std::nan(""))), ec = upload_bf16(std::vector<double>(n, std::nan("")));
      // lr 0.05: an update bf16 can resolve, so a copy of the old value would differ
      be.adamw_step(dp.data(), dg.data(), dm.data(), dv.data(), n, 0.05f, 0.9f, 0.999f, 1e-8f, 0.1f, 7,
                    with_copy ? pc.data() : nullptr);
      be.ema_update(de.data(), dp.data(), 0.999f, n, with_copy ? ec.data() : nullptr);
      return std::vector<std::vector<double>>{download_d(be, dp), download_d(be, dm), download_d(be, dv),
                                              download_d(be, de), download_bf16(pc), download_bf16(ec)};
    };
    const auto plain = run(false), fused = run(true);
    INFO("n = " << n);
    for (int k = 0; k < 4; ++k) CHECK(fused[k] == plain[k]);  // p, m, v, ema: bit for bit
    CHECK(fused[4] == rounded(plain[0]));                     // bf16(p)
    CHECK(fused[5] == rounded(plain[3]));                     // bf16(ema)
    CHECK(std::isnan(plain[4][0]));                           // without a copy nothing is written
  }
}

// The bf16 mode's conversion kernel (kernels::convert): fp32 -> bf16 is the round-to-nearest-even of
// each value (the host's __float2bfloat16 of the same float, exactly), overflow going to inf, inf and
// NaN kept; bf16 -> fp32 is exact. Sizes around a warp and past a block; the arrays start one element
// into their allocations (no alignment assumed).
TEST_CASE("convert fp32 <-> bf16 rounds to nearest even, exactly as the host does", "[ops][elementwise][bf16]") {
  auto& be = gpu();
  for (size_t n : {size_t(1), size_t(31), size_t(4099)}) {
    auto x = testutil::randn(n + 1, 3.0);
    x[1] = 3.4e38;  // a finite float past half an ulp above bf16's largest (3.39e38): inf
    if (n > 6) {
      x[2] = INFINITY, x[3] = -INFINITY, x[4] = std::nan("");
      x[5] = 1.0 + std::ldexp(1.0, -8);      // halfway between 1 and 1 + 2^-7: to even, 1
      x[6] = 1.0 + 3 * std::ldexp(1.0, -8);  // halfway between 1 + 2^-7 and 1 + 2^-6: to even, 1 + 2^-6
    }
    std::vector<double> want(n);
    for (size_t i = 0; i < n; ++i) want[i] = double(__bfloat162float(__float2bfloat16(float(x[i + 1]))));
    auto src = upload_d(be, x);
    auto back = poisoned(be, n + 1);
    auto b = upload_bf16(std::vector<double>(n + 1, std::nan("")));
    shortcut::kernels::convert(b.data() + 1, src.data() + 1, n, be.stream());
    shortcut::kernels::convert(back.data() + 1, b.data() + 1, n, be.stream());
    const auto got_b = download_bf16(b), got_back = download_d(be, back);
    size_t wrong = 0, wrong_back = 0;
    auto same = [](double a, double c) { return a == c || (std::isnan(a) && std::isnan(c)); };
    for (size_t i = 0; i < n; ++i) {
      wrong += !same(got_b[i + 1], want[i]);
      wrong_back += !same(got_back[i + 1], want[i]);
    }
    INFO("n = " << n << ": " << wrong << " bf16 values and " << wrong_back << " fp32 values differ");
    CHECK(wrong == 0);
    CHECK(wrong_back == 0);
    CHECK(std::isnan(got_b[0]));  // nothing before the start written
    if (n > 6) {  // the cases spelled out, not only "as the host does"
      CHECK(got_b[1] == INFINITY);
      CHECK(got_b[2] == INFINITY);
      CHECK(got_b[5] == 1.0);
      CHECK(got_b[6] == 1.0 + std::ldexp(1.0, -6));
    }
  }
}

// The memory-bound kernels move 16-byte packs where all their pointers are aligned for them and single
// elements elsewhere (a misaligned start, the tail): the same values either way, up to the last bits
// that the compiler's floating-point contraction (an FMA in one loop and not in the other; nvcc and
// g++ -march=native both contract) may change: 4 fp32 ulps of the larger of the value and 8 (GELU's
// derivative cancels near x = -0.75; its terms are O(1) times inputs of up to ~8), and one bf16 ulp
// for the bf16 outputs (a changed last fp32 bit can flip their rounding). A wrong element is off by
// O(1). Each op runs on
// arrays that start `off` elements into their allocations (off 0: the packed path), at sizes under,
// at and past a pack, and the results at off 1, 2, 3 must match those at off 0.
TEST_CASE("the vectorised kernels give the same values at every alignment and size", "[ops][elementwise][optimizer]") {
  auto& be = gpu();
  for (size_t n : {size_t(1), size_t(3), size_t(4), size_t(5), size_t(8), size_t(1003)}) {
    const auto x = randn(n + 3, 3.0), g = randn(n + 3), m = randn(n + 3, 0.1), v = uniform(n + 3, 0.0, 0.05);
    auto run = [&](size_t off) {
      auto in = [&](const std::vector<double>& h) {
        return upload_d(be, std::vector<double>(h.begin() + 3 - std::ptrdiff_t(off), h.end()));
      };
      auto out = [&](const auto& b) {
        auto h = download_d(be, b);
        return std::vector<double>(h.begin() + std::ptrdiff_t(off), h.end());
      };
      auto dx = in(x), dg = in(g), dm = in(m), dv = in(v);
      auto gf = poisoned(be, n + off), gb = poisoned(be, n + off), sf = poisoned(be, n + off);
      auto sb = poisoned(be, n + off), cf = poisoned(be, n + off), fl = poisoned(be, n + off);
      auto o = [off](auto& b) { return b.data() + off; };
      be.gelu_forward(o(gf), o(dx), n);
      be.gelu_backward(o(gb), o(dg), o(dx), n);
      be.silu_forward(o(sf), o(dx), n);
      be.silu_backward(o(sb), o(dg), o(dx), n);
      be.cfg_combine(o(cf), o(dx), o(dg), 1.7f, n);
      be.fill(o(fl), 0.3f, n);
      auto ax = in(x), ad = in(x), ip = in(g);
      be.axpy(o(ax), -0.6f, o(dg), n);
      be.add_inplace(o(ad), o(dg), n);
      be.gelu_backward(o(ip), o(ip), o(dx), n);  // in place, as the networks call it
      auto pc = upload_bf16(std::vector<double>(n + off, std::nan(""))), ec = pc;
      auto cv = upload_bf16(std::vector<double>(n + off, std::nan("")));
      be.adamw_step(o(dx), o(dg), o(dm), o(dv), n, 0.05f, 0.9f, 0.999f, 1e-8f, 0.1f, 7, pc.data() + off);
      auto de = in(m);
      be.ema_update(o(de), o(dx), 0.99f, n, ec.data() + off);
      kernels::convert(cv.data() + off, o(dg), n, be.stream());
      auto bf = [&](const auto& b) {
        auto h = download_bf16(b);
        return std::vector<double>(h.begin() + std::ptrdiff_t(off), h.end());
      };
      return std::vector<std::vector<double>>{out(gf), out(gb), out(sf), out(sb), out(cf), out(fl), out(ax),
                                              out(ad), out(ip), out(dx), out(dm), out(dv), bf(pc), out(de), bf(ec),
                                              bf(cv)};
    };
    const char* names[] = {"gelu", "gelu'", "silu", "silu'", "cfg_combine", "fill", "axpy", "add_inplace",
                           "gelu' in place", "adamw p", "adamw m", "adamw v", "adamw bf16 copy", "ema",
                           "ema bf16 copy", "convert"};
    const auto packed = run(0);
    for (size_t k = 0; k < packed.size(); ++k)
      for (double e : packed[k]) REQUIRE(std::isfinite(e));  // every output written
    for (size_t off : {size_t(1), size_t(2), size_t(3)}) {
      const auto single = run(off);
      for (size_t k = 0; k < packed.size(); ++k) {
        const bool bf16_out = k == 12 || k == 14 || k == 15;
        const double ulps = bf16_out ? std::ldexp(1.0, -7) : 4 * std::ldexp(1.0, -23);
        size_t off_by_more = 0;
        for (size_t i = 0; i < n; ++i)
          off_by_more += std::abs(single[k][i] - packed[k][i]) >
                         ulps * (bf16_out ? std::abs(packed[k][i]) : std::max(std::abs(packed[k][i]), 8.0));
        INFO(names[k] << ", n = " << n << ", start " << off << " elements into the allocation: " << off_by_more
                      << " values differ by more than " << (bf16_out ? "one bf16 ulp" : "4 fp32 ulps of max(|v|, 8)"));
        CHECK(off_by_more == 0);
      }
    }
  }
}
