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
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
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
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/state.hpp"
#include "slimnet/train/optimizer.hpp"

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
template <class Scalar, class F>
void each_named_parameter(nn::layer<Scalar>& model, const char* fn, const F& f) {
  std::map<std::string, std::uint64_t> seen;
  model.visit_parameters([&](nn::parameter<Scalar>& p) {
    if (p.name().empty()) slimnet::detail::raise<config_error>(fn, "a parameter has no name (name the model's layers)");
    const auto [it, fresh] = seen.emplace(p.name(), p.id());
    if (fresh) {
      f(p);
    } else if (it->second != p.id()) {
      slimnet::detail::raise<config_error>(fn, "two parameters are named '{}'", p.name());
    }
  });
}

template <class Scalar>
void write_model_state(nn::layer<Scalar>& model, nn::state_writer<Scalar>& out, const char* fn) {
  each_named_parameter(model, fn, [&](nn::parameter<Scalar>& p) {
    out.put_tensor("parameters/" + p.name(), p.value());
    auto ts = out.scope("transforms").scope(p.name());
    ts.put_integer("count", static_cast<std::int64_t>(p.transforms().size()));
    for (std::size_t i = 0; i < p.transforms().size(); ++i) {
      auto one = ts.scope(std::to_string(i));
      one.put_text("kind", p.transforms()[i]->name());
      p.transforms()[i]->save_state(one);
    }
  });
}

/// Restores parameters and transform states of `model` from `in`. Parameters first: a transform
/// may check its state against the weight it sits on.
template <class Scalar>
void read_model_state(nn::layer<Scalar>& model, const nn::state_reader<Scalar>& in, const char* fn) {
  each_named_parameter(model, fn, [&](nn::parameter<Scalar>& p) { in.read_tensor("parameters/" + p.name(), p.value()); });
  each_named_parameter(model, fn, [&](nn::parameter<Scalar>& p) {
    const auto ts = in.scope("transforms").scope(p.name());
    const auto count = ts.get_integer("count", 0);
    if (count != static_cast<std::int64_t>(p.transforms().size())) {
      slimnet::detail::raise<config_error>(fn, "{}: parameter '{}' carries {} weight transform(s) there but {} in the model", in.source(),
                                           p.name(), count, p.transforms().size());
    }
    for (std::size_t i = 0; i < p.transforms().size(); ++i) {
      const auto one = ts.scope(std::to_string(i));
      one.expect_text("kind", p.transforms()[i]->name());
      p.transforms()[i]->load_state(one);
    }
  });
}

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

}  // namespace detail

/// Writes a checkpoint of `model` (parameters, buffers, weight-transform states), `opt` (if not
/// null) and the caller's `run` state (fit's counters and generators; keys are put under "run/")
/// to `path`, atomically: an existing file is replaced only by a complete new one. Throws
/// config_error for a transform that cannot be checkpointed or two parameters with one name,
/// io_error (with the OS reason) when the file cannot be written.
template <class Scalar>
void save_checkpoint(const std::filesystem::path& path, nn::layer<Scalar>& model, const optimizer<Scalar>* opt,
                     const std::function<void(nn::state_writer<Scalar>&)>& run = {}) {
  constexpr const char* fn = "slimnet::train::save_checkpoint";
  nn::state_dict<Scalar> dict;
  nn::state_writer<Scalar> root(dict);
  detail::write_model_state(model, root, fn);
  if (opt != nullptr) {
    auto o = root.scope("optimizer");
    opt->save_state(model, o);
  }
  if (run) {
    auto r = root.scope("run");
    run(r);
  }
  io::detail::write_raw(path, detail::encode_checkpoint(dict, fn), fn);
}

/// Restores a checkpoint written by save_checkpoint into `model` (built the same way: same
/// layers, parameter names, shapes and weight transforms), `opt` (if not null; same kind) and,
/// through `run` (given a reader scoped to "run/"), the caller's state; with a null `opt` or no
/// `run` those parts of the file are ignored (loading a model to evaluate it). All or nothing: the
/// model is restored into a copy first and `run` reads before anything changes, so on any error
/// model and optimizer are as they were. Errors name the entry: io_error for a malformed file,
/// a missing entry or one that nothing in the model claims, config_error for an entry that does
/// not fit the model (shape, transform kind or count, optimizer kind, DNS options, scalar type).
template <class Scalar>
void load_checkpoint(const std::filesystem::path& path, nn::layer<Scalar>& model, optimizer<Scalar>* opt,
                     const std::function<void(const nn::state_reader<Scalar>&)>& run = {}) {
  constexpr const char* fn = "slimnet::train::load_checkpoint";
  const std::string where = "'" + path.string() + "'";
  io::raw_file raw = io::detail::read_raw(path, fn);
  const nn::state_dict<Scalar> dict = detail::decode_checkpoint<Scalar>(raw, where, fn);
  const nn::state_reader<Scalar> root(dict, where);
  {
    const auto trial = model.clone();  // restored first, so a failure leaves `model` untouched
    detail::read_model_state(*trial, root, fn);
  }
  if (run) run(root.scope("run"));
  std::vector<std::string> unread;
  for (const auto& k : root.unread_keys()) {
    // The run's entries are the caller's; the optimizer's are checked below when one is loaded.
    if (k.rfind("optimizer/", 0) != 0 && k.rfind("run/", 0) != 0) unread.push_back(k);
  }
  if (opt != nullptr) {
    // An optimizer entry of a parameter the model lacks stays unread: check before loading.
    std::set<std::string> names;
    detail::each_named_parameter(model, fn, [&](nn::parameter<Scalar>& p) { names.insert(p.name()); });
    for (const auto& k : root.unread_keys()) {
      if (k.rfind("optimizer/", 0) != 0 || k == "optimizer/kind" || k == "optimizer/lr") continue;
      const std::string rest = k.substr(10);
      bool known = false;
      for (const auto& n : names) known = known || (rest.size() > n.size() && rest.compare(0, n.size(), n) == 0 && rest[n.size()] == '/');
      if (!known) unread.push_back(k);
    }
  }
  if (!unread.empty()) {
    if (unread.size() > 8) unread.resize(8), unread.push_back("...");
    slimnet::detail::raise<io_error>(fn, "{}: entries that nothing in the model claims (another model?): {}", where,
                                     fmt::format("{}", fmt::join(unread, ", ")));
  }
  if (opt != nullptr) opt->load_state(model, root.scope("optimizer"));  // all or nothing itself
  detail::read_model_state(model, root, fn);  // cannot fail now: the copy took the same reads
}

}  // namespace slimnet::train
