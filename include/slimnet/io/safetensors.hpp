// Typed safetensors files: tensors of any stored dtype (F64, F32, F16, BF16, I64, I32, I16, I8,
// U8, BOOL) converted to and from tensor<Scalar>, and model parameters saved and loaded by their
// dotted names. The bytes are read and written by safetensors_raw.hpp (one parser, one writer).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/io/half.hpp"
#include "slimnet/io/safetensors_raw.hpp"
#include "slimnet/nn/layer.hpp"

// Functions of this header that are not templates by nature are written `template <class = void>`
// (called as before: the parameter is never named) so that a translation unit that includes the
// header without calling them neither compiles them nor instantiates the JSON and fmt code they
// use (a non-template inline body is compiled in every unit: io.hpp cost 9 s of CPU to parse).

namespace slimnet::io {

static_assert(sizeof(float) == 4 && sizeof(double) == 8, "slimnet::io assumes IEEE-754 float and double.");

/// Tensors by name plus free-form string metadata, as stored in a safetensors file.
template <class Scalar>
struct tensor_file {
  std::map<std::string, tensor<Scalar>> tensors;
  std::map<std::string, std::string> metadata;
};

namespace detail {

template <class T>
T load_le(const std::uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // the host is little-endian (checked by the raw reader/writer)
  return v;
}

template <class T>
void store_le(std::uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

template <class Int, class Scalar>
void encode_integers(const tensor<Scalar>& t, raw_tensor& out, const std::string& name, const char* fn) {
  for (index_t i = 0; i < t.size(); ++i) {
    const double v = static_cast<double>(t[i]);
    // Exact integers in range only: an integer dtype must not silently round or wrap a value.
    // The upper bound is exclusive at 2^(bits-1) (or 2^bits), exactly representable as a double.
    const double hi = std::ldexp(1.0, std::numeric_limits<Int>::digits);
    const double lo = std::numeric_limits<Int>::is_signed ? -hi : 0.0;
    if (!(v >= lo && v < hi) || v != std::floor(v)) {
      slimnet::detail::raise<config_error>(fn, "tensor '{}' cannot be stored as {}: value {} at index {} is not an integer in range",
                                           name, dtype_name(out.type), v, i);
    }
    store_le<Int>(out.bytes.data() + static_cast<std::size_t>(i) * sizeof(Int), static_cast<Int>(v));
  }
}

/// tensor<Scalar> -> bytes of `type`. Floats round to nearest even (F16/BF16/F32 from double);
/// integer and BOOL dtypes take only exact integers in range (config_error otherwise).
template <class Scalar>
raw_tensor encode_tensor(const tensor<Scalar>& t, dtype type, const std::string& name, const char* fn) {
  raw_tensor out;
  out.type = type;
  out.shape = t.shape();
  out.bytes.resize(static_cast<std::size_t>(t.size()) * dtype_size(type));
  std::uint8_t* p = out.bytes.data();
  switch (type) {
    case dtype::f64:
      for (index_t i = 0; i < t.size(); ++i) store_le<double>(p + 8 * i, static_cast<double>(t[i]));
      break;
    case dtype::f32:
      for (index_t i = 0; i < t.size(); ++i) store_le<float>(p + 4 * i, static_cast<float>(t[i]));
      break;
    case dtype::f16:
      for (index_t i = 0; i < t.size(); ++i) store_le<std::uint16_t>(p + 2 * i, double_to_f16(static_cast<double>(t[i])));
      break;
    case dtype::bf16:
      for (index_t i = 0; i < t.size(); ++i) store_le<std::uint16_t>(p + 2 * i, double_to_bf16(static_cast<double>(t[i])));
      break;
    case dtype::i64: encode_integers<std::int64_t>(t, out, name, fn); break;
    case dtype::i32: encode_integers<std::int32_t>(t, out, name, fn); break;
    case dtype::i16: encode_integers<std::int16_t>(t, out, name, fn); break;
    case dtype::i8: encode_integers<std::int8_t>(t, out, name, fn); break;
    case dtype::u8: encode_integers<std::uint8_t>(t, out, name, fn); break;
    case dtype::boolean:
      for (index_t i = 0; i < t.size(); ++i) {
        if (t[i] != Scalar(0) && t[i] != Scalar(1)) {
          slimnet::detail::raise<config_error>(fn, "tensor '{}' cannot be stored as BOOL: value {} at index {} is not 0 or 1", name,
                                               static_cast<double>(t[i]), i);
        }
        p[i] = t[i] == Scalar(1) ? 1 : 0;
      }
      break;
  }
  return out;
}

/// Bytes of any dtype -> tensor<Scalar>. Exact for every value Scalar can hold (F16/BF16 widen
/// exactly; integers beyond 2^24 (float) or 2^53 (double) round to nearest); BOOL gives 0 and 1.
template <class Scalar>
tensor<Scalar> decode_tensor(const raw_tensor& raw, const std::string& name, const char* fn) {
  std::uint64_t count = 0, nbytes = 0;
  if (!checked_tensor_bytes(raw.shape, raw.type, count, nbytes) || nbytes != raw.bytes.size()) {
    slimnet::detail::raise<shape_error>(fn, "tensor '{}' of shape {} and dtype {} has {} bytes", name, shape_string(raw.shape),
                                        dtype_name(raw.type), raw.bytes.size());
  }
  tensor<Scalar> t(raw.shape);
  const std::uint8_t* p = raw.bytes.data();
  auto fill = [&](auto element) {
    for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<Scalar>(element(i));
  };
  switch (raw.type) {
    case dtype::f64: fill([&](index_t i) { return load_le<double>(p + 8 * i); }); break;
    case dtype::f32: fill([&](index_t i) { return load_le<float>(p + 4 * i); }); break;
    case dtype::f16: fill([&](index_t i) { return f16_to_float(load_le<std::uint16_t>(p + 2 * i)); }); break;
    case dtype::bf16: fill([&](index_t i) { return bf16_to_float(load_le<std::uint16_t>(p + 2 * i)); }); break;
    case dtype::i64: fill([&](index_t i) { return load_le<std::int64_t>(p + 8 * i); }); break;
    case dtype::i32: fill([&](index_t i) { return load_le<std::int32_t>(p + 4 * i); }); break;
    case dtype::i16: fill([&](index_t i) { return load_le<std::int16_t>(p + 2 * i); }); break;
    case dtype::i8: fill([&](index_t i) { return load_le<std::int8_t>(p + i); }); break;
    case dtype::u8: fill([&](index_t i) { return p[i]; }); break;
    case dtype::boolean: fill([&](index_t i) { return p[i] != 0 ? 1 : 0; }); break;
  }
  return t;
}

}  // namespace detail

/// Writes `file` to `path` atomically, every tensor stored as `type` (F32 by default; F16 and BF16
/// round to nearest even; integer dtypes accept exact integers in range only).
template <class Scalar>
void write_safetensors(const std::filesystem::path& path, const tensor_file<Scalar>& file, dtype type = dtype::f32) {
  constexpr const char* fn = "slimnet::io::write_safetensors";
  raw_file raw;
  raw.metadata = file.metadata;
  for (const auto& [name, t] : file.tensors) {
    if (name.empty() || name == "__metadata__") slimnet::detail::raise<config_error>(fn, "invalid tensor name '{}'", name);
    raw.tensors.emplace(name, detail::encode_tensor(t, type, name, fn));
  }
  detail::write_raw(path, raw, fn);
}

/// Reads a safetensors file of any supported dtype, converting every tensor to Scalar. Throws
/// io_error on anything malformed (see read_safetensors_raw for the complete list of checks).
template <class Scalar>
tensor_file<Scalar> read_safetensors(const std::filesystem::path& path) {
  constexpr const char* fn = "slimnet::io::read_safetensors";
  raw_file raw = detail::read_raw(path, fn);
  try {
    tensor_file<Scalar> file;
    file.metadata = std::move(raw.metadata);
    for (auto& [name, t] : raw.tensors) {
      file.tensors.emplace(name, detail::decode_tensor<Scalar>(t, name, fn));
      t.bytes = {};  // release as we go: peak memory is one file plus one tensor, not two files
    }
    return file;
  } catch (const std::bad_alloc&) {
    slimnet::detail::raise<io_error>(fn, "'{}': out of memory while converting its tensors", path.string());
  }
}

/// Reads only the `__metadata__` of a safetensors file (the header is validated in full, the
/// tensor bytes are not read).
template <class = void>
std::map<std::string, std::string> read_safetensors_metadata(const std::filesystem::path& path) {
  constexpr const char* fn = "slimnet::io::read_safetensors_metadata";
  if (!detail::host_is_little_endian()) slimnet::detail::raise<io_error>(fn, "big-endian hosts are not supported");
  try {
    const regular_file file(path, fn);
    std::uint64_t data_start = 0;
    std::map<std::string, std::string> metadata;
    detail::parse_header(file, fn, data_start, metadata);
    return metadata;
  } catch (const std::bad_alloc&) {
    slimnet::detail::raise<io_error>(fn, "'{}': out of memory while reading", path.string());
  }
}

/// Saves every parameter and buffer of `model` under its dotted name, stored as `type`: F32 (the
/// default), F64, or F16 / BF16 (rounded to nearest even, half the bytes; values beyond the format's
/// range become +-Inf, which load_parameters then refuses unless allow_non_finite).
template <class Scalar>
void save_parameters(const nn::layer<Scalar>& model, const std::filesystem::path& path,
                     const std::map<std::string, std::string>& metadata = {}, dtype type = dtype::f32) {
  constexpr const char* fn = "slimnet::io::save_parameters";
  if (!is_floating(type)) {
    slimnet::detail::raise<config_error>(fn, "parameters are stored as F64, F32, F16 or BF16, not {}", dtype_name(type));
  }
  raw_file file;
  file.metadata = metadata;
  model.visit_parameters([&](const nn::parameter<Scalar>& p) {
    if (p.name().empty() || p.name() == "__metadata__")
      slimnet::detail::raise<config_error>(fn, "invalid parameter name '{}'", p.name());
    if (file.tensors.count(p.name()) != 0) slimnet::detail::raise<config_error>(fn, "two parameters are named '{}'", p.name());
    file.tensors.emplace(p.name(), detail::encode_tensor(p.value(), type, p.name(), fn));
  });
  detail::write_raw(path, file, fn);
}

/// How load_parameters matches a file to a model.
struct load_options {
  /// The file holds exactly the model's tensors: anything else is reported as unexpected. When
  /// false, extra tensors (PyTorch's I64 `num_batches_tracked`, an optimizer's state...) are ignored.
  bool strict = true;
  /// Stripped from the file's keys that start with it ("module." of a DataParallel checkpoint);
  /// keys without it are matched as they are.
  std::string key_prefix;
  /// Accept NaN and Inf in loaded values. Off by default: a model cannot do anything useful with a
  /// non-finite weight, and a file holding one is corrupted or was saved after training diverged.
  bool allow_non_finite = false;

  void validate() const {}
};

namespace detail {

inline std::string list_names(const std::vector<std::string>& names) {
  return fmt::format("{}", fmt::join(names, ", "));
}

}  // namespace detail

/// Loads parameters saved by save_parameters or by PyTorch (safetensors.torch.save_file of a
/// state_dict with the same names), of any stored dtype. Like PyTorch's load_state_dict, every
/// problem is reported at once: every parameter the file lacks (missing), with `strict` every file
/// tensor the model has no parameter for (unexpected), every shape mismatch, and (unless
/// allow_non_finite) every tensor holding NaN/Inf with its first such index. Throws io_error
/// naming them all (shape_error when shape mismatches are the only problem); the model is left
/// unchanged on any error. Returns the file's metadata.
template <class Scalar>
std::map<std::string, std::string> load_parameters(nn::layer<Scalar>& model, const std::filesystem::path& path,
                                                   const load_options& opt) {
  constexpr const char* fn = "slimnet::io::load_parameters";
  opt.validate();
  raw_file file = detail::read_raw(path, fn);

  // File keys as the model names them.
  std::map<std::string, std::string> key_of;  // model-side name -> file key
  for (const auto& item : file.tensors) {
    const std::string& key = item.first;
    const bool prefixed = !opt.key_prefix.empty() && key.size() > opt.key_prefix.size() &&
                          key.compare(0, opt.key_prefix.size(), opt.key_prefix) == 0;
    const std::string name = prefixed ? key.substr(opt.key_prefix.size()) : key;
    const auto [it, fresh] = key_of.emplace(name, key);
    if (!fresh) {
      slimnet::detail::raise<io_error>(fn, "'{}': tensors '{}' and '{}' both become '{}' once the key prefix '{}' is stripped",
                                       path.string(), it->second, key, name, opt.key_prefix);
    }
  }

  std::vector<std::string> missing, mismatched, non_finite;
  std::map<std::string, tensor<Scalar>> values;              // parameter name -> its new value
  std::map<std::string, nn::parameter<Scalar>*> first_of;    // parameter name -> first parameter so named
  std::vector<nn::parameter<Scalar>*> order;                 // every parameter visited, in order
  try {
    model.visit_parameters([&](nn::parameter<Scalar>& p) {
      order.push_back(&p);
      if (!first_of.emplace(p.name(), &p).second) return;  // a name visited twice is loaded once
      const auto k = key_of.find(p.name());
      if (k == key_of.end()) {
        missing.push_back(p.name());
        return;
      }
      const raw_tensor& raw = file.tensors.at(k->second);
      if (raw.shape != p.shape()) {
        mismatched.push_back(fmt::format("'{}' is {} {} in the file, {} in the model", k->second, dtype_name(raw.type),
                                         shape_string(raw.shape), shape_string(p.shape())));
        return;
      }
      tensor<Scalar> v = detail::decode_tensor<Scalar>(raw, k->second, fn);
      if (!opt.allow_non_finite) {
        for (index_t i = 0; i < v.size(); ++i) {
          if (!std::isfinite(v[i])) {
            non_finite.push_back(fmt::format("'{}' holds {} at index {}{}", k->second, static_cast<double>(v[i]), i,
                                             std::isfinite(detail::decode_tensor<double>(raw, k->second, fn)[i])
                                                 ? " (after conversion: the value overflows the model's scalar type)"
                                                 : ""));
            break;
          }
        }
      }
      values.emplace(p.name(), std::move(v));
    });
  } catch (const std::bad_alloc&) {
    slimnet::detail::raise<io_error>(fn, "'{}': out of memory while converting its tensors", path.string());
  }
  std::vector<std::string> unexpected;
  if (opt.strict) {
    for (const auto& [name, key] : key_of) {
      if (first_of.count(name) == 0) unexpected.push_back(fmt::format("{} ({})", key, dtype_name(file.tensors.at(key).type)));
    }
  }
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty() || !non_finite.empty()) {
    std::vector<std::string> problems;
    if (!missing.empty()) problems.push_back(fmt::format("missing {} tensor(s): {}", missing.size(), detail::list_names(missing)));
    if (!unexpected.empty()) {
      problems.push_back(fmt::format("unexpected {} tensor(s) (strict load): {}", unexpected.size(), detail::list_names(unexpected)));
    }
    if (!mismatched.empty()) {
      problems.push_back(fmt::format("{} shape mismatch(es): {}", mismatched.size(), detail::list_names(mismatched)));
    }
    if (!non_finite.empty()) {
      problems.push_back(fmt::format("{} tensor(s) with non-finite values (load_options::allow_non_finite accepts them): {}",
                                     non_finite.size(), detail::list_names(non_finite)));
    }
    const std::string message = fmt::format("'{}' does not fit the model: {}", path.string(), fmt::join(problems, "; "));
    if (missing.empty() && unexpected.empty() && non_finite.empty()) slimnet::detail::raise<shape_error>(fn, "{}", message);
    slimnet::detail::raise<io_error>(fn, "{}", message);
  }
  // Every check passed and every value is converted: moves cannot throw, so the model changes all
  // at once. A parameter visited twice under one name (shared) gets a copy of the first's value.
  for (nn::parameter<Scalar>* p : order) {
    nn::parameter<Scalar>* first = first_of.at(p->name());
    if (first != p) {
      p->value() = first->value();
    } else if (const auto v = values.find(p->name()); v != values.end()) {  // absent: already moved in
      p->value() = std::move(v->second);
      values.erase(v);
    }
  }
  return file.metadata;
}

/// load_parameters with only `strict` set (the other options at their defaults).
template <class Scalar>
std::map<std::string, std::string> load_parameters(nn::layer<Scalar>& model, const std::filesystem::path& path,
                                                   bool strict = true) {
  load_options opt;
  opt.strict = strict;
  return load_parameters(model, path, opt);
}

}  // namespace slimnet::io
