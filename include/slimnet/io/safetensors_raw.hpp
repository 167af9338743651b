// The byte level of safetensors files (https://huggingface.co/docs/safetensors): an 8-byte
// little-endian header length N, an N-byte JSON header
//   {"name": {"dtype": "F32", "shape": [d0, ...], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {str: str}}
// then the byte buffer, tensors little-endian and row-major, offsets relative to the buffer.
// This is the one parser and the one writer: the typed API (safetensors.hpp) and the compressed
// model file build on them. Reading validates everything before allocating from it; writing is
// atomic (file_util.hpp).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <new>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "slimnet/core/checked.hpp"
#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/io/file_util.hpp"

// Functions of this header that are not templates by nature are written `template <class = void>`
// (called as before: the parameter is never named) so that a translation unit that includes the
// header without calling them neither compiles them nor instantiates the JSON and fmt code they
// use (a non-template inline body is compiled in every unit: io.hpp cost 9 s of CPU to parse).

namespace slimnet::io {

/// Element types of a safetensors tensor.
enum class dtype { f32, f64, f16, bf16, i64, i32, i16, i8, u8, boolean };

/// Bytes per element.
inline std::size_t dtype_size(dtype t) {
  switch (t) {
    case dtype::f64:
    case dtype::i64: return 8;
    case dtype::f32:
    case dtype::i32: return 4;
    case dtype::f16:
    case dtype::bf16:
    case dtype::i16: return 2;
    case dtype::i8:
    case dtype::u8:
    case dtype::boolean: return 1;
  }
  slimnet::detail::raise<config_error>("slimnet::io::dtype_size", "invalid dtype value {}", static_cast<int>(t));
}

/// The name safetensors files use: "F32", "BF16", "BOOL", ...
inline std::string dtype_name(dtype t) {
  switch (t) {
    case dtype::f32: return "F32";
    case dtype::f64: return "F64";
    case dtype::f16: return "F16";
    case dtype::bf16: return "BF16";
    case dtype::i64: return "I64";
    case dtype::i32: return "I32";
    case dtype::i16: return "I16";
    case dtype::i8: return "I8";
    case dtype::u8: return "U8";
    case dtype::boolean: return "BOOL";
  }
  slimnet::detail::raise<config_error>("slimnet::io::dtype_name", "invalid dtype value {}", static_cast<int>(t));
}

/// True for F64, F32, F16, BF16.
inline bool is_floating(dtype t) { return t == dtype::f64 || t == dtype::f32 || t == dtype::f16 || t == dtype::bf16; }

/// One tensor as stored: element type, shape, and its bytes (little-endian, row-major), so
/// bytes.size() == product(shape) * dtype_size(type).
struct raw_tensor {
  dtype type = dtype::u8;
  shape_t shape;
  std::vector<std::uint8_t> bytes;
};

/// A whole safetensors file: tensors by name plus free-form string metadata.
struct raw_file {
  std::map<std::string, raw_tensor> tensors;
  std::map<std::string, std::string> metadata;
};

/// Largest JSON header accepted (the reference implementation's limit is also 100 MB).
inline constexpr std::uint64_t max_header_bytes = 100u << 20;

namespace detail {

inline bool host_is_little_endian() {
  const std::uint16_t probe = 1;
  std::uint8_t first;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

inline bool parse_dtype(const std::string& name, dtype& out) {
  static const std::pair<const char*, dtype> names[] = {
      {"F32", dtype::f32}, {"F64", dtype::f64}, {"F16", dtype::f16}, {"BF16", dtype::bf16}, {"I64", dtype::i64},
      {"I32", dtype::i32}, {"I16", dtype::i16}, {"I8", dtype::i8},   {"U8", dtype::u8},     {"BOOL", dtype::boolean}};
  for (const auto& [n, t] : names) {
    if (name == n) {
      out = t;
      return true;
    }
  }
  return false;
}

/// Element count and byte count of `shape` x `type`, overflow-checked (core/checked.hpp); false
/// if a dimension is negative or either does not fit (the count must also fit index_t, the type
/// of tensor sizes). A wrapped product never comes out of here.
inline bool checked_tensor_bytes(const shape_t& shape, dtype type, std::uint64_t& count, std::uint64_t& bytes) {
  count = 1;
  for (index_t d : shape) {
    if (d < 0 || mul_overflows(count, static_cast<std::uint64_t>(d), count)) return false;
  }
  if (count > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max())) return false;
  return !mul_overflows(count, static_cast<std::uint64_t>(dtype_size(type)), bytes);
}

/// The JSON text of a value for an error message. Only flat values are printed: dump() recurses,
/// and a crafted header nested a million levels deep must not overflow the stack.
/// Long texts are cut to 200 characters.
template <class = void>
std::string quote_json(const nlohmann::json& j) {
  std::string text;
  if (j.is_primitive() ||
      (j.is_array() && std::all_of(j.begin(), j.end(), [](const nlohmann::json& e) { return e.is_primitive(); }))) {
    text = j.dump();
  } else {
    text = j.is_array() ? "(a nested array)" : "(an object)";
  }
  if (text.size() > 200) text = text.substr(0, 200) + "...";
  return text;
}

struct entry_info {
  std::string name;
  dtype type;
  shape_t shape;
  std::uint64_t begin, end;
};

/// Parses and validates the header of an open file; every size is checked against the file before
/// anything is allocated from it. Returns the tensors' descriptions sorted by offset.
template <class = void>
std::vector<entry_info> parse_header(const regular_file& file, const char* fn, std::uint64_t& data_start,
                                            std::map<std::string, std::string>& metadata) {
  const std::string where = file.path().string();
  if (file.size() < 8) {
    slimnet::detail::raise<io_error>(fn, "'{}' has {} bytes, too short for a header", where, file.size());
  }
  std::uint8_t len_bytes[8];
  file.read_at(0, len_bytes, 8);
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > max_header_bytes) {
    slimnet::detail::raise<io_error>(fn, "'{}' declares a {}-byte header, more than the {}-byte limit", where, header_len,
                                     max_header_bytes);
  }
  if (header_len > file.size() - 8) {
    slimnet::detail::raise<io_error>(fn, "'{}' declares a {}-byte header but has {} bytes after the length", where,
                                     header_len, file.size() - 8);
  }
  std::string text(static_cast<std::size_t>(header_len), '\0');
  file.read_at(8, text.data(), text.size());
  data_start = 8 + header_len;
  const std::uint64_t buffer_len = file.size() - data_start;

  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    slimnet::detail::raise<io_error>(fn, "'{}' has an invalid JSON header: {}", where, e.what());
  }
  if (!header.is_object()) slimnet::detail::raise<io_error>(fn, "'{}': header is not a JSON object", where);

  std::vector<entry_info> entries;
  entries.reserve(header.size());
  for (const auto& item : header.items()) {
    const std::string& name = item.key();
    const nlohmann::json& entry = item.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) slimnet::detail::raise<io_error>(fn, "'{}': __metadata__ is not an object", where);
      for (const auto& meta : entry.items()) {
        if (!meta.value().is_string()) {
          slimnet::detail::raise<io_error>(fn, "'{}': metadata '{}' is not a string", where, meta.key());
        }
        metadata[meta.key()] = meta.value().get<std::string>();
      }
      continue;
    }
    if (name.empty()) slimnet::detail::raise<io_error>(fn, "'{}': a tensor has an empty name", where);
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets") ||
        !entry["dtype"].is_string() || !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2) {
      slimnet::detail::raise<io_error>(fn, "'{}': entry '{}' lacks dtype, shape or data_offsets", where, name);
    }
    entry_info info;
    info.name = name;
    const std::string type_name = entry["dtype"].get<std::string>();
    if (!parse_dtype(type_name, info.type)) {
      slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' has dtype {}, supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL",
                                       where, name, type_name);
    }
    const std::string shape_text = quote_json(entry["shape"]);
    for (const auto& d : entry["shape"]) {
      if (d.is_number_integer() && !d.is_number_unsigned()) {
        slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' has an invalid shape {}: negative dimension {}", where, name,
                                         shape_text, d.get<std::int64_t>());
      }
      if (!d.is_number_unsigned()) {
        slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' has an invalid shape {}: dimensions must be non-negative integers",
                                         where, name, shape_text);
      }
      const auto v = d.get<std::uint64_t>();
      if (v > static_cast<std::uint64_t>(std::numeric_limits<index_t>::max())) {
        slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' has shape {}: dimension {} overflows a 64-bit size", where,
                                         name, shape_text, v);
      }
      info.shape.push_back(static_cast<index_t>(v));
    }
    std::uint64_t count = 0, nbytes = 0;
    if (!checked_tensor_bytes(info.shape, info.type, count, nbytes)) {
      slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' of shape {} and dtype {} has a size that overflows 64 bits", where,
                                       name, shape_text, type_name);
    }
    const auto& off = entry["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' has invalid data_offsets {}", where, name, quote_json(off));
    }
    info.begin = off[0].get<std::uint64_t>();
    info.end = off[1].get<std::uint64_t>();
    if (info.begin > info.end || info.end > buffer_len) {
      slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' has offsets [{}, {}) outside the {}-byte buffer", where, name,
                                       info.begin, info.end, buffer_len);
    }
    if (info.end - info.begin != nbytes) {
      slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' of shape {} and dtype {} needs {} bytes, offsets give {}", where,
                                       name, shape_text, type_name, nbytes, info.end - info.begin);
    }
    entries.push_back(std::move(info));
  }
  // The tensors tile the buffer exactly: sorted by offset, each starts where the previous ended.
  std::sort(entries.begin(), entries.end(),
            [](const entry_info& a, const entry_info& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
  std::uint64_t covered = 0;
  for (const auto& e : entries) {
    if (e.begin != covered) {
      slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' {} at byte {} (bytes [0, {}) are already indexed)", where, e.name,
                                       e.begin < covered ? "overlaps another tensor" : "leaves a hole in the buffer", e.begin,
                                       covered);
    }
    covered = e.end;
  }
  if (covered != buffer_len) {
    slimnet::detail::raise<io_error>(fn, "'{}': {} trailing bytes are not indexed by any tensor", where, buffer_len - covered);
  }
  return entries;
}

template <class = void>
raw_file read_raw(const std::filesystem::path& path, const char* fn) {
  if (!host_is_little_endian()) slimnet::detail::raise<io_error>(fn, "big-endian hosts are not supported");
  try {
    const regular_file file(path, fn);
    raw_file out;
    std::uint64_t data_start = 0;
    const std::vector<entry_info> entries = parse_header(file, fn, data_start, out.metadata);
    for (const entry_info& e : entries) {
      raw_tensor t;
      t.type = e.type;
      t.shape = e.shape;
      t.bytes.resize(static_cast<std::size_t>(e.end - e.begin));  // <= the file size, checked above
      file.read_at(data_start + e.begin, t.bytes.data(), t.bytes.size());
      if (t.type == dtype::boolean) {
        for (std::size_t i = 0; i < t.bytes.size(); ++i) {
          if (t.bytes[i] > 1) {
            slimnet::detail::raise<io_error>(fn, "'{}': BOOL tensor '{}' holds byte {} at index {} (only 0 and 1 are booleans)",
                                             path.string(), e.name, t.bytes[i], i);
          }
        }
      }
      out.tensors.emplace(e.name, std::move(t));
    }
    return out;
  } catch (const std::bad_alloc&) {
    slimnet::detail::raise<io_error>(fn, "'{}': out of memory while reading", path.string());
  }
}

/// Checks `file` and lays it out: the padded JSON header and each tensor's bytes in name order.
template <class = void>
std::string build_header(const raw_file& file, const char* fn) {
  nlohmann::json header = nlohmann::json::object();
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    if (name.empty() || name == "__metadata__") slimnet::detail::raise<config_error>(fn, "invalid tensor name '{}'", name);
    std::uint64_t count = 0, nbytes = 0;
    if (!checked_tensor_bytes(t.shape, t.type, count, nbytes)) {
      slimnet::detail::raise<shape_error>(fn, "tensor '{}' has an invalid shape {}", name, shape_string(t.shape));
    }
    if (nbytes != t.bytes.size()) {
      slimnet::detail::raise<shape_error>(fn, "tensor '{}' of shape {} and dtype {} needs {} bytes, has {}", name,
                                          shape_string(t.shape), dtype_name(t.type), nbytes, t.bytes.size());
    }
    header[name] = {{"dtype", dtype_name(t.type)}, {"shape", t.shape}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string json;
  try {
    json = header.dump();
  } catch (const nlohmann::json::exception& e) {
    slimnet::detail::raise<config_error>(fn, "names and metadata must be valid UTF-8: {}", e.what());
  }
  json.append((8 - json.size() % 8) % 8, ' ');  // keeps the buffer 8-byte aligned
  return json;
}

template <class = void>
void write_raw(const std::filesystem::path& path, const raw_file& file, const char* fn) {
  if (!host_is_little_endian()) slimnet::detail::raise<io_error>(fn, "big-endian hosts are not supported");
  const std::string json = build_header(file, fn);
  std::uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(json.size()) >> (8 * i));
  std::vector<byte_span> pieces{{len, 8}, {json.data(), json.size()}};
  for (const auto& [name, t] : file.tensors) pieces.push_back({t.bytes.data(), t.bytes.size()});
  write_file_atomically(path, pieces, fn);
}

}  // namespace detail

/// Writes `file` to `path` atomically (exclusive temporary, fsync, rename, fsync of the directory).
/// Throws config_error for an empty or reserved name or non-UTF-8 text, shape_error when a
/// tensor's byte count disagrees with its shape and dtype, io_error (with the OS reason) when the
/// file cannot be written; on failure nothing is left behind and an existing file is untouched.
template <class = void>
void write_safetensors_raw(const std::filesystem::path& path, const raw_file& file) {
  detail::write_raw(path, file, "slimnet::io::write_safetensors_raw");
}

/// Reads a safetensors file, validated completely before anything is allocated from it: a regular
/// file only; header length capped and within the file; JSON object with string metadata; known
/// dtypes; non-negative dimensions whose product (times the element size) does not overflow;
/// offsets inside the buffer, matching the shape, and tiling it without overlap, hole or trailing
/// bytes; BOOL bytes 0 or 1. Every violation is an io_error naming the file and the tensor.
template <class = void>
raw_file read_safetensors_raw(const std::filesystem::path& path) {
  return detail::read_raw(path, "slimnet::io::read_safetensors_raw");
}

}  // namespace slimnet::io
