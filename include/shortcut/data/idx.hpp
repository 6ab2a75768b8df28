// The IDX format of the MNIST and Fashion-MNIST files, read into an ImageDataset (pixels in [-1, 1])
// and written back, so that users with the original files (gunzipped) use them directly.
//
// An IDX file is: a 4-byte magic number 0x00 0x00 <type> <ndim>, then ndim big-endian uint32
// dimensions, then the payload in C order. Only type 0x08 (unsigned byte) is used by these data sets:
// images are 0x00000803 ([n, h, w]; 0x00000804 [n, h, w, c] is accepted too) and labels 0x00000801
// ([n]). Every way a file can be wrong (missing, truncated header, wrong magic, wrong number of
// dimensions, dimensions whose product overflows or disagrees with the file size, truncated payload,
// label/image count mismatch, label out of range) is a FileError naming the file and the numbers.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "shortcut/core/error.hpp"

namespace shortcut::data {

// Images [n, h, w, c] (channels last, as the networks take them) and one label per image.
struct ImageDataset {
  int n = 0, h = 0, w = 0, c = 0;
  std::vector<float> images;    // [n, h, w, c], pixel p in 0..255 stored as p / 127.5 - 1, in [-1, 1]
  std::vector<int32_t> labels;  // [n], each in [0, classes)
  int classes = 0;
  size_t image_size() const { return static_cast<size_t>(h) * w * c; }
  const float* image(int i) const { return images.data() + static_cast<size_t>(i) * image_size(); }
};

// The raw content of one unsigned-byte IDX file.
struct IdxArray {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;  // product(dims) bytes, C order
};

inline float idx_pixel_to_float(uint8_t p) { return static_cast<float>(p) / 127.5f - 1.0f; }
// The inverse of idx_pixel_to_float, rounding and clamping values that are not exact pixel levels.
inline uint8_t float_to_idx_pixel(float x) {
  float p = (x + 1.0f) * 127.5f;
  if (!(p > 0.0f)) return 0;  // also NaN
  if (p >= 255.0f) return 255;
  return static_cast<uint8_t>(p + 0.5f);
}

inline std::string idx_hex(uint32_t v) {
  char b[16];
  std::snprintf(b, sizeof b, "0x%08X", v);
  return b;
}

// Reads an unsigned-byte IDX file whose number of dimensions is in [min_ndim, max_ndim]; `what`
// ("images", "labels") goes into the messages.
inline IdxArray read_idx(const std::filesystem::path& path, int min_ndim, int max_ndim, const std::string& what) {
  namespace fs = std::filesystem;
  const std::string p = path.string();
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    std::string hint;
    if (fs::exists(fs::path(p + ".gz"), ec))
      hint = cat(" (found ", p, ".gz: decompress it first, e.g. gunzip -k ", p, ".gz)");
    else if (fs::exists(path, ec))
      hint = " (it exists but is not a regular file)";
    else
      hint = " (for MNIST / Fashion-MNIST, scripts/get-data.sh writes these files under data/)";
    throw FileError(cat("IDX ", what, " file ", p, " not found", hint));
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) throw FileError(cat("cannot open IDX ", what, " file ", p));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) throw FileError(cat("error while reading IDX ", what, " file ", p));
  const uint64_t size = bytes.size();

  if (size < 4)
    throw FileError(cat("IDX ", what, " file ", p, ": truncated header (", size, " bytes; the magic number alone is 4)"));
  const uint32_t magic = (uint32_t(bytes[0]) << 24) | (uint32_t(bytes[1]) << 16) | (uint32_t(bytes[2]) << 8) | bytes[3];
  const int ndim = bytes[3];
  const std::string want = min_ndim == max_ndim ? idx_hex(0x800u | min_ndim)
                                                : cat(idx_hex(0x800u | min_ndim), "..", idx_hex(0x800u | max_ndim));
  if (bytes[0] == 0x1f && bytes[1] == 0x8b)
    throw FileError(cat("IDX ", what, " file ", p, ": wrong magic ", idx_hex(magic), ", this is a gzip file; decompress it first"));
  if (bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08)
    throw FileError(cat("IDX ", what, " file ", p, ": wrong magic ", idx_hex(magic), ", expected ", want,
                        " (unsigned-byte IDX)"));
  if (ndim < min_ndim || ndim > max_ndim)
    throw FileError(cat("IDX ", what, " file ", p, ": wrong number of dimensions ", ndim, " (magic ", idx_hex(magic),
                        "), expected ", min_ndim == max_ndim ? cat(min_ndim) : cat(min_ndim, " to ", max_ndim),
                        " (magic ", want, ")"));
  const uint64_t header = 4 + 4 * static_cast<uint64_t>(ndim);
  if (size < header)
    throw FileError(cat("IDX ", what, " file ", p, ": truncated header (", size, " bytes; ", ndim,
                        " dimensions need a ", header, "-byte header)"));
  IdxArray a;
  a.dims.resize(ndim);
  uint64_t count = 1;
  bool overflow = false;
  for (int k = 0; k < ndim; ++k) {
    const uint8_t* q = bytes.data() + 4 + 4 * k;
    a.dims[k] = (uint32_t(q[0]) << 24) | (uint32_t(q[1]) << 16) | (uint32_t(q[2]) << 8) | q[3];
    // Four uint32 factors can exceed 64 bits; stop counting once the product passes the file size.
    if (a.dims[k] != 0 && count > std::numeric_limits<uint64_t>::max() / a.dims[k]) overflow = true;
    else count *= a.dims[k];
  }
  std::vector<int64_t> dims64(a.dims.begin(), a.dims.end());
  const uint64_t payload = size - header;
  if (overflow || count > payload) {
    bool huge = overflow || count > (uint64_t(1) << 40);  // far beyond any file we read: a corrupt header
    throw FileError(cat("IDX ", what, " file ", p, ": ",
                        huge ? "dimension overflow: dimensions " : "truncated payload: dimensions ", shape_str(dims64),
                        " need ", overflow ? std::string("more than 2^64") : cat(count), " bytes but the file has ",
                        payload, " after its ", header, "-byte header"));
  }
  if (count < payload)
    throw FileError(cat("IDX ", what, " file ", p, ": file size does not match the dimensions ", shape_str(dims64), ": ",
                        payload - count, " bytes beyond the ", count, " they describe"));
  a.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return a;
}

// Writes an unsigned-byte IDX file (magic 0x0000080<ndim>, big-endian dims, payload).
inline void write_idx(const std::filesystem::path& path, const std::vector<uint32_t>& dims, std::span<const uint8_t> data) {
  if (dims.empty() || dims.size() > 255) throw ShapeError(cat("write_idx: 1 to 255 dimensions, got ", dims.size()));
  uint64_t count = 1;
  for (uint32_t d : dims) count *= d;
  if (count != data.size())
    throw ShapeError(cat("write_idx ", path.string(), ": dimensions ", shape_str(std::vector<int64_t>(dims.begin(), dims.end())),
                         " describe ", count, " bytes, got ", data.size()));
  std::vector<uint8_t> head{0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) head.push_back(static_cast<uint8_t>(d >> s));
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw FileError(cat("cannot create IDX file ", path.string()));
  f.write(reinterpret_cast<const char*>(head.data()), static_cast<std::streamsize>(head.size()));
  f.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
  f.close();
  if (!f) throw FileError(cat("error while writing IDX file ", path.string()));
}

// The standard file names: split "train" or "t10k".
inline void check_idx_split(const std::string& split) {
  if (split != "train" && split != "t10k")
    throw ConfigError(cat("IDX split must be \"train\" or \"t10k\", got \"", split, "\""));
}
inline std::string idx_images_name(const std::string& split) { check_idx_split(split); return split + "-images-idx3-ubyte"; }
inline std::string idx_labels_name(const std::string& split) { check_idx_split(split); return split + "-labels-idx1-ubyte"; }

// Loads an images file and a labels file. classes > 0: every label must be below it; classes = 0:
// the number of classes is the largest label + 1.
inline ImageDataset load_idx_files(const std::filesystem::path& images_path, const std::filesystem::path& labels_path,
                                   int classes = 10) {
  if (classes < 0) throw ConfigError(cat("load_idx_files: classes must be >= 0, got ", classes));
  IdxArray im = read_idx(images_path, 3, 4, "images");
  IdxArray lb = read_idx(labels_path, 1, 1, "labels");
  const uint32_t n = im.dims[0], h = im.dims[1], w = im.dims[2], c = im.dims.size() == 4 ? im.dims[3] : 1;
  const uint64_t per_image = uint64_t(h) * w * c;
  if (n == 0 || per_image == 0)
    throw FileError(cat("IDX images file ", images_path.string(), ": empty dimensions ",
                        shape_str(std::vector<int64_t>(im.dims.begin(), im.dims.end()))));
  // ImageDataset holds sizes as int; anything past that is not a real image set.
  constexpr uint64_t kIntMax = static_cast<uint64_t>(std::numeric_limits<int>::max());
  if (n > kIntMax || per_image > kIntMax)
    throw FileError(cat("IDX images file ", images_path.string(), ": dimension overflow: ",
                        shape_str(std::vector<int64_t>(im.dims.begin(), im.dims.end())), " exceeds the supported size"));
  if (lb.dims[0] != n)
    throw FileError(cat("label/image count mismatch: ", labels_path.string(), " has ", lb.dims[0], " labels but ",
                        images_path.string(), " has ", n, " images"));
  ImageDataset ds;
  ds.n = static_cast<int>(n);
  ds.h = static_cast<int>(h);
  ds.w = static_cast<int>(w);
  ds.c = static_cast<int>(c);
  int max_label = 0;
  ds.labels.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    int l = lb.data[i];
    if (classes > 0 && l >= classes)
      throw FileError(cat("IDX labels file ", labels_path.string(), ": label ", l, " at index ", i,
                          " is out of range for ", classes, " classes"));
    ds.labels[i] = l;
    max_label = std::max(max_label, l);
  }
  ds.classes = classes > 0 ? classes : max_label + 1;
  ds.images.resize(im.data.size());
  for (size_t i = 0; i < im.data.size(); ++i) ds.images[i] = idx_pixel_to_float(im.data[i]);
  return ds;
}

// Loads <dir>/<split>-images-idx3-ubyte and <dir>/<split>-labels-idx1-ubyte, split "train" or "t10k".
inline ImageDataset load_idx_dataset(const std::filesystem::path& dir, const std::string& split, int classes = 10) {
  return load_idx_files(dir / idx_images_name(split), dir / idx_labels_name(split), classes);
}

// Writes uint8 images [n, h, w] (c = 1, magic 0x803) or [n, h, w, c] (c > 1, magic 0x804) and uint8
// labels [n] under the standard names of `split` in dir (created if needed).
inline void write_idx_dataset(const std::filesystem::path& dir, const std::string& split, std::span<const uint8_t> images,
                              std::span<const uint8_t> labels, int n, int h, int w, int c = 1) {
  if (n < 0 || h <= 0 || w <= 0 || c <= 0)
    throw ShapeError(cat("write_idx_dataset: bad sizes n ", n, ", h ", h, ", w ", w, ", c ", c));
  check_shape("write_idx_dataset labels", {static_cast<int64_t>(labels.size())}, {n});
  std::filesystem::create_directories(dir);
  std::vector<uint32_t> dims{uint32_t(n), uint32_t(h), uint32_t(w)};
  if (c > 1) dims.push_back(uint32_t(c));
  write_idx(dir / idx_images_name(split), dims, images);
  write_idx(dir / idx_labels_name(split), {uint32_t(n)}, labels);
}

// Writes an ImageDataset back to IDX (pixels rounded back to 0..255; labels must fit a byte).
inline void save_idx_dataset(const ImageDataset& ds, const std::filesystem::path& dir, const std::string& split) {
  check_shape("save_idx_dataset images", {static_cast<int64_t>(ds.images.size())},
              {static_cast<int64_t>(ds.n) * ds.h * ds.w * ds.c});
  std::vector<uint8_t> im(ds.images.size()), lb(ds.labels.size());
  for (size_t i = 0; i < im.size(); ++i) im[i] = float_to_idx_pixel(ds.images[i]);
  for (size_t i = 0; i < lb.size(); ++i) {
    if (ds.labels[i] < 0 || ds.labels[i] > 255)
      throw ConfigError(cat("save_idx_dataset: label ", ds.labels[i], " at index ", i, " does not fit an IDX byte"));
    lb[i] = static_cast<uint8_t>(ds.labels[i]);
  }
  write_idx_dataset(dir, split, im, lb, ds.n, ds.h, ds.w, ds.c);
}

}  // namespace shortcut::data
