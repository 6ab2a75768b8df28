// Shared by the image example programs: dataset paths and loading with friendly errors, the DiT built
// from a preset and a dataset, labelled sample-grid PNGs, and the --device switch.
#pragma once
#include <CLI/CLI.hpp>
#include <filesystem>
#include <shortcut/cuda/precision.hpp>
#include <shortcut/io/png.hpp>
#include <shortcut/shortcut.hpp>
#include <string>
#include <vector>

namespace examples {

namespace fs = std::filesystem;
using namespace shortcut;

inline const std::vector<std::string>& dataset_names() {
  static const std::vector<std::string> n = {"fashion-mnist", "mnist"};
  return n;
}
inline std::vector<std::string> class_names(const std::string& dataset, int classes = 10) {
  if (dataset == "fashion-mnist")
    return {"t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"};
  std::vector<std::string> n;
  for (int c = 0; c < classes; ++c) n.push_back(std::to_string(c));
  return n;
}

// Loads one split ("train" or "t10k") from the IDX folder; a missing folder says how to get the data.
inline data::ImageDataset load_split(const std::string& dir, const std::string& split) {
  if (!fs::exists(fs::path(dir) / data::idx_images_name(split)))
    throw FileError("no IDX files in '" + dir + "' (expected " + data::idx_images_name(split) +
                    "); run scripts/get-data.sh to fetch MNIST and Fashion-MNIST, or pass --data with the folder "
                    "holding the four standard files");
  return data::load_idx_dataset(dir, split);
}

// Sampling step counts shown in grids and measured by the evaluation.
inline const std::vector<int>& grid_steps() {
  static const std::vector<int> s = {1, 2, 4, 8, 128};
  return s;
}

// Images [n, H, W, C] as a PNG can show them: 1 or 3 channels as they are, any other count (e.g. 4
// latent channels) as its first channel in grayscale.
inline std::vector<float> displayable(const float* images, size_t n, int H, int W, int C, int& shown) {
  shown = (C == 1 || C == 3) ? C : 1;
  if (shown == C) return std::vector<float>(images, images + n * size_t(H) * W * C);
  std::vector<float> out(n * size_t(H) * W);
  for (size_t i = 0; i < out.size(); ++i) out[i] = images[i * size_t(C)];
  return out;
}

// Several labelled image blocks side by side, each a grid of [rows * cols] images in [-1, 1].
struct Block {
  std::string title;
  std::vector<float> images;  // [rows * cols, H, W, C]
};
inline io::Image compose_blocks(const std::vector<Block>& blocks, int rows, int cols, int H, int W, int C,
                                const std::vector<std::string>& row_labels = {}) {
  const int scale = 1, gap = 10, head = 7 * scale + 8;
  int label_w = 0;  // as wide as the longest row label (model names in the evaluation's figure)
  for (const std::string& l : row_labels) label_w = std::max(label_w, io::text_width(l, scale) + 4);
  std::vector<io::Image> grids;
  for (auto& b : blocks) {
    io::GridOptions g;
    g.cols = cols;
    int shown = C;
    auto imgs = displayable(b.images.data(), size_t(rows) * cols, H, W, C, shown);
    grids.push_back(io::image_grid(imgs.data(), rows * cols, H, W, shown, g));
  }
  int width = label_w + gap, height = head + (grids.empty() ? 0 : grids[0].height);
  for (auto& g : grids) width += g.width + gap;
  io::Image out(width, height, 3, 255);
  int x = label_w + gap;
  for (size_t i = 0; i < grids.size(); ++i) {
    const io::Image& g = grids[i];
    io::draw_text(out, x + (g.width - io::text_width(blocks[i].title, scale)) / 2, 2, blocks[i].title, {40, 40, 40}, scale);
    for (int yy = 0; yy < g.height; ++yy)
      for (int xx = 0; xx < g.width; ++xx) {
        const uint8_t* s = g.at(xx, yy);
        uint8_t* d = out.at(x + xx, head + yy);
        for (int k = 0; k < 3; ++k) d[k] = g.channels == 1 ? s[0] : s[k];
      }
    x += g.width + gap;
  }
  const int cell = grids.empty() ? 0 : (grids[0].height - 2) / rows;
  for (size_t r = 0; r < row_labels.size() && int(r) < rows; ++r)
    io::draw_text(out, 2, head + 2 + int(r) * cell + cell / 2 - 3, row_labels[r], {40, 40, 40}, scale);
  return out;
}

// Labels c repeated per_class times, c = 0..classes-1 (grid rows = classes).
inline std::vector<int32_t> class_rows(int classes, int per_class) {
  std::vector<int32_t> y;
  for (int c = 0; c < classes; ++c)
    for (int j = 0; j < per_class; ++j) y.push_back(c);
  return y;
}

// --device: "cpu" always; "cuda" where this build has the CUDA backend.
inline void check_device(const std::string& device) {
#ifndef SHORTCUT_EXAMPLES_CUDA
  if (device == "cuda")
    throw ConfigError("this build has no CUDA backend (configure with -DSHORTCUT_CUDA=ON where nvcc is installed)");
#endif
  if (device != "cpu" && device != "cuda") throw ConfigError("--device must be cpu or cuda, got '" + device + "'");
}

// --precision: the arithmetic of the CUDA backend's products and attention (fp32, tf32 or bf16;
// shortcut/cuda/precision.hpp). The CPU backend computes in fp32 only.
inline const std::vector<std::string>& precision_names() {
  static const std::vector<std::string> n = [] {
    std::vector<std::string> v;
    for (cuda::Precision p : cuda::kPrecisions) v.push_back(cuda::precision_name(p));
    return v;
  }();
  return n;
}
inline void check_precision(const std::string& device, const std::string& precision) {
  if (cuda::parse_precision(precision) != cuda::Precision::fp32 && device != "cuda")
    throw ConfigError("--precision " + precision + " needs --device cuda");
}

}  // namespace examples
