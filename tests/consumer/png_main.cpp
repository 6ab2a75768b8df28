// Builds against the installed package's shortcut::png and writes a small PNG grid.
#include <shortcut/io/png.hpp>
#include <shortcut/shortcut.hpp>

#include <cstdio>
#include <filesystem>
#include <vector>

int main() {
  std::vector<float> images(4 * 8 * 8, 0.25f);
  shortcut::io::Image img = shortcut::io::image_grid(images.data(), 4, 8, 8, 1);
  const auto path = std::filesystem::temp_directory_path() / "shortcut_consumer_png.png";
  shortcut::io::write_png(path, img, {{"what", "consumer"}});
  const auto text = shortcut::io::read_png_text(path);
  const bool ok = text.size() == 1 && text[0].key == "what" && text[0].value == "consumer";
  std::filesystem::remove(path);
  std::printf("consumer_png %s\n", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
