// The safetensors reader and writer: round trips in every writable dtype, hand-made files with known
// bit patterns (so the reader is not only checked against our own writer), half / bfloat16 rounding,
// and every kind of damage raising a FileError that names the file and the problem.
#include <catch2/catch.hpp>

#include <shortcut/io/safetensors.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <typeinfo>

#include "test_util.hpp"

using namespace shortcut;
using namespace shortcut::io;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir() { return testutil::scratch_dir("shortcut_safetensors_test"); }

std::vector<unsigned char> le64(uint64_t v) {
  std::vector<unsigned char> b(8);
  for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
  return b;
}

// A file from a header text and raw data bytes, with an optional lie about the header length.
fs::path raw_file(const std::string& name, const std::string& header, const std::vector<unsigned char>& data,
                  std::optional<uint64_t> header_len = std::nullopt) {
  fs::path p = temp_dir() / name;
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  auto len = le64(header_len ? *header_len : header.size());
  f.write(reinterpret_cast<const char*>(len.data()), 8);
  f.write(header.data(), std::streamsize(header.size()));
  f.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
  return p;
}

std::vector<unsigned char> f32_bytes(std::initializer_list<float> v) {
  std::vector<unsigned char> b;
  for (float x : v) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    for (int i = 0; i < 4; ++i) b.push_back(static_cast<unsigned char>(u >> (8 * i)));
  }
  return b;
}

// Expects opening (and, with read_name, reading) the file to throw a FileError whose message names
// the file and contains `what`.
void expect_damage(const fs::path& p, const std::string& what, const std::string& read_name = "",
                   bool check_finite = false) {
  INFO("file " << p << ", expecting: " << what);
  try {
    SafetensorsReader r(p);
    if (!read_name.empty()) (void)r.read<float>(read_name, check_finite);
    FAIL("no FileError");
  } catch (const FileError& e) {
    CHECK_THAT(e.what(), Contains(p.filename().string()));
    CHECK_THAT(e.what(), Contains(what));
  }
}

}  // namespace

TEST_CASE("safetensors: round trip in F32, F64, F16 and BF16", "[safetensors]") {
  const size_t n = 257;
  std::vector<double> d = testutil::randn<double>(n, 3.0);
  std::vector<float> f(d.begin(), d.end());
  SafetensorsWriter w;
  w.add("a.f32", {257}, f.data(), DType::F32);
  w.add("b.f64", {1, 257}, d.data(), DType::F64);
  w.add("c.f16", {257, 1}, f.data(), DType::F16);
  w.add("d.bf16", {257}, d.data(), DType::BF16);
  w.add("e.empty", {0, 4}, f.data(), DType::F32);
  w.add("f.scalar", {}, d.data(), DType::F64);
  w.add_metadata("who", "test");
  const fs::path p = temp_dir() / "roundtrip.safetensors";
  w.write(p);
  for (auto& e : fs::directory_iterator(temp_dir()))
    CHECK_THAT(e.path().filename().string(), !Contains(".tmp-"));  // the temporary was renamed

  SafetensorsReader r(p);
  REQUIRE(r.tensors().size() == 6);
  CHECK(*r.metadata("who") == "test");
  CHECK(r.info("b.f64").shape == std::vector<int64_t>{1, 257});
  CHECK(r.info("f.scalar").shape.empty());
  CHECK(r.info("e.empty").numel() == 0);
  CHECK(r.read<float>("a.f32") == f);
  CHECK(r.read<double>("b.f64") == d);
  CHECK(r.read<double>("f.scalar") == std::vector<double>{d[0]});
  CHECK(r.read<float>("e.empty").empty());
  auto h = r.read<double>("c.f16");
  auto b = r.read<double>("d.bf16");
  for (size_t i = 0; i < n; ++i) {
    CHECK(std::abs(h[i] - d[i]) <= std::abs(d[i]) * std::ldexp(1.0, -11) + 1e-7);
    CHECK(std::abs(b[i] - d[i]) <= std::abs(d[i]) * std::ldexp(1.0, -8));
  }
  // the data buffer starts 8-byte aligned, as the reference writer does it
  CHECK((fs::file_size(p) - 8 - (257 * (4 + 8 + 2 + 2) + 8)) % 8 == 0);
}

TEST_CASE("safetensors: a hand-made file with known bit patterns", "[safetensors]") {
  // F16: 1, -2, 65504, 2^-24 (smallest subnormal); BF16: 1, -3; I64: -5; U8: 200; BOOL: 1, 0
  std::vector<unsigned char> data = {0x00, 0x3c, 0x00, 0xc0, 0xff, 0x7b, 0x01, 0x00,  // f16 [4]
                                     0x80, 0x3f, 0x40, 0xc0,                          // bf16 [2]
                                     0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,  // i64 [1]
                                     200, 1, 0};                                      // u8 [1], bool [2]
  std::string header = R"({"h":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]},)"
                       R"("i":{"dtype":"I64","shape":[1],"data_offsets":[12,20]},)"
                       R"("u":{"dtype":"U8","shape":[1],"data_offsets":[20,21]},)"
                       R"("z":{"dtype":"BOOL","shape":[2],"data_offsets":[21,23]},)"
                       R"("__metadata__":{"format":"pt"}}   )";
  SafetensorsReader r(raw_file("handmade.safetensors", header, data));
  CHECK(r.read<double>("h") == std::vector<double>{1.0, -2.0, 65504.0, std::ldexp(1.0, -24)});
  CHECK(r.read<float>("b") == std::vector<float>{1.0f, -3.0f});
  CHECK(r.read<double>("i") == std::vector<double>{-5.0});
  CHECK(r.read<float>("u") == std::vector<float>{200.0f});
  CHECK(r.read<float>("z") == std::vector<float>{1.0f, 0.0f});
  CHECK(r.metadata().at("format") == "pt");
  // tensors are listed in data order whatever the header order
  CHECK(r.tensors().front().name == "h");
  CHECK(r.tensors().back().name == "z");
}

TEST_CASE("safetensors: half and bfloat16 conversions round to nearest even", "[safetensors]") {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t x = uint16_t(h);
    const float f = half_to_float(x);
    if (std::isnan(f)) {
      CHECK(std::isnan(half_to_float(float_to_half(f))));
      continue;
    }
    REQUIRE(float_to_half(f) == x);
    // halfway to the next half away from zero: ties go to the even encoding
    if ((x & 0x7fffu) < 0x7bffu) {
      const float g = half_to_float(uint16_t(x + 1));
      const float mid = float((double(f) + double(g)) / 2);
      REQUIRE(float_to_half(mid) == ((x & 1u) ? uint16_t(x + 1) : x));
    }
  }
  CHECK(float_to_half(65519.0f) == 0x7bff);
  CHECK(float_to_half(65520.0f) == 0x7c00);
  CHECK(float_to_half(1e-9f) == 0x0000);
  CHECK(float_to_half(-1e-9f) == 0x8000);

  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = bf16_to_float(uint16_t(b));
    if (std::isnan(f)) continue;
    REQUIRE(float_to_bf16(f) == b);
  }
  CHECK(float_to_bf16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);                        // tie to even (down)
  CHECK(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);                    // tie to even (up)
  CHECK(float_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)) == 0x3f81);  // above the tie
  CHECK(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
}

TEST_CASE("safetensors: the writer refuses bad input", "[safetensors]") {
  SafetensorsWriter w;
  float x[4] = {1, 2, 3, 4};
  w.add("a", {4}, x);
  CHECK_THROWS_AS(w.add("a", {4}, x), Error);
  CHECK_THROWS_AS(w.add("__metadata__", {4}, x), Error);
  CHECK_THROWS_AS(w.add("b", {-1}, x), ShapeError);
  CHECK_THROWS_AS(w.add("c", {4}, x, DType::I32), Error);
  CHECK_THROWS_AS(w.write(temp_dir() / "no_such_folder" / "x.safetensors"), FileError);
}

TEST_CASE("safetensors: every kind of damage is a FileError naming the file and the problem", "[safetensors]") {
  const std::string good = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const auto two = f32_bytes({1.0f, 2.0f});
  // sanity: the undamaged file loads
  CHECK(SafetensorsReader(raw_file("good.safetensors", good, two)).read<float>("a") == std::vector<float>{1, 2});

  SECTION("missing file") { expect_damage(temp_dir() / "missing.safetensors", "no such file"); }
  SECTION("a folder instead of a file") {
    fs::create_directories(temp_dir() / "folder.safetensors");
    expect_damage(temp_dir() / "folder.safetensors", "is a folder");
  }
  SECTION("shorter than the 8-byte length") {
    fs::path p = temp_dir() / "short.safetensors";
    std::ofstream(p, std::ios::binary) << "abc";
    expect_damage(p, "only 3 bytes");
  }
  SECTION("empty file") {
    fs::path p = temp_dir() / "empty.safetensors";
    std::ofstream(p, std::ios::binary).flush();
    expect_damage(p, "only 0 bytes");
  }
  SECTION("header length beyond the file") {
    expect_damage(raw_file("len_long.safetensors", good, two, good.size() + 100), "exceeds");
  }
  SECTION("absurd header length") {
    expect_damage(raw_file("len_absurd.safetensors", good, two, uint64_t(1) << 60), "larger than the limit");
  }
  SECTION("zero header length") { expect_damage(raw_file("len_zero.safetensors", good, two, 0), "header length is 0"); }
  SECTION("header not JSON") {
    expect_damage(raw_file("notjson.safetensors", R"({"a": {"dtype": "F32", )", two), "not valid JSON");
  }
  SECTION("header not an object") { expect_damage(raw_file("array.safetensors", "[1, 2]", {}), "does not start with '{'"); }
  SECTION("a text file") {
    fs::path p = temp_dir() / "text.safetensors";
    std::ofstream(p) << "hello, this is not a safetensors file at all\n";
    expect_damage(p, "header length");
  }
  SECTION("entry missing dtype") {
    expect_damage(raw_file("nodtype.safetensors", R"({"a":{"shape":[2],"data_offsets":[0,8]}})", two),
                  "tensor 'a': missing 'dtype'");
  }
  SECTION("entry missing shape") {
    expect_damage(raw_file("noshape.safetensors", R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", two),
                  "tensor 'a': missing 'shape'");
  }
  SECTION("entry missing data_offsets") {
    expect_damage(raw_file("nooffsets.safetensors", R"({"a":{"dtype":"F32","shape":[2]}})", two),
                  "tensor 'a': missing 'data_offsets'");
  }
  SECTION("entry not an object") {
    expect_damage(raw_file("entry.safetensors", R"({"a":[1,2]})", {}), "not a JSON object");
  }
  SECTION("unknown field") {
    expect_damage(
        raw_file("field.safetensors", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", two),
        "unknown field 'x'");
  }
  SECTION("unknown dtype") {
    expect_damage(raw_file("dtype.safetensors", R"({"a":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}})", two),
                  "unknown dtype 'F31'");
  }
  SECTION("negative dimension") {
    expect_damage(raw_file("negdim.safetensors", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", two),
                  "non-negative integers");
  }
  SECTION("absurd shape") {
    expect_damage(raw_file("hugeshape.safetensors",
                           R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", two),
                  "more data than the file holds");
  }
  SECTION("offsets reversed") {
    expect_damage(raw_file("reversed.safetensors", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", two),
                  "end before they begin");
  }
  SECTION("offsets past the data") {
    expect_damage(raw_file("past.safetensors", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", two),
                  "reach past the end of the data buffer");
  }
  SECTION("offsets not matching shape x dtype") {
    expect_damage(raw_file("size.safetensors", R"({"a":{"dtype":"F64","shape":[2],"data_offsets":[0,8]}})", two),
                  "needs 16");
  }
  SECTION("overlapping tensors") {
    expect_damage(raw_file("overlap.safetensors",
                           R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                           two),
                  "overlap");
  }
  SECTION("a gap between tensors") {
    expect_damage(raw_file("gap.safetensors",
                           R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                           f32_bytes({1, 2, 3})),
                  "gap of 4 unused bytes");
  }
  SECTION("trailing garbage") {
    auto data = two;
    data.push_back(0x42);
    expect_damage(raw_file("trailing.safetensors", good, data), "trailing data");
  }
  SECTION("truncated data") {
    auto data = two;
    data.pop_back();
    expect_damage(raw_file("truncated.safetensors", good, data), "truncated");
  }
  SECTION("duplicate tensor name") {
    expect_damage(raw_file("dup.safetensors",
                           R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                           R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                           two),
                  "names 'a' twice");
  }
  SECTION("non-string metadata value") {
    expect_damage(raw_file("meta.safetensors",
                           R"({"__metadata__":{"step":12},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                           two),
                  "value of 'step' is not a string");
  }
  SECTION("metadata not an object") {
    expect_damage(raw_file("meta2.safetensors",
                           R"({"__metadata__":"x","a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", two),
                  "__metadata__ is not a JSON object");
  }
  SECTION("nan and inf in the data") {
    auto p = raw_file("nan.safetensors", good, f32_bytes({1.0f, std::nanf("")}));
    CHECK(std::isnan(SafetensorsReader(p).read<float>("a")[1]));  // only checked on request
    expect_damage(p, "non-finite value (nan) at element 1", "a", true);
    auto q = raw_file("inf.safetensors", good, f32_bytes({INFINITY, 1.0f}));
    expect_damage(q, "non-finite value (inf) at element 0", "a", true);
  }
  SECTION("a dtype that cannot be converted") {
    expect_damage(raw_file("f8.safetensors", R"({"a":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})", two),
                  "cannot convert", "a");
  }
  SECTION("asking for a tensor that is not there") { expect_damage(raw_file("good2.safetensors", good, two), "no tensor named 'b'", "b"); }
}

TEST_CASE("safetensors: truncation at any length and random byte flips never crash", "[safetensors]") {
  std::vector<float> v = testutil::randn<float>(40);
  SafetensorsWriter w;
  w.add("x.weight", {5, 8}, v.data());
  w.add("x.bias", {5}, v.data());
  w.add_metadata("config", R"({"hidden": 8})");
  const std::vector<unsigned char> bytes = w.to_bytes();
  const fs::path p = temp_dir() / "fuzz.safetensors";
  auto put = [&](const std::vector<unsigned char>& b) {
    std::ofstream f(p, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  };
  for (size_t len = 0; len < bytes.size(); ++len) {
    put(std::vector<unsigned char>(bytes.begin(), bytes.begin() + long(len)));
    INFO("truncated to " << len << " of " << bytes.size() << " bytes");
    CHECK_THROWS_AS(SafetensorsReader(p), FileError);
  }
  std::mt19937 g(1234);
  const size_t header_end = 8 + size_t(bytes[0]) + 256 * size_t(bytes[1]);
  for (int trial = 0; trial < 300; ++trial) {
    auto b = bytes;
    const size_t at = g() % header_end;  // the length field and the header
    b[at] = static_cast<unsigned char>(g());
    put(b);
    try {
      SafetensorsReader r(p);
      for (auto& t : r.tensors()) (void)r.read<double>(t.name);
    } catch (const FileError&) {
    } catch (const std::exception& e) {
      FAIL("byte " << at << " changed: a " << typeid(e).name() << " instead of a FileError: " << e.what());
    }
  }
}
