// PNG output: pixels decoded back with stb_image, tEXt chunks placed after IHDR with CRCs checked by
// an independent bitwise CRC, image grids, scatter plots and the bitmap font. png.hpp is also
// compiled into png_io_second_tu.cpp, which brings its own global copy of stb_image_write, and this
// file includes the global stb_image_write declarations after png.hpp: all of it must link.
#include <catch2/catch.hpp>

#include <shortcut/io/png.hpp>

// the program's own view of stb_image_write (implemented in png_io_second_tu.cpp)
#include <stb/stb_image_write.h>

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include <stb/stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "test_util.hpp"

using namespace shortcut;
using namespace shortcut::io;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

// png_io_second_tu.cpp
std::vector<uint8_t> second_tu_png_ours(int w, int h);
std::vector<uint8_t> second_tu_png_global(int w, int h);

namespace {

fs::path temp_dir() { return testutil::scratch_dir("shortcut_png_test"); }

// Bit-at-a-time CRC-32 (no table), independent of the implementation under test.
uint32_t crc_bitwise(const uint8_t* p, size_t n) {
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

struct Chunk {
  std::string type;
  std::vector<uint8_t> data;
  bool crc_ok;
};

std::vector<Chunk> chunks(const std::vector<uint8_t>& png) {
  std::vector<Chunk> out;
  size_t pos = 8;
  auto be32 = [&](size_t at) {
    return (uint32_t(png[at]) << 24) | (uint32_t(png[at + 1]) << 16) | (uint32_t(png[at + 2]) << 8) | png[at + 3];
  };
  while (pos + 12 <= png.size()) {
    uint32_t len = be32(pos);
    Chunk c;
    c.type.assign(png.begin() + long(pos) + 4, png.begin() + long(pos) + 8);
    c.data.assign(png.begin() + long(pos) + 8, png.begin() + long(pos) + 8 + len);
    c.crc_ok = crc_bitwise(png.data() + pos + 4, 4 + len) == be32(pos + 8 + len);
    out.push_back(c);
    pos += 12 + len;
  }
  return out;
}

std::vector<uint8_t> decode(const std::vector<uint8_t>& png, int& w, int& h, int& c) {
  unsigned char* d = stbi_load_from_memory(png.data(), int(png.size()), &w, &h, &c, 0);
  REQUIRE(d);
  std::vector<uint8_t> v(d, d + size_t(w) * h * c);
  stbi_image_free(d);
  return v;
}

std::vector<uint8_t> read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("png: grayscale and RGB pixels decode back exactly", "[png]") {
  std::mt19937 g(5);
  for (int channels : {1, 3, 4}) {
    Image img(37, 23, channels);
    for (auto& p : img.pixels) p = uint8_t(g());
    const fs::path path = temp_dir() / ("px" + std::to_string(channels) + ".png");
    write_png(path, img);
    int w, h, c;
    auto px = decode(read_bytes(path), w, h, c);
    CHECK(w == 37);
    CHECK(h == 23);
    CHECK(c == channels);
    CHECK(px == img.pixels);
  }
  CHECK_THROWS_AS(encode_png(nullptr, 4, 4, 1), ShapeError);
  CHECK_THROWS_AS(Image(4, 4, 5), ShapeError);
}

TEST_CASE("png: tEXt chunks follow IHDR in order with valid CRCs", "[png]") {
  CHECK(detail::crc32(reinterpret_cast<const unsigned char*>("123456789"), 9) == 0xcbf43926u);  // the CRC-32 check value
  Image img(8, 5, 3, 100);
  const std::vector<PngText> text = {{"shortcut", R"({"steps": 8, "seed": 3, "cfg": 1.5})"}, {"Software", "shortcut 0.1"}};
  const fs::path path = temp_dir() / "text.png";
  write_png(path, img, text);
  auto png = read_bytes(path);
  auto cs = chunks(png);
  REQUIRE(cs.size() >= 5);
  CHECK(cs[0].type == "IHDR");
  CHECK(cs[1].type == "tEXt");
  CHECK(cs[2].type == "tEXt");
  CHECK(cs.back().type == "IEND");
  for (auto& c : cs) {
    INFO("chunk " << c.type);
    CHECK(c.crc_ok);
  }
  const std::string t1(cs[1].data.begin(), cs[1].data.end());
  CHECK(t1 == std::string("shortcut") + '\0' + text[0].value);
  auto back = read_png_text(path);
  REQUIRE(back.size() == 2);
  CHECK(back[0].key == "shortcut");
  CHECK(back[0].value == text[0].value);
  CHECK(back[1].key == "Software");
  int w, h, c;
  CHECK(decode(png, w, h, c) == img.pixels);  // decoders skip the chunks

  // a flipped byte in the text is caught by its CRC
  png[33 + 8 + 3] ^= 0x20;
  CHECK_THROWS_WITH(read_png_text(png, "text.png"), Contains("bad CRC in chunk 'tEXt'"));
  png.resize(png.size() - 12);  // cut IEND
  png[33 + 8 + 3] ^= 0x20;
  CHECK_THROWS_WITH(read_png_text(png, "text.png"), Contains("no IEND"));
}

TEST_CASE("png: invalid tEXt keywords and values are refused", "[png]") {
  auto png = encode_png(Image(2, 2, 1));
  CHECK_THROWS_AS(add_png_text(png, "", "x"), Error);
  CHECK_THROWS_AS(add_png_text(png, std::string(80, 'k'), "x"), Error);
  CHECK_THROWS_AS(add_png_text(png, " lead", "x"), Error);
  CHECK_THROWS_AS(add_png_text(png, "trail ", "x"), Error);
  CHECK_THROWS_AS(add_png_text(png, "two  spaces", "x"), Error);
  CHECK_THROWS_AS(add_png_text(png, "tab\there", "x"), Error);
  CHECK_THROWS_AS(add_png_text(png, "key", std::string("a\0b", 3)), Error);
  std::vector<uint8_t> not_png = {1, 2, 3};
  CHECK_THROWS_AS(add_png_text(not_png, "key", "x"), Error);
  add_png_text(png, std::string(79, 'k'), "");
  CHECK(read_png_text(png).at(0).key.size() == 79);
}

TEST_CASE("png: image_grid tiles [-1, 1] images with padding", "[png]") {
  const int n = 5, H = 3, W = 4;
  std::vector<float> x(size_t(n) * H * W);
  for (size_t i = 0; i < x.size(); ++i) x[i] = float(i % 17) / 8.0f - 1.0f;
  x[0] = 2.0f;           // clamps to 255
  x[1] = -3.0f;          // clamps to 0
  x[2] = std::nanf("");  // drawn black
  GridOptions o;
  o.cols = 3;
  o.pad = 2;
  o.pad_value = 77;
  Image img = image_grid(x.data(), n, H, W, 1, o);
  CHECK(img.width == 3 * W + 4 * 2);
  CHECK(img.height == 2 * H + 3 * 2);
  CHECK(img.channels == 1);
  for (int i = 0; i < n; ++i)
    for (int y = 0; y < H; ++y)
      for (int xx = 0; xx < W; ++xx) {
        const float v = x[(size_t(i) * H + y) * W + xx];
        const int want = std::isnan(v) ? 0 : int(std::clamp(std::round((v + 1.0) * 127.5), 0.0, 255.0));
        const int ox = 2 + (i % 3) * (W + 2), oy = 2 + (i / 3) * (H + 2);
        INFO("image " << i << " pixel " << xx << "," << y);
        CHECK(int(*img.at(ox + xx, oy + y)) == want);
      }
  CHECK(int(*img.at(0, 0)) == 77);                      // outer padding
  CHECK(int(*img.at(2 + W, 2)) == 77);                  // between tiles
  CHECK(int(*img.at(2 + 2 * (W + 2) + 1, 2 + H + 2 + 1)) == 77);  // the empty sixth slot
  CHECK(int(*img.at(2, 2)) == 255);
  CHECK(int(*img.at(3, 2)) == 0);

  // RGB, default columns ceil(sqrt(5)) = 3
  std::vector<double> rgb(size_t(n) * H * W * 3, 0.0);
  rgb[0] = 1.0;  // red channel of image 0, pixel (0, 0)
  Image c3 = image_grid(rgb.data(), n, H, W, 3);
  CHECK(c3.channels == 3);
  CHECK(c3.width == 3 * W + 4 * 2);
  const uint8_t* p = c3.at(2, 2);
  CHECK((int(p[0]) == 255 && int(p[1]) == 128 && int(p[2]) == 128));
  CHECK_THROWS_AS(image_grid(rgb.data(), n, H, W, 2), ShapeError);
}

TEST_CASE("png: scatter panels place points on a fixed range and label them", "[png]") {
  // panel 0: one point at (0.5, -0.5); panel 1: a point outside the range and one at the corner
  std::vector<float> a = {0.5f, -0.5f}, b = {5.0f, 0.0f, -0.999f, 0.999f};
  ScatterOptions o;
  o.size = 100;
  o.xlim = 1.0;
  o.pad = 6;
  o.dot_radius = 0;
  o.gain = 10;  // one point is nearly full colour
  o.axes = false;
  const Rgb red = {255, 0, 0};
  Image img = scatter_image({ScatterPanel("data", a.data(), 1, red), ScatterPanel("", b.data(), 2, red)}, o);
  const int label_h = 7 * 1 + 6;  // panels under 200 pixels use the unscaled font
  CHECK(img.width == 2 * 100 + 3 * 6);
  CHECK(img.height == 100 + 2 * 6 + label_h);
  auto px = [&](int panel, int x, int y) { return img.at(6 + panel * 106 + x, 6 + label_h + y); };
  // x = 0.5 -> column (0.5 + 1) / 2 * 100 = 75; y = -0.5 -> row (1 + 0.5) / 2 * 100 = 75 (y up)
  CHECK(int(px(0, 75, 75)[0]) == 255);
  CHECK(int(px(0, 75, 75)[1]) == 0);
  CHECK(int(px(0, 74, 75)[1]) == 255);  // nothing next to it
  CHECK(int(px(0, 25, 25)[1]) == 255);
  CHECK(int(px(1, 0, 0)[1]) == 0);      // (-0.999, 0.999) is the top-left pixel
  int coloured = 0;
  for (int y = 0; y < 100; ++y)
    for (int x = 0; x < 100; ++x) coloured += px(1, x, y)[1] < 255;
  CHECK(coloured == 1);  // (5, 0) is outside [-1, 1] and not drawn
  // the label "data" is drawn in dark ink above panel 0, and panel 1 has none
  int ink0 = 0, ink1 = 0;
  for (int y = 0; y < label_h; ++y)
    for (int x = 0; x < 100; ++x) {
      ink0 += img.at(6 + x, y)[0] < 128;
      ink1 += img.at(112 + x, y)[0] < 128;
    }
  CHECK(ink0 > 20);
  CHECK(ink1 == 0);
  // the frame is drawn just outside each panel
  CHECK(int(px(0, -1, 50)[0]) == 150);
  CHECK(int(px(1, 100, 50)[0]) == 150);

  const fs::path path = temp_dir() / "scatter.png";
  scatter_png(path, {ScatterPanel("data", a.data(), 1)}, ScatterOptions{}, {{"what", "test"}});
  int w, h, c;
  decode(read_bytes(path), w, h, c);
  CHECK(w == 256 + 16);
  CHECK(read_png_text(path).at(0).value == "test");
  CHECK_THROWS_AS(scatter_image({}), ConfigError);

  // in rows of 2 columns: panel 2 starts the second row, its point where panel 0's is in the first
  o.columns = 2;
  Image grid = scatter_image({ScatterPanel("data", a.data(), 1, red), ScatterPanel("", b.data(), 2, red),
                              ScatterPanel("x", a.data(), 1, red)}, o);
  CHECK(grid.width == 2 * 100 + 3 * 6);
  CHECK(grid.height == 2 * (100 + label_h + 6) + 6);
  const int row2 = 100 + label_h + 6;
  CHECK(int(grid.at(6 + 75, row2 + 6 + label_h + 75)[1]) == 0);
  CHECK(int(grid.at(6 + 75, 6 + label_h + 75)[1]) == 0);
  CHECK(int(grid.at(112 + 75, row2 + 6 + label_h + 75)[1]) == 255);  // no fourth panel: background
}

TEST_CASE("png: the bitmap font draws its glyphs", "[png]") {
  Image img(12, 7, 1, 0);
  draw_text(img, 0, 0, "1l", {255, 255, 255});
  // '1' = 00100 01100 00100 00100 00100 00100 01110; lower case draws as upper case
  const char* one[7] = {"00100", "01100", "00100", "00100", "00100", "00100", "01110"};
  const char* ell[7] = {"10000", "10000", "10000", "10000", "10000", "10000", "11111"};
  for (int y = 0; y < 7; ++y)
    for (int x = 0; x < 5; ++x) {
      CHECK((img.at(x, y)[0] == 255) == (one[y][x] == '1'));
      CHECK((img.at(6 + x, y)[0] == 255) == (ell[y][x] == '1'));
      CHECK(img.at(5, y)[0] == 0);  // the blank column between characters
    }
  CHECK(text_width("1l", 1) == 11);
  CHECK(text_width("ab", 2) == 22);
  // scale 2, clipped at the border without crashing
  Image big(20, 10, 3, 0);
  draw_text(big, 15, 5, "WIDE TEXT?~", {0, 255, 0}, 2);
  CHECK(big.at(15, 5)[1] == 255);  // top-left of 'W'
}

TEST_CASE("png: png.hpp links from two translation units beside the program's own stb_image_write",
          "[png]") {
  auto ours = second_tu_png_ours(6, 4);
  auto global = second_tu_png_global(6, 4);
  int w, h, c;
  CHECK(decode(ours, w, h, c) == decode(global, w, h, c));
  CHECK(read_png_text(ours).at(0).key == "tu");
  // the global stb_image_write of the other TU is callable from here too
  std::vector<uint8_t> out;
  const uint8_t px[4] = {1, 2, 3, 4};
  auto sink = [](void* ctx, void* data, int size) {
    auto* v = static_cast<std::vector<uint8_t>*>(ctx);
    v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  };
  REQUIRE(stbi_write_png_to_func(sink, &out, 2, 2, 1, px, 2));
  CHECK(decode(out, w, h, c) == std::vector<uint8_t>(px, px + 4));
}
