// PNG output for sample grids and 2-D plots: 8-bit grayscale / RGB images encoded with stb_image_write,
// PNG tEXt chunks (generation parameters, seeds) inserted after IHDR, a tile-images-into-a-grid helper
// for samples in [-1, 1], a scatter/density plotter for 2-D point clouds (panels side by side) and a
// small built-in 5x7 font for panel labels.
//
// stb_image_write is compiled privately into every translation unit that includes this header: it is
// included inside a namespace with STB_IMAGE_WRITE_STATIC, so its functions have internal linkage and
// any number of translation units link together, and a program that has its own copy of
// stb_image_write (included before or after this header, with or without the implementation) is not
// disturbed: every stb macro this header sets is restored afterwards.
#pragma once
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

// What stb_image_write.h includes, included here at global scope so that its own includes (inside
// the namespace below) are no-ops.
#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "shortcut/core/error.hpp"
#include "shortcut/io/file.hpp"

#pragma push_macro("INCLUDE_STB_IMAGE_WRITE_H")
#pragma push_macro("STB_IMAGE_WRITE_IMPLEMENTATION")
#pragma push_macro("STB_IMAGE_WRITE_STATIC")
#pragma push_macro("STBI_WRITE_NO_STDIO")
#pragma push_macro("STBIWDEF")
#pragma push_macro("STBIW_ASSERT")
#pragma push_macro("STBIW_MALLOC")
#pragma push_macro("STBIW_REALLOC")
#pragma push_macro("STBIW_REALLOC_SIZED")
#pragma push_macro("STBIW_FREE")
#pragma push_macro("STBIW_MEMMOVE")
#pragma push_macro("STBIW_UCHAR")
#pragma push_macro("STBIW_ZLIB_COMPRESS")
#pragma push_macro("STBIW_CRC32")
#undef INCLUDE_STB_IMAGE_WRITE_H
#undef STBIWDEF
#undef STBIW_ASSERT
#undef STBIW_MALLOC
#undef STBIW_REALLOC
#undef STBIW_REALLOC_SIZED
#undef STBIW_FREE
#undef STBIW_MEMMOVE
#undef STBIW_UCHAR
#undef STBIW_ZLIB_COMPRESS
#undef STBIW_CRC32
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#define STBI_WRITE_NO_STDIO
#define STBIW_ASSERT(x) assert(x)
#if defined(_MSC_VER) && !defined(__clang__)
#pragma warning(push, 0)
#else
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wunknown-warning-option"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wold-style-cast"
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wcast-align"
#pragma GCC diagnostic ignored "-Wuseless-cast"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wzero-as-null-pointer-constant"
#pragma GCC diagnostic ignored "-Wmissing-declarations"
#pragma GCC diagnostic ignored "-Wcomma"
#endif
namespace shortcut::io::detail::stbiw {
#include <stb/stb_image_write.h>
}  // namespace shortcut::io::detail::stbiw
#if defined(_MSC_VER) && !defined(__clang__)
#pragma warning(pop)
#else
#pragma GCC diagnostic pop
#endif
#pragma pop_macro("STBIW_CRC32")
#pragma pop_macro("STBIW_ZLIB_COMPRESS")
#pragma pop_macro("STBIW_UCHAR")
#pragma pop_macro("STBIW_MEMMOVE")
#pragma pop_macro("STBIW_FREE")
#pragma pop_macro("STBIW_REALLOC_SIZED")
#pragma pop_macro("STBIW_REALLOC")
#pragma pop_macro("STBIW_MALLOC")
#pragma pop_macro("STBIW_ASSERT")
#pragma pop_macro("STBIWDEF")
#pragma pop_macro("STBI_WRITE_NO_STDIO")
#pragma pop_macro("STB_IMAGE_WRITE_STATIC")
#pragma pop_macro("STB_IMAGE_WRITE_IMPLEMENTATION")
#pragma pop_macro("INCLUDE_STB_IMAGE_WRITE_H")

namespace shortcut::io {

// ---- images -------------------------------------------------------------------------------------

// 8-bit pixels, row-major [height, width, channels]; 1 channel is grayscale, 3 is RGB, 4 is RGBA.
struct Image {
  int width = 0, height = 0, channels = 3;
  std::vector<uint8_t> pixels;

  Image() = default;
  Image(int w, int h, int c, uint8_t fill = 0) : width(w), height(h), channels(c) {
    if (w <= 0 || h <= 0 || c < 1 || c > 4)
      throw ShapeError(cat("image: bad size ", w, "x", h, " with ", c, " channels (1 to 4)"));
    pixels.assign(size_t(w) * h * c, fill);
  }
  uint8_t* at(int x, int y) { return pixels.data() + (size_t(y) * width + x) * channels; }
  const uint8_t* at(int x, int y) const { return pixels.data() + (size_t(y) * width + x) * channels; }
};

using Rgb = std::array<uint8_t, 3>;

// ---- PNG chunks ---------------------------------------------------------------------------------

struct PngText {
  std::string key;
  std::string value;
};

namespace detail {

inline constexpr unsigned char kPngSignature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

// CRC-32 as PNG defines it (ISO 3309, reflected polynomial 0xEDB88320), over chunk type and data.
inline constexpr std::array<uint32_t, 256> kCrcTable = [] {
  std::array<uint32_t, 256> t{};
  for (uint32_t n = 0; n < 256; ++n) {
    uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    t[n] = c;
  }
  return t;
}();

inline uint32_t crc32(const unsigned char* p, size_t n, uint32_t crc = 0) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = kCrcTable[(crc ^ p[i]) & 0xffu] ^ (crc >> 8);
  return ~crc;
}

inline uint32_t load_be32(const unsigned char* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}
inline void store_be32(unsigned char* p, uint32_t x) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(x >> (24 - 8 * i));
}

// tEXt keywords: 1-79 Latin-1 printable characters, no leading, trailing or doubled spaces.
inline void check_text_key(const std::string& key) {
  bool ok = !key.empty() && key.size() <= 79 && key.front() != ' ' && key.back() != ' ';
  for (size_t i = 0; ok && i < key.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(key[i]);
    ok = (c >= 32 && c <= 126) || c >= 161;
    if (c == ' ' && i && key[i - 1] == ' ') ok = false;
  }
  if (!ok)
    throw Error("PNG tEXt keyword '" + key + "' is invalid (1-79 printable Latin-1 characters, no leading, "
                "trailing or consecutive spaces)");
}

[[noreturn]] inline void png_fail(const std::string& what, const std::string& problem) {
  throw FileError(what + ": " + problem);
}

inline void stb_sink(void* context, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(context);
  auto* p = static_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}

}  // namespace detail

// Inserts a tEXt chunk right after IHDR (before the image data, where readers look for it).
inline void add_png_text(std::vector<uint8_t>& png, const std::string& key, const std::string& value) {
  detail::check_text_key(key);
  if (value.find('\0') != std::string::npos) throw Error("PNG tEXt value for '" + key + "' contains a NUL byte");
  if (png.size() < 33 || std::memcmp(png.data(), detail::kPngSignature, 8) != 0 ||
      std::memcmp(png.data() + 12, "IHDR", 4) != 0 || detail::load_be32(png.data() + 8) != 13)
    throw Error("add_png_text: the buffer does not start with a PNG signature and an IHDR chunk");
  const size_t len = key.size() + 1 + value.size();
  if (len > 0x7fffffffu) throw Error("PNG tEXt value for '" + key + "' is too long");
  // length, type, keyword, NUL, text, CRC of type and data
  std::vector<uint8_t> chunk(12 + len);
  detail::store_be32(chunk.data(), uint32_t(len));
  std::memcpy(chunk.data() + 4, "tEXt", 4);
  std::memcpy(chunk.data() + 8, key.data(), key.size());
  chunk[8 + key.size()] = 0;
  if (!value.empty()) std::memcpy(chunk.data() + 9 + key.size(), value.data(), value.size());
  detail::store_be32(chunk.data() + 8 + len, detail::crc32(chunk.data() + 4, 4 + len));
  png.insert(png.begin() + 33, chunk.begin(), chunk.end());  // 8 signature + 25 IHDR
}

// The tEXt chunks of a PNG, after checking its signature, chunk structure and every chunk's CRC.
inline std::vector<PngText> read_png_text(const std::vector<uint8_t>& png, const std::string& what = "PNG data") {
  auto fail = [&](const std::string& m) { detail::png_fail(what, m); };
  if (png.size() < 8 || std::memcmp(png.data(), detail::kPngSignature, 8) != 0) fail("no PNG signature");
  std::vector<PngText> out;
  size_t pos = 8;
  bool ended = false;
  while (pos < png.size()) {
    if (png.size() - pos < 12) fail(cat("truncated chunk at offset ", pos));
    const uint32_t len = detail::load_be32(png.data() + pos);
    if (len > png.size() - pos - 12) fail(cat("chunk at offset ", pos, " runs past the end of the file"));
    const unsigned char* type = png.data() + pos + 4;
    const std::string tname(reinterpret_cast<const char*>(type), 4);
    if (detail::crc32(type, 4 + size_t(len)) != detail::load_be32(type + 4 + len))
      fail("bad CRC in chunk '" + tname + "' at offset " + std::to_string(pos));
    if (tname == "tEXt") {
      const char* d = reinterpret_cast<const char*>(type + 4);
      const char* nul = static_cast<const char*>(std::memchr(d, 0, len));
      if (!nul) fail("tEXt chunk without a keyword separator");
      out.push_back({std::string(d, nul), std::string(nul + 1, d + len)});
    }
    pos += 12 + size_t(len);
    if (tname == "IEND") {
      ended = true;
      break;
    }
  }
  if (!ended) fail("no IEND chunk (truncated)");
  return out;
}

inline std::vector<PngText> read_png_text(const std::filesystem::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw FileError("PNG file " + detail::quote(path) + ": cannot be opened");
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return read_png_text(bytes, "PNG file " + detail::quote(path));
}

// ---- encoding -----------------------------------------------------------------------------------

inline std::vector<uint8_t> encode_png(const uint8_t* pixels, int width, int height, int channels,
                                       const std::vector<PngText>& text = {}) {
  if (width <= 0 || height <= 0 || channels < 1 || channels > 4 || !pixels)
    throw ShapeError(cat("encode_png: bad image ", width, "x", height, " with ", channels, " channels (1 to 4)"));
  std::vector<uint8_t> out;
  if (!detail::stbiw::stbi_write_png_to_func(detail::stb_sink, &out, width, height, channels, pixels,
                                             width * channels))
    throw Error(cat("encode_png: stb_image_write failed on a ", width, "x", height, "x", channels, " image"));
  // in the order given: each insertion goes right after IHDR, so insert the last one first
  for (auto it = text.rbegin(); it != text.rend(); ++it) add_png_text(out, it->key, it->value);
  return out;
}
inline std::vector<uint8_t> encode_png(const Image& img, const std::vector<PngText>& text = {}) {
  if (img.pixels.size() != size_t(img.width) * img.height * img.channels)
    throw ShapeError(cat("encode_png: ", img.pixels.size(), " bytes for a ", img.width, "x", img.height, "x",
                         img.channels, " image"));
  return encode_png(img.pixels.data(), img.width, img.height, img.channels, text);
}

inline void write_png(const std::filesystem::path& path, const Image& img, const std::vector<PngText>& text = {}) {
  std::vector<uint8_t> png = encode_png(img, text);
  detail::write_file_atomically(path, [&](const detail::ByteSink& sink) { sink(png.data(), png.size()); });
}
inline void write_png(const std::filesystem::path& path, const uint8_t* pixels, int width, int height, int channels,
                      const std::vector<PngText>& text = {}) {
  std::vector<uint8_t> png = encode_png(pixels, width, height, channels, text);
  detail::write_file_atomically(path, [&](const detail::ByteSink& sink) { sink(png.data(), png.size()); });
}

// ---- a 5x7 bitmap font --------------------------------------------------------------------------

namespace detail {
struct Glyph {
  char c;
  const char* rows;  // seven rows of five '0'/'1', top to bottom, separated by spaces
};
// Upper case, digits and the punctuation that labels like "steps=8 (ema)" or "t: 0.50" need; lower
// case is drawn as upper case, anything else as '?'.
inline constexpr Glyph kFont[] = {
    {' ', "00000 00000 00000 00000 00000 00000 00000"}, {'0', "01110 10001 10011 10101 11001 10001 01110"},
    {'1', "00100 01100 00100 00100 00100 00100 01110"}, {'2', "01110 10001 00001 00010 00100 01000 11111"},
    {'3', "11110 00001 00001 01110 00001 00001 11110"}, {'4', "00010 00110 01010 10010 11111 00010 00010"},
    {'5', "11111 10000 11110 00001 00001 10001 01110"}, {'6', "00110 01000 10000 11110 10001 10001 01110"},
    {'7', "11111 00001 00010 00100 01000 01000 01000"}, {'8', "01110 10001 10001 01110 10001 10001 01110"},
    {'9', "01110 10001 10001 01111 00001 00010 01100"}, {'A', "01110 10001 10001 11111 10001 10001 10001"},
    {'B', "11110 10001 10001 11110 10001 10001 11110"}, {'C', "01110 10001 10000 10000 10000 10001 01110"},
    {'D', "11110 10001 10001 10001 10001 10001 11110"}, {'E', "11111 10000 10000 11110 10000 10000 11111"},
    {'F', "11111 10000 10000 11110 10000 10000 10000"}, {'G', "01110 10001 10000 10111 10001 10001 01111"},
    {'H', "10001 10001 10001 11111 10001 10001 10001"}, {'I', "01110 00100 00100 00100 00100 00100 01110"},
    {'J', "00111 00010 00010 00010 00010 10010 01100"}, {'K', "10001 10010 10100 11000 10100 10010 10001"},
    {'L', "10000 10000 10000 10000 10000 10000 11111"}, {'M', "10001 11011 10101 10101 10001 10001 10001"},
    {'N', "10001 10001 11001 10101 10011 10001 10001"}, {'O', "01110 10001 10001 10001 10001 10001 01110"},
    {'P', "11110 10001 10001 11110 10000 10000 10000"}, {'Q', "01110 10001 10001 10001 10101 10010 01101"},
    {'R', "11110 10001 10001 11110 10100 10010 10001"}, {'S', "01111 10000 10000 01110 00001 00001 11110"},
    {'T', "11111 00100 00100 00100 00100 00100 00100"}, {'U', "10001 10001 10001 10001 10001 10001 01110"},
    {'V', "10001 10001 10001 10001 10001 01010 00100"}, {'W', "10001 10001 10001 10101 10101 10101 01010"},
    {'X', "10001 10001 01010 00100 01010 10001 10001"}, {'Y', "10001 10001 01010 00100 00100 00100 00100"},
    {'Z', "11111 00001 00010 00100 01000 10000 11111"}, {'.', "00000 00000 00000 00000 00000 01100 01100"},
    {',', "00000 00000 00000 00000 01100 00100 01000"}, {':', "00000 01100 01100 00000 01100 01100 00000"},
    {'-', "00000 00000 00000 11111 00000 00000 00000"}, {'+', "00000 00100 00100 11111 00100 00100 00000"},
    {'=', "00000 00000 11111 00000 11111 00000 00000"}, {'/', "00001 00010 00010 00100 01000 01000 10000"},
    {'(', "00010 00100 01000 01000 01000 00100 00010"}, {')', "01000 00100 00010 00010 00010 00100 01000"},
    {'[', "01110 01000 01000 01000 01000 01000 01110"}, {']', "01110 00010 00010 00010 00010 00010 01110"},
    {'%', "11000 11001 00010 00100 01000 10011 00011"}, {'_', "00000 00000 00000 00000 00000 00000 11111"},
    {'?', "01110 10001 00001 00010 00100 00000 00100"}, {'!', "00100 00100 00100 00100 00100 00000 00100"},
    {'*', "00000 00100 10101 01110 10101 00100 00000"}, {'<', "00010 00100 01000 10000 01000 00100 00010"},
    {'>', "01000 00100 00010 00001 00010 00100 01000"}, {'#', "01010 01010 11111 01010 11111 01010 01010"},
    {'\'', "00100 00100 01000 00000 00000 00000 00000"}, {'"', "01010 01010 10100 00000 00000 00000 00000"},
    {'|', "00100 00100 00100 00100 00100 00100 00100"}, {'^', "00100 01010 10001 00000 00000 00000 00000"},
    {'~', "00000 00000 01000 10101 00010 00000 00000"}, {'&', "01100 10010 10100 01000 10101 10010 01101"},
};

inline const char* glyph_rows(char c) {
  if (c >= 'a' && c <= 'z') c = char(c - 'a' + 'A');
  for (auto& g : kFont)
    if (g.c == c) return g.rows;
  return glyph_rows('?');
}
}  // namespace detail

inline constexpr int kGlyphWidth = 5, kGlyphHeight = 7;

// Width in pixels of `text` drawn at `scale` (one blank column between characters).
inline int text_width(std::string_view text, int scale = 1) {
  return text.empty() ? 0 : int(text.size()) * (kGlyphWidth + 1) * scale - scale;
}

// Draws `text` with its top-left corner at (x, y); pixels outside the image are skipped.
inline void draw_text(Image& img, int x, int y, std::string_view text, Rgb color = {0, 0, 0}, int scale = 1) {
  for (size_t i = 0; i < text.size(); ++i) {
    const char* rows = detail::glyph_rows(text[i]);
    const int x0 = x + int(i) * (kGlyphWidth + 1) * scale;
    for (int r = 0; r < kGlyphHeight; ++r)
      for (int c = 0; c < kGlyphWidth; ++c) {
        if (rows[r * (kGlyphWidth + 1) + c] != '1') continue;
        for (int dy = 0; dy < scale; ++dy)
          for (int dx = 0; dx < scale; ++dx) {
            int px = x0 + c * scale + dx, py = y + r * scale + dy;
            if (px < 0 || py < 0 || px >= img.width || py >= img.height) continue;
            uint8_t* p = img.at(px, py);
            if (img.channels >= 3) {
              p[0] = color[0], p[1] = color[1], p[2] = color[2];
            } else {
              p[0] = uint8_t((299 * color[0] + 587 * color[1] + 114 * color[2]) / 1000);
            }
            if (img.channels == 2 || img.channels == 4) p[img.channels - 1] = 255;
          }
      }
  }
}

// ---- sample grids -------------------------------------------------------------------------------

struct GridOptions {
  int cols = 0;              // 0: ceil(sqrt(N))
  int pad = 2;               // pixels between tiles and around the grid
  uint8_t pad_value = 255;   // gutter gray level
  double lo = -1, hi = 1;    // value range mapped to 0..255 (clamped)
};

// Tiles N images [N, H, W, C] (C = 1 or 3) into a rows x cols grid image.
template <class T>
Image image_grid(const T* images, int n, int h, int w, int c, const GridOptions& opt = {}) {
  if (n <= 0 || h <= 0 || w <= 0 || (c != 1 && c != 3) || opt.pad < 0 || !(opt.hi > opt.lo))
    throw ShapeError(cat("image_grid: bad input ", n, " images of ", h, "x", w, "x", c, " (C must be 1 or 3), pad ",
                         opt.pad, ", range [", opt.lo, ", ", opt.hi, "]"));
  const int cols = opt.cols > 0 ? std::min(opt.cols, n) : int(std::ceil(std::sqrt(double(n))));
  const int rows = (n + cols - 1) / cols;
  Image img(cols * w + (cols + 1) * opt.pad, rows * h + (rows + 1) * opt.pad, c, opt.pad_value);
  const double s = 255.0 / (opt.hi - opt.lo);
  for (int i = 0; i < n; ++i) {
    const int ox = opt.pad + (i % cols) * (w + opt.pad), oy = opt.pad + (i / cols) * (h + opt.pad);
    const T* src = images + size_t(i) * h * w * c;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int k = 0; k < c; ++k) {
          double v = (double(src[(size_t(y) * w + x) * c + k]) - opt.lo) * s;
          v = v >= 0 ? std::min(255.0, std::round(v)) : 0.0;  // also maps nan to 0
          img.at(ox + x, oy + y)[k] = uint8_t(v);
        }
  }
  return img;
}

// ---- 2-D scatter / density plots ----------------------------------------------------------------

struct ScatterPanel {
  std::string label;
  std::vector<float> xy;  // x0, y0, x1, y1, ...
  Rgb color = {31, 84, 160};

  ScatterPanel() = default;
  template <class T>
  ScatterPanel(std::string label_, const T* points, size_t n_points, Rgb color_ = {31, 84, 160})
      : label(std::move(label_)), xy(points, points + 2 * n_points), color(color_) {}
};

struct ScatterOptions {
  int size = 256;       // pixels per panel side
  double xlim = 2.0;    // each panel shows [-xlim, xlim] x [-ylim, ylim]
  double ylim = 0.0;    // 0: same as xlim
  int pad = 8;          // pixels around panels
  int dot_radius = 1;   // each point splats a disc of this radius
  double gain = 0.5;    // ink per point: a pixel hit k times has opacity 1 - exp(-gain k)
  bool axes = true;     // light lines through the origin
  int label_scale = 0;  // font scale for labels; 0: 2 for panels of 200 pixels and more, else 1
  int columns = 0;      // panels per row (0: all in one row)
};

// Panels side by side (in rows of `columns`), each a density-shaded scatter of its points over the same fixed range, with
// its label above it; points outside the range are not drawn.
inline Image scatter_image(const std::vector<ScatterPanel>& panels, const ScatterOptions& opt = {}) {
  const double xl = opt.xlim, yl = opt.ylim > 0 ? opt.ylim : opt.xlim;
  if (panels.empty() || opt.size < 8 || !(xl > 0) || !(yl > 0) || opt.pad < 0 || opt.dot_radius < 0 || opt.columns < 0)
    throw ConfigError(cat("scatter_image: need at least one panel, size >= 8, positive limits (got ",
                          panels.size(), " panels, size ", opt.size, ", xlim ", xl, ", ylim ", yl, ")"));
  for (auto& p : panels)
    if (p.xy.size() % 2) throw ShapeError("scatter_image: panel '" + p.label + "' has an odd number of coordinates");
  const int S = opt.size, n = int(panels.size());
  const int scale = opt.label_scale > 0 ? opt.label_scale : (S >= 200 ? 2 : 1);
  bool labels = false;
  for (auto& p : panels) labels = labels || !p.label.empty();
  const int label_h = labels ? kGlyphHeight * scale + opt.pad : 0;
  const int cols = opt.columns > 0 ? std::min(opt.columns, n) : n, rows = (n + cols - 1) / cols;
  const int row_h = S + label_h + opt.pad;
  Image img(cols * S + (cols + 1) * opt.pad, rows * row_h + opt.pad, 3, 255);
  const int r = opt.dot_radius;
  std::vector<float> hits(size_t(S) * S);
  for (int i = 0; i < n; ++i) {
    const ScatterPanel& p = panels[i];
    const int top = (i / cols) * row_h;
    const int ox = opt.pad + (i % cols) * (S + opt.pad), oy = top + opt.pad + label_h;
    if (!p.label.empty()) {
      // keep what fits in the panel's width
      std::string_view text = p.label;
      const int fit = (S + scale) / ((kGlyphWidth + 1) * scale);
      if (int(text.size()) > fit) text = text.substr(0, size_t(std::max(fit, 0)));
      draw_text(img, ox + (S - text_width(text, scale)) / 2, top + opt.pad, text, {40, 40, 40}, scale);
    }
    auto set = [&](int x, int y, uint8_t g) {
      uint8_t* q = img.at(ox + x, oy + y);
      q[0] = q[1] = q[2] = g;
    };
    if (opt.axes) {
      const int ax = int(std::floor(xl / (2 * xl) * S)), ay = int(std::floor(yl / (2 * yl) * S));
      for (int k = 0; k < S; ++k) set(ax, k, 225), set(k, ay, 225);
    }
    std::fill(hits.begin(), hits.end(), 0.0f);
    for (size_t j = 0; j + 1 < p.xy.size(); j += 2) {
      const double x = p.xy[j], y = p.xy[j + 1];
      if (!(std::abs(x) <= xl) || !(std::abs(y) <= yl)) continue;
      const int cx = std::min(S - 1, int((x + xl) / (2 * xl) * S));
      const int cy = std::min(S - 1, int((yl - y) / (2 * yl) * S));  // y up
      for (int dy = -r; dy <= r; ++dy)
        for (int dx = -r; dx <= r; ++dx) {
          const int px = cx + dx, py = cy + dy;
          if (dx * dx + dy * dy > r * r + r || px < 0 || py < 0 || px >= S || py >= S) continue;
          hits[size_t(py) * S + px] += 1.0f;
        }
    }
    for (int y = 0; y < S; ++y)
      for (int x = 0; x < S; ++x) {
        const float h = hits[size_t(y) * S + x];
        if (h == 0) continue;
        const double a = 1.0 - std::exp(-opt.gain * h);
        uint8_t* q = img.at(ox + x, oy + y);
        for (int k = 0; k < 3; ++k) q[k] = uint8_t(std::lround(q[k] * (1 - a) + p.color[k] * a));
      }
    // frame just outside the plotting area
    for (int k = -1; k <= S; ++k) {
      for (auto [x, y] : {std::pair{k, -1}, std::pair{k, S}, std::pair{-1, k}, std::pair{S, k}}) {
        const int px = ox + x, py = oy + y;
        if (px >= 0 && py >= 0 && px < img.width && py < img.height) {
          uint8_t* q = img.at(px, py);
          q[0] = q[1] = q[2] = 150;
        }
      }
    }
  }
  return img;
}

inline void scatter_png(const std::filesystem::path& path, const std::vector<ScatterPanel>& panels,
                        const ScatterOptions& opt = {}, const std::vector<PngText>& text = {}) {
  write_png(path, scatter_image(panels, opt), text);
}

}  // namespace shortcut::io
