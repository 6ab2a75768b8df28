// The CUDA backend's plumbing: construction (and its error without a device), host/device copies,
// fill, DeviceBuffer's vector-like semantics, and the errors a user can meet (out of memory,
// unsupported attention head dim).
#include "gpu_test_util.hpp"

using namespace shortcut;
using namespace gputest;

std::string cuda_backend_construction_error() {
  try {
    cuda::Backend be;
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

TEST_CASE("host/device copies and fill round-trip exactly", "[device]") {
  auto& be = gpu();
  auto h = testutil::randn<float>(1003);
  cuda::DeviceBuffer<float> a(h.size()), b(h.size());
  be.to_device(a.data(), h.data(), h.size());
  be.copy(b.data(), a.data(), h.size());
  std::vector<float> back(h.size());
  be.to_host(back.data(), b.data(), b.size());
  CHECK(back == h);

  std::vector<int32_t> ids = random_ids(77, 1000), ids_back(77);
  cuda::DeviceBuffer<int32_t> d(ids.size()), e(ids.size());
  be.to_device(d.data(), ids.data(), ids.size());
  be.copy(e.data(), d.data(), ids.size());
  be.to_host(ids_back.data(), e.data(), e.size());
  CHECK(ids_back == ids);

  be.fill(a.data(), 2.5f, 1000);  // leaves the last 3 alone
  be.to_host(back.data(), a.data(), a.size());
  for (int i = 0; i < 1000; ++i) CHECK(back[i] == 2.5f);
  for (int i = 1000; i < 1003; ++i) CHECK(back[i] == h[i]);
}

TEST_CASE("DeviceBuffer resizes like std::vector and deep-copies", "[device]") {
  auto& be = gpu();
  auto h = testutil::randn<float>(100);
  cuda::DeviceBuffer<float> a(100);
  be.to_device(a.data(), h.data(), 100);
  a.resize(150);  // keeps the 100 values, zeroes the new 50
  REQUIRE(a.size() == 150);
  std::vector<float> back(150);
  be.to_host(back.data(), a.data(), 150);
  for (int i = 0; i < 100; ++i) CHECK(back[i] == h[i]);
  for (int i = 100; i < 150; ++i) CHECK(back[i] == 0.f);
  a.resize(40);
  be.to_host(back.data(), a.data(), 40);
  for (int i = 0; i < 40; ++i) CHECK(back[i] == h[i]);

  cuda::DeviceBuffer<float> c(a);  // deep copy: changing a leaves c alone
  be.fill(a.data(), -1.f, a.size());
  be.to_host(back.data(), c.data(), 40);
  for (int i = 0; i < 40; ++i) CHECK(back[i] == h[i]);
  cuda::DeviceBuffer<float> m(std::move(c));
  CHECK(c.size() == 0);
  CHECK(c.data() == nullptr);
  CHECK(m.size() == 40);
  a.resize(0);
  CHECK(a.data() == nullptr);
}

TEST_CASE("out of memory and unsupported head dims give clear errors", "[device][errors]") {
  auto& be = gpu();
  try {
    cuda::DeviceBuffer<float> huge(size_t(1) << 42);  // 16 TiB
    FAIL("allocating 16 TiB should have thrown");
  } catch (const Error& e) {
    std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("out of memory") != std::string::npos);
    CHECK(msg.find("17592186044416 bytes") != std::string::npos);
  }
  // the failed allocation leaves the device usable
  cuda::DeviceBuffer<float> small(16);
  be.fill(small.data(), 1.f, 16);
  be.synchronize();

  cuda::DeviceBuffer<float> qkv(3 * 48 * 4), out(48 * 4), lse(4);
  try {
    be.attention_forward(out.data(), lse.data(), qkv.data(), 1, 4, 1, 48, 0.1f);
    FAIL("head dim 48 should have been refused");
  } catch (const ShapeError& e) {
    std::string msg = e.what();
    INFO(msg);
    CHECK(msg.find("head dim 48") != std::string::npos);
  }
}
