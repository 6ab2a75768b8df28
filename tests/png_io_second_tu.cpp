// The second translation unit of png_io. It plays a program that owns a global copy of
// stb_image_write (implementation included here, before png.hpp): png.hpp's private copy must not
// clash with it, nor with png.hpp included in png_io_test.cpp.
#define STB_IMAGE_WRITE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#include <stb/stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#undef STB_IMAGE_WRITE_IMPLEMENTATION

#include <shortcut/io/png.hpp>

#include <cstdint>
#include <vector>

namespace {
std::vector<uint8_t> gradient(int w, int h) {
  std::vector<uint8_t> px(size_t(w) * h * 3);
  for (size_t i = 0; i < px.size(); ++i) px[i] = uint8_t(i * 7);
  return px;
}
}  // namespace

std::vector<uint8_t> second_tu_png_ours(int w, int h) {
  return shortcut::io::encode_png(gradient(w, h).data(), w, h, 3, {{"tu", "second"}});
}

std::vector<uint8_t> second_tu_png_global(int w, int h) {
  std::vector<uint8_t> out;
  auto px = gradient(w, h);
  auto sink = [](void* ctx, void* data, int size) {
    auto* v = static_cast<std::vector<uint8_t>*>(ctx);
    v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
  };
  if (!stbi_write_png_to_func(sink, &out, w, h, 3, px.data(), w * 3)) out.clear();
  return out;
}
