// safetensors files (https://huggingface.co/docs/safetensors): 8-byte little-endian header length
// N, an N-byte JSON header {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// "__metadata__": {str: str}}, then the byte buffer; tensors are little-endian, row-major.
// This header covers F32 and F64; files are written to a temporary name and renamed, so an
// existing file is never left half-overwritten.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/nn/layer.hpp"

namespace slimnet::io {

static_assert(sizeof(float) == 4 && sizeof(double) == 8, "slimnet::io assumes IEEE-754 float and double.");

/// Tensors by name plus free-form string metadata, as stored in a safetensors file.
template <class Scalar>
struct tensor_file {
  std::map<std::string, tensor<Scalar>> tensors;
  std::map<std::string, std::string> metadata;
};

enum class dtype { f32, f64 };

namespace detail {

inline bool host_is_little_endian() {
  const std::uint16_t probe = 1;
  std::uint8_t first;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

template <class To, class From>
void append_as(std::vector<char>& out, const tensor<From>& t) {
  const std::size_t start = out.size();
  out.resize(start + static_cast<std::size_t>(t.size()) * sizeof(To));
  for (index_t i = 0; i < t.size(); ++i) {
    const To v = static_cast<To>(t[i]);
    std::memcpy(out.data() + start + static_cast<std::size_t>(i) * sizeof(To), &v, sizeof(To));
  }
}

}  // namespace detail

/// Writes `file` to `path` (tensors stored as `type`, F32 by default).
template <class Scalar>
void write_safetensors(const std::filesystem::path& path, const tensor_file<Scalar>& file, dtype type = dtype::f32) {
  constexpr const char* fn = "slimnet::io::write_safetensors";
  if (!detail::host_is_little_endian()) slimnet::detail::raise<io_error>(fn, "big-endian hosts are not supported");
  nlohmann::json header = nlohmann::json::object();
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;
  std::vector<char> buffer;
  for (const auto& [name, t] : file.tensors) {
    if (name.empty() || name == "__metadata__") slimnet::detail::raise<config_error>(fn, "invalid tensor name '{}'", name);
    const std::size_t begin = buffer.size();
    if (type == dtype::f32) {
      detail::append_as<float>(buffer, t);
    } else {
      detail::append_as<double>(buffer, t);
    }
    header[name] = {{"dtype", type == dtype::f32 ? "F32" : "F64"},
                    {"shape", t.shape()},
                    {"data_offsets", {begin, buffer.size()}}};
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // keeps the buffer 8-byte aligned
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) slimnet::detail::raise<io_error>(fn, "cannot create '{}'", tmp.string());
    std::uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<std::uint8_t>(static_cast<std::uint64_t>(json.size()) >> (8 * i));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(json.data(), static_cast<std::streamsize>(json.size()));
    out.write(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    out.close();
    if (!out) {
      std::filesystem::remove(tmp);
      slimnet::detail::raise<io_error>(fn, "failed writing '{}'", tmp.string());
    }
  }
  std::filesystem::rename(tmp, path);
}

/// Reads a safetensors file with F32 or F64 tensors, converting them to Scalar. Throws io_error
/// on anything malformed: short file, oversized or invalid JSON header, unknown dtype, shapes that
/// disagree with offsets, offsets outside the buffer, overlapping tensors or unindexed bytes.
template <class Scalar>
tensor_file<Scalar> read_safetensors(const std::filesystem::path& path) {
  constexpr const char* fn = "slimnet::io::read_safetensors";
  std::ifstream in(path, std::ios::binary);
  if (!in) slimnet::detail::raise<io_error>(fn, "cannot open '{}'", path.string());
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (raw.size() < 8) slimnet::detail::raise<io_error>(fn, "'{}' has {} bytes, too short for a header", path.string(), raw.size());
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | static_cast<std::uint8_t>(raw[static_cast<std::size_t>(i)]);
  if (header_len > raw.size() - 8 || header_len > (100u << 20)) {
    slimnet::detail::raise<io_error>(fn, "'{}' declares a {}-byte header but has {} bytes after the length", path.string(),
                                     header_len, raw.size() - 8);
  }
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(raw.begin() + 8, raw.begin() + 8 + static_cast<std::ptrdiff_t>(header_len));
  } catch (const nlohmann::json::exception& e) {
    slimnet::detail::raise<io_error>(fn, "'{}' has an invalid JSON header: {}", path.string(), e.what());
  }
  if (!header.is_object()) slimnet::detail::raise<io_error>(fn, "'{}': header is not a JSON object", path.string());
  const char* buffer = raw.data() + 8 + header_len;
  const std::size_t buffer_len = raw.size() - 8 - header_len;

  tensor_file<Scalar> file;
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  for (const auto& item : header.items()) {
    const std::string name = item.key();
    const nlohmann::json& entry = item.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) slimnet::detail::raise<io_error>(fn, "'{}': __metadata__ is not an object", path.string());
      for (const auto& meta : entry.items()) {
        if (!meta.value().is_string()) {
          slimnet::detail::raise<io_error>(fn, "'{}': metadata '{}' is not a string", path.string(), meta.key());
        }
        file.metadata[meta.key()] = meta.value().get<std::string>();
      }
      continue;
    }
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets") ||
        !entry["dtype"].is_string() || !entry["shape"].is_array() || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2) {
      slimnet::detail::raise<io_error>(fn, "'{}': entry '{}' lacks dtype, shape or data_offsets", path.string(), name);
    }
    const std::string type = entry["dtype"].get<std::string>();
    std::size_t elem = 0;
    if (type == "F32") elem = 4;
    if (type == "F64") elem = 8;
    if (elem == 0) slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' has dtype {}, supported: F32, F64", path.string(), name, type);
    shape_t shape;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' has an invalid shape", path.string(), name);
      shape.push_back(d.get<index_t>());
    }
    const auto& off = entry["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' has invalid data_offsets", path.string(), name);
    }
    const auto begin = off[0].get<std::size_t>(), end = off[1].get<std::size_t>();
    if (begin > end || end > buffer_len) {
      slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' has offsets [{}, {}) outside the {}-byte buffer", path.string(),
                                       name, begin, end, buffer_len);
    }
    if (static_cast<std::size_t>(shape_size(shape)) * elem != end - begin) {
      slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' of shape {} and dtype {} needs {} bytes, offsets give {}",
                                       path.string(), name, shape_string(shape), type, shape_size(shape) * static_cast<index_t>(elem), end - begin);
    }
    ranges.emplace_back(begin, end);
    tensor<Scalar> t(shape);
    for (index_t i = 0; i < t.size(); ++i) {
      const char* p = buffer + begin + static_cast<std::size_t>(i) * elem;
      if (elem == 4) {
        float v;
        std::memcpy(&v, p, 4);
        t[i] = static_cast<Scalar>(v);
      } else {
        double v;
        std::memcpy(&v, p, 8);
        t[i] = static_cast<Scalar>(v);
      }
    }
    file.tensors.emplace(name, std::move(t));
  }
  std::sort(ranges.begin(), ranges.end());
  std::size_t covered = 0;
  for (const auto& [b, e] : ranges) {
    if (b != covered) {
      slimnet::detail::raise<io_error>(fn, "'{}': tensor data {} at byte {} (overlap or hole in the buffer)", path.string(),
                                       b < covered ? "overlaps" : "leaves a hole", b);
    }
    covered = e;
  }
  if (covered != buffer_len) {
    slimnet::detail::raise<io_error>(fn, "'{}': {} trailing bytes are not indexed by any tensor", path.string(), buffer_len - covered);
  }
  return file;
}

/// Saves every parameter and buffer of `model` under its dotted name.
template <class Scalar>
void save_parameters(nn::layer<Scalar>& model, const std::filesystem::path& path,
                     const std::map<std::string, std::string>& metadata = {}, dtype type = dtype::f32) {
  tensor_file<Scalar> file;
  file.metadata = metadata;
  model.visit_parameters([&](nn::parameter<Scalar>& p) {
    if (!file.tensors.emplace(p.name(), p.value()).second) {
      slimnet::detail::raise<config_error>("slimnet::io::save_parameters", "two parameters are named '{}'", p.name());
    }
  });
  write_safetensors(path, file, type);
}

/// Loads parameters saved by save_parameters (or by PyTorch's safetensors with the same names).
/// Every parameter of the model must be in the file with the same shape; with `strict`, the file
/// may hold nothing else. The model is left unchanged if anything does not match.
template <class Scalar>
std::map<std::string, std::string> load_parameters(nn::layer<Scalar>& model, const std::filesystem::path& path,
                                                   bool strict = true) {
  constexpr const char* fn = "slimnet::io::load_parameters";
  tensor_file<Scalar> file = read_safetensors<Scalar>(path);
  std::size_t used = 0;
  model.visit_parameters([&](nn::parameter<Scalar>& p) {
    auto it = file.tensors.find(p.name());
    if (it == file.tensors.end()) slimnet::detail::raise<io_error>(fn, "'{}' has no tensor '{}'", path.string(), p.name());
    if (it->second.shape() != p.shape()) {
      slimnet::detail::raise<shape_error>(fn, "'{}': tensor '{}' has shape {}, the model expects {}", path.string(), p.name(),
                                          shape_string(it->second.shape()), shape_string(p.shape()));
    }
    ++used;
  });
  if (strict && used != file.tensors.size()) {
    slimnet::detail::raise<io_error>(fn, "'{}' holds {} tensors, the model has {} parameters (strict load)", path.string(),
                                     file.tensors.size(), used);
  }
  model.visit_parameters([&](nn::parameter<Scalar>& p) { p.value() = file.tensors.at(p.name()); });
  return file.metadata;
}

}  // namespace slimnet::io
