// Random minibatches from an ImageDataset for training. Each batch takes exactly one stream from the
// caller's counter-based Rng, and row r of the batch draws its image index (uniform over the data set,
// with replacement) and its optional flip from counters (stream, r) only. So a batch is a pure
// function of (seed, Rng position, batch size): a run restored to a stored Rng position continues with
// exactly the batches it would have drawn, and the trainer needs no sampler state of its own.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "shortcut/core/batch_slice.hpp"
#include "shortcut/core/error.hpp"
#include "shortcut/core/rng.hpp"
#include "shortcut/data/idx.hpp"

namespace shortcut::data {

struct ImageBatch {
  int n = 0, h = 0, w = 0, c = 0;
  std::vector<float> images;    // [n, h, w, c]
  std::vector<int32_t> labels;  // [n]
  std::vector<int64_t> indices; // [n], the data-set rows the batch was drawn from
};

class ImageBatcher {
 public:
  // The data set must outlive the batcher. hflip: mirror each image left-right with probability 1/2
  // (off by default: digits are not mirror-symmetric; garments mostly are).
  explicit ImageBatcher(const ImageDataset& ds, bool hflip = false) : ds_(&ds), hflip_(hflip) {
    if (ds.n <= 0 || ds.h <= 0 || ds.w <= 0 || ds.c <= 0)
      throw ShapeError(cat("ImageBatcher: empty data set (n ", ds.n, ", h ", ds.h, ", w ", ds.w, ", c ", ds.c, ")"));
    check_shape("ImageBatcher images", {static_cast<int64_t>(ds.images.size())},
                {static_cast<int64_t>(ds.n) * static_cast<int64_t>(ds.image_size())});
    check_shape("ImageBatcher labels", {static_cast<int64_t>(ds.labels.size())}, {ds.n});
  }

  const ImageDataset& dataset() const { return *ds_; }
  bool hflip() const { return hflip_; }

  // Writes a batch of `batch` images [batch, h, w, c] and labels [batch] into caller buffers (indices
  // optional), taking one stream from rng.
  void next_into(int batch, Rng& rng, float* images, int32_t* labels, int64_t* indices = nullptr) const {
    if (batch <= 0) throw ConfigError(cat("ImageBatcher: batch size must be positive, got ", batch));
    rows_into(BatchSlice::all(batch), rng, images, labels, indices);
  }
  // The slice's rows of the batch next_into(s.batch, ...) would write (local row i = global row
  // s.global_row(i)), taking the same one stream: a data-parallel rank reads only its rows.
  void rows_into(const BatchSlice& s, Rng& rng, float* images, int32_t* labels, int64_t* indices = nullptr) const {
    s.check();
    const uint64_t seed = rng.seed(), stream = rng.next_stream();
    const ImageDataset& ds = *ds_;
    const size_t per = ds.image_size(), row = static_cast<size_t>(ds.w) * ds.c;
    for (int i = 0; i < s.rows(); ++i) {
      const int r = s.global_row(i);
      Philox4 q = philox4x32(seed, static_cast<uint64_t>(r), stream ^ 0xba7c4e5ull);
      const uint64_t x = (static_cast<uint64_t>(q.v[0]) << 32) | q.v[1];
      const int64_t idx = static_cast<int64_t>(x % static_cast<uint64_t>(ds.n));  // bias < n / 2^64
      const bool flip = hflip_ && (q.v[2] & 1u);
      const float* src = ds.image(static_cast<int>(idx));
      float* dst = images + static_cast<size_t>(i) * per;
      if (!flip) {
        std::copy(src, src + per, dst);
      } else {
        for (int y = 0; y < ds.h; ++y)
          for (int xcol = 0; xcol < ds.w; ++xcol)
            std::copy(src + y * row + static_cast<size_t>(ds.w - 1 - xcol) * ds.c,
                      src + y * row + static_cast<size_t>(ds.w - xcol) * ds.c, dst + y * row + static_cast<size_t>(xcol) * ds.c);
      }
      labels[i] = ds.labels[idx];
      if (indices) indices[i] = idx;
    }
  }

  ImageBatch next(int batch, Rng& rng) const {
    ImageBatch b;
    b.n = batch;
    b.h = ds_->h;
    b.w = ds_->w;
    b.c = ds_->c;
    if (batch <= 0) throw ConfigError(cat("ImageBatcher: batch size must be positive, got ", batch));
    b.images.resize(static_cast<size_t>(batch) * ds_->image_size());
    b.labels.resize(batch);
    b.indices.resize(batch);
    next_into(batch, rng, b.images.data(), b.labels.data(), b.indices.data());
    return b;
  }

 private:
  const ImageDataset* ds_;
  bool hflip_;
};

}  // namespace shortcut::data
