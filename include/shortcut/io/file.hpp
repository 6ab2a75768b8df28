// Small file helpers shared by the io headers: atomic writes (temporary file, flush, rename) so that
// a crash or a full disk never leaves a truncated file under the real name.
#pragma once
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>

#if __has_include(<unistd.h>)
#include <unistd.h>
#define SHORTCUT_IO_HAVE_FSYNC 1
#endif

#include "shortcut/core/error.hpp"

namespace shortcut::io::detail {

inline std::string quote(const std::filesystem::path& p) { return "'" + p.string() + "'"; }

// Receives the bytes of a file in order.
using ByteSink = std::function<void(const void*, size_t)>;

// Writes a file under a temporary name in the same folder, flushes it to disk and renames it over the
// target, so that readers see either the old file or the complete new one.
inline void write_file_atomically(const std::filesystem::path& path,
                                  const std::function<void(const ByteSink&)>& body) {
  namespace fs = std::filesystem;
  std::random_device rd;
  char suffix[32];
  std::snprintf(suffix, sizeof suffix, ".tmp-%08x", unsigned(rd()));
  fs::path tmp = path;
  tmp += suffix;
  std::FILE* f = std::fopen(tmp.string().c_str(), "wb");
  if (!f) throw FileError("cannot create " + quote(tmp) + " (to write " + quote(path) + "): " + std::strerror(errno));
  auto discard = [&] {
    if (f) std::fclose(f);
    f = nullptr;
    std::error_code ec;
    fs::remove(tmp, ec);
  };
  try {
    body([&](const void* data, size_t n) {
      if (n && std::fwrite(data, 1, n, f) != n)
        throw FileError("writing " + quote(path) + " failed (disk full?): " + std::strerror(errno));
    });
    bool ok = std::fflush(f) == 0;
#ifdef SHORTCUT_IO_HAVE_FSYNC
    ok = ok && ::fsync(::fileno(f)) == 0;
#endif
    if (!ok) throw FileError("writing " + quote(path) + " failed (disk full?): " + std::strerror(errno));
    int closed = std::fclose(f);
    f = nullptr;
    if (closed != 0) throw FileError("closing " + quote(path) + " failed: " + std::strerror(errno));
  } catch (...) {
    discard();
    throw;
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    discard();
    throw FileError("cannot move " + quote(tmp) + " to " + quote(path) + ": " + ec.message());
  }
}

}  // namespace shortcut::io::detail
