// The minibatch sampler: batches are a function of (seed, Rng position), rows match the data set,
// indices are uniform, and the optional horizontal flip mirrors columns and keeps channels.
#include <catch2/catch.hpp>

#include <cmath>

#include "data_test_util.hpp"
#include "shortcut/data/batcher.hpp"

using namespace shortcut;
using namespace shortcut::data;

namespace {
// n images [h, w, c] whose values encode (image, row, column, channel).
ImageDataset make_dataset(int n, int h, int w, int c) {
  ImageDataset ds;
  ds.n = n, ds.h = h, ds.w = w, ds.c = c, ds.classes = 5;
  for (int i = 0; i < n; ++i) {
    ds.labels.push_back(i % 5);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int k = 0; k < c; ++k) ds.images.push_back(float(i * 1000 + y * 100 + x * 10 + k));
  }
  return ds;
}
}  // namespace

TEST_CASE("batcher: a batch is a function of the seed and Rng position and resuming replays it", "[data][batcher]") {
  ImageDataset ds = make_dataset(50, 3, 4, 2);
  ImageBatcher b(ds);
  Rng r1(42), r2(42);
  auto a1 = b.next(16, r1), a2 = b.next(16, r1);
  CHECK(r1.position() == 2);
  CHECK(a1.indices != a2.indices);
  auto c1 = b.next(16, r2);
  CHECK(c1.indices == a1.indices);
  CHECK(c1.images == a1.images);
  // Restore the position after the first batch: the second batch comes again.
  Rng r3(42);
  r3.set_position(1);
  CHECK(b.next(16, r3).images == a2.images);
  // Another seed gives other batches.
  Rng r4(43);
  CHECK(b.next(16, r4).indices != a1.indices);
  // A smaller batch from the same position is a prefix of the larger one.
  Rng r5(42);
  auto small = b.next(5, r5);
  CHECK(std::equal(small.indices.begin(), small.indices.end(), a1.indices.begin()));
}

TEST_CASE("batcher: rows are the data set's images and labels and indices are uniform", "[data][batcher]") {
  ImageDataset ds = make_dataset(10, 2, 2, 1);
  ImageBatcher b(ds);
  Rng r(7);
  std::vector<int> count(10, 0);
  const int batches = 400, B = 50;
  for (int k = 0; k < batches; ++k) {
    auto batch = b.next(B, r);
    REQUIRE(batch.images.size() == size_t(B) * 4);
    CHECK(batch.n == B);
    CHECK(batch.h == 2);
    for (int i = 0; i < B; ++i) {
      int64_t idx = batch.indices[i];
      REQUIRE(idx >= 0);
      REQUIRE(idx < 10);
      ++count[idx];
      CHECK(batch.labels[i] == ds.labels[idx]);
      for (int p = 0; p < 4; ++p) CHECK(batch.images[i * 4 + p] == ds.image(int(idx))[p]);
    }
  }
  // 20000 draws over 10 rows: expected 2000 each, binomial sd ~42; 5 sd margin.
  for (int c : count) CHECK(std::abs(c - 2000) < 212);
}

TEST_CASE("batcher: horizontal flip mirrors columns, keeps channels, about half the time", "[data][batcher]") {
  const int h = 3, w = 4, c = 2;
  ImageDataset ds = make_dataset(20, h, w, c);
  ImageBatcher plain(ds), flip(ds, true);
  CHECK_FALSE(plain.hflip());
  Rng r1(5), r2(5);
  auto a = plain.next(2000, r1), f = flip.next(2000, r2);
  CHECK(a.indices == f.indices);  // the flip does not change which images are drawn
  int flipped = 0;
  const int per = h * w * c;
  for (int i = 0; i < 2000; ++i) {
    const float* src = ds.image(int(f.indices[i]));
    const float* got = f.images.data() + i * per;
    bool same = std::equal(got, got + per, src), mirrored = true;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int k = 0; k < c; ++k) mirrored &= got[(y * w + x) * c + k] == src[(y * w + (w - 1 - x)) * c + k];
    REQUIRE((same || mirrored));
    flipped += !same;
    CHECK(std::equal(a.images.begin() + i * per, a.images.begin() + (i + 1) * per, src));
  }
  CHECK(std::abs(flipped - 1000) < 112);  // binomial sd ~22, 5 sd
}

TEST_CASE("batcher: bad batch sizes and data sets are errors", "[data][batcher]") {
  ImageDataset ds = make_dataset(4, 2, 2, 1);
  ImageBatcher b(ds);
  Rng r(0);
  datatest::require_throws<ConfigError>([&] { b.next(0, r); }, "batch size");
  ImageDataset empty;
  datatest::require_throws<ShapeError>([&] { ImageBatcher e(empty); }, "empty");
  ds.labels.pop_back();
  datatest::require_throws<ShapeError>([&] { ImageBatcher e(ds); }, "labels");
}
