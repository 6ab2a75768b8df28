// Helpers for the data and metrics tests: a temporary folder removed on scope exit, raw file writing,
// and a check that a call throws a given exception type whose message contains a given text.
#pragma once
#include <catch2/catch.hpp>

#include <initializer_list>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "shortcut/core/error.hpp"

namespace datatest {

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    static std::atomic<int> counter{0};
    // Unique per process, call and time, so parallel ctest runs of the same binary never collide.
    auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    path = std::filesystem::temp_directory_path() /
           ("shortcut_" + tag + "_" + std::to_string(stamp) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::filesystem::path operator/(const std::string& name) const { return path / name; }
};

inline void write_bytes(const std::filesystem::path& p, const std::vector<uint8_t>& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
}

inline std::vector<uint8_t> read_bytes(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

inline void write_text(const std::filesystem::path& p, const std::string& s) {
  std::filesystem::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::trunc);
  f << s;
}

// Requires fn() to throw E with `text` in its message; reports the message otherwise.
template <class E>
void require_throws(const std::function<void()>& fn, const std::string& text) {
  bool thrown = false;
  try {
    fn();
  } catch (const E& e) {
    thrown = true;
    INFO("message: " << e.what());
    CHECK(std::string(e.what()).find(text) != std::string::npos);
  } catch (const std::exception& e) {
    FAIL("threw a different exception: " << e.what());
  }
  if (!thrown) FAIL("did not throw; expected an error containing '" << text << "'");
}

// Requires f() to throw shortcut::FileError whose message contains every one of `parts`.
template <class F>
void expect_file_error(F&& f, std::initializer_list<std::string> parts) {
  try {
    f();
    FAIL("no FileError");
  } catch (const shortcut::FileError& e) {
    for (auto& s : parts) CHECK_THAT(e.what(), Catch::Matchers::Contains(s));
  }
}

}  // namespace datatest
