// One tensor of a model file in the encoding its values call for (Deep Compression's storage,
// Han et al. 2016): the encoders of io/encoding/ composed into safetensors byte tensors plus a JSON
// descriptor, the automatic choice among them, and a decoder that validates everything.
//
// A tensor "fc1.weight" of shape (out, ...) is viewed as the row-major matrix out x rest and stored as
//   dense_f32 / dense_f16 / dense_bf16   "fc1.weight" itself (F32 / F16 / BF16, its own shape)
//   sparse           "fc1.weight.values" (F32 nonzeros) + "fc1.weight.indices" (relative indices)
//   sparse_codebook  "fc1.weight.codebook" (F32 centroids, zero not among them) + "fc1.weight.indices"
//                    + "fc1.weight.codes" (k-bit centroid indices of the nonzeros)
//   codebook         "fc1.weight.codebook" + "fc1.weight.codes" (one index per weight)
//   fixed_point      "fc1.weight.codes" (WL-bit two's complement), <IL, FL> in the descriptor
//   int8_rows        "fc1.weight.scales" (F32 per row) + "fc1.weight.codes" (int8)
//   sign_bits        "fc1.weight.scales" (F32 alpha per row) + "fc1.weight.codes" (1 bit per weight)
// Index and code streams are packed at their width (bit_pack.hpp) or Huffman coded (huffman.hpp),
// the latter with "<stream>.huffman" (U8 code lengths). The descriptor records the encoding, shape,
// nonzeros, each stream's width, symbol count and coding, and a CRC-32 of the parts' bytes.
// Every encoding decodes bitwise exactly (zero of either sign decodes to +0 in the sparse ones),
// except dense_f16 / dense_bf16 when chosen explicitly for values they cannot hold.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <zlib.h>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/io/encoding/bit_pack.hpp"
#include "slimnet/io/encoding/codebook.hpp"
#include "slimnet/io/encoding/fixed_point.hpp"
#include "slimnet/io/encoding/huffman.hpp"
#include "slimnet/io/encoding/int8_rows.hpp"
#include "slimnet/io/encoding/relative_index.hpp"
#include "slimnet/io/encoding/sign_bits.hpp"
#include "slimnet/io/half.hpp"
#include "slimnet/io/safetensors.hpp"

// Functions of this header that are not templates by nature are written `template <class = void>`
// (called as before: the parameter is never named) so that a translation unit that includes the
// header without calling them neither compiles them nor instantiates the JSON and fmt code they
// use (a non-template inline body is compiled in every unit: io.hpp cost 9 s of CPU to parse).

namespace slimnet::io {

enum class tensor_encoding { automatic, dense_f32, dense_f16, dense_bf16, sparse, sparse_codebook, codebook, fixed_point, int8_rows, sign_bits };

inline const char* encoding_name(tensor_encoding e) {
  switch (e) {
    case tensor_encoding::automatic: return "automatic";
    case tensor_encoding::dense_f32: return "dense_f32";
    case tensor_encoding::dense_f16: return "dense_f16";
    case tensor_encoding::dense_bf16: return "dense_bf16";
    case tensor_encoding::sparse: return "sparse";
    case tensor_encoding::sparse_codebook: return "sparse_codebook";
    case tensor_encoding::codebook: return "codebook";
    case tensor_encoding::fixed_point: return "fixed_point";
    case tensor_encoding::int8_rows: return "int8_rows";
    case tensor_encoding::sign_bits: return "sign_bits";
  }
  return "?";
}

/// The encoding named `name`; nothing if there is none.
inline std::optional<tensor_encoding> parse_encoding(const std::string& name) {
  for (int i = 0; i <= static_cast<int>(tensor_encoding::sign_bits); ++i) {
    const auto e = static_cast<tensor_encoding>(i);
    if (name == encoding_name(e)) return e;
  }
  return std::nullopt;
}

enum class huffman_mode { automatic, always, never };

/// How one tensor is encoded. `automatic` takes the smallest exact encoding; an explicit one that
/// cannot hold the values exactly (e.g. sign_bits for weights that are not +-alpha per row) is a
/// config_error, except dense_f16 / dense_bf16, which round.
struct tensor_encode_options {
  tensor_encoding encoding = tensor_encoding::automatic;
  int index_bits = 0;  ///< relative index width: 4 or 8, 0 = whichever is smaller
  huffman_mode huffman = huffman_mode::automatic;  ///< automatic: Huffman where it saves bytes
  int max_codebook_bits = 8;
  int max_fixed_point_bits = 16;

  void validate() const {
    constexpr const char* fn = "slimnet::io::tensor_encode_options";
    if (index_bits != 0 && index_bits != 4 && index_bits != 8) slimnet::detail::raise<config_error>(fn, "index_bits = {} is not 0, 4 or 8", index_bits);
    if (max_codebook_bits < 1 || max_codebook_bits > 16)
      slimnet::detail::raise<config_error>(fn, "max_codebook_bits = {} outside [1, 16]", max_codebook_bits);
    if (max_fixed_point_bits < 1 || max_fixed_point_bits > 24)
      slimnet::detail::raise<config_error>(fn, "max_fixed_point_bits = {} outside [1, 24]", max_fixed_point_bits);
  }
};

/// Limits on what a file may make the decoder allocate.
struct decode_limits {
  std::uint64_t max_elements = std::uint64_t{1} << 28;  ///< per tensor
};

/// A tensor as stored: its parts (safetensors tensors by name) and its descriptor.
struct encoded_tensor {
  nlohmann::json descriptor;
  std::map<std::string, raw_tensor> parts;
};

/// Bytes of an encoded tensor by role (what the inspector prints).
struct tensor_bytes {
  std::uint64_t values = 0;    ///< dense data, sparse values, fixed-point / int8 codes, sign bits, scales
  std::uint64_t indices = 0;   ///< relative indices and codebook indices
  std::uint64_t codebook = 0;  ///< centroids
  std::uint64_t huffman = 0;   ///< code length tables
  std::uint64_t total() const { return values + indices + codebook + huffman; }
};

namespace detail {

inline raw_tensor bytes_tensor(std::vector<std::uint8_t> bytes) {
  raw_tensor t;
  t.type = dtype::u8;
  t.shape = {static_cast<index_t>(bytes.size())};
  t.bytes = std::move(bytes);
  return t;
}

inline raw_tensor float_tensor(const std::vector<float>& v) {
  raw_tensor t;
  t.type = dtype::f32;
  t.shape = {static_cast<index_t>(v.size())};
  t.bytes.resize(v.size() * 4);
  if (!v.empty()) std::memcpy(t.bytes.data(), v.data(), v.size() * 4);
  return t;
}

inline std::uint64_t parts_bytes(const encoded_tensor& e) {
  std::uint64_t n = 0;
  for (const auto& [name, t] : e.parts) n += t.bytes.size();
  return n;
}

/// Adds stream `key` ("indices", "codes") of `symbols` at `bits` to `e`: packed, or Huffman coded
/// when asked or (automatic) when table + stream are smaller than the packed bytes.
template <class = void>
void add_stream(encoded_tensor& e, const std::string& name, const std::string& key, const std::vector<std::uint32_t>& symbols, int bits,
                       huffman_mode mode) {
  std::vector<std::uint8_t> packed = encoding::pack_bits(symbols, bits);
  bool use_huffman = false;
  encoding::huffman_stream h;
  if (mode != huffman_mode::never && bits > 1 && bits <= 16) {
    h = encoding::huffman_encode(symbols, std::size_t{1} << bits);
    use_huffman = mode == huffman_mode::always || h.lengths.size() + h.bytes.size() < packed.size();
  }
  e.descriptor[key] = {{"bits", bits}, {"count", symbols.size()}, {"huffman", use_huffman}};
  if (use_huffman) {
    e.parts[name + "." + key] = bytes_tensor(std::move(h.bytes));
    e.parts[name + "." + key + ".huffman"] = bytes_tensor(std::move(h.lengths));
  } else {
    e.parts[name + "." + key] = bytes_tensor(std::move(packed));
  }
}

inline encoded_tensor start(const shape_t& shape, tensor_encoding enc, std::uint64_t nonzeros) {
  encoded_tensor e;
  e.descriptor = {{"encoding", encoding_name(enc)}, {"shape", shape}, {"nonzeros", nonzeros}};
  return e;
}

/// CRC-32 (zlib) over the parts' names and bytes, in name order.
template <class = void>
std::uint32_t crc_of(const std::map<std::string, const raw_tensor*>& parts) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (const auto& [name, t] : parts) {
    crc = crc32(crc, reinterpret_cast<const Bytef*>(name.data()), static_cast<uInt>(name.size()));
    for (std::size_t off = 0; off < t->bytes.size(); off += (std::size_t{1} << 30)) {
      const std::size_t len = std::min<std::size_t>(t->bytes.size() - off, std::size_t{1} << 30);
      crc = crc32(crc, t->bytes.data() + off, static_cast<uInt>(len));
    }
  }
  return static_cast<std::uint32_t>(crc);
}

template <class = void>
std::uint32_t crc_of(const encoded_tensor& e) {
  std::map<std::string, const raw_tensor*> parts;
  for (const auto& [name, t] : e.parts) parts.emplace(name, &t);
  return crc_of(parts);
}

/// The encoder of one explicit encoding; nothing when the values do not fit it exactly.
template <class = void>
std::optional<encoded_tensor> encode_as(const std::string& name, const shape_t& shape, const float* w, tensor_encoding enc,
                                               const tensor_encode_options& o, int index_bits) {
  const std::uint64_t n = static_cast<std::uint64_t>(shape_size(shape));
  const std::int64_t rows = shape.empty() ? 1 : (shape[0] == 0 ? 0 : shape[0]);
  const std::int64_t cols = rows == 0 ? 0 : static_cast<std::int64_t>(n) / rows;
  std::vector<std::uint64_t> positions;
  std::vector<float> nonzero;
  for (std::uint64_t i = 0; i < n; ++i) {
    if (w[i] != 0.0f) {
      positions.push_back(i);
      nonzero.push_back(w[i]);
    }
  }
  encoded_tensor e = start(shape, enc, positions.size());
  switch (enc) {
    case tensor_encoding::automatic: return std::nullopt;
    case tensor_encoding::dense_f32:
    case tensor_encoding::dense_f16:
    case tensor_encoding::dense_bf16: {
      raw_tensor t;
      t.shape = shape;
      if (enc == tensor_encoding::dense_f32) {
        t.type = dtype::f32;
        t.bytes.resize(n * 4);
        if (n) std::memcpy(t.bytes.data(), w, n * 4);
      } else {
        t.type = enc == tensor_encoding::dense_f16 ? dtype::f16 : dtype::bf16;
        t.bytes.resize(n * 2);
        for (std::uint64_t i = 0; i < n; ++i) {
          const std::uint16_t h = enc == tensor_encoding::dense_f16 ? float_to_f16(w[i]) : float_to_bf16(w[i]);
          t.bytes[2 * i] = static_cast<std::uint8_t>(h & 0xff);
          t.bytes[2 * i + 1] = static_cast<std::uint8_t>(h >> 8);
        }
      }
      e.parts[name] = std::move(t);
      break;
    }
    case tensor_encoding::sparse:
    case tensor_encoding::sparse_codebook: {
      add_stream(e, name, "indices", encoding::encode_relative_indices(positions, index_bits), index_bits, o.huffman);
      if (enc == tensor_encoding::sparse) {
        e.parts[name + ".values"] = float_tensor(nonzero);
      } else {
        auto cb = encoding::encode_codebook(nonzero.data(), nonzero.size(), o.max_codebook_bits);
        if (!cb) return std::nullopt;
        e.parts[name + ".codebook"] = float_tensor(cb->centroids);
        add_stream(e, name, "codes", cb->indices, cb->bits, o.huffman);
      }
      break;
    }
    case tensor_encoding::codebook: {
      auto cb = encoding::encode_codebook(w, n, o.max_codebook_bits);
      if (!cb) return std::nullopt;
      e.parts[name + ".codebook"] = float_tensor(cb->centroids);
      add_stream(e, name, "codes", cb->indices, cb->bits, o.huffman);
      break;
    }
    case tensor_encoding::fixed_point: {
      auto fp = encoding::encode_fixed_point(w, n, o.max_fixed_point_bits);
      if (!fp) return std::nullopt;
      e.descriptor["fixed_point"] = {{"integer_bits", fp->integer_bits}, {"fraction_bits", fp->fraction_bits}};
      add_stream(e, name, "codes", fp->codes, fp->bits(), o.huffman);
      break;
    }
    case tensor_encoding::int8_rows: {
      auto q = encoding::encode_int8_rows(w, rows, cols);
      if (!q) return std::nullopt;
      e.parts[name + ".scales"] = float_tensor(q->scales);
      add_stream(e, name, "codes", q->codes, 8, o.huffman);
      break;
    }
    case tensor_encoding::sign_bits: {
      auto s = encoding::encode_sign_bits(w, rows, cols);
      if (!s) return std::nullopt;
      e.parts[name + ".scales"] = float_tensor(s->alphas);
      add_stream(e, name, "codes", s->bits, 1, huffman_mode::never);
      break;
    }
  }
  return e;
}

inline bool exact_in_half(const float* w, std::uint64_t n, bool bf16) {
  for (std::uint64_t i = 0; i < n; ++i) {
    const float back = bf16 ? bf16_to_float(float_to_bf16(w[i])) : f16_to_float(float_to_f16(w[i]));
    if (std::memcmp(&back, &w[i], 4) != 0) return false;
  }
  return true;
}

}  // namespace detail

/// Encodes tensor `name` (values `w` of shape `shape`, row-major) as `o` asks: an explicit encoding,
/// or (automatic) the one with the fewest bytes among those that hold the values exactly.
template <class = void>
encoded_tensor encode_tensor(const std::string& name, const shape_t& shape, const float* w, const tensor_encode_options& o = {}) {
  constexpr const char* fn = "slimnet::io::encode_tensor";
  o.validate();
  const std::uint64_t n = static_cast<std::uint64_t>(shape_size(shape, fn));
  std::optional<encoded_tensor> best;
  auto consider = [&](tensor_encoding enc, int bits) {
    auto e = detail::encode_as(name, shape, w, enc, o, bits);
    if (e && (!best || detail::parts_bytes(*e) < detail::parts_bytes(*best))) best = std::move(e);
  };
  auto consider_sparse = [&](tensor_encoding enc) {
    if (o.index_bits != 0) {
      consider(enc, o.index_bits);
    } else {
      consider(enc, 4);
      consider(enc, 8);
    }
  };
  if (o.encoding == tensor_encoding::automatic) {
    consider(tensor_encoding::dense_f32, 0);
    if (detail::exact_in_half(w, n, true)) consider(tensor_encoding::dense_bf16, 0);
    if (detail::exact_in_half(w, n, false)) consider(tensor_encoding::dense_f16, 0);
    consider(tensor_encoding::sign_bits, 0);
    consider(tensor_encoding::fixed_point, 0);
    consider(tensor_encoding::codebook, 0);
    consider(tensor_encoding::int8_rows, 0);
    consider_sparse(tensor_encoding::sparse);
    consider_sparse(tensor_encoding::sparse_codebook);
  } else if (o.encoding == tensor_encoding::sparse || o.encoding == tensor_encoding::sparse_codebook) {
    consider_sparse(o.encoding);
  } else {
    consider(o.encoding, 0);
  }
  if (!best) {
    slimnet::detail::raise<config_error>(fn, "tensor '{}' of shape {} cannot be stored exactly as {} (too many distinct values, "
                                             "not +-alpha per row, or not on an integer grid)", name, shape_string(shape), encoding_name(o.encoding));
  }
  best->descriptor["crc32"] = detail::crc_of(*best);
  return std::move(*best);
}

namespace detail {

/// Reads what the decoder needs from a file, reporting every problem as io_error naming the tensor.
/// A JSON non-negative integer (nlohmann stores signed values written from signed types).
template <class = void>
bool is_count(const nlohmann::json& j) { return j.is_number_unsigned() || (j.is_number_integer() && j.get<std::int64_t>() >= 0); }

class part_reader {
 public:
  part_reader(const std::string& name, const nlohmann::json& d, const raw_file& file, std::set<std::string>* used)
      : name_(name), d_(d), file_(file), used_(used) {}

  [[noreturn]] void fail(const std::string& message) const {
    slimnet::detail::raise<io_error>("slimnet::io::decode_tensor", "tensor '{}' ({}): {}", name_, encoding_, message);
  }
  void set_encoding(std::string e) { encoding_ = std::move(e); }

  const nlohmann::json& field(const char* key) const {
    if (!d_.contains(key)) fail(fmt::format("the descriptor has no '{}'", key));
    return d_[key];
  }
  std::uint64_t unsigned_field(const nlohmann::json& j, const char* key) const {
    if (!j.is_object() || !j.contains(key) || !is_count(j[key])) fail(fmt::format("'{}' is missing or not a non-negative integer", key));
    return j[key].get<std::uint64_t>();
  }

  const raw_tensor& part(const std::string& suffix, dtype type) const {
    const std::string full = suffix.empty() ? name_ : name_ + "." + suffix;
    const auto it = file_.tensors.find(full);
    if (it == file_.tensors.end()) fail(fmt::format("its part '{}' is missing", full));
    if (it->second.type != type) fail(fmt::format("part '{}' has dtype {}, expected {}", full, dtype_name(it->second.type), dtype_name(type)));
    if (suffix.empty() ? false : it->second.shape.size() != 1) fail(fmt::format("part '{}' has shape {}, expected one dimension", full, shape_string(it->second.shape)));
    if (used_) used_->insert(full);
    read_.emplace(full, &it->second);
    return it->second;
  }

  std::vector<float> floats(const std::string& suffix, std::uint64_t count) const {
    const raw_tensor& t = part(suffix, dtype::f32);
    if (t.bytes.size() != count * 4) fail(fmt::format("part '{}.{}' holds {} floats, expected {}", name_, suffix, t.bytes.size() / 4, count));
    std::vector<float> v(count);
    if (count) std::memcpy(v.data(), t.bytes.data(), count * 4);
    return v;
  }

  /// Stream `key` with `count` symbols (nothing checked against "count" when count is null: the
  /// relative index stream, whose length the file states, bounded by `max_count`).
  std::vector<std::uint32_t> stream(const std::string& key, std::optional<std::uint64_t> count, std::uint64_t max_count, int min_bits,
                                    int max_bits) const {
    const nlohmann::json& s = field(key.c_str());
    const std::uint64_t bits = unsigned_field(s, "bits"), stated = unsigned_field(s, "count");
    if (!s.contains("huffman") || !s["huffman"].is_boolean()) fail(fmt::format("stream '{}' does not say whether it is Huffman coded", key));
    if (bits < static_cast<std::uint64_t>(min_bits) || bits > static_cast<std::uint64_t>(max_bits)) {
      fail(fmt::format("stream '{}' has {}-bit symbols, expected {} to {}", key, bits, min_bits, max_bits));
    }
    if (count && stated != *count) fail(fmt::format("stream '{}' states {} symbols, the tensor needs {}", key, stated, *count));
    if (stated > max_count) fail(fmt::format("stream '{}' states {} symbols, more than the {} possible", key, stated, max_count));
    const raw_tensor& bytes = part(key, dtype::u8);
    const std::string what = fmt::format("tensor '{}' ({}) stream '{}'", name_, encoding_, key);
    if (s["huffman"].get<bool>()) {
      const raw_tensor& table = part(key + ".huffman", dtype::u8);
      return encoding::huffman_decode(table.bytes, bytes.bytes, stated, std::size_t{1} << bits, what);
    }
    return encoding::unpack_bits(bytes.bytes, static_cast<int>(bits), stated, what);
  }

  const std::map<std::string, const raw_tensor*>& parts_read() const { return read_; }
  int bits_of(const std::string& key) const { return static_cast<int>(unsigned_field(field(key.c_str()), "bits")); }

 private:
  std::string name_;
  const nlohmann::json& d_;
  const raw_file& file_;
  std::set<std::string>* used_;
  std::string encoding_ = "?";
  mutable std::map<std::string, const raw_tensor*> read_;
};

}  // namespace detail

/// Decodes tensor `name` described by `d` from `file`; adds the names of the parts it read to
/// *used. Every inconsistency (missing or mistyped part, lengths that disagree, an index outside
/// the matrix or the codebook, a Huffman table that is no prefix code or a stream that does not
/// decode, a checksum mismatch) is an io_error naming the tensor and the problem.
template <class = void>
tensor<float> decode_tensor(const std::string& name, const nlohmann::json& d, const raw_file& file, std::set<std::string>* used = nullptr,
                                   const decode_limits& limits = {}) {
  detail::part_reader r(name, d, file, used);
  if (!d.is_object()) r.fail("the descriptor is not an object");
  const nlohmann::json& enc_j = r.field("encoding");
  if (!enc_j.is_string()) r.fail("'encoding' is not a string");
  const auto enc = parse_encoding(enc_j.get<std::string>());
  if (!enc || *enc == tensor_encoding::automatic) r.fail(fmt::format("unknown encoding '{}'", enc_j.get<std::string>()));
  r.set_encoding(encoding_name(*enc));
  const nlohmann::json& shape_j = r.field("shape");
  if (!shape_j.is_array() || shape_j.size() > 8) r.fail("'shape' is not an array of at most 8 dimensions");
  shape_t shape;
  std::uint64_t n = 1;
  for (const auto& dim : shape_j) {
    if (!detail::is_count(dim)) r.fail("'shape' holds a negative or non-integer dimension");
    const auto v = dim.get<std::uint64_t>();
    if (v > limits.max_elements || (v > 0 && n > limits.max_elements / v)) {
      r.fail(fmt::format("shape {} exceeds the limit of {} elements", shape_j.dump(), limits.max_elements));
    }
    n *= v;
    shape.push_back(static_cast<index_t>(v));
  }
  const std::int64_t rows = shape.empty() ? 1 : shape[0];
  const std::int64_t cols = rows == 0 ? 0 : static_cast<std::int64_t>(n) / rows;
  const std::uint64_t nonzeros = r.unsigned_field(d, "nonzeros");
  tensor<float> out(shape);
  float* w = out.data();
  switch (*enc) {
    case tensor_encoding::automatic: break;
    case tensor_encoding::dense_f32: {
      const raw_tensor& t = r.part("", dtype::f32);
      if (t.shape != shape) r.fail(fmt::format("the tensor has shape {}, the descriptor {}", shape_string(t.shape), shape_string(shape)));
      if (n) std::memcpy(w, t.bytes.data(), n * 4);
      break;
    }
    case tensor_encoding::dense_f16:
    case tensor_encoding::dense_bf16: {
      const raw_tensor& t = r.part("", *enc == tensor_encoding::dense_f16 ? dtype::f16 : dtype::bf16);
      if (t.shape != shape) r.fail(fmt::format("the tensor has shape {}, the descriptor {}", shape_string(t.shape), shape_string(shape)));
      for (std::uint64_t i = 0; i < n; ++i) {
        const auto h = static_cast<std::uint16_t>(t.bytes[2 * i] | (t.bytes[2 * i + 1] << 8));
        w[i] = *enc == tensor_encoding::dense_f16 ? f16_to_float(h) : bf16_to_float(h);
      }
      break;
    }
    case tensor_encoding::sparse:
    case tensor_encoding::sparse_codebook: {
      if (nonzeros > n) r.fail(fmt::format("{} nonzeros in {} entries", nonzeros, n));
      const int bits = r.bits_of("indices");
      const auto symbols = r.stream("indices", std::nullopt, n, 1, 16);
      const auto positions = encoding::decode_relative_indices(symbols, bits, n, nonzeros,
                                                               fmt::format("tensor '{}' ({}) stream 'indices'", name, encoding_name(*enc)));
      std::vector<float> values;
      if (*enc == tensor_encoding::sparse) {
        values = r.floats("values", nonzeros);
      } else {
        const raw_tensor& cb = r.part("codebook", dtype::f32);
        const std::uint64_t k = cb.bytes.size() / 4;
        if (k > 65536 || cb.bytes.size() % 4) r.fail(fmt::format("the codebook has {} bytes", cb.bytes.size()));
        const auto centroids = r.floats("codebook", k);
        for (float c : centroids)
          if (c == 0.0f) r.fail("zero is a centroid of a sparse codebook");
        const auto codes = r.stream("codes", nonzeros, n, encoding::codebook_bits(k), 16);
        values.resize(nonzeros);
        encoding::decode_codebook(centroids, codes, values.data(), fmt::format("tensor '{}' (sparse_codebook) stream 'codes'", name));
      }
      std::fill(w, w + n, 0.0f);
      for (std::size_t i = 0; i < positions.size(); ++i) {
        if (values[i] == 0.0f) r.fail(fmt::format("stored value {} is zero", i));
        w[positions[i]] = values[i];
      }
      break;
    }
    case tensor_encoding::codebook: {
      const raw_tensor& cb = r.part("codebook", dtype::f32);
      const std::uint64_t k = cb.bytes.size() / 4;
      if (k > 65536 || cb.bytes.size() % 4) r.fail(fmt::format("the codebook has {} bytes", cb.bytes.size()));
      const auto centroids = r.floats("codebook", k);
      const auto codes = r.stream("codes", n, n, encoding::codebook_bits(k), 16);
      encoding::decode_codebook(centroids, codes, w, fmt::format("tensor '{}' (codebook) stream 'codes'", name));
      break;
    }
    case tensor_encoding::fixed_point: {
      const nlohmann::json& f = r.field("fixed_point");
      if (!f.is_object() || !f.contains("integer_bits") || !f["integer_bits"].is_number_integer()) r.fail("'fixed_point' lacks integer_bits");
      const auto il = f["integer_bits"].get<std::int64_t>();
      const auto fl = static_cast<std::int64_t>(r.unsigned_field(f, "fraction_bits"));
      if (il + fl < 1 || il + fl > 24 || fl > encoding::max_fraction_bits) r.fail(fmt::format("fixed-point format <{}, {}> is not supported", il, fl));
      const auto codes = r.stream("codes", n, n, static_cast<int>(il + fl), static_cast<int>(il + fl));
      encoding::decode_fixed_point(static_cast<int>(il), static_cast<int>(fl), codes, w, name);
      break;
    }
    case tensor_encoding::int8_rows:
    case tensor_encoding::sign_bits: {
      const bool sign = *enc == tensor_encoding::sign_bits;
      const auto scales = r.floats("scales", static_cast<std::uint64_t>(rows));
      const auto codes = r.stream("codes", n, n, sign ? 1 : 8, sign ? 1 : 8);
      const std::string what = fmt::format("tensor '{}' ({})", name, encoding_name(*enc));
      if (sign) {
        encoding::decode_sign_bits(scales, codes, cols, w, what);
      } else {
        encoding::decode_int8_rows(scales, codes, cols, w, what);
      }
      break;
    }
  }
  std::uint64_t nz = 0;
  for (std::uint64_t i = 0; i < n; ++i) nz += w[i] != 0.0f;
  if (nz != nonzeros) r.fail(fmt::format("it decodes to {} nonzeros, the descriptor states {}", nz, nonzeros));
  // The checksum catches what decodes but is not what was written (a flipped index that still
  // points inside the matrix, a changed centroid).
  if (d.contains("crc32") && (!detail::is_count(d["crc32"]) || d["crc32"].get<std::uint64_t>() != detail::crc_of(r.parts_read()))) {
    r.fail("its bytes do not match the CRC-32 the file records (the file is corrupt)");
  }
  return out;
}

/// Bytes of an encoded tensor by role, from its descriptor and the file's parts; `stored` gives the
/// size in the file of parts the reader widened (packed_layout.hpp's nibble tables).
template <class = void>
tensor_bytes encoded_bytes(const std::string& name, const raw_file& file, const std::map<std::string, std::uint64_t>* stored = nullptr) {
  tensor_bytes b;
  auto size_of = [&](const std::string& n) -> std::uint64_t {
    if (stored) {
      const auto s = stored->find(n);
      if (s != stored->end()) return s->second;
    }
    const auto it = file.tensors.find(n);
    return it == file.tensors.end() ? 0 : it->second.bytes.size();
  };
  b.values = size_of(name) + size_of(name + ".values") + size_of(name + ".scales");
  b.indices = size_of(name + ".indices");
  b.codebook = size_of(name + ".codebook");
  b.huffman = size_of(name + ".indices.huffman") + size_of(name + ".codes.huffman");
  const auto codes = size_of(name + ".codes");
  if (file.tensors.count(name + ".codebook")) {
    b.indices += codes;
  } else {
    b.values += codes;
  }
  return b;
}

}  // namespace slimnet::io
