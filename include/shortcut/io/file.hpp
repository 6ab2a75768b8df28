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

#if __has_include(<fcntl.h>)
#include <fcntl.h>  // AT_FDCWD for renameat2
#endif
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

// Writes a folder under a temporary name beside it (body fills it), then puts it in the place of
// `dir` in one step, so that a reader, or a process killed at any moment, finds either the old folder
// whole or the new one whole (a checkpoint's files must come from one save). On Linux the swap is one
// renameat2(RENAME_EXCHANGE); elsewhere two renames, between which the old folder is <dir>.old.
inline void write_folder_atomically(const std::filesystem::path& dir,
                                    const std::function<void(const std::filesystem::path&)>& body) {
  namespace fs = std::filesystem;
  fs::path tmp = dir, old = dir;
  tmp += ".partial";
  old += ".old";
  std::error_code ec;
  fs::remove_all(tmp, ec);  // what a killed save left
  fs::create_directories(tmp, ec);
  if (ec) throw FileError("cannot create folder " + quote(tmp) + " (to write " + quote(dir) + "): " + ec.message());
  try {
    body(tmp);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  const auto fail = [&](const std::string& what) {
    throw FileError("cannot move the new " + quote(dir) + " into place (" + what + "); it is complete in " + quote(tmp));
  };
  if (!fs::exists(dir, ec)) {
    fs::rename(tmp, dir, ec);
    if (ec) fail(ec.message());
    return;
  }
#if defined(__linux__) && defined(RENAME_EXCHANGE)
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    fs::remove_all(tmp, ec);  // now the old folder
    return;
  }
#endif
  fs::remove_all(old, ec);
  fs::rename(dir, old, ec);
  if (ec) fail(ec.message());
  fs::rename(tmp, dir, ec);
  if (ec) fail(ec.message());
  fs::remove_all(old, ec);
}

}  // namespace shortcut::io::detail
