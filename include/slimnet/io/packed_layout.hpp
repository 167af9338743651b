// How a model file lays its tensors out (format version 2): the fixed cost per file made small.
//
// A DNS-pruned LeNet-5 holds ~3,200 weights; coded, they take ~4 KB, so the file's fixed cost
// decides whether it is 90x or 200x smaller than the dense one. In version 1 that cost was ~3.7 KB:
// one safetensors entry (~75 header bytes) per part of every tensor (values, indices, their Huffman
// table, ...), long descriptor keys whose quotes are escaped again inside the metadata string,
// byte-per-symbol Huffman tables (256 bytes for an 8-bit index stream) and the architecture's
// default fields. Version 2 keeps every encoding and its bytes (tensor_codec.hpp) and changes only
// the layout:
//   - the multi-part tensors of one layer ("fc1.weight", "fc1.bias") share one U8 tensor named
//     after the layer ("fc1"), their parts concatenated in tensor-name then part-name order; each
//     descriptor lists its parts' byte lengths ("p"), the parts themselves follow from the encoding
//     (part_layout). Dense tensors stay typed tensors of their own shape ("conv1.bias", F16 ...),
//     so any safetensors tool still lists every tensor, and reads the dense ones;
//   - descriptor keys of one or two letters (compact_descriptor / expand_descriptor);
//   - Huffman code lengths <= 15 as 4-bit nibbles with the trailing unused symbols cut ("h": 2);
//   - architecture fields equal to their default left out (compact_architecture /
//     expand_architecture: Conv2d stride 1, padding 0, bias; Linear bias; pooling stride = kernel,
//     padding 0; recurrent bias, no reverse, all steps).
// The reader turns a version-2 file back into the version-1 view (every part a tensor of its own,
// long keys, byte tables) and decodes that with the one decoder; the CRC-32 of each tensor is over
// the version-1 parts, so it checks the unpacking too.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "slimnet/core/error.hpp"
#include "slimnet/io/safetensors_raw.hpp"
#include "slimnet/io/tensor_codec.hpp"

// Functions of this header that are not templates by nature are written `template <class = void>`
// (called as before: the parameter is never named) so that a translation unit that includes the
// header without calling them neither compiles them nor instantiates the JSON and fmt code they
// use (a non-template inline body is compiled in every unit: io.hpp cost 9 s of CPU to parse).

namespace slimnet::io {

/// One part of a tensor in its version-1 form: the suffix after the tensor name ("" = the tensor
/// itself) and its dtype.
struct part_spec {
  std::string suffix;
  dtype type;
};

namespace detail {

// Long descriptor key <-> short key, at the top level and inside a stream / fixed_point object.
inline const std::vector<std::pair<std::string, std::string>>& top_keys() {
  static const std::vector<std::pair<std::string, std::string>> k{{"encoding", "e"}, {"shape", "s"},   {"nonzeros", "n"},    {"crc32", "c"},
                                                                   {"indices", "i"},  {"codes", "q"},   {"fixed_point", "f"}, {"parts", "p"}};
  return k;
}
inline const std::vector<std::pair<std::string, std::string>>& stream_keys() {
  static const std::vector<std::pair<std::string, std::string>> k{{"bits", "b"}, {"count", "k"}};
  return k;
}
inline const std::vector<std::pair<std::string, std::string>>& fixed_point_keys() {
  static const std::vector<std::pair<std::string, std::string>> k{{"integer_bits", "i"}, {"fraction_bits", "f"}};
  return k;
}

template <class = void>
nlohmann::json rename_keys(const nlohmann::json& j, const std::vector<std::pair<std::string, std::string>>& keys, bool to_short) {
  if (!j.is_object()) return j;
  nlohmann::json out = nlohmann::json::object();
  for (const auto& item : j.items()) {
    std::string key = item.key();
    for (const auto& [l, s] : keys) {
      if (key == (to_short ? l : s)) {
        key = to_short ? s : l;
        break;
      }
    }
    out[key] = item.value();
  }
  return out;
}

inline bool is_stream_key(const std::string& k) { return k == "indices" || k == "codes"; }

/// Whether stream `s` (version-1 form) has its Huffman table in 4-bit nibbles.
template <class = void>
bool nibble_table(const nlohmann::json& s) {
  return s.is_object() && s.contains("huffman_table") && s["huffman_table"].is_string() && s["huffman_table"].get<std::string>() == "u4";
}

}  // namespace detail

/// The version-2 (short-key) form of a version-1 descriptor. A stream's "huffman" becomes "h":
/// 0 packed, 1 Huffman with a byte per code length, 2 Huffman with 4-bit code lengths.
template <class = void>
nlohmann::json compact_descriptor(const nlohmann::json& d) {
  nlohmann::json out = nlohmann::json::object();
  for (const auto& item : d.items()) {
    nlohmann::json v = item.value();
    if (detail::is_stream_key(item.key()) && v.is_object()) {
      const int h = v.contains("huffman") && v["huffman"].is_boolean() && v["huffman"].get<bool>() ? (detail::nibble_table(v) ? 2 : 1) : 0;
      v.erase("huffman");
      v.erase("huffman_table");
      v = detail::rename_keys(v, detail::stream_keys(), true);
      v["h"] = h;
    } else if (item.key() == "fixed_point") {
      v = detail::rename_keys(v, detail::fixed_point_keys(), true);
    }
    out[item.key()] = std::move(v);
  }
  return detail::rename_keys(out, detail::top_keys(), true);
}

/// The version-1 form of a version-2 descriptor (unknown keys and malformed values are passed on
/// for the decoder to report).
template <class = void>
nlohmann::json expand_descriptor(const nlohmann::json& d) {
  if (!d.is_object()) return d;
  nlohmann::json out = detail::rename_keys(d, detail::top_keys(), false);
  for (const char* key : {"indices", "codes"}) {
    if (!out.contains(key) || !out[key].is_object()) continue;
    nlohmann::json s = detail::rename_keys(out[key], detail::stream_keys(), false);
    s.erase("huffman_table");  // only "h" may say so
    if (s.contains("h")) {
      const nlohmann::json h = s["h"];
      s.erase("h");
      if (h.is_number_integer() && h.get<std::int64_t>() >= 0 && h.get<std::int64_t>() <= 2) {
        s["huffman"] = h.get<std::int64_t>() != 0;
        if (h.get<std::int64_t>() == 2) s["huffman_table"] = "u4";
      }
    }
    out[key] = std::move(s);
  }
  if (out.contains("fixed_point")) out["fixed_point"] = detail::rename_keys(out["fixed_point"], detail::fixed_point_keys(), false);
  return out;
}

/// The parts a (version-1) descriptor's encoding stores, in name order; empty when the descriptor
/// is not one of a multi-part encoding (dense tensors, or a malformed descriptor).
template <class = void>
std::vector<part_spec> part_layout(const nlohmann::json& d) {
  std::vector<part_spec> parts;
  if (!d.is_object() || !d.contains("encoding") || !d["encoding"].is_string()) return parts;
  const auto enc = parse_encoding(d["encoding"].get<std::string>());
  if (!enc) return parts;
  std::map<std::string, dtype> by_name;
  switch (*enc) {
    case tensor_encoding::sparse: by_name["values"] = dtype::f32; break;
    case tensor_encoding::sparse_codebook:
    case tensor_encoding::codebook: by_name["codebook"] = dtype::f32; break;
    case tensor_encoding::int8_rows:
    case tensor_encoding::sign_bits: by_name["scales"] = dtype::f32; break;
    case tensor_encoding::fixed_point: break;
    default: return parts;  // automatic, dense_*
  }
  for (const char* key : {"indices", "codes"}) {
    if (!d.contains(key) || !d[key].is_object()) continue;
    by_name[key] = dtype::u8;
    const auto& s = d[key];
    if (s.contains("huffman") && s["huffman"].is_boolean() && s["huffman"].get<bool>()) by_name[std::string(key) + ".huffman"] = dtype::u8;
  }
  for (const auto& [name, type] : by_name) parts.push_back({name, type});
  return parts;
}

namespace detail {

/// Huffman code lengths (one byte each, all <= 15) as 4-bit nibbles, low nibble first, the trailing
/// zero lengths cut.
inline std::vector<std::uint8_t> pack_nibbles(const std::vector<std::uint8_t>& lengths) {
  std::size_t n = lengths.size();
  while (n > 0 && lengths[n - 1] == 0) --n;
  std::vector<std::uint8_t> out((n + 1) / 2, 0);
  for (std::size_t i = 0; i < n; ++i) out[i / 2] = static_cast<std::uint8_t>(out[i / 2] | (lengths[i] << (4 * (i % 2))));
  return out;
}

/// The byte-per-symbol table back from pack_nibbles, trailing zero lengths cut as huffman_encode
/// cuts them; nothing if it has more than `alphabet` symbols.
template <class = void>
std::optional<std::vector<std::uint8_t>> unpack_nibbles(const std::vector<std::uint8_t>& packed, std::uint64_t alphabet) {
  if (2 * static_cast<std::uint64_t>(packed.size()) > alphabet + 1) return std::nullopt;
  std::vector<std::uint8_t> out(2 * packed.size(), 0);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>((packed[i / 2] >> (4 * (i % 2))) & 0x0f);
  while (!out.empty() && out.back() == 0) out.pop_back();
  if (out.size() > alphabet) return std::nullopt;
  return out;
}

}  // namespace detail

/// Version-2 layout of encoded tensors: adds `e` (as encode_tensor returns it) to `file`, its
/// dense part as a tensor of its own, its other parts to the layer's shared U8 tensor, and returns
/// the compact descriptor. Call finish_packing once every tensor is added.
class model_packer {
 public:
  nlohmann::json add(const std::string& name, encoded_tensor e, raw_file& file) {
    constexpr const char* fn = "slimnet::io::save_model";
    const std::vector<part_spec> layout = part_layout(e.descriptor);
    if (layout.empty()) {  // a dense tensor: itself, typed
      for (auto& [part, t] : e.parts) {
        if (file.tensors.count(part)) slimnet::detail::raise<config_error>(fn, "tensor '{}' is written twice", part);
        file.tensors.emplace(part, std::move(t));
      }
      return compact_descriptor(e.descriptor);
    }
    if (layout.size() != e.parts.size()) {
      slimnet::detail::raise<config_error>(fn, "tensor '{}': its {} encoding has {} parts, the layout expects {}", name,
                                           e.descriptor.value("encoding", "?"), e.parts.size(), layout.size());
    }
    // Nibble tables where every code length fits in 4 bits (huffman_encode's tables end in a used
    // symbol, which is what unpack_nibbles gives back).
    for (const char* key : {"indices", "codes"}) {
      const auto it = e.parts.find(name + "." + key + ".huffman");
      if (it == e.parts.end()) continue;
      const auto& lengths = it->second.bytes;
      const std::uint64_t alphabet = std::uint64_t{1} << e.descriptor[key]["bits"].get<int>();
      bool fits = lengths.size() <= alphabet && (lengths.empty() || lengths.back() != 0);
      for (auto l : lengths) fits = fits && l <= 15;
      if (!fits) continue;
      it->second = detail::bytes_tensor(detail::pack_nibbles(lengths));
      e.descriptor[key]["huffman_table"] = "u4";
    }
    std::vector<std::uint8_t>& blob = blobs_[blob_name(name)][name];
    nlohmann::json lengths = nlohmann::json::array();
    for (const auto& spec : layout) {
      const auto it = e.parts.find(name + "." + spec.suffix);
      if (it == e.parts.end() || it->second.type != spec.type) {
        slimnet::detail::raise<config_error>(fn, "tensor '{}': part '{}' is not what its encoding lays out", name, spec.suffix);
      }
      blob.insert(blob.end(), it->second.bytes.begin(), it->second.bytes.end());
      lengths.push_back(it->second.bytes.size());
    }
    e.descriptor["parts"] = std::move(lengths);
    return compact_descriptor(e.descriptor);
  }

  /// Writes the layers' shared tensors; config_error if a layer's name is taken by a tensor.
  void finish_packing(raw_file& file) {
    for (auto& [layer, tensors] : blobs_) {
      if (file.tensors.count(layer)) {
        slimnet::detail::raise<config_error>("slimnet::io::save_model", "layer '{}' shares its name with a tensor of the model", layer);
      }
      std::vector<std::uint8_t> bytes;  // in tensor-name order, as the reader cuts them
      for (auto& [name, b] : tensors) bytes.insert(bytes.end(), b.begin(), b.end());
      file.tensors.emplace(layer, detail::bytes_tensor(std::move(bytes)));
    }
    blobs_.clear();
  }

  /// The U8 tensor holding tensor `name`'s parts: its layer ("fc1" for "fc1.weight"), "~" at the root.
  static std::string blob_name(const std::string& name) {
    const auto dot = name.rfind('.');
    return dot == std::string::npos || dot == 0 ? std::string("~") : name.substr(0, dot);
  }

 private:
  std::map<std::string, std::map<std::string, std::vector<std::uint8_t>>> blobs_;  // layer -> tensor -> its parts' bytes
};

/// The version-1 view of a version-2 file: each layer's shared tensor cut into the parts its
/// descriptors list (`descriptors` in version-1 form, as expand_descriptor gives them), nibble
/// tables widened to bytes. Tensors of `file` that no descriptor packs are kept as they are.
/// `stored_bytes` receives, per part whose stored size differs (nibble tables), the stored size.
/// io_error (from `fn`) naming the layer and its tensors when lengths disagree.
template <class = void>
raw_file unpack_model_file(const raw_file& file, const nlohmann::json& descriptors, const char* fn,
                                  std::map<std::string, std::uint64_t>* stored_bytes = nullptr) {
  raw_file out;
  out.metadata = file.metadata;
  std::map<std::string, std::vector<std::string>> by_blob;  // layer -> its packed tensors, in name order
  for (const auto& item : descriptors.items())
    if (item.value().is_object() && item.value().contains("parts")) by_blob[model_packer::blob_name(item.key())].push_back(item.key());
  for (const auto& [name, t] : file.tensors)
    if (!by_blob.count(name)) out.tensors.emplace(name, t);
  for (const auto& [layer, names] : by_blob) {
    const std::string who = fmt::format("layer tensor '{}' (holding {})", layer, fmt::join(names, ", "));
    const auto it = file.tensors.find(layer);
    if (it == file.tensors.end()) slimnet::detail::raise<io_error>(fn, "{} is missing", who);
    const raw_tensor& blob = it->second;
    if (blob.type != dtype::u8 || blob.shape.size() != 1) {
      slimnet::detail::raise<io_error>(fn, "{} is {} of shape {}, expected one-dimensional U8", who, dtype_name(blob.type), shape_string(blob.shape));
    }
    std::uint64_t at = 0;
    const std::uint64_t size = blob.bytes.size();
    for (const auto& name : names) {
      const nlohmann::json& d = descriptors[name];
      const std::vector<part_spec> layout = part_layout(d);
      const nlohmann::json& lengths = d["parts"];
      if (layout.empty() || !lengths.is_array() || lengths.size() != layout.size()) {
        slimnet::detail::raise<io_error>(fn, "tensor '{}': its descriptor lists {} part lengths, its encoding has {} parts", name,
                                         lengths.is_array() ? lengths.size() : 0, layout.size());
      }
      for (std::size_t k = 0; k < layout.size(); ++k) {
        if (!detail::is_count(lengths[k])) slimnet::detail::raise<io_error>(fn, "tensor '{}': the length of part '{}' is not a count", name, layout[k].suffix);
        if (lengths[k].get<std::uint64_t>() > size - at) {
          slimnet::detail::raise<io_error>(fn, "tensor '{}': part '{}' of {} bytes does not fit in the {} bytes left of {}", name, layout[k].suffix,
                                           lengths[k].get<std::uint64_t>(), size - at, who);
        }
        const std::uint64_t len = lengths[k].get<std::uint64_t>();
        const std::string part = name + "." + layout[k].suffix;
        raw_tensor t;
        t.type = layout[k].type;
        t.bytes.assign(blob.bytes.begin() + static_cast<std::ptrdiff_t>(at), blob.bytes.begin() + static_cast<std::ptrdiff_t>(at + len));
        at += len;
        const std::string& suffix = layout[k].suffix;
        const auto dot = suffix.find(".huffman");
        if (dot != std::string::npos) {
          const nlohmann::json& s = d[suffix.substr(0, dot)];  // present: part_layout lists the table only then
          if (detail::nibble_table(s)) {
            if (!s.contains("bits") || !detail::is_count(s["bits"]) || s["bits"].get<std::uint64_t>() < 1 || s["bits"].get<std::uint64_t>() > 16) {
              slimnet::detail::raise<io_error>(fn, "tensor '{}': stream '{}' has no valid width", name, suffix.substr(0, dot));
            }
            auto wide = detail::unpack_nibbles(t.bytes, std::uint64_t{1} << s["bits"].get<std::uint64_t>());
            if (!wide) slimnet::detail::raise<io_error>(fn, "tensor '{}': the Huffman table '{}' has more symbols than the alphabet", name, suffix);
            if (stored_bytes) (*stored_bytes)[part] = len;
            t.bytes = std::move(*wide);
          }
        }
        const std::size_t elem = dtype_size(t.type);
        if (t.bytes.size() % elem) {
          slimnet::detail::raise<io_error>(fn, "tensor '{}': part '{}' of {} bytes is not a whole number of {} elements", name, suffix, len,
                                           dtype_name(t.type));
        }
        t.shape = {static_cast<index_t>(t.bytes.size() / elem)};
        if (out.tensors.count(part)) slimnet::detail::raise<io_error>(fn, "tensor '{}': part '{}' is also a tensor of the file", name, part);
        out.tensors.emplace(part, std::move(t));
      }
    }
    if (at != size) slimnet::detail::raise<io_error>(fn, "{} has {} bytes, its tensors' parts {}", who, size, at);
  }
  return out;
}

namespace detail {

/// Architecture fields that version 2 leaves out when they hold these values, per layer kind.
template <class = void>
nlohmann::json architecture_defaults(const nlohmann::json& layer) {
  const std::string kind = layer.is_object() && layer.contains("kind") && layer["kind"].is_string() ? layer["kind"].get<std::string>() : "";
  if (kind == "Conv2d") return {{"stride", 1}, {"padding", 0}, {"bias", true}};
  if (kind == "Linear") return {{"bias", true}};
  if (kind == "MaxPool2d" || kind == "AvgPool2d") {
    // The stride defaults to the window (a malformed window: to 1, so the reader names the window).
    const bool window = layer.contains("kernel") && layer["kernel"].is_number_integer() && layer["kernel"].get<std::int64_t>() >= 1;
    return {{"padding", 0}, {"stride", window ? layer["kernel"] : nlohmann::json(1)}};
  }
  if (kind == "LSTM" || kind == "GRU") return {{"bias", true}, {"reverse", false}, {"output", "all_steps"}};
  return nlohmann::json::object();
}

inline bool is_layer_list_key(const std::string& k) { return k == "layers" || k == "branches"; }
inline bool is_layer_key(const std::string& k) { return k == "forward" || k == "backward" || k == "inner"; }

template <class F>
nlohmann::json map_layers(const nlohmann::json& layer, const F& f, int depth) {
  if (!layer.is_object() || depth > 64) return layer;
  nlohmann::json out = f(layer);
  for (auto& item : out.items()) {
    if (is_layer_list_key(item.key()) && item.value().is_array()) {
      for (auto& child : item.value()) child = map_layers(child, f, depth + 1);
    } else if (is_layer_key(item.key())) {
      item.value() = map_layers(item.value(), f, depth + 1);
    }
  }
  return out;
}

}  // namespace detail

/// The architecture JSON without the fields that hold their default (and without an empty root name).
template <class = void>
nlohmann::json compact_architecture(const nlohmann::json& arch) {
  nlohmann::json out = detail::map_layers(
      arch,
      [](const nlohmann::json& l) {
        nlohmann::json c = l;
        const nlohmann::json defaults = detail::architecture_defaults(l);
        for (const auto& d : defaults.items())
          if (c.contains(d.key()) && c[d.key()] == d.value()) c.erase(d.key());
        return c;
      },
      0);
  if (out.is_object() && out.contains("name") && out["name"] == "") out.erase("name");
  return out;
}

/// compact_architecture undone: every left-out default put back (present fields are kept as they are).
template <class = void>
nlohmann::json expand_architecture(const nlohmann::json& arch) {
  return detail::map_layers(
      arch,
      [](const nlohmann::json& l) {
        nlohmann::json c = l;
        const nlohmann::json defaults = detail::architecture_defaults(l);
        for (const auto& d : defaults.items())
          if (!c.contains(d.key())) c[d.key()] = d.value();
        return c;
      },
      0);
}

}  // namespace slimnet::io
