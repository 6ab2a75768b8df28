// Any tensor file as an image data set: a safetensors or .npy file of images [N, H, W, C] (channels
// last) with labels [N]. uint8 images are scaled to [-1, 1] (p / 127.5 - 1, as the IDX loader does);
// floating-point images (F16, BF16, F32, F64: e.g. VAE latents) are taken as they are. Labels are
// integers in [0, classes): a second tensor of the safetensors file ("labels", or the only rank-1
// tensor) or a separate .npy file. Every way the files can be wrong is a FileError that names the file
// and says what is expected.
#pragma once
#include <cctype>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "shortcut/data/idx.hpp"
#include "shortcut/io/npy.hpp"
#include "shortcut/io/safetensors.hpp"

namespace shortcut::data {

namespace detail {

// A tensor of either format: its dtype and shape, and its values converted on demand (so that a large
// file is held once as bytes and once as the floats the data set keeps, never as doubles).
struct LoadedTensor {
  std::string where;  // "npy file 'x.npy'" or "tensor 'images' of safetensors file 'x.safetensors'"
  io::DType dtype = io::DType::F32;
  std::vector<int64_t> shape;
  std::shared_ptr<io::NpyArray> npy;
  std::shared_ptr<io::SafetensorsReader> st;
  std::string name;
  template <class T>
  std::vector<T> values() const {
    return npy ? npy->values<T>() : st->read<T>(name);
  }
};

inline bool is_npy_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  char m[6] = {};
  f.read(m, 6);
  return f.gcount() == 6 && std::memcmp(m, "\x93NUMPY", 6) == 0;
}

inline bool named_npy(const std::filesystem::path& p) {
  std::string e = p.extension().string();
  for (char& c : e) c = char(std::tolower(static_cast<unsigned char>(c)));
  return e == ".npy";
}

inline LoadedTensor from_npy(const std::filesystem::path& p) {
  auto a = std::make_shared<io::NpyArray>(io::read_npy(p));
  return {"npy file '" + p.string() + "'", a->dtype, a->shape, a, nullptr, ""};
}

inline LoadedTensor from_safetensors(const std::shared_ptr<io::SafetensorsReader>& r, const std::string& name) {
  const io::TensorInfo& t = r->info(name);
  LoadedTensor out{"tensor '" + name + "' of safetensors file '" + r->path().string() + "'", t.dtype, t.shape,
                   nullptr, r, name};
  if (t.dtype == io::DType::F8_E4M3 || t.dtype == io::DType::F8_E5M2)
    throw FileError(out.where + ": dtype " + io::dtype_name(t.dtype) + " is not supported");
  return out;
}

inline bool is_float(io::DType t) {
  return t == io::DType::F16 || t == io::DType::BF16 || t == io::DType::F32 || t == io::DType::F64;
}
inline bool is_int(io::DType t) {
  return t == io::DType::U8 || t == io::DType::I8 || t == io::DType::U16 || t == io::DType::I16 ||
         t == io::DType::U32 || t == io::DType::I32 || t == io::DType::U64 || t == io::DType::I64;
}

}  // namespace detail

// Loads `file` (safetensors or .npy, told apart by content) and, for a .npy file or to override the
// safetensors labels, `labels_file` (.npy or safetensors with one rank-1 tensor). classes = 0 takes
// the largest label + 1; otherwise every label must be below it.
inline ImageDataset load_tensor_dataset(const std::filesystem::path& file, const std::filesystem::path& labels_file = {},
                                        int classes = 0) {
  namespace fs = std::filesystem;
  using detail::LoadedTensor;
  std::error_code ec;
  if (!fs::exists(file, ec)) throw FileError("data file '" + file.string() + "' does not exist");
  if (classes < 0) throw ConfigError(cat("the class count must be positive (or 0: from the labels), got ", classes));
  LoadedTensor images, labels;
  bool have_labels = false;
  // told apart by content; a file named .npy that lacks the NumPy magic (empty, truncated, another
  // format) gets the .npy reader's message, which names the file and what is wrong with it
  if (detail::is_npy_file(file) || detail::named_npy(file)) {
    images = detail::from_npy(file);
  } else {
    auto rp = std::make_shared<io::SafetensorsReader>(file);
    const io::SafetensorsReader& r = *rp;
    auto pick = [&](const std::string& name, size_t rank, const char* what) -> std::string {
      if (r.contains(name)) return name;
      std::vector<std::string> c;
      for (auto& t : r.tensors())
        if (t.shape.size() == rank) c.push_back(t.name);
      if (c.size() == 1) return c[0];
      if (c.empty()) return "";
      throw FileError(cat("safetensors file '", file.string(), "' has ", c.size(), " tensors of rank ", rank,
                          " and none named '", name, "': name the ", what, " tensor '", name, "'"));
    };
    const std::string in = pick("images", 4, "image");
    if (in.empty()) {
      std::string have;
      for (auto& t : r.tensors()) have += (have.empty() ? "" : ", ") + t.name + " " + shape_str(t.shape);
      throw FileError("safetensors file '" + file.string() + "' has no tensor 'images' and no tensor of rank 4 [N, H, W, C]" +
                      (have.empty() ? std::string(" (it holds no tensors)") : " (it holds " + have + ")"));
    }
    images = detail::from_safetensors(rp, in);
    if (labels_file.empty()) {
      const std::string ln = pick("labels", 1, "label");
      if (!ln.empty()) {
        labels = detail::from_safetensors(rp, ln);
        have_labels = true;
      }
    }
  }
  if (!labels_file.empty()) {
    if (!fs::exists(labels_file, ec)) throw FileError("labels file '" + labels_file.string() + "' does not exist");
    if (detail::is_npy_file(labels_file) || detail::named_npy(labels_file)) {
      labels = detail::from_npy(labels_file);
    } else {
      auto r = std::make_shared<io::SafetensorsReader>(labels_file);
      std::string ln = r->contains("labels") ? "labels" : "";
      if (ln.empty())
        for (auto& t : r->tensors())
          if (t.shape.size() == 1) ln = t.name;
      if (ln.empty()) throw FileError("labels file '" + labels_file.string() + "' has no rank-1 tensor of labels");
      labels = detail::from_safetensors(r, ln);
    }
    have_labels = true;
  }
  if (!have_labels)
    throw FileError("no labels for data file '" + file.string() + "': " +
                    (detail::is_npy_file(file) ? std::string("a .npy file holds one array; pass the labels [N] with --labels-file")
                                               : std::string("add a tensor 'labels' [N] or pass --labels-file")));

  // images
  if (images.shape.size() != 4)
    throw FileError(cat(images.where, ": images must have rank 4 [N, H, W, C] (channels last), got shape ",
                        shape_str(images.shape), images.shape.size() == 3 ? " (one channel: add a trailing axis, x[..., None])" : ""));
  if (images.dtype != io::DType::U8 && !detail::is_float(images.dtype))
    throw FileError(cat(images.where, ": images must be uint8 (scaled to [-1, 1]) or floating point (taken as is), got ",
                        io::dtype_name(images.dtype)));
  const int64_t N = images.shape[0], H = images.shape[1], W = images.shape[2], C = images.shape[3];
  if (N < 1 || H < 1 || W < 1 || C < 1) throw FileError(cat(images.where, ": empty shape ", shape_str(images.shape)));
  if (H > 1 << 16 || W > 1 << 16 || C > 1 << 16 || N > (int64_t(1) << 31) - 1)
    throw FileError(cat(images.where, ": shape ", shape_str(images.shape), " is out of range"));
  // labels
  if (labels.shape.size() != 1)
    throw FileError(cat(labels.where, ": labels must have rank 1 [N], got shape ", shape_str(labels.shape)));
  if (!detail::is_int(labels.dtype))
    throw FileError(cat(labels.where, ": labels must be integers, got ", io::dtype_name(labels.dtype),
                        " (e.g. labels.astype(numpy.int64))"));
  if (labels.shape[0] != N)
    throw FileError(cat("the counts differ: ", N, " images (", images.where, ") but ", labels.shape[0], " labels (",
                        labels.where, ")"));
  ImageDataset d;
  d.n = int(N);
  d.h = int(H);
  d.w = int(W);
  d.c = int(C);
  d.labels.resize(size_t(N));
  const std::vector<int64_t> lv = labels.values<int64_t>();
  int64_t hi = -1;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t v = lv[size_t(i)];
    if (v < 0) throw FileError(cat(labels.where, ": label ", v, " at index ", i, " is negative"));
    if (classes > 0 && v >= classes)
      throw FileError(cat(labels.where, ": label ", v, " at index ", i, " is out of range for ", classes,
                          " classes (labels must lie in [0, ", classes, "))"));
    if (v >= (int64_t(1) << 24))
      throw FileError(cat(labels.where, ": label ", v, " at index ", i, " is absurdly large (more than 2^24 classes)"));
    d.labels[size_t(i)] = int32_t(v);
    hi = std::max(hi, v);
  }
  d.classes = classes > 0 ? classes : int(hi) + 1;
  d.images = images.values<float>();
  const bool u8 = images.dtype == io::DType::U8;
  for (size_t i = 0; i < d.images.size(); ++i) {
    float& v = d.images[i];
    if (u8) {
      v = idx_pixel_to_float(uint8_t(v));
    } else if (!std::isfinite(v)) {
      throw FileError(cat(images.where, ": a non-finite value (", v, ") at element ", i));
    }
  }
  return d;
}

}  // namespace shortcut::data
