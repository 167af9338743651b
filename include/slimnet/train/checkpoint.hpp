// Training checkpoints: everything a run needs to continue bit for bit, in one safetensors file
// written atomically (exclusive temporary, fsync, rename: io/file_util.hpp), so a crash while
// writing leaves the previous checkpoint intact.
//
// Contents, all by name (a model rebuilt from scratch, with new parameter identities, loads it):
//   parameters/<name>                 every parameter and buffer (BatchNorm's running statistics)
//   transforms/<name>/count, /<i>/... each weight transform's kind and state (masks, DNS counters,
//                                     draws and generator, centroids, fixed point's generator, ...)
//   optimizer/...                     learning rate, per parameter step counts and moments
//   run/...                           the caller's counters and generators (fit: next epoch, step,
//                                     the dropout / stochastic-transform and shuffling generators)
// Tensors are stored in the model's own dtype (F32 for float, F64 for double: exact), integer
// arrays as I64; counters, reals (as their IEEE-754 bits) and generator states (xoshiro words and
// the cached normal deviate) in the JSON metadata block "slimnet.checkpoint". A CRC-32 of every
// tensor's bytes and of the JSON block catches a file damaged after it was written (safetensors
// itself would load a flipped weight silently): the error names the damaged entry.
//
// The state itself and save_checkpoint / load_checkpoint are train/checkpoint_state.hpp
// (slimnet::core, so fit and DeepIoT's compress need neither zlib nor nlohmann-json); this header
// plugs the file format in. A program that writes or reads checkpoint files (fit with
// checkpoint_path or resume_from included) includes it in one of its translation units;
// otherwise they throw config_error naming this header.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <zlib.h>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/io/safetensors.hpp"
#include "slimnet/io/safetensors_raw.hpp"
#include "slimnet/nn/state.hpp"
#include "slimnet/train/checkpoint_state.hpp"

namespace slimnet::train {

namespace detail {

inline constexpr const char* checkpoint_format = "slimnet.checkpoint/1";

template <class Scalar>
io::dtype checkpoint_dtype() {
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>, "Checkpoints store float or double models.");
  return std::is_same_v<Scalar, float> ? io::dtype::f32 : io::dtype::f64;
}

inline std::string bits_text(double v) {
  std::uint64_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return fmt::format("{:016x}", bits);
}

inline std::string word_text(std::uint64_t w) { return fmt::format("{:016x}", w); }

/// 16 lowercase hex digits -> the 64-bit word; io_error on anything else.
inline std::uint64_t parse_word(const nlohmann::json& j, const std::string& key, const std::string& where) {
  const std::string s = j.get<std::string>();
  std::uint64_t w = 0;
  bool ok = s.size() == 16;
  for (char c : s) {
    if (!ok) break;
    const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    ok = d >= 0;
    w = (w << 4) | static_cast<std::uint64_t>(d < 0 ? 0 : d);
  }
  if (!ok) slimnet::detail::raise<io_error>("slimnet::train::load_checkpoint", "{}: entry '{}' holds '{}', not 16 hex digits", where, key, s);
  return w;
}

inline double parse_real(const nlohmann::json& j, const std::string& key, const std::string& where) {
  const std::uint64_t bits = parse_word(j, key, where);
  double v;
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

inline std::uint32_t crc_of(const void* data, std::size_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {
    const std::size_t chunk = n < (std::size_t{1} << 30) ? n : (std::size_t{1} << 30);
    crc = crc32(crc, p, static_cast<uInt>(chunk));
    p += chunk;
    n -= chunk;
  }
  return static_cast<std::uint32_t>(crc);
}

/// Visits every parameter once per name (a parameter shared under one name is stored once).
template <class Scalar>
io::raw_file encode_checkpoint(const nn::state_dict<Scalar>& dict, const char* fn) {
  io::raw_file raw;
  for (const auto& [key, t] : dict.tensors) raw.tensors.emplace(key, io::detail::encode_tensor(t, checkpoint_dtype<Scalar>(), key, fn));
  for (const auto& [key, v] : dict.integer_arrays) {
    io::raw_tensor t;
    t.type = io::dtype::i64;
    t.shape = {static_cast<index_t>(v.size())};
    t.bytes.resize(v.size() * sizeof(std::int64_t));
    if (!v.empty()) std::memcpy(t.bytes.data(), v.data(), t.bytes.size());  // little-endian host (write_raw checks)
    raw.tensors.emplace(key, std::move(t));
  }
  nlohmann::json j = {{"integers", nlohmann::json::object()}, {"reals", nlohmann::json::object()},
                      {"generators", nlohmann::json::object()}, {"texts", nlohmann::json::object()}};
  for (const auto& [key, v] : dict.integers) j["integers"][key] = v;
  for (const auto& [key, v] : dict.reals) j["reals"][key] = bits_text(v);
  for (const auto& [key, s] : dict.generators) {
    nlohmann::json words = nlohmann::json::array();
    for (auto w : s.words) words.push_back(word_text(w));
    j["generators"][key] = {{"words", words}, {"spare_normal", bits_text(s.spare_normal)}, {"has_spare_normal", s.has_spare_normal}};
  }
  for (const auto& [key, v] : dict.texts) j["texts"][key] = v;
  nlohmann::json crcs = nlohmann::json::object();
  for (const auto& [key, t] : raw.tensors) crcs[key] = crc_of(t.bytes.data(), t.bytes.size());
  j["crc32"] = crcs;
  const std::string state = j.dump();
  raw.metadata["format"] = checkpoint_format;
  raw.metadata["scalar"] = io::dtype_name(checkpoint_dtype<Scalar>());
  raw.metadata["slimnet.checkpoint"] = state;
  raw.metadata["slimnet.checkpoint.crc32"] = std::to_string(crc_of(state.data(), state.size()));
  return raw;
}

template <class Scalar>
nn::state_dict<Scalar> decode_checkpoint(io::raw_file& raw, const std::string& where, const char* fn) {
  const auto meta = [&](const char* key) -> const std::string& {
    const auto it = raw.metadata.find(key);
    if (it == raw.metadata.end()) slimnet::detail::raise<io_error>(fn, "{}: not a slimnet checkpoint (no metadata '{}')", where, key);
    return it->second;
  };
  if (meta("format") != checkpoint_format) {
    slimnet::detail::raise<io_error>(fn, "{}: format '{}', expected '{}'", where, meta("format"), checkpoint_format);
  }
  const std::string expected_scalar = io::dtype_name(checkpoint_dtype<Scalar>());
  if (meta("scalar") != expected_scalar) {
    slimnet::detail::raise<config_error>(fn, "{}: written by a {} model, loaded into a {} one (a checkpoint is exact, never converted)",
                                         where, meta("scalar"), expected_scalar);
  }
  const std::string& state = meta("slimnet.checkpoint");
  if (meta("slimnet.checkpoint.crc32") != std::to_string(crc_of(state.data(), state.size()))) {
    slimnet::detail::raise<io_error>(fn, "{}: the metadata block fails its CRC-32 check (damaged file)", where);
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(state);
    const auto& crcs = j.at("crc32");
    for (const auto& [key, t] : raw.tensors) {
      if (!crcs.contains(key)) slimnet::detail::raise<io_error>(fn, "{}: tensor '{}' has no CRC-32 (not written with it)", where, key);
      if (crcs.at(key).template get<std::uint32_t>() != crc_of(t.bytes.data(), t.bytes.size())) {
        slimnet::detail::raise<io_error>(fn, "{}: tensor '{}' fails its CRC-32 check (damaged file)", where, key);
      }
    }
    if (crcs.size() != raw.tensors.size()) slimnet::detail::raise<io_error>(fn, "{}: {} CRC-32 entries for {} tensors (tensors removed?)", where, crcs.size(), raw.tensors.size());
  } catch (const nlohmann::json::exception& e) {
    slimnet::detail::raise<io_error>(fn, "{}: malformed checkpoint metadata: {}", where, e.what());
  }
  nn::state_dict<Scalar> dict;
  for (auto& [key, t] : raw.tensors) {
    if (t.type == checkpoint_dtype<Scalar>()) {
      dict.tensors.emplace(key, io::detail::decode_tensor<Scalar>(t, key, fn));
    } else if (t.type == io::dtype::i64 && t.shape.size() == 1) {
      std::vector<std::int64_t> v(t.bytes.size() / sizeof(std::int64_t));
      if (!v.empty()) std::memcpy(v.data(), t.bytes.data(), v.size() * sizeof(std::int64_t));
      dict.integer_arrays.emplace(key, std::move(v));
    } else {
      slimnet::detail::raise<io_error>(fn, "{}: tensor '{}' is {} {}, expected {} or a vector of I64", where, key, io::dtype_name(t.type),
                                       shape_string(t.shape), expected_scalar);
    }
    t.bytes = {};
  }
  try {
    for (const auto& [key, v] : j.at("integers").items()) {
      if (!v.is_number_integer()) slimnet::detail::raise<io_error>(fn, "{}: integer entry '{}' holds {}", where, key, v.dump());
      dict.integers.emplace(key, v.template get<std::int64_t>());
    }
    for (const auto& [key, v] : j.at("reals").items()) dict.reals.emplace(key, parse_real(v, key, where));
    for (const auto& [key, v] : j.at("generators").items()) {
      rng::state_type s;
      const auto& words = v.at("words");
      if (!words.is_array() || words.size() != 4) slimnet::detail::raise<io_error>(fn, "{}: generator '{}' needs 4 words", where, key);
      for (std::size_t i = 0; i < 4; ++i) s.words[i] = parse_word(words[i], key, where);
      s.spare_normal = parse_real(v.at("spare_normal"), key, where);
      s.has_spare_normal = v.at("has_spare_normal").template get<bool>();
      dict.generators.emplace(key, s);
    }
    for (const auto& [key, v] : j.at("texts").items()) dict.texts.emplace(key, v.template get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    slimnet::detail::raise<io_error>(fn, "{}: malformed checkpoint metadata: {}", where, e.what());
  }
  // One key, one kind: a key held twice (a tensor and an integer, say) is a forged file.
  std::set<std::string> keys;
  for (const auto& k : dict.keys()) {
    if (!keys.insert(k).second) slimnet::detail::raise<io_error>(fn, "{}: entry '{}' appears twice", where, k);
  }
  return dict;
}


template <class Scalar>
void write_checkpoint_file(const std::filesystem::path& path, const nn::state_dict<Scalar>& dict) {
  constexpr const char* fn = "slimnet::train::save_checkpoint";
  io::detail::write_raw(path, encode_checkpoint(dict, fn), fn);
}

template <class Scalar>
nn::state_dict<Scalar> read_checkpoint_file(const std::filesystem::path& path) {
  constexpr const char* fn = "slimnet::train::load_checkpoint";
  io::raw_file raw = io::detail::read_raw(path, fn);
  return decode_checkpoint<Scalar>(raw, "'" + path.string() + "'", fn);
}

// In the compiled mode (SLIMNET_COMPILED, include/slimnet/compiled.hpp) the four functions below
// are instantiated once, in slimnet::compiled (src/compiled.cpp defines SLIMNET_COMPILED_EXTERN
// empty, which makes these lines the explicit instantiation definitions): the registration then
// only takes their addresses, instead of compiling the float and double file code and the JSON
// reader and writer in every translation unit that includes this header (about 14 s of CPU at -O1).
// Header-only, every such unit compiles them: the registration must hold whichever unit runs first.
#if defined(SLIMNET_COMPILED)
#ifndef SLIMNET_COMPILED_EXTERN
#define SLIMNET_COMPILED_EXTERN extern
#endif
SLIMNET_COMPILED_EXTERN template void write_checkpoint_file<float>(const std::filesystem::path&, const nn::state_dict<float>&);
SLIMNET_COMPILED_EXTERN template void write_checkpoint_file<double>(const std::filesystem::path&, const nn::state_dict<double>&);
SLIMNET_COMPILED_EXTERN template nn::state_dict<float> read_checkpoint_file<float>(const std::filesystem::path&);
SLIMNET_COMPILED_EXTERN template nn::state_dict<double> read_checkpoint_file<double>(const std::filesystem::path&);
#endif

/// Plugs the file format into checkpoint_state.hpp's save_checkpoint / load_checkpoint (constant
/// pointers, set once before main).
inline const bool checkpoint_files_registered = [] {
  checkpoint_files<float>::write = &write_checkpoint_file<float>;
  checkpoint_files<float>::read = &read_checkpoint_file<float>;
  checkpoint_files<double>::write = &write_checkpoint_file<double>;
  checkpoint_files<double>::read = &read_checkpoint_file<double>;
  return true;
}();

}  // namespace detail

}  // namespace slimnet::train
