// Exceptions thrown by the library. Every error names what was wrong (shapes, file, field) so that a
// user can fix the call without reading our source; the library never calls exit().
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>
#include <cstdint>

namespace shortcut {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A tensor or argument of the wrong shape at a public boundary.
struct ShapeError : Error {
  using Error::Error;
};
// A configuration value that cannot work (bad step count, fraction out of range, unknown preset).
struct ConfigError : Error {
  using Error::Error;
};
// A file that is missing, truncated, corrupt or does not match what was expected.
struct FileError : Error {
  using Error::Error;
};

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << '[';
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << ']';
  return o.str();
}

template <class... A>
std::string cat(const A&... a) {
  std::ostringstream o;
  (o << ... << a);
  return o.str();
}

// Checks a caller-supplied shape against the expected one; the message names both.
inline void check_shape(const char* what, const std::vector<int64_t>& got, const std::vector<int64_t>& want) {
  if (got != want)
    throw ShapeError(cat(what, ": expected shape ", shape_str(want), ", got ", shape_str(got)));
}

inline void require(bool ok, const std::string& msg) {
  if (!ok) throw ConfigError(msg);
}

}  // namespace shortcut
