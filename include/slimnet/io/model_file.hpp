// One safetensors file that is the whole runnable compressed model (issue 12): the architecture as
// JSON in the metadata, every parameter's effective value (masks, quantizers, binarizers applied,
// as an evaluation pass sees it) in the encoding its values call for (tensor_codec.hpp), and the
// input standardisation the model was trained with. Any safetensors tool lists it (byte tensors
// "fc1.weight.indices" etc.); loading needs no user code:
//
//   io::save_model(model, "lenet5.safetensors");                  // automatic encodings
//   auto m = io::load_model<float>("lenet5.safetensors");         // Linear / Conv2d on the kernel
//                                                                 // their encoding calls for
// Metadata keys: "slimnet.format_version" ("2"), "slimnet.architecture" (architecture.hpp JSON plus
// "input_standardisation": {"mean", "std"} when known), "slimnet.tensors" ({tensor name:
// descriptor}), and the caller's own keys. Version 2 (packed_layout.hpp) stores the same encodings
// with a small fixed cost: the multi-part tensors of a layer in one U8 tensor named after the
// layer ("fc1"), short descriptor keys, 4-bit Huffman tables, architecture defaults left out;
// version-1 files (one safetensors tensor per part, "fc1.weight.indices") are still read.
//
// Encoding -> layer at load (unless options.decode): sparse -> nn::compressed::to_sparse (pruning
// decides the kernel), sparse_codebook -> to_sparse_codebook (what compress(model, format::codebook)
// gives: a Deep Compression layer runs on k-bit codebook indices of its nonzeros, or on the dense
// codebook / direct sparse convolution where that choice says so; a layer whose values do not fit
// an 8-bit codebook, zero included, -> to_sparse), codebook -> to_codebook, sign_bits -> to_xnor,
// int8_rows and fixed_point of at most 8 bits -> to_int8, anything else -> the float layer. Saving
// the float model and converting it the same way in memory gives bitwise the outputs of the loaded file.
#pragma once

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "slimnet/core/error.hpp"
#include "slimnet/io/architecture.hpp"
#include "slimnet/io/packed_layout.hpp"
#include "slimnet/io/safetensors.hpp"
#include "slimnet/io/tensor_codec.hpp"
#include "slimnet/nn/compressed/convert.hpp"

// Functions of this header that are not templates by nature are written `template <class = void>`
// (called as before: the parameter is never named) so that a translation unit that includes the
// header without calling them neither compiles them nor instantiates the JSON and fmt code they
// use (a non-template inline body is compiled in every unit: io.hpp cost 9 s of CPU to parse).

namespace slimnet::io {

inline constexpr const char* model_format_version = "2";

/// x -> (x - mean) / std, applied to inputs before the model (examples/common's input_mean / input_std).
struct input_standardisation {
  double mean = 0;
  double std = 1;
};

struct save_model_options {
  /// Encoding of every tensor without an override.
  tensor_encode_options defaults;
  /// Per-tensor ("fc1.weight") or per-layer ("fc1": all its tensors) overrides; the tensor name wins.
  std::map<std::string, tensor_encode_options> overrides;
  /// Encoding of every bias ("<layer>.bias") that no override names; the defaults when absent.
  /// E.g. dense_f16, which rounds (round the model's biases to half precision first, half.hpp, for
  /// a file that loads bitwise as the model), or codebook (exact when the biases share few values).
  std::optional<tensor_encode_options> biases;
  /// Stored as the file's metadata (keys starting with "slimnet." are reserved).
  std::map<std::string, std::string> metadata;
  /// Recorded in the architecture; when absent, taken from metadata "input_mean" / "input_std".
  std::optional<input_standardisation> input;
};

struct load_model_options {
  /// true: a float model with the decoded weights; false: compressed layers as the encodings call for.
  bool decode = false;
  nn::compressed::sparse_options sparse;
  nn::compressed::xnor_options xnor;
  nn::compressed::int8_options int8;
  nn::compressed::codebook_options codebook;
  decode_limits limits;
};

template <class Scalar>
struct loaded_model {
  std::unique_ptr<nn::layer<Scalar>> model;
  std::map<std::string, std::string> metadata;  ///< the caller's keys (not the slimnet.* ones)
  std::optional<input_standardisation> input;
  std::map<std::string, std::string> encodings;  ///< tensor name -> encoding
};

namespace detail {

template <class = void>
nlohmann::json parse_metadata_json(const raw_file& f, const std::string& key, const std::string& path) {
  const auto it = f.metadata.find(key);
  if (it == f.metadata.end()) {
    slimnet::detail::raise<io_error>("slimnet::io::load_model", "'{}' is not a slimnet model file: no '{}' in its metadata", path, key);
  }
  try {
    return nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    slimnet::detail::raise<io_error>("slimnet::io::load_model", "'{}': metadata '{}' is not valid JSON: {}", path, key, e.what());
  }
}

inline const tensor_encode_options& options_for(const save_model_options& o, const std::string& tensor_name, const std::string& layer_name) {
  if (auto it = o.overrides.find(tensor_name); it != o.overrides.end()) return it->second;
  if (auto it = o.overrides.find(layer_name); it != o.overrides.end()) return it->second;
  const std::string bias = ".bias";
  if (o.biases && tensor_name.size() >= bias.size() && tensor_name.compare(tensor_name.size() - bias.size(), bias.size(), bias) == 0) return *o.biases;
  return o.defaults;
}

inline std::string layer_of(const std::string& tensor_name) {
  const auto dot = tensor_name.rfind('.');
  return dot == std::string::npos ? std::string() : tensor_name.substr(0, dot);
}

}  // namespace detail

/// Writes `model` (any float model of nn/ layers) to `path` as one self-contained file.
/// config_error for a layer kind without a serializer, an override naming no tensor or layer, or
/// an explicit encoding that cannot hold a tensor exactly; io_error if the file cannot be written.
template <class = void>
void save_model(const nn::layer<float>& model, const std::filesystem::path& path, const save_model_options& options = {}) {
  constexpr const char* fn = "slimnet::io::save_model";
  options.defaults.validate();
  if (options.biases) options.biases->validate();
  auto copy = model.clone();  // forward_value caches stages in the parameter: keep the caller's model untouched
  extra_tensors<float> extras;
  nlohmann::json arch = architecture_of(*copy, extras);
  std::optional<input_standardisation> input = options.input;
  if (!input) {
    const auto m = options.metadata.find("input_mean"), s = options.metadata.find("input_std");
    if (m != options.metadata.end() && s != options.metadata.end()) {
      try {
        input = input_standardisation{std::stod(m->second), std::stod(s->second)};
      } catch (const std::exception&) {
        slimnet::detail::raise<config_error>(fn, "metadata input_mean = '{}', input_std = '{}' are not numbers", m->second, s->second);
      }
    }
  }
  if (input) arch["input_standardisation"] = {{"mean", input->mean}, {"std", input->std}};

  raw_file file;
  nlohmann::json descriptors = nlohmann::json::object();
  std::set<std::string> layers_seen;
  model_packer packer;
  auto store = [&](const std::string& name, const tensor<float>& value) {
    if (descriptors.contains(name)) slimnet::detail::raise<config_error>(fn, "two tensors are named '{}'", name);
    encoded_tensor e = encode_tensor(name, value.shape(), value.data(), detail::options_for(options, name, detail::layer_of(name)));
    descriptors[name] = packer.add(name, std::move(e), file);
    layers_seen.insert(detail::layer_of(name));
  };
  copy->visit_parameters([&](nn::parameter<float>& p) { store(p.name(), p.forward_value(nn::forward_context{})); });
  for (const auto& [name, t] : extras) store(name, t);
  packer.finish_packing(file);
  for (const auto& [name, o] : options.overrides) {
    if (!descriptors.contains(name) && !layers_seen.count(name)) {
      slimnet::detail::raise<config_error>(fn, "the encoding override '{}' names no tensor or layer of the model", name);
    }
  }
  for (const auto& [k, v] : options.metadata) {
    if (k.rfind("slimnet.", 0) == 0) slimnet::detail::raise<config_error>(fn, "metadata key '{}' is reserved", k);
    file.metadata[k] = v;
  }
  file.metadata["slimnet.format_version"] = model_format_version;
  file.metadata["slimnet.architecture"] = compact_architecture(arch).dump();
  file.metadata["slimnet.tensors"] = descriptors.dump();
  write_safetensors_raw(path, file);
}

namespace detail {

/// A model file as the decoder reads it: version-1 layout, long descriptor keys, full architecture.
struct model_file_view {
  raw_file file;
  nlohmann::json architecture;
  nlohmann::json descriptors;
  std::map<std::string, std::uint64_t> stored_bytes;  ///< parts widened on reading: their size in the file
};

template <class = void>
model_file_view view_of(const raw_file& file, const std::string& version, const std::string& where, const char* fn) {
  model_file_view v;
  v.architecture = parse_metadata_json(file, "slimnet.architecture", where);
  v.descriptors = parse_metadata_json(file, "slimnet.tensors", where);
  if (!v.descriptors.is_object()) slimnet::detail::raise<io_error>(fn, "'{}': slimnet.tensors is not a JSON object", where);
  if (version != "1") {
    v.architecture = expand_architecture(v.architecture);
    for (auto& item : v.descriptors.items()) item.value() = expand_descriptor(item.value());
  }
  try {
    v.file = unpack_model_file(file, v.descriptors, "slimnet::io::unpack_model_file", &v.stored_bytes);
  } catch (const io_error& e) {
    slimnet::detail::raise<io_error>(fn, "'{}': {}", where, e.what());
  }
  return v;
}

/// Whether layer i of `s` reads the output of a sign activation (through Flatten, MaxPool2d or
/// Dropout, which keep values in {-1, +1}): only then does an XNOR kernel compute what the float
/// layer computes. A sign-bit layer fed real values (a BNN's first layer, a binarized classifier
/// after a ReLU) stays a float layer with its decoded +-alpha weights.
template <class Scalar>
bool reads_signs(const nn::sequential<Scalar>& s, std::size_t i) {
  while (i-- > 0) {
    if (dynamic_cast<const nn::flatten<Scalar>*>(&s[i]) || dynamic_cast<const nn::max_pool2d<Scalar>*>(&s[i]) ||
        dynamic_cast<const nn::dropout<Scalar>*>(&s[i]))
      continue;
    return dynamic_cast<const quant::sign_activation<Scalar>*>(&s[i]) != nullptr;
  }
  return false;
}

/// Whether a weight's values, zero included, number at most 256: then both codebook engines hold
/// it (the sparse one indexes the nonzeros, the dense one every weight), whichever the
/// dense-or-sparse choice picks. A file may store up to 2^16 centroids (max_codebook_bits).
template <class Scalar>
bool fits_8bit_codebook(const row_matrix<Scalar>& w) {
  std::vector<Scalar> v(w.data(), w.data() + w.size());
  v.push_back(Scalar(0));
  std::sort(v.begin(), v.end());
  return std::unique(v.begin(), v.end()) - v.begin() <= 256;
}

/// The compressed form of a Linear / Conv2d for `encoding`, or null to keep the float layer;
/// `binary_input`: the layer reads signs (reads_signs).
template <class Scalar, class Layer>
std::unique_ptr<nn::layer<Scalar>> compressed_for(Layer& l, const std::string& encoding, const nlohmann::json& descriptor,
                                                  const load_model_options& o, bool binary_input) {
  namespace c = nn::compressed;
  using linear_or_conv = std::conditional_t<std::is_same_v<Layer, nn::linear<Scalar>>, c::compressed_linear<Scalar>, c::compressed_conv2d<Scalar>>;
  if (encoding == "sparse_codebook" && fits_8bit_codebook(c::effective_weight(l.weight()))) {
    // compress(model, format::codebook)'s conversion, so its dense-or-sparse choice, not a copy of it.
    return std::make_unique<linear_or_conv>(c::to_sparse_codebook(l, o.codebook, o.sparse));
  }
  if (encoding == "sparse" || encoding == "sparse_codebook") return std::make_unique<linear_or_conv>(c::to_sparse(l, o.sparse));
  if (encoding == "codebook") return std::make_unique<linear_or_conv>(c::to_codebook(l, o.codebook));
  if (encoding == "sign_bits") return binary_input ? std::make_unique<linear_or_conv>(c::to_xnor(l, o.xnor)) : nullptr;
  if (encoding == "int8_rows") return std::make_unique<linear_or_conv>(c::to_int8(l, o.int8));
  if (encoding == "fixed_point") {
    const auto& fp = descriptor["fixed_point"];
    if (fp["integer_bits"].get<int>() + fp["fraction_bits"].get<int>() <= 8) return std::make_unique<linear_or_conv>(c::to_int8(l, o.int8));
  }
  return nullptr;
}

}  // namespace detail

/// Reads a model file written by save_model: the model (see load_model), the caller's metadata and
/// the input standardisation. io_error naming the file and the tensor for anything malformed: not a
/// model file, an architecture that does not parse or does not fit its tensors (every missing and
/// every unexpected tensor named at once), or a tensor that does not decode (tensor_codec.hpp).
template <class Scalar>
loaded_model<Scalar> read_model(const std::filesystem::path& path, const load_model_options& options = {}) {
  constexpr const char* fn = "slimnet::io::load_model";
  const std::string where = path.string();
  const raw_file file = read_safetensors_raw(path);
  const auto version = file.metadata.find("slimnet.format_version");
  if (version == file.metadata.end()) {
    slimnet::detail::raise<io_error>(fn, "'{}' is not a slimnet model file: no slimnet.format_version in its metadata", where);
  }
  if (version->second != "1" && version->second != model_format_version) {
    slimnet::detail::raise<io_error>(fn, "'{}' has model format version '{}', this slimnet reads '1' and '{}'", where, version->second,
                                     model_format_version);
  }
  const detail::model_file_view view = detail::view_of(file, version->second, where, fn);
  const nlohmann::json& arch = view.architecture;
  const nlohmann::json& descriptors = view.descriptors;

  loaded_model<Scalar> out;
  tensor_setters<Scalar> setters;
  try {
    out.model = build_architecture<Scalar>(arch, &setters);
  } catch (const io_error& e) {
    slimnet::detail::raise<io_error>(fn, "'{}': {}", where, e.what());
  }
  if (arch.contains("input_standardisation")) {
    const auto& s = arch["input_standardisation"];
    if (!s.is_object() || !s.contains("mean") || !s.contains("std") || !s["mean"].is_number() || !s["std"].is_number() || !(s["std"].get<double>() > 0)) {
      slimnet::detail::raise<io_error>(fn, "'{}': input_standardisation is not {{mean, std > 0}}", where);
    }
    out.input = input_standardisation{s["mean"].get<double>(), s["std"].get<double>()};
  }

  // Which tensors the architecture needs, and which the file has.
  std::vector<std::string> missing, misfit;
  std::set<std::string> expected, parts_used;
  auto decode = [&](const std::string& name) -> std::optional<tensor<float>> {
    expected.insert(name);
    if (!descriptors.contains(name)) {
      missing.push_back(name);
      return std::nullopt;
    }
    try {
      return decode_tensor(name, descriptors[name], view.file, &parts_used, options.limits);
    } catch (const io_error& e) {
      slimnet::detail::raise<io_error>(fn, "'{}': {}", where, e.what());
    }
  };
  out.model->visit_parameters([&](nn::parameter<Scalar>& p) {
    auto t = decode(p.name());
    if (!t) return;
    if (t->shape() != p.shape()) {
      misfit.push_back(fmt::format("'{}' is {} in the file, the architecture needs {}", p.name(), shape_string(t->shape()), shape_string(p.shape())));
      return;
    }
    p.value() = t->template cast<Scalar>();
  });
  for (auto& [set, name] : setters) {
    auto t = decode(name);
    if (!t) continue;
    try {
      set(t->template cast<Scalar>());
    } catch (const shape_error& e) {
      misfit.push_back(fmt::format("'{}': {}", name, e.what()));
    }
  }
  std::vector<std::string> unexpected;
  for (const auto& item : descriptors.items())
    if (!expected.count(item.key())) unexpected.push_back(item.key());
  for (const auto& [name, t] : view.file.tensors)
    if (!parts_used.count(name) && !descriptors.contains(name)) unexpected.push_back(name);
  if (!missing.empty() || !unexpected.empty() || !misfit.empty()) {
    std::string msg;
    if (!missing.empty()) msg += fmt::format(" missing tensors: {};", fmt::join(missing, ", "));
    if (!unexpected.empty()) msg += fmt::format(" unexpected tensors: {};", fmt::join(unexpected, ", "));
    if (!misfit.empty()) msg += fmt::format(" shapes that do not fit: {};", fmt::join(misfit, "; "));
    msg.pop_back();
    slimnet::detail::raise<io_error>(fn, "'{}': the architecture does not fit the tensors:{}", where, msg);
  }
  for (const auto& item : descriptors.items()) out.encodings[item.key()] = item.value().value("encoding", "?");

  if (!options.decode) {
    // Containers first (replacing a child keeps the container valid), then their Linear / Conv2d.
    std::vector<nn::sequential<Scalar>*> containers;
    out.model->visit_layers([&](nn::layer<Scalar>& l) {
      if (auto* s = dynamic_cast<nn::sequential<Scalar>*>(&l)) containers.push_back(s);
    });
    for (auto* s : containers) {
      for (std::size_t i = 0; i < s->size(); ++i) {
        std::unique_ptr<nn::layer<Scalar>> c;
        if (auto* lin = dynamic_cast<nn::linear<Scalar>*>(&(*s)[i])) {
          const std::string w = lin->weight().name();
          c = detail::compressed_for<Scalar>(*lin, out.encodings.at(w), descriptors[w], options, detail::reads_signs(*s, i));
        } else if (auto* conv = dynamic_cast<nn::conv2d<Scalar>*>(&(*s)[i])) {
          const std::string w = conv->weight().name();
          c = detail::compressed_for<Scalar>(*conv, out.encodings.at(w), descriptors[w], options, detail::reads_signs(*s, i));
        }
        if (c) s->replace(i, std::move(c));
      }
    }
  }
  for (const auto& [k, v] : file.metadata)
    if (k.rfind("slimnet.", 0) != 0) out.metadata[k] = v;
  return out;
}

/// The model in a file written by save_model, ready to run: its Linear / Conv2d layers on the kernel
/// their encoding calls for, or (options.decode) all float layers with the decoded weights.
template <class Scalar = float>
std::unique_ptr<nn::layer<Scalar>> load_model(const std::filesystem::path& path, const load_model_options& options = {}) {
  return read_model<Scalar>(path, options).model;
}

/// One tensor of a model file as the inspector shows it.
struct model_file_row {
  std::string tensor;
  std::string layer;
  std::string encoding;
  shape_t shape;
  std::uint64_t nonzeros = 0;
  tensor_bytes bytes;
  std::uint64_t dense_f32_bytes = 0;  ///< what the tensor takes as dense float32
  nlohmann::json descriptor;
};

struct model_file_summary {
  std::vector<model_file_row> rows;
  std::uint64_t file_bytes = 0;   ///< the whole file, header included
  std::uint64_t tensor_bytes_total = 0;
  std::uint64_t dense_f32_bytes = 0;
  std::map<std::string, std::string> metadata;
  nlohmann::json architecture;
};

/// Per-tensor encodings and bytes of a model file (it is read and its header checked, not decoded).
template <class = void>
model_file_summary describe_model_file(const std::filesystem::path& path) {
  constexpr const char* fn = "slimnet::io::describe_model_file";
  const raw_file raw = read_safetensors_raw(path);
  model_file_summary s;
  s.file_bytes = std::filesystem::file_size(path);
  const auto version = raw.metadata.find("slimnet.format_version");
  const detail::model_file_view view = detail::view_of(raw, version == raw.metadata.end() ? std::string("1") : version->second, path.string(), fn);
  const raw_file& file = view.file;
  s.architecture = view.architecture;
  const nlohmann::json& descriptors = view.descriptors;
  for (const auto& item : descriptors.items()) {
    const nlohmann::json& d = item.value();
    model_file_row r;
    r.tensor = item.key();
    r.layer = detail::layer_of(r.tensor);
    r.encoding = d.is_object() && d.contains("encoding") && d["encoding"].is_string() ? d["encoding"].get<std::string>() : "?";
    std::uint64_t n = 1;
    if (d.is_object() && d.contains("shape") && d["shape"].is_array()) {
      for (const auto& dim : d["shape"]) {
        if (!detail::is_count(dim)) slimnet::detail::raise<io_error>(fn, "'{}': tensor '{}' has an invalid shape", path.string(), r.tensor);
        r.shape.push_back(dim.get<index_t>());
        n *= dim.get<std::uint64_t>();
      }
    }
    r.nonzeros = d.is_object() && d.contains("nonzeros") && detail::is_count(d["nonzeros"]) ? d["nonzeros"].get<std::uint64_t>() : 0;
    r.bytes = encoded_bytes(r.tensor, file, &view.stored_bytes);
    r.dense_f32_bytes = 4 * n;
    r.descriptor = d;
    s.tensor_bytes_total += r.bytes.total();
    s.dense_f32_bytes += r.dense_f32_bytes;
    s.rows.push_back(std::move(r));
  }
  for (const auto& [k, v] : file.metadata)
    if (k.rfind("slimnet.", 0) != 0) s.metadata[k] = v;
  return s;
}

}  // namespace slimnet::io
