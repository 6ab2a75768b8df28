// The typed data boundary (core/span.hpp): every public entry point that takes device data checks
// the sizes that travel with it and the labels, once, so a wrong shape or a label past the table is
// a clear error instead of an out-of-bounds read (the compile-time half, host memory where device
// memory is wanted, is tests/compile_fail/host_memory.cpp).
#include <catch2/catch.hpp>

#include <shortcut/shortcut.hpp>

#include "linear_test_net.hpp"
#include "test_util.hpp"

using namespace shortcut;
using Catch::Matchers::Contains;
using Be = cpu::Backend<double>;
using Model = ShortcutModel<LinearTestNet<double>>;

TEST_CASE("device spans: from buffers, const views, checked subspans, adopt", "[api][span]") {
  Be be;
  auto b = upload(be, std::vector<double>{1, 2, 3, 4});
  DeviceSpan<double, Be> s = b;
  DeviceSpan<const double, Be> cs = s;
  CHECK(cs.size() == 4);
  CHECK(cs.data() == b.data());
  CHECK(download(be, s.subspan(1, 2)) == std::vector<double>{2, 3});
  CHECK_THROWS_WITH(s.subspan(3, 2), Contains("subspan [3, 5) of a device span of 4 values"));
  CHECK(DeviceSpan<double, Be>::adopt(b.data() + 2, 2).first(1).data() == b.data() + 2);
  static_assert(!std::is_constructible_v<DeviceSpan<double, Be>, double*>, "a raw pointer needs adopt()");
  static_assert(!std::is_constructible_v<DeviceSpan<double, Be>, const Be::Buffer<double>&>,
                "a const buffer gives a const view only");
}

TEST_CASE("sampler, velocity and loss refuse bad labels and shapes at the boundary", "[api][labels]") {
  Be be;
  const int dim = 3, classes = 2, B = 4;
  Model m(be, LinearNetConfig{dim, classes}, 0);
  auto x = upload(be, testutil::randn(B * dim));
  auto good = upload(be, std::vector<int32_t>{0, 1, 2, 1});  // 2 = the null label: allowed
  auto bad = upload(be, std::vector<int32_t>{0, 1, 3, 1});
  auto neg = upload(be, std::vector<int32_t>{0, -1, 0, 1});
  OdeSampler<Model> sampler(SamplingSchedule{});
  CHECK_NOTHROW(sampler.sample(m, x, good, {2, 1.0, true}));
  CHECK_THROWS_WITH(sampler.sample(m, x, bad, {2, 1.0, true}),
                    Contains("label 3 of row 2 is outside [0, 2]"));
  CHECK_THROWS_WITH(sampler.sample(m, x, neg, {2, 1.0, true}), Contains("label -1 of row 1"));
  CHECK_THROWS_WITH(sampler.sample(m, DeviceSpan<double, Be>(x).first(B * dim - 1), good, {2, 1.0, true}),
                    Contains("sampler input x holds 11 values, expected 12"));

  auto out = upload(be, std::vector<double>(B * dim));
  auto t = upload(be, std::vector<double>(B, 0.5)), k = upload(be, std::vector<double>(B, 1.0));
  CHECK_NOTHROW(m.velocity(out, x, t, k, good, 1.0, Role::Ema));
  CHECK_THROWS_WITH(m.velocity(out, x, t, k, bad, 1.0, Role::Ema), Contains("label 3 of row 2"));
  auto t3 = upload(be, std::vector<double>(B - 1, 0.5));
  CHECK_THROWS_WITH(m.velocity(out, x, t3, k, good, 1.0, Role::Ema),
                    Contains("velocity times t holds 3 values, expected 4"));

  FlowMatching<Model> loss{FlowMatchingConfig{}};  // no bootstrap rows: a batch of 4 is enough
  Rng rng(1);
  const std::vector<int32_t> host_bad = {0, 5, 1, 1};
  CHECK_THROWS_WITH(loss.step(m, x, host_bad, BatchSlice::all(4), rng), Contains("label 5 of row 1"));
  const std::vector<int32_t> three = {0, 1, 1};
  CHECK_THROWS_WITH(loss.step(m, x, three, BatchSlice::all(3), rng),
                    Contains("training data x1 holds 12 values, expected 9"));
  CHECK_THROWS_AS(loss.step(m, x, std::vector<int32_t>{}, BatchSlice::all(0), rng), ShapeError);
  CHECK_THROWS_WITH(generate(m, SamplingSchedule{}, std::vector<int32_t>{0, 7}, {1, 1.0, true}, 0, 0),
                    Contains("label 7 of row 1"));
}
