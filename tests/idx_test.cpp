// The IDX reader and writer: round trips, and every kind of damaged file, each written by the test,
// giving a FileError that names the problem.
#include <catch2/catch.hpp>

#include "data_test_util.hpp"
#include "shortcut/data/idx.hpp"

using namespace shortcut;
using namespace shortcut::data;
using datatest::require_throws;

namespace {
std::vector<uint8_t> be32(uint32_t v) {
  return {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
}
// A raw IDX file: magic, dims, payload.
std::vector<uint8_t> idx_bytes(uint32_t magic, const std::vector<uint32_t>& dims, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> b = be32(magic);
  for (uint32_t d : dims) {
    auto q = be32(d);
    b.insert(b.end(), q.begin(), q.end());
  }
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}
std::vector<uint8_t> pattern(size_t n, int mul = 37) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * mul + 11) & 255);
  return v;
}
}  // namespace

TEST_CASE("idx: written files read back and pixels map to [-1, 1]", "[data][idx]") {
  datatest::TempDir dir("idx_ok");
  const int n = 7, h = 5, w = 3;
  auto im = pattern(static_cast<size_t>(n) * h * w);
  im[0] = 0;
  im[1] = 255;
  std::vector<uint8_t> lb{0, 9, 3, 3, 1, 2, 8};
  write_idx_dataset(dir.path, "train", im, lb, n, h, w);
  CHECK(std::filesystem::file_size(dir / "train-images-idx3-ubyte") == 16 + im.size());
  CHECK(std::filesystem::file_size(dir / "train-labels-idx1-ubyte") == 8 + lb.size());
  // The header bytes are the standard ones.
  auto raw = datatest::read_bytes(dir / "train-images-idx3-ubyte");
  CHECK(std::vector<uint8_t>(raw.begin(), raw.begin() + 8) == std::vector<uint8_t>{0, 0, 8, 3, 0, 0, 0, 7});
  auto lraw = datatest::read_bytes(dir / "train-labels-idx1-ubyte");
  CHECK(std::vector<uint8_t>(lraw.begin(), lraw.begin() + 4) == std::vector<uint8_t>{0, 0, 8, 1});

  ImageDataset ds = load_idx_dataset(dir.path, "train");
  CHECK(ds.n == n);
  CHECK(ds.h == h);
  CHECK(ds.w == w);
  CHECK(ds.c == 1);
  CHECK(ds.classes == 10);
  REQUIRE(ds.images.size() == im.size());
  CHECK(ds.images[0] == -1.0f);
  CHECK(ds.images[1] == 1.0f);
  for (size_t i = 0; i < im.size(); ++i) {
    CHECK(ds.images[i] == Approx(im[i] / 127.5 - 1.0).margin(1e-6));
    CHECK(float_to_idx_pixel(ds.images[i]) == im[i]);
  }
  CHECK(ds.labels == std::vector<int32_t>(lb.begin(), lb.end()));
  CHECK(ds.image(2)[0] == ds.images[2 * h * w]);
  // classes = 0 infers the largest label + 1.
  CHECK(load_idx_dataset(dir.path, "train", 0).classes == 10);
  CHECK(load_idx_dataset(dir.path, "train", 12).classes == 12);

  // save_idx_dataset writes the same bytes back.
  datatest::TempDir dir2("idx_ok2");
  save_idx_dataset(ds, dir2.path, "t10k");
  CHECK(datatest::read_bytes(dir2 / "t10k-images-idx3-ubyte") == raw);
  CHECK(datatest::read_bytes(dir2 / "t10k-labels-idx1-ubyte") == lraw);
  CHECK(load_idx_dataset(dir2.path, "t10k").images == ds.images);
}

TEST_CASE("idx: 4-D images [n, h, w, c] (magic 0x804) are read as channels-last", "[data][idx]") {
  datatest::TempDir dir("idx_rgb");
  const int n = 3, h = 2, w = 4, c = 3;
  auto im = pattern(static_cast<size_t>(n) * h * w * c, 13);
  std::vector<uint8_t> lb{1, 0, 1};
  write_idx_dataset(dir.path, "t10k", im, lb, n, h, w, c);
  CHECK(datatest::read_bytes(dir / "t10k-images-idx3-ubyte")[3] == 4);
  ImageDataset ds = load_idx_dataset(dir.path, "t10k", 2);
  CHECK(ds.c == c);
  CHECK(ds.image_size() == size_t(h * w * c));
  CHECK(ds.images[5] == Approx(im[5] / 127.5 - 1.0).margin(1e-6));
}

TEST_CASE("idx: every kind of damaged file is a FileError naming the problem", "[data][idx]") {
  datatest::TempDir dir("idx_bad");
  const auto img = dir / "images", lab = dir / "labels";
  const std::vector<uint8_t> good_im = idx_bytes(0x803, {4, 2, 2}, pattern(16)),
                             good_lb = idx_bytes(0x801, {4}, {0, 1, 2, 3});
  auto load = [&] { load_idx_files(img, lab, 10); };
  auto set = [&](const std::vector<uint8_t>& i, const std::vector<uint8_t>& l) {
    datatest::write_bytes(img, i);
    datatest::write_bytes(lab, l);
  };
  set(good_im, good_lb);
  REQUIRE_NOTHROW(load());

  SECTION("missing file") {
    require_throws<FileError>([&] { load_idx_files(dir / "nope", lab); }, "not found");
    require_throws<FileError>([&] { load_idx_dataset(dir / "no_such_dir", "train"); }, "get-data.sh");
  }
  SECTION("only the .gz is present") {
    datatest::write_bytes(dir / "zipped.gz", {0x1f, 0x8b, 8, 0});
    require_throws<FileError>([&] { load_idx_files(dir / "zipped", lab); }, "decompress");
  }
  SECTION("a folder instead of a file") {
    std::filesystem::create_directories(dir / "folder");
    require_throws<FileError>([&] { load_idx_files(dir / "folder", lab); }, "not a regular file");
  }
  SECTION("truncated header: shorter than the magic") {
    set({0, 0}, good_lb);
    require_throws<FileError>(load, "truncated header");
  }
  SECTION("truncated header: magic but not all dimensions") {
    set({0, 0, 8, 3, 0, 0, 0, 4, 0, 0}, good_lb);
    require_throws<FileError>(load, "truncated header");
  }
  SECTION("empty file") {
    set({}, good_lb);
    require_throws<FileError>(load, "truncated header");
  }
  SECTION("wrong magic: another element type") {
    set(idx_bytes(0x903, {4, 2, 2}, pattern(16)), good_lb);
    require_throws<FileError>(load, "wrong magic 0x00000903");
  }
  SECTION("wrong magic: nonzero leading bytes (e.g. a little-endian writer)") {
    set(idx_bytes(0x03080000, {4, 2, 2}, pattern(16)), good_lb);
    require_throws<FileError>(load, "wrong magic");
  }
  SECTION("wrong magic: still gzipped") {
    set({0x1f, 0x8b, 8, 0, 0, 0, 0, 0}, good_lb);
    require_throws<FileError>(load, "gzip");
  }
  SECTION("wrong number of dimensions: labels given as images") {
    set(good_lb, good_lb);
    require_throws<FileError>(load, "wrong number of dimensions 1");
  }
  SECTION("wrong number of dimensions: images given as labels") {
    set(good_im, good_im);
    require_throws<FileError>(load, "wrong number of dimensions 3");
  }
  SECTION("dimension overflow: the product of the dimensions exceeds 64 bits") {
    set(idx_bytes(0x803, {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}, pattern(16)), good_lb);
    require_throws<FileError>(load, "dimension overflow");
  }
  SECTION("dimension overflow: a corrupt count far beyond the file") {
    set(idx_bytes(0x803, {0x7FFFFFFFu, 28, 28}, pattern(16)), good_lb);
    require_throws<FileError>(load, "dimension overflow");
  }
  SECTION("dimensions that do not match the file size (extra bytes)") {
    auto b = good_im;
    b.push_back(1);
    set(b, good_lb);
    require_throws<FileError>(load, "does not match");
  }
  SECTION("truncated payload") {
    auto b = good_im;
    b.pop_back();
    set(b, good_lb);
    require_throws<FileError>(load, "truncated payload");
  }
  SECTION("truncated labels payload") {
    auto b = good_lb;
    b.pop_back();
    set(good_im, b);
    require_throws<FileError>(load, "truncated payload");
  }
  SECTION("empty dimensions") {
    set(idx_bytes(0x803, {4, 0, 2}, {}), good_lb);
    require_throws<FileError>(load, "empty");
  }
  SECTION("label/image count mismatch") {
    set(good_im, idx_bytes(0x801, {3}, {0, 1, 2}));
    require_throws<FileError>(load, "count mismatch");
  }
  SECTION("label out of range") {
    set(good_im, idx_bytes(0x801, {4}, {0, 1, 10, 3}));
    require_throws<FileError>(load, "label 10 at index 2 is out of range for 10 classes");
    CHECK(load_idx_files(img, lab, 0).classes == 11);
  }
  SECTION("unknown split name") {
    require_throws<ConfigError>([&] { load_idx_dataset(dir.path, "test"); }, "t10k");
  }
}

TEST_CASE("idx: the writer checks its arguments", "[data][idx]") {
  datatest::TempDir dir("idx_write");
  std::vector<uint8_t> b(6);
  require_throws<ShapeError>([&] { write_idx(dir / "x", {2, 4}, b); }, "describe 8 bytes, got 6");
  require_throws<ShapeError>([&] { write_idx(dir / "x", {}, b); }, "dimensions");
  require_throws<ShapeError>([&] { write_idx_dataset(dir.path, "train", b, std::vector<uint8_t>(3), 2, 3, 1); }, "labels");
  require_throws<FileError>([&] { write_idx(dir / "missing_dir" / "x", {6}, b); }, "cannot create");
}
