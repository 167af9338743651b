// Training state by name (masks, centroids, optimizer moments, generators, counters), as
// checkpoints store it (train/checkpoint.hpp). Weight transforms and optimizers write theirs
// through a state_writer scoped to them and read it back through a state_reader, which names the
// missing or mis-shaped entry: state is matched by key (parameter name, transform position), never
// by visiting order or address.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"

namespace slimnet::nn {

/// Named state in memory. Tensors keep Scalar's bits, reals their double bits, generators their
/// whole state: a round trip through a checkpoint changes nothing.
template <class Scalar>
struct state_dict {
  std::map<std::string, tensor<Scalar>> tensors;
  std::map<std::string, std::vector<std::int64_t>> integer_arrays;
  std::map<std::string, std::int64_t> integers;
  std::map<std::string, double> reals;
  std::map<std::string, rng::state_type> generators;
  std::map<std::string, std::string> texts;

  bool contains(const std::string& key) const {
    return tensors.count(key) + integer_arrays.count(key) + integers.count(key) + reals.count(key) +
               generators.count(key) + texts.count(key) !=
           0;
  }
  std::vector<std::string> keys() const {
    std::vector<std::string> k;
    const auto add = [&](const auto& m) {
      for (const auto& e : m) k.push_back(e.first);
    };
    add(tensors), add(integer_arrays), add(integers), add(reals), add(generators), add(texts);
    return k;
  }
};

/// Writes entries under "<prefix><key>". A key written twice is a config_error (two owners would
/// overwrite each other's state).
template <class Scalar>
class state_writer {
 public:
  explicit state_writer(state_dict<Scalar>& dict, std::string prefix = {}) : dict_(&dict), prefix_(std::move(prefix)) {}

  /// A writer whose keys start with "<prefix><name>/".
  state_writer scope(const std::string& name) const { return state_writer(*dict_, prefix_ + name + "/"); }
  const std::string& prefix() const { return prefix_; }

  void put_tensor(const std::string& key, const tensor<Scalar>& t) { put(dict_->tensors, key, t); }
  void put_integers(const std::string& key, std::vector<std::int64_t> v) { put(dict_->integer_arrays, key, std::move(v)); }
  void put_integer(const std::string& key, std::int64_t v) { put(dict_->integers, key, v); }
  void put_real(const std::string& key, double v) { put(dict_->reals, key, v); }
  void put_generator(const std::string& key, const rng& gen) { put(dict_->generators, key, gen.state()); }
  void put_text(const std::string& key, std::string v) { put(dict_->texts, key, std::move(v)); }
  /// An optional tensor (a quantizer's support): "<key>_present" (0/1) and, if present, "<key>".
  void put_optional_tensor(const std::string& key, const std::optional<tensor<Scalar>>& t) {
    put_integer(key + "_present", t ? 1 : 0);
    if (t) put_tensor(key, *t);
  }

 private:
  template <class Map, class V>
  void put(Map& map, const std::string& key, V&& value) {
    const std::string full = prefix_ + key;
    if (dict_->contains(full)) slimnet::detail::raise<config_error>("slimnet::nn::state_writer", "state entry '{}' is written twice", full);
    map.emplace(full, std::forward<V>(value));
  }

  state_dict<Scalar>* dict_;
  std::string prefix_;
};

/// Reads entries under "<prefix><key>" of a dict that came from `source` (a file name, for
/// messages). A missing entry or one of the wrong kind is an io_error, one whose shape or value
/// does not fit the model being restored a config_error; both name the full key. Every key read
/// is recorded (unread_keys), so a loader can refuse state that nothing in the model claimed.
template <class Scalar>
class state_reader {
 public:
  explicit state_reader(const state_dict<Scalar>& dict, std::string source = "state")
      : dict_(&dict), source_(std::move(source)), read_(std::make_shared<std::set<std::string>>()) {}

  state_reader scope(const std::string& name) const {
    state_reader r(*this);
    r.prefix_ = prefix_ + name + "/";
    return r;
  }
  const std::string& prefix() const { return prefix_; }
  const std::string& source() const { return source_; }
  bool contains(const std::string& key) const { return dict_->contains(prefix_ + key); }

  /// Copies the tensor `key` into `into`, which must already have its shape.
  void read_tensor(const std::string& key, tensor<Scalar>& into) const {
    const tensor<Scalar>& t = find(dict_->tensors, key, "tensor");
    if (t.shape() != into.shape()) {
      slimnet::detail::raise<config_error>(fn_, "{}: '{}{}' has shape {} there but {} in the model", source_, prefix_, key,
                                           shape_string(t.shape()), shape_string(into.shape()));
    }
    into = t;
  }
  /// Restores an optional tensor written by put_optional_tensor into `into`, which must be present
  /// (with the same shape) or absent as it was when saved: the transform was attached the same way.
  void read_optional_tensor(const std::string& key, std::optional<tensor<Scalar>>& into) const {
    const bool present = get_integer(key + "_present", 0, 1) == 1;
    if (present != into.has_value()) {
      slimnet::detail::raise<config_error>(fn_, "{}: '{}{}' is {} there but {} in the model", source_, prefix_, key,
                                           present ? "present" : "absent", into ? "present" : "absent");
    }
    if (present) read_tensor(key, *into);
  }
  /// The tensor `key` whatever its shape (for state whose shape is itself restored).
  const tensor<Scalar>& get_tensor(const std::string& key) const { return find(dict_->tensors, key, "tensor"); }

  /// The integer array `key`, which must hold `expected_size` values.
  const std::vector<std::int64_t>& get_integers(const std::string& key, std::size_t expected_size) const {
    const auto& v = find(dict_->integer_arrays, key, "integer array");
    if (v.size() != expected_size) {
      slimnet::detail::raise<config_error>(fn_, "{}: '{}{}' holds {} integers there but the model needs {}", source_, prefix_, key,
                                           v.size(), expected_size);
    }
    return v;
  }
  /// The integer `key`, which must lie in [lo, hi].
  std::int64_t get_integer(const std::string& key, std::int64_t lo = std::numeric_limits<std::int64_t>::min(),
                           std::int64_t hi = std::numeric_limits<std::int64_t>::max()) const {
    const std::int64_t v = find(dict_->integers, key, "integer");
    if (v < lo || v > hi) slimnet::detail::raise<io_error>(fn_, "{}: '{}{}' = {} is outside [{}, {}]", source_, prefix_, key, v, lo, hi);
    return v;
  }
  double get_real(const std::string& key) const { return find(dict_->reals, key, "real"); }
  const std::string& get_text(const std::string& key) const { return find(dict_->texts, key, "text"); }
  /// Restores `gen` from the generator state `key` (refusing xoshiro's all-zero fixed point).
  void read_generator(const std::string& key, rng& gen) const {
    const rng::state_type& s = find(dict_->generators, key, "generator");
    if (!rng::valid_state(s)) slimnet::detail::raise<io_error>(fn_, "{}: generator '{}{}' has an invalid state", source_, prefix_, key);
    gen.set_state(s);
  }
  /// config_error unless the text `key` equals `expected` (what kind of object wrote the state).
  void expect_text(const std::string& key, const std::string& expected) const {
    const std::string& v = get_text(key);
    if (v != expected) {
      slimnet::detail::raise<config_error>(fn_, "{}: '{}{}' is '{}' there but '{}' in the model", source_, prefix_, key, v, expected);
    }
  }

  /// Keys of the dict that no read has asked for yet.
  std::vector<std::string> unread_keys() const {
    std::vector<std::string> out;
    for (auto& k : dict_->keys()) {
      if (read_->count(k) == 0) out.push_back(k);
    }
    return out;
  }

 private:
  template <class Map>
  const typename Map::mapped_type& find(const Map& map, const std::string& key, const char* kind) const {
    const std::string full = prefix_ + key;
    const auto it = map.find(full);
    if (it == map.end()) {
      if (dict_->contains(full)) slimnet::detail::raise<io_error>(fn_, "{}: entry '{}' is not a {}", source_, full, kind);
      slimnet::detail::raise<io_error>(fn_, "{}: no {} entry '{}'", source_, kind, full);
    }
    read_->insert(full);
    return it->second;
  }

  static constexpr const char* fn_ = "slimnet::nn::state_reader";
  const state_dict<Scalar>* dict_;
  std::string source_;
  std::string prefix_;
  std::shared_ptr<std::set<std::string>> read_;  // shared by the scopes of one reader
};

}  // namespace slimnet::nn
