// The .npy reader (io/npy.hpp) and the tensor-file data set (data/tensor_file.hpp): round trips of
// every written dtype, files as numpy.save writes them (version 1.0 and 2.0 headers, big-endian,
// 1-D shapes), and every damaged file raising a FileError that says what is wrong.
#include <catch2/catch.hpp>

#include <shortcut/data/tensor_file.hpp>
#include <shortcut/io/npy.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>

using namespace shortcut;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

fs::path tmp(const std::string& name) {
  fs::path d = fs::temp_directory_path() / "shortcut_npy_test";
  fs::create_directories(d);
  return d / name;
}

std::string bytes_of(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
void put(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

// A file as numpy writes it: magic, version, header length, header, data.
std::string npy(const std::string& header, const std::string& data, int major = 1) {
  std::string h = header;
  const size_t pre = major == 1 ? 10 : 12;
  h.append((64 - (pre + h.size() + 1) % 64) % 64, ' ');
  h += '\n';
  std::string s = "\x93NUMPY";
  s += char(major);
  s += char(0);
  for (size_t i = 0; i < (major == 1 ? 2u : 4u); ++i) s += char((h.size() >> (8 * i)) & 0xff);
  return s + h + data;
}

void fails(const fs::path& p, const std::string& words) {
  INFO(p.string());
  REQUIRE_THROWS_WITH(io::read_npy(p), Contains(words));
  REQUIRE_THROWS_AS(io::read_npy(p), FileError);
}

}  // namespace

TEST_CASE("npy: round trips of every written dtype", "[npy]") {
  std::vector<float> f = {1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, 7.0f};
  io::write_npy(tmp("f.npy"), {2, 3}, f.data());
  auto a = io::read_npy(tmp("f.npy"));
  REQUIRE(a.descr == "<f4");
  REQUIRE(a.shape == std::vector<int64_t>{2, 3});
  REQUIRE(a.values<float>() == f);
  std::vector<uint8_t> u = {0, 1, 255, 128};
  io::write_npy(tmp("u.npy"), {4}, u.data());
  auto b = io::read_npy(tmp("u.npy"));
  REQUIRE(b.dtype == io::DType::U8);
  REQUIRE(b.shape == std::vector<int64_t>{4});
  REQUIRE(b.values<int>() == std::vector<int>{0, 1, 255, 128});
  std::vector<int64_t> l = {-3, 9, 1LL << 40};
  io::write_npy(tmp("l.npy"), {3, 1, 1}, l.data());
  REQUIRE(io::read_npy(tmp("l.npy")).values<int64_t>() == l);
  // the header is what numpy writes: a dict, padded to 64 bytes, ending in a newline
  std::string s = bytes_of(tmp("f.npy"));
  REQUIRE(s.substr(10, 59) == "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }");
  REQUIRE((s.size() - 24) % 64 == 0);
  REQUIRE(s[s.size() - 25] == '\n');
}

TEST_CASE("npy: files as numpy writes them (version 2.0, big-endian, scalars, empty arrays)", "[npy]") {
  std::string le(8, '\0'), be(8, '\0');
  float one = 1.0f, two = -2.5f;
  std::memcpy(le.data(), &one, 4);
  std::memcpy(le.data() + 4, &two, 4);
  for (int i = 0; i < 4; ++i) be[i] = le[3 - i], be[4 + i] = le[7 - i];
  put(tmp("v2.npy"), npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", le, 2));
  REQUIRE(io::read_npy(tmp("v2.npy")).values<float>() == std::vector<float>{1.0f, -2.5f});
  put(tmp("be.npy"), npy("{\"descr\": \">f4\", \"fortran_order\": False, \"shape\": (1, 2)}", be));
  REQUIRE(io::read_npy(tmp("be.npy")).values<float>() == std::vector<float>{1.0f, -2.5f});
  put(tmp("scalar.npy"), npy("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", le.substr(0, 4)));
  REQUIRE(io::read_npy(tmp("scalar.npy")).values<float>() == std::vector<float>{1.0f});
  put(tmp("empty.npy"), npy("{'descr': '|u1', 'fortran_order': False, 'shape': (0, 3), }", ""));
  REQUIRE(io::read_npy(tmp("empty.npy")).numel() == 0);
}

TEST_CASE("npy: damaged and foreign files give clear errors", "[npy]") {
  const std::string ok = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
  const std::string d8(8, '\0');
  fails(tmp("nope.npy"), "no such file");
  fails(fs::temp_directory_path(), "is a folder");
  put(tmp("empty_file.npy"), "");
  fails(tmp("empty_file.npy"), "not a .npy file");
  put(tmp("short.npy"), "\x93NUM");
  fails(tmp("short.npy"), "truncated");
  put(tmp("zip.npy"), "PK\x03\x04 not numpy at all");
  fails(tmp("zip.npy"), "does not start with the magic");
  std::string v = npy(ok, d8);
  v[6] = 9;
  put(tmp("version.npy"), v);
  fails(tmp("version.npy"), "unsupported format version 9.0");
  std::string big = npy(ok, d8);
  big[8] = char(0xff), big[9] = char(0xff);
  put(tmp("hlen.npy"), big);
  fails(tmp("hlen.npy"), "exceeds the");
  put(tmp("trunc.npy"), npy(ok, d8.substr(0, 5)));
  fails(tmp("trunc.npy"), "needs 8 bytes of data, the file holds 5: truncated");
  put(tmp("trail.npy"), npy(ok, d8 + "xx"));
  fails(tmp("trail.npy"), "2 bytes of trailing data");
  put(tmp("fortran.npy"), npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", d8));
  fails(tmp("fortran.npy"), "Fortran order");
  put(tmp("obj.npy"), npy("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", d8));
  fails(tmp("obj.npy"), "unsupported dtype '|O'");
  put(tmp("c8.npy"), npy("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", d8));
  fails(tmp("c8.npy"), "unsupported dtype '<c8'");
  put(tmp("struct.npy"), npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", d8));
  fails(tmp("struct.npy"), "expected a quoted string");
  put(tmp("noshape.npy"), npy("{'descr': '<f4', 'fortran_order': False, }", d8));
  fails(tmp("noshape.npy"), "needs 'descr', 'fortran_order' and 'shape'");
  put(tmp("key.npy"), npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", d8));
  fails(tmp("key.npy"), "unknown key 'extra'");
  put(tmp("neg.npy"), npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", d8));
  fails(tmp("neg.npy"), "non-negative integer");
  put(tmp("huge.npy"), npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4000000000, 4000000000, 4000000000), }", d8));
  fails(tmp("huge.npy"), "describes far more data");
  put(tmp("unterminated.npy"), npy("{'descr': '<f4", d8));
  fails(tmp("unterminated.npy"), "unterminated string");
}

TEST_CASE("tensor file data set: uint8 scaled, float kept, labels checked", "[npy]") {
  std::vector<uint8_t> img(2 * 4 * 4 * 1);
  for (size_t i = 0; i < img.size(); ++i) img[i] = uint8_t(i * 8);
  io::write_npy(tmp("img.npy"), {2, 4, 4, 1}, img.data());
  std::vector<int64_t> lab = {0, 3};
  io::write_npy(tmp("lab.npy"), {2}, lab.data());
  auto d = data::load_tensor_dataset(tmp("img.npy"), tmp("lab.npy"));
  REQUIRE(d.n == 2);
  REQUIRE(d.h == 4);
  REQUIRE(d.c == 1);
  REQUIRE(d.classes == 4);
  REQUIRE(d.images[1] == Approx(8 / 127.5 - 1));
  REQUIRE(d.labels == std::vector<int32_t>{0, 3});
  REQUIRE(data::load_tensor_dataset(tmp("img.npy"), tmp("lab.npy"), 10).classes == 10);
  REQUIRE_THROWS_WITH(data::load_tensor_dataset(tmp("img.npy"), tmp("lab.npy"), 3),
                      Contains("label 3 at index 1 is out of range for 3 classes"));
  std::vector<float> f = {0.5f, -7.0f};
  io::write_npy(tmp("f2.npy"), {2}, f.data());
  REQUIRE_THROWS_WITH(data::load_tensor_dataset(tmp("f2.npy"), tmp("lab.npy")), Contains("rank 4"));
  REQUIRE_THROWS_WITH(data::load_tensor_dataset(tmp("img.npy"), tmp("f2.npy")), Contains("labels must be integers"));
  // safetensors: images and labels in one file
  std::vector<float> imgs(2 * 4 * 4 * 2, 0.25f), labs = {1, 0};
  io::SafetensorsWriter w;
  w.add("images", {2, 4, 4, 2}, imgs.data());
  w.add("labels", {2}, labs.data(), io::DType::F32);
  w.write(tmp("d.safetensors"));
  REQUIRE_THROWS_WITH(data::load_tensor_dataset(tmp("d.safetensors")), Contains("labels must be integers, got F32"));
  REQUIRE(data::load_tensor_dataset(tmp("d.safetensors"), tmp("lab.npy")).images[0] == 0.25f);
}
