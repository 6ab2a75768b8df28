// NumPy's .npy format (numpy.save): the magic "\x93NUMPY", a version byte pair (1.0, 2.0 or 3.0), the
// header length (2 bytes little-endian for 1.0, 4 bytes for 2.0 and 3.0), a Python dict literal
// {'descr': '<f4', 'fortran_order': False, 'shape': (N, H, W, C), } padded with spaces and a newline,
// then the array in C order. read_npy validates all of it against the file size before the data is
// used; every defect is a FileError naming the file and the problem. Data types: bool, int8..int64,
// uint8..uint64, float16, float32, float64, little- or big-endian (converted on read).
#pragma once
#include <algorithm>
#include <bit>
#include <type_traits>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "shortcut/core/error.hpp"
#include "shortcut/io/file.hpp"
#include "shortcut/io/safetensors.hpp"

namespace shortcut::io {

struct NpyArray {
  std::filesystem::path path;
  std::string descr;             // as in the file, e.g. "<f4", "|u1"
  DType dtype = DType::F32;      // the element type (safetensors' names: U8, F32, I64, ...)
  std::vector<int64_t> shape;
  std::vector<unsigned char> data;  // little-endian, C order, numel() * dtype_bytes(dtype) bytes
  uint64_t numel() const {
    uint64_t n = 1;
    for (auto d : shape) n *= uint64_t(d);
    return n;
  }
  bool is_float() const { return dtype == DType::F16 || dtype == DType::F32 || dtype == DType::F64; }
  bool is_integer() const {
    return dtype == DType::U8 || dtype == DType::I8 || dtype == DType::U16 || dtype == DType::I16 ||
           dtype == DType::U32 || dtype == DType::I32 || dtype == DType::U64 || dtype == DType::I64;
  }
  // The values converted to T (float, double or an integer type).
  template <class T>
  std::vector<T> values() const {
    std::vector<T> out(static_cast<size_t>(this->numel()));
    detail::decode(data.data(), dtype, out.data(), out.size());
    return out;
  }
};

// The NumPy dtype string of a DType ("<f4", "|u1", ...).
inline std::string npy_descr(DType t) {
  switch (t) {
    case DType::BOOL: return "|b1";
    case DType::U8: return "|u1";
    case DType::I8: return "|i1";
    case DType::U16: return "<u2";
    case DType::I16: return "<i2";
    case DType::U32: return "<u4";
    case DType::I32: return "<i4";
    case DType::U64: return "<u8";
    case DType::I64: return "<i8";
    case DType::F16: return "<f2";
    case DType::F32: return "<f4";
    case DType::F64: return "<f8";
    default: throw Error(cat("npy: no NumPy dtype for ", dtype_name(t)));
  }
}

namespace detail {

[[noreturn]] inline void npy_fail(const std::filesystem::path& p, const std::string& what) {
  throw FileError("npy file " + quote(p) + ": " + what);
}

// A parser for the restricted Python literal of the header: a dict of string keys whose values are
// strings, True/False or tuples of non-negative integers.
struct NpyHeaderParser {
  const std::string& s;
  const std::filesystem::path& path;
  size_t i = 0;
  [[noreturn]] void fail(const std::string& what) const {
    // the header without the padding numpy.save puts at its end (spaces and a newline)
    const std::string h = s.substr(0, s.find_last_not_of(" \t\r\n") + 1);
    npy_fail(path, cat("the header ", h.substr(0, 120), h.size() > 120 ? "..." : "", " is not a NumPy header: ", what,
                       " (at character ", i, ")"));
  }
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  std::string str() {
    ws();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) fail("expected a quoted string");
    const char q = s[i++];
    size_t e = s.find(q, i);
    if (e == std::string::npos) fail("unterminated string");
    std::string v = s.substr(i, e - i);
    i = e + 1;
    return v;
  }
  std::vector<int64_t> tuple() {
    if (!eat('(')) fail("expected a tuple '(' for the shape");
    std::vector<int64_t> v;
    while (true) {
      if (eat(')')) return v;
      ws();
      size_t b = i;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
      if (b == i) fail("expected a non-negative integer in the shape");
      if (i - b > 18) fail("a dimension is absurdly large");
      v.push_back(std::stoll(s.substr(b, i - b)));
      if (i < s.size() && s[i] == 'L') ++i;  // Python 2's long suffix
      if (!eat(',')) {
        if (!eat(')')) fail("expected ',' or ')' in the shape");
        return v;
      }
    }
  }
  bool boolean() {
    ws();
    if (s.compare(i, 4, "True") == 0) return i += 4, true;
    if (s.compare(i, 5, "False") == 0) return i += 5, false;
    fail("expected True or False");
  }
};

inline DType npy_dtype(const std::filesystem::path& p, const std::string& descr, bool& swap) {
  if (descr.size() < 3 || std::string("<>|=").find(descr[0]) == std::string::npos)
    npy_fail(p, "unsupported dtype '" + descr + "' (structured, string or object arrays are not arrays of numbers)");
  const std::string k = descr.substr(1);
  struct M {
    const char* k;
    DType t;
  };
  static const M map[] = {{"b1", DType::BOOL}, {"u1", DType::U8},  {"i1", DType::I8},  {"u2", DType::U16},
                          {"i2", DType::I16},  {"u4", DType::U32}, {"i4", DType::I32}, {"u8", DType::U64},
                          {"i8", DType::I64},  {"f2", DType::F16}, {"f4", DType::F32}, {"f8", DType::F64}};
  for (auto& m : map)
    if (k == m.k) {
      swap = descr[0] == '>' && dtype_bytes(m.t) > 1;
      return m.t;
    }
  npy_fail(p, "unsupported dtype '" + descr + "' (supported: bool, int8..int64, uint8..uint64, float16/32/64)");
}

}  // namespace detail

// Reads a whole .npy file (any version, C order).
inline NpyArray read_npy(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  using detail::npy_fail;
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (ec || !fs::exists(st)) npy_fail(path, "no such file");
  if (fs::is_directory(st)) npy_fail(path, "is a folder, not a file");
  std::ifstream f(path, std::ios::binary);
  if (!f) npy_fail(path, "cannot be opened for reading");
  std::vector<unsigned char> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  if (f.bad()) npy_fail(path, "reading failed");
  static const unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (b.size() < 10 || std::memcmp(b.data(), magic, 6) != 0)
    npy_fail(path, b.size() < 10 && b.size() >= 1 && b[0] == 0x93
                       ? cat("the file is only ", b.size(), " bytes long: truncated")
                       : "does not start with the magic \\x93NUMPY: not a .npy file (numpy.save writes them; .npz "
                         "archives are zip files: unpack them first)");
  const int major = b[6], minor = b[7];
  if (!(major >= 1 && major <= 3) || minor != 0) npy_fail(path, cat("unsupported format version ", major, ".", minor));
  const size_t lenbytes = major == 1 ? 2 : 4;
  if (b.size() < 8 + lenbytes) npy_fail(path, "truncated in the header length");
  const uint64_t hlen = detail::load_le(b.data() + 8, lenbytes);
  const size_t start = 8 + lenbytes;
  if (hlen > b.size() - start)
    npy_fail(path, cat("the header length ", hlen, " exceeds the ", b.size() - start, " bytes that follow: truncated"));
  const std::string h(b.begin() + long(start), b.begin() + long(start + hlen));
  NpyArray a;
  a.path = path;
  bool have_descr = false, have_order = false, have_shape = false, fortran = false;
  detail::NpyHeaderParser p{h, path};
  if (!p.eat('{')) p.fail("expected '{'");
  while (!p.eat('}')) {
    std::string key = p.str();
    if (!p.eat(':')) p.fail("expected ':'");
    if (key == "descr") {
      if (have_descr) p.fail("'descr' given twice");
      a.descr = p.str();
      have_descr = true;
    } else if (key == "fortran_order") {
      fortran = p.boolean();
      have_order = true;
    } else if (key == "shape") {
      a.shape = p.tuple();
      have_shape = true;
    } else {
      p.fail("unknown key '" + key + "'");
    }
    if (!p.eat(',')) {
      if (!p.eat('}')) p.fail("expected ',' or '}'");
      break;
    }
  }
  if (!have_descr || !have_order || !have_shape) p.fail("the header needs 'descr', 'fortran_order' and 'shape'");
  if (fortran)
    npy_fail(path, "the array is stored in Fortran order; save a C-ordered array (numpy.ascontiguousarray(x))");
  bool swap = false;
  a.dtype = detail::npy_dtype(path, a.descr, swap);
  const size_t eb = dtype_bytes(a.dtype);
  const uint64_t avail = b.size() - start - hlen;
  uint64_t numel = 1;
  for (auto d : a.shape) {
    if (d && numel > (uint64_t(1) << 60) / uint64_t(d))
      npy_fail(path, cat("shape ", shape_str(a.shape), " describes far more data than the file holds (", avail, " bytes)"));
    numel *= uint64_t(d);
  }
  const uint64_t need = numel * eb;
  if (need > avail)
    npy_fail(path, cat("shape ", shape_str(a.shape), " of ", a.descr, " needs ", need, " bytes of data, the file holds ",
                       avail, ": truncated"));
  if (need < avail)
    npy_fail(path, cat(avail - need, " bytes of trailing data follow the ", need, " bytes of shape ", shape_str(a.shape),
                       " of ", a.descr, ": the file is corrupt"));
  a.data.assign(b.begin() + long(start + hlen), b.end());
  if (swap)
    for (size_t i = 0; i < a.data.size(); i += eb) std::reverse(a.data.begin() + long(i), a.data.begin() + long(i + eb));
  return a;
}

// Writes an array of T (float, double, uint8_t, int32_t or int64_t) as a version 1.0 .npy file
// (atomically), as numpy.save does.
template <class T>
void write_npy(const std::filesystem::path& path, const std::vector<int64_t>& shape, const T* values) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double> || std::is_same_v<T, uint8_t> ||
                    std::is_same_v<T, int32_t> || std::is_same_v<T, int64_t>,
                "write_npy: float, double, uint8_t, int32_t or int64_t");
  const DType t = std::is_same_v<T, float>     ? DType::F32
                  : std::is_same_v<T, double>  ? DType::F64
                  : std::is_same_v<T, uint8_t> ? DType::U8
                  : std::is_same_v<T, int32_t> ? DType::I32
                                               : DType::I64;
  uint64_t n = 1;
  std::string sh = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) throw ShapeError("write_npy: negative dimension in " + shape_str(shape));
    n *= uint64_t(shape[i]);
    sh += (i ? ", " : "") + std::to_string(shape[i]);
  }
  sh += shape.size() == 1 ? ",)" : ")";
  std::string h = "{'descr': '" + npy_descr(t) + "', 'fortran_order': False, 'shape': " + sh + ", }";
  h.append((64 - (10 + h.size() + 1) % 64) % 64, ' ');
  h += '\n';
  detail::write_file_atomically(path, [&](const detail::ByteSink& sink) {
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
    detail::store_le(pre + 8, h.size(), 2);
    sink(pre, 10);
    sink(h.data(), h.size());
    if constexpr (std::endian::native == std::endian::little) {
      sink(values, size_t(n) * sizeof(T));
    } else {
      std::vector<unsigned char> tmp(size_t(n) * sizeof(T));
      for (uint64_t i = 0; i < n; ++i) {
        unsigned char* src = (unsigned char*)(values + i);
        std::reverse_copy(src, src + sizeof(T), tmp.data() + i * sizeof(T));
      }
      sink(tmp.data(), tmp.size());
    }
  });
}

}  // namespace shortcut::io
