// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length N, N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__":
// {string: string}}, then one byte buffer that the tensors cover exactly.
//
// SafetensorsWriter streams tensors (float or double in memory; F32, F64, F16 or BF16 on disk) into a
// file that is written to a temporary name and renamed, so a crash never leaves half a file under the
// real name. SafetensorsReader validates the whole header against the file size before any data is
// read and converts F32, F64, F16, BF16 and the integer dtypes to the scalar you ask for. Every defect
// raises shortcut::FileError with the file name and what is wrong with it.
#pragma once
#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "shortcut/core/error.hpp"
#include "shortcut/io/file.hpp"

namespace shortcut::io {

// ---- dtypes -------------------------------------------------------------------------------------

// The dtypes of the safetensors specification; all are accepted in headers (so that offsets can be
// validated), the floating-point and integer ones can be read, F32/F64/F16/BF16 can be written.
enum class DType { BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64, F8_E4M3, F8_E5M2 };

namespace detail {
struct DTypeEntry {
  DType type;
  const char* name;
  size_t bytes;
};
inline constexpr DTypeEntry kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},     {DType::I8, "I8", 1},
    {DType::I16, "I16", 2},   {DType::U16, "U16", 2},   {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I32, "I32", 4},   {DType::U32, "U32", 4},
    {DType::F32, "F32", 4},   {DType::F64, "F64", 8},   {DType::I64, "I64", 8},
    {DType::U64, "U64", 8},   {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
};
}  // namespace detail

inline const char* dtype_name(DType t) {
  for (auto& e : detail::kDTypes)
    if (e.type == t) return e.name;
  return "?";
}
inline size_t dtype_bytes(DType t) {
  for (auto& e : detail::kDTypes)
    if (e.type == t) return e.bytes;
  return 0;
}
inline std::optional<DType> dtype_from_name(std::string_view s) {
  for (auto& e : detail::kDTypes)
    if (s == e.name) return e.type;
  return std::nullopt;
}
inline bool dtype_is_writable(DType t) {
  return t == DType::F32 || t == DType::F64 || t == DType::F16 || t == DType::BF16;
}

// ---- scalar conversions (IEEE half and bfloat16, round to nearest even) ------------------------

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (man << 13));  // inf / nan
  if (exp == 0) {
    // zero or subnormal: man * 2^-24, exact in float
    float v = std::ldexp(float(man), -24);
    return sign ? -v : v;
  }
  return std::bit_cast<float>(sign | ((exp + 112u) << 23) | (man << 13));
}

inline uint16_t float_to_half(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return uint16_t(sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u));
  // 65520 lies halfway between the largest half (65504, odd mantissa) and 2^16: ties go to infinity
  if (x >= 0x477ff000u) return uint16_t(sign | 0x7c00u);
  if (x < 0x38800000u) {
    // below the smallest normal half: the result is man * 2^-24 with man rounded to nearest even;
    // scaling by 2^24 is exact and nearbyint rounds half to even in the default rounding mode
    float m = std::nearbyint(std::bit_cast<float>(x) * 16777216.0f);
    return uint16_t(sign | uint16_t(m));  // m == 1024 is exactly the smallest normal's encoding
  }
  uint32_t h = (((x >> 23) - 112u) << 10) | ((x & 0x7fffffu) >> 13);
  const uint32_t rest = x & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is correct
  return uint16_t(sign | h);
}

inline float bf16_to_float(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

inline uint16_t float_to_bf16(float f) {
  uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x0040u);  // keep nan a quiet nan
  x += 0x7fffu + ((x >> 16) & 1u);
  return uint16_t(x >> 16);
}

// ---- metadata and tensor descriptions ----------------------------------------------------------

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data buffer
  uint64_t numel() const {
    uint64_t n = 1;
    for (auto d : shape) n *= uint64_t(d);
    return n;
  }
};

namespace detail {

[[noreturn]] inline void file_fail(const std::filesystem::path& p, const std::string& what) {
  throw FileError("safetensors file " + quote(p) + ": " + what);
}

inline void store_le(unsigned char* p, uint64_t v, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
inline uint64_t load_le(const unsigned char* p, size_t bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes; ++i) v |= uint64_t(p[i]) << (8 * i);
  return v;
}

// Decodes n little-endian values of dtype t into dst; false for a dtype with no numeric meaning here.
template <class T>
bool decode(const unsigned char* src, DType t, T* dst, size_t n) {
  constexpr bool native_le = std::endian::native == std::endian::little;
  switch (t) {
    case DType::F32:
      if constexpr (native_le && std::is_same_v<T, float>) {
        std::memcpy(dst, src, n * 4);
      } else {
        for (size_t i = 0; i < n; ++i) dst[i] = T(std::bit_cast<float>(uint32_t(load_le(src + 4 * i, 4))));
      }
      return true;
    case DType::F64:
      if constexpr (native_le && std::is_same_v<T, double>) {
        std::memcpy(dst, src, n * 8);
      } else {
        for (size_t i = 0; i < n; ++i) dst[i] = T(std::bit_cast<double>(load_le(src + 8 * i, 8)));
      }
      return true;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) dst[i] = T(half_to_float(uint16_t(load_le(src + 2 * i, 2))));
      return true;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) dst[i] = T(bf16_to_float(uint16_t(load_le(src + 2 * i, 2))));
      return true;
    case DType::BOOL:
      for (size_t i = 0; i < n; ++i) dst[i] = T(src[i] != 0);
      return true;
    case DType::U8:
      for (size_t i = 0; i < n; ++i) dst[i] = T(src[i]);
      return true;
    case DType::I8:
      for (size_t i = 0; i < n; ++i) dst[i] = T(static_cast<int8_t>(src[i]));
      return true;
    case DType::U16:
      for (size_t i = 0; i < n; ++i) dst[i] = T(uint16_t(load_le(src + 2 * i, 2)));
      return true;
    case DType::I16:
      for (size_t i = 0; i < n; ++i) dst[i] = T(static_cast<int16_t>(uint16_t(load_le(src + 2 * i, 2))));
      return true;
    case DType::U32:
      for (size_t i = 0; i < n; ++i) dst[i] = T(uint32_t(load_le(src + 4 * i, 4)));
      return true;
    case DType::I32:
      for (size_t i = 0; i < n; ++i) dst[i] = T(static_cast<int32_t>(uint32_t(load_le(src + 4 * i, 4))));
      return true;
    case DType::U64:
      for (size_t i = 0; i < n; ++i) dst[i] = T(load_le(src + 8 * i, 8));
      return true;
    case DType::I64:
      for (size_t i = 0; i < n; ++i) dst[i] = T(static_cast<int64_t>(load_le(src + 8 * i, 8)));
      return true;
    default:
      return false;
  }
}

// Encodes n values into dtype t (one of the writable ones), little-endian.
template <class T>
void encode(const T* src, DType t, unsigned char* dst, size_t n) {
  constexpr bool native_le = std::endian::native == std::endian::little;
  switch (t) {
    case DType::F32:
      if constexpr (native_le && std::is_same_v<T, float>) {
        std::memcpy(dst, src, n * 4);
      } else {
        for (size_t i = 0; i < n; ++i) store_le(dst + 4 * i, std::bit_cast<uint32_t>(float(src[i])), 4);
      }
      break;
    case DType::F64:
      if constexpr (native_le && std::is_same_v<T, double>) {
        std::memcpy(dst, src, n * 8);
      } else {
        for (size_t i = 0; i < n; ++i) store_le(dst + 8 * i, std::bit_cast<uint64_t>(double(src[i])), 8);
      }
      break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) store_le(dst + 2 * i, float_to_half(float(src[i])), 2);
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) store_le(dst + 2 * i, float_to_bf16(float(src[i])), 2);
      break;
    default:
      throw Error(std::string("safetensors: cannot write dtype ") + dtype_name(t));
  }
}

}  // namespace detail

// ---- writer -------------------------------------------------------------------------------------

// Collects tensors (by pointer: the data must stay alive until write()) and metadata, then writes one
// safetensors file. Tensors are stored in the order they were added, the header lists them in that
// order after __metadata__, and the header is padded with spaces to a multiple of 8 bytes so that the
// data buffer is aligned, as the reference implementation does.
class SafetensorsWriter {
 public:
  template <class T>
  void add(const std::string& name, std::vector<int64_t> shape, const T* data, DType dtype = DType::F32) {
    static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "safetensors writer: float or double data");
    if (name == "__metadata__") throw Error("safetensors writer: '__metadata__' is reserved and cannot name a tensor");
    if (!names_.insert(name).second) throw Error("safetensors writer: tensor '" + name + "' added twice");
    if (!dtype_is_writable(dtype))
      throw Error(cat("safetensors writer: tensor '", name, "': cannot write dtype ", dtype_name(dtype),
                      " (writable: F32, F64, F16, BF16)"));
    uint64_t n = 1;
    for (auto d : shape) {
      if (d < 0) throw ShapeError("safetensors writer: tensor '" + name + "' has a negative dimension " + shape_str(shape));
      n *= uint64_t(d);
    }
    if (n && !data) throw Error("safetensors writer: tensor '" + name + "' has no data");
    Entry e;
    e.name = name;
    e.shape = std::move(shape);
    e.dtype = dtype;
    e.numel = n;
    if constexpr (std::is_same_v<T, float>) e.f32 = data;
    else e.f64 = data;
    entries_.push_back(std::move(e));
  }
  void add_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }
  size_t size() const { return entries_.size(); }

  // The JSON header exactly as it is written (before padding).
  std::string header() const {
    nlohmann::ordered_json h;
    if (!metadata_.empty()) {
      nlohmann::ordered_json m = nlohmann::ordered_json::object();
      for (auto& [k, v] : metadata_) m[k] = v;
      h["__metadata__"] = m;
    }
    uint64_t off = 0;
    for (auto& e : entries_) {
      uint64_t bytes = e.numel * dtype_bytes(e.dtype);
      h[e.name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {off, off + bytes}}};
      off += bytes;
    }
    if (h.empty()) return "{}";
    return h.dump();
  }

  // Streams the whole file through `sink` (header length, header, data).
  void write_to(const std::function<void(const void*, size_t)>& sink) const {
    std::string h = header();
    h.append((8 - h.size() % 8) % 8, ' ');
    unsigned char len[8];
    detail::store_le(len, h.size(), 8);
    sink(len, 8);
    sink(h.data(), h.size());
    constexpr size_t kChunk = size_t(1) << 16;  // elements converted per write: bounded extra memory
    std::vector<unsigned char> buf;
    for (auto& e : entries_) {
      const size_t eb = dtype_bytes(e.dtype);
      for (uint64_t i = 0; i < e.numel; i += kChunk) {
        size_t n = size_t(std::min<uint64_t>(kChunk, e.numel - i));
        buf.resize(n * eb);
        if (e.f32) detail::encode(e.f32 + i, e.dtype, buf.data(), n);
        else detail::encode(e.f64 + i, e.dtype, buf.data(), n);
        sink(buf.data(), buf.size());
      }
    }
  }
  std::vector<unsigned char> to_bytes() const {
    std::vector<unsigned char> out;
    write_to([&](const void* d, size_t n) {
      auto p = static_cast<const unsigned char*>(d);
      out.insert(out.end(), p, p + n);
    });
    return out;
  }
  // Writes atomically: a temporary file in the same folder, renamed over `path` once complete.
  void write(const std::filesystem::path& path) const {
    detail::write_file_atomically(path, [&](const auto& sink) { write_to(sink); });
  }

 private:
  struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    DType dtype = DType::F32;
    uint64_t numel = 0;
    const float* f32 = nullptr;
    const double* f64 = nullptr;
  };
  std::vector<Entry> entries_;
  std::set<std::string> names_;
  std::map<std::string, std::string> metadata_;
};

// ---- reader -------------------------------------------------------------------------------------

struct ReadOptions {
  // The reference implementation refuses headers over 100 MB; a larger length means a corrupt file.
  uint64_t max_header_bytes = 100'000'000;
};

// Opens a file and validates its header against the file size: every later read stays in bounds.
class SafetensorsReader {
 public:
  explicit SafetensorsReader(std::filesystem::path path, const ReadOptions& opt = {}) : path_(std::move(path)) {
    namespace fs = std::filesystem;
    std::error_code ec;
    auto st = fs::status(path_, ec);
    if (ec || !fs::exists(st)) fail("no such file");
    if (fs::is_directory(st)) fail("is a folder, not a file");
    file_size_ = fs::file_size(path_, ec);
    if (ec) fail("cannot determine its size: " + ec.message());
    in_.open(path_, std::ios::binary);
    if (!in_) fail(std::string("cannot be opened for reading: ") + std::strerror(errno));
    if (file_size_ < 8)
      fail(cat("the file is only ", file_size_, " bytes long; a safetensors file starts with an 8-byte header length"));
    unsigned char len[8];
    read_at(0, len, 8);
    const uint64_t n = detail::load_le(len, 8);
    if (n == 0) fail("the header length is 0; the header must be a JSON object");
    if (n > opt.max_header_bytes)
      fail(cat("the header length ", n, " is larger than the limit of ", opt.max_header_bytes,
               " bytes: not a safetensors file, or a corrupt one"));
    if (n > file_size_ - 8)
      fail(cat("the header length ", n, " exceeds the ", file_size_ - 8,
               " bytes that follow it: the file is truncated or not a safetensors file"));
    data_start_ = 8 + n;
    data_size_ = file_size_ - data_start_;
    std::string h(size_t(n), '\0');
    read_at(8, h.data(), h.size());
    parse_header(h);
  }

  const std::filesystem::path& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string* metadata(const std::string& key) const {
    auto it = metadata_.find(key);
    return it == metadata_.end() ? nullptr : &it->second;
  }
  // The tensors in the order of their data (ascending offsets).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) fail("has no tensor named '" + name + "'");
    return tensors_[it->second];
  }

  // Reads a tensor converted to T into dst[0 .. numel). With check_finite, a nan or inf is an error
  // (naming the tensor and the element) rather than silently poisoning a model.
  template <class T>
  void read_into(const std::string& name, T* dst, uint64_t count, bool check_finite = false) const {
    static_assert(std::is_arithmetic_v<T>, "safetensors reader: arithmetic destination type");
    const TensorInfo& t = info(name);
    if (count != t.numel())
      throw ShapeError(cat("safetensors file ", detail::quote(path_), ": tensor '", name, "' has ", t.numel(),
                           " elements, the destination holds ", count));
    if (t.dtype == DType::F8_E4M3 || t.dtype == DType::F8_E5M2)
      fail(cat("tensor '", name, "' has dtype ", dtype_name(t.dtype), ", which this reader cannot convert"));
    const size_t eb = dtype_bytes(t.dtype);
    constexpr uint64_t kChunk = uint64_t(1) << 16;
    std::vector<unsigned char> buf;
    for (uint64_t i = 0; i < count; i += kChunk) {
      const size_t n = size_t(std::min(kChunk, count - i));
      buf.resize(n * eb);
      read_at(data_start_ + t.begin + i * eb, buf.data(), buf.size());
      detail::decode(buf.data(), t.dtype, dst + i, n);
      if constexpr (std::is_floating_point_v<T>) {
        if (check_finite)
          for (size_t j = 0; j < n; ++j)
            if (!std::isfinite(dst[i + j]))
              fail(cat("tensor '", name, "' holds a non-finite value (", double(dst[i + j]), ") at element ", i + j));
      }
    }
  }
  template <class T>
  std::vector<T> read(const std::string& name, bool check_finite = false) const {
    std::vector<T> v(size_t(info(name).numel()));
    read_into(name, v.data(), v.size(), check_finite);
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { detail::file_fail(path_, what); }

  void read_at(uint64_t offset, void* dst, size_t n) const {
    in_.clear();
    in_.seekg(std::streamoff(offset));
    in_.read(static_cast<char*>(dst), std::streamsize(n));
    if (!in_ || size_t(in_.gcount()) != n)
      fail(cat("reading ", n, " bytes at offset ", offset, " failed (the file changed or shrank while open?)"));
  }

  static bool is_uint(const nlohmann::json& v) {
    return v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0);
  }

  void parse_header(const std::string& h) {
    using json = nlohmann::json;
    if (h[0] != '{') fail("the header does not start with '{': not a safetensors file, or a corrupt one");
    // nlohmann keeps the last of duplicate keys; a duplicate tensor name is a damaged header here
    std::vector<std::set<std::string>> open;
    std::string duplicate;
    json j;
    try {
      j = json::parse(h, [&](int, json::parse_event_t ev, json& parsed) {
        if (ev == json::parse_event_t::object_start) open.emplace_back();
        else if (ev == json::parse_event_t::object_end && !open.empty()) open.pop_back();
        else if (ev == json::parse_event_t::key && !open.empty() && !open.back().insert(parsed.get<std::string>()).second &&
                 duplicate.empty())
          duplicate = parsed.get<std::string>();
        return true;
      });
    } catch (const json::exception& e) {
      fail(std::string("the header is not valid JSON: ") + e.what());
    }
    if (!j.is_object()) fail("the header is not a JSON object");
    if (!duplicate.empty()) fail("the header names '" + duplicate + "' twice");
    for (auto& item : j.items()) {
      const std::string name = item.key();  // not a structured binding: lambdas below capture it
      const json& v = item.value();
      if (name == "__metadata__") {
        if (!v.is_object()) fail("__metadata__ is not a JSON object");
        for (auto& [k, s] : v.items()) {
          if (!s.is_string()) fail("__metadata__ value of '" + k + "' is not a string (got " + s.dump() + ")");
          metadata_[k] = s.get<std::string>();
        }
        continue;
      }
      auto bad = [&](const std::string& what) { fail("tensor '" + name + "': " + what); };
      if (!v.is_object()) bad("the entry is not a JSON object");
      for (auto& [k, _] : v.items())
        if (k != "dtype" && k != "shape" && k != "data_offsets") bad("unknown field '" + k + "'");
      if (!v.contains("dtype")) bad("missing 'dtype'");
      if (!v.contains("shape")) bad("missing 'shape'");
      if (!v.contains("data_offsets")) bad("missing 'data_offsets'");
      TensorInfo t;
      t.name = name;
      if (!v["dtype"].is_string()) bad("'dtype' is not a string");
      auto dt = dtype_from_name(v["dtype"].get<std::string>());
      if (!dt) bad("unknown dtype '" + v["dtype"].get<std::string>() + "'");
      t.dtype = *dt;
      const json& s = v["shape"];
      if (!s.is_array()) bad("'shape' is not a list");
      uint64_t numel = 1;
      for (auto& d : s) {
        if (!is_uint(d)) bad("'shape' " + s.dump() + " is not a list of non-negative integers");
        uint64_t u = d.get<uint64_t>();
        if (u > uint64_t(std::numeric_limits<int64_t>::max()) || (u && numel > file_size_ / u))
          bad("'shape' " + s.dump() + " describes more data than the file holds");
        numel *= u;
        t.shape.push_back(int64_t(u));
      }
      const json& o = v["data_offsets"];
      if (!o.is_array() || o.size() != 2 || !is_uint(o[0]) || !is_uint(o[1]))
        bad("'data_offsets' " + o.dump() + " is not a pair of non-negative integers [begin, end]");
      t.begin = o[0].get<uint64_t>();
      t.end = o[1].get<uint64_t>();
      if (t.end < t.begin) bad(cat("data_offsets [", t.begin, ", ", t.end, "] end before they begin"));
      if (t.end > data_size_)
        bad(cat("data_offsets [", t.begin, ", ", t.end, "] reach past the end of the data buffer (", data_size_,
                " bytes): the file is truncated or the offsets are corrupt"));
      const uint64_t want = numel * dtype_bytes(t.dtype);
      if (t.end - t.begin != want)
        bad(cat("data_offsets [", t.begin, ", ", t.end, "] span ", t.end - t.begin, " bytes, but shape ",
                shape_str(t.shape), " of ", dtype_name(t.dtype), " needs ", want));
      tensors_.push_back(std::move(t));
    }
    // The specification requires the tensors to cover the buffer exactly: no holes, no overlaps, no
    // bytes after the last tensor (anything else is a damaged or tampered-with file).
    std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    uint64_t cursor = 0;
    const TensorInfo* prev = nullptr;
    for (auto& t : tensors_) {
      if (t.begin < cursor)
        fail(cat("tensors '", prev->name, "' and '", t.name, "' overlap (bytes ", t.begin, " to ", cursor, ")"));
      if (t.begin > cursor)
        fail(cat("a gap of ", t.begin - cursor, " unused bytes precedes tensor '", t.name, "' (offset ", cursor,
                 "); the data buffer must be fully covered"));
      cursor = t.end;
      if (t.end > t.begin) prev = &t;
    }
    if (cursor < data_size_)
      fail(cat(data_size_ - cursor, " bytes of trailing data follow the last tensor (which ends at offset ",
               cursor, "): the file is corrupt or was appended to"));
    for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  }

  std::filesystem::path path_;
  mutable std::ifstream in_;
  uint64_t file_size_ = 0, data_start_ = 0, data_size_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

}  // namespace shortcut::io
