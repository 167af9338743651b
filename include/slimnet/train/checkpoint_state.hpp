// The checkpoint state of a training run, without the file format: what a checkpoint holds
// (parameters, weight-transform states, optimizer state, the caller's counters and generators, by
// name), how it is restored all or nothing, and save_checkpoint / load_checkpoint. The file format
// (safetensors + JSON + CRC-32: zlib and nlohmann-json, the slimnet::io target) is
// train/checkpoint.hpp, which plugs its reader and writer in here when included; so fit and
// DeepIoT's compress, which checkpoint through this header, stay in slimnet::core.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/state.hpp"
#include "slimnet/train/optimizer.hpp"

namespace slimnet::train {

namespace detail {

/// The checkpoint file's writer and reader, set by train/checkpoint.hpp when it is included
/// (null otherwise: save_checkpoint and load_checkpoint then say which header they need).
template <class Scalar>
struct checkpoint_files {
  using writer = void (*)(const std::filesystem::path&, const nn::state_dict<Scalar>&);
  using reader = nn::state_dict<Scalar> (*)(const std::filesystem::path&);
  static inline writer write = nullptr;
  static inline reader read = nullptr;
};

template <class Scalar>
void require_checkpoint_files(const char* fn, const std::filesystem::path& path) {
  if (checkpoint_files<Scalar>::write == nullptr || checkpoint_files<Scalar>::read == nullptr) {
    slimnet::detail::raise<config_error>(fn, "'{}': checkpoint files need #include <slimnet/train/checkpoint.hpp> (CMake target slimnet::io)",
                                         path.string());
  }
}

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
  detail::require_checkpoint_files<Scalar>(fn, path);
  detail::checkpoint_files<Scalar>::write(path, dict);
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
  detail::require_checkpoint_files<Scalar>(fn, path);
  const nn::state_dict<Scalar> dict = detail::checkpoint_files<Scalar>::read(path);
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
