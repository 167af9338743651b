// IDX files (LeCun's MNIST format, also Fashion-MNIST), plain or gzip-compressed, via zlib.
// Layout: 0x00 0x00 <type> <rank>, rank big-endian uint32 dimensions, then the data big-endian.
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <zlib.h>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/data/dataset.hpp"

namespace slimnet::data {

/// Element types of the IDX format.
enum class idx_type : std::uint8_t { u8 = 0x08, i8 = 0x09, i16 = 0x0B, i32 = 0x0C, f32 = 0x0D, f64 = 0x0E };

inline std::size_t idx_type_size(idx_type t) {
  switch (t) {
    case idx_type::u8:
    case idx_type::i8: return 1;
    case idx_type::i16: return 2;
    case idx_type::i32:
    case idx_type::f32: return 4;
    case idx_type::f64: return 8;
  }
  return 0;
}

/// An IDX file's contents: element type, dimensions, and the raw payload in file (big-endian) order.
struct idx_array {
  idx_type type = idx_type::u8;
  std::vector<index_t> dims;
  std::vector<std::uint8_t> bytes;

  index_t count() const { return shape_size(dims); }

  /// Element i converted to double.
  double at(index_t i) const {
    const std::uint8_t* p = bytes.data() + static_cast<std::size_t>(i) * idx_type_size(type);
    auto be = [p](int n) {
      std::uint64_t v = 0;
      for (int k = 0; k < n; ++k) v = (v << 8) | p[k];
      return v;
    };
    switch (type) {
      case idx_type::u8: return p[0];
      case idx_type::i8: return static_cast<std::int8_t>(p[0]);
      case idx_type::i16: return static_cast<std::int16_t>(be(2));
      case idx_type::i32: return static_cast<std::int32_t>(be(4));
      case idx_type::f32: {
        const auto bits = static_cast<std::uint32_t>(be(4));
        float f;
        std::memcpy(&f, &bits, 4);
        return f;
      }
      case idx_type::f64: {
        const std::uint64_t bits = be(8);
        double d;
        std::memcpy(&d, &bits, 8);
        return d;
      }
    }
    return 0;
  }
};

namespace detail {

/// Reads a whole file through zlib (gzread passes plain files through unchanged).
inline std::vector<std::uint8_t> read_maybe_gz(const std::filesystem::path& path, const char* function) {
  if (!std::filesystem::is_regular_file(path)) slimnet::detail::raise<io_error>(function, "no such file: '{}'", path.string());
  gzFile f = gzopen(path.string().c_str(), "rb");
  if (f == nullptr) slimnet::detail::raise<io_error>(function, "cannot open '{}'", path.string());
  std::vector<std::uint8_t> out;
  std::uint8_t buf[1 << 16];
  for (;;) {
    const int n = gzread(f, buf, sizeof(buf));
    if (n < 0) {
      int code = 0;
      const std::string msg = gzerror(f, &code);
      gzclose(f);
      slimnet::detail::raise<io_error>(function, "'{}' is corrupt: {}", path.string(), msg);
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
  }
  // A truncated .gz stream ends without error from gzread but with Z_BUF_ERROR pending.
  int code = Z_OK;
  gzerror(f, &code);
  gzclose(f);
  if (code != Z_OK && code != Z_STREAM_END) {
    slimnet::detail::raise<io_error>(function, "'{}' is a truncated or corrupt gzip stream (zlib error {})", path.string(), code);
  }
  return out;
}

}  // namespace detail

/// Reads an IDX file (plain or .gz). Throws io_error on a wrong magic number, an unknown type,
/// or a payload whose length differs from the product of the dimensions.
inline idx_array read_idx(const std::filesystem::path& path) {
  constexpr const char* fn = "slimnet::data::read_idx";
  std::vector<std::uint8_t> raw = detail::read_maybe_gz(path, fn);
  if (raw.size() < 4) slimnet::detail::raise<io_error>(fn, "'{}' has {} bytes, too short for an IDX header", path.string(), raw.size());
  if (raw[0] != 0 || raw[1] != 0) {
    slimnet::detail::raise<io_error>(fn, "'{}' has magic bytes 0x{:02x} 0x{:02x}, expected 0x00 0x00", path.string(), raw[0], raw[1]);
  }
  idx_array a;
  a.type = static_cast<idx_type>(raw[2]);
  if (idx_type_size(a.type) == 0) slimnet::detail::raise<io_error>(fn, "'{}' has unknown element type 0x{:02x}", path.string(), raw[2]);
  const std::size_t rank = raw[3];
  const std::size_t header = 4 + 4 * rank;
  if (rank == 0 || raw.size() < header) {
    slimnet::detail::raise<io_error>(fn, "'{}' is truncated in its header (rank {}, {} bytes)", path.string(), rank, raw.size());
  }
  for (std::size_t d = 0; d < rank; ++d) {
    const std::uint8_t* p = raw.data() + 4 + 4 * d;
    a.dims.push_back(static_cast<index_t>((std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) |
                                        (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3])));
  }
  const auto expected = static_cast<std::size_t>(a.count()) * idx_type_size(a.type);
  if (raw.size() - header != expected) {
    slimnet::detail::raise<io_error>(fn, "'{}' holds {} data bytes but its dimensions {} need {}", path.string(),
                                     raw.size() - header, shape_string(a.dims), expected);
  }
  a.bytes.assign(raw.begin() + static_cast<std::ptrdiff_t>(header), raw.end());
  return a;
}

/// Writes unsigned-byte data as an IDX file (uncompressed).
inline void write_idx_u8(const std::filesystem::path& path, const std::vector<index_t>& dims, const std::vector<std::uint8_t>& data) {
  constexpr const char* fn = "slimnet::data::write_idx_u8";
  if (static_cast<std::size_t>(shape_size(dims)) != data.size() || dims.empty() || dims.size() > 255) {
    slimnet::detail::raise<shape_error>(fn, "{} bytes do not match dimensions {}", data.size(), shape_string(dims));
  }
  const std::filesystem::path tmp = path.string() + ".part";
  std::FILE* f = std::fopen(tmp.string().c_str(), "wb");
  if (!f) slimnet::detail::raise<io_error>(fn, "cannot create '{}'", tmp.string());
  std::vector<std::uint8_t> header = {0, 0, static_cast<std::uint8_t>(idx_type::u8), static_cast<std::uint8_t>(dims.size())};
  for (index_t d : dims) {
    const auto v = static_cast<std::uint32_t>(d);
    header.insert(header.end(), {std::uint8_t(v >> 24), std::uint8_t(v >> 16), std::uint8_t(v >> 8), std::uint8_t(v)});
  }
  const bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
                  std::fwrite(data.data(), 1, data.size(), f) == data.size();
  if (std::fclose(f) != 0 || !ok) slimnet::detail::raise<io_error>(fn, "failed writing '{}'", tmp.string());
  std::filesystem::rename(tmp, path);  // never leaves a half-written file under the real name
}

/// Loads an image/label IDX pair as a classification dataset: inputs (N, 1, rows, cols) scaled
/// by `scale` (1/255 maps bytes to [0, 1]), labels checked against num_classes.
template <class Scalar = float>
dataset<Scalar> load_idx_pair(const std::filesystem::path& images, const std::filesystem::path& labels,
                              index_t num_classes = 10, double scale = 1.0 / 255.0) {
  constexpr const char* fn = "slimnet::data::load_idx_pair";
  const idx_array img = read_idx(images);
  const idx_array lab = read_idx(labels);
  if (img.dims.size() != 3) {
    slimnet::detail::raise<io_error>(fn, "'{}' has dimensions {}, expected (N, rows, cols)", images.string(), shape_string(img.dims));
  }
  if (lab.dims.size() != 1) {
    slimnet::detail::raise<io_error>(fn, "'{}' has dimensions {}, expected (N)", labels.string(), shape_string(lab.dims));
  }
  if (lab.dims[0] != img.dims[0]) {
    slimnet::detail::raise<io_error>(fn, "'{}' has {} labels but '{}' has {} images", labels.string(), lab.dims[0],
                                     images.string(), img.dims[0]);
  }
  dataset<Scalar> d;
  d.num_classes = num_classes;
  d.inputs.resize({img.dims[0], 1, img.dims[1], img.dims[2]});
  if (img.type == idx_type::u8) {
    for (index_t i = 0; i < img.count(); ++i) d.inputs[i] = static_cast<Scalar>(img.bytes[static_cast<std::size_t>(i)] * scale);
  } else {
    for (index_t i = 0; i < img.count(); ++i) d.inputs[i] = static_cast<Scalar>(img.at(i) * scale);
  }
  d.labels.resize(static_cast<std::size_t>(lab.dims[0]));
  for (index_t i = 0; i < lab.dims[0]; ++i) {
    const double v = lab.at(i);
    if (v < 0 || v >= static_cast<double>(num_classes) || v != std::floor(v)) {
      slimnet::detail::raise<io_error>(fn, "'{}': label {} of example {} is outside [0, {})", labels.string(), v, i, num_classes);
    }
    d.labels[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(v);
  }
  return d;
}

/// A train/test pair.
template <class Scalar>
struct split {
  dataset<Scalar> train;
  dataset<Scalar> test;
};

/// Loads the four MNIST-style files from `dir` (train-images-idx3-ubyte, train-labels-idx1-ubyte,
/// t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte), each plain or with a .gz suffix. Works for the
/// full MNIST, Fashion-MNIST and slimnet's MNIST subset.
template <class Scalar = float>
split<Scalar> load_mnist_dir(const std::filesystem::path& dir) {
  auto find = [&](const std::string& stem) {
    for (const auto& candidate : {dir / stem, dir / (stem + ".gz")}) {
      if (std::filesystem::exists(candidate)) return candidate;
    }
    slimnet::detail::raise<io_error>("slimnet::data::load_mnist_dir", "'{}' has no {} or {}.gz", dir.string(), stem, stem);
  };
  return {load_idx_pair<Scalar>(find("train-images-idx3-ubyte"), find("train-labels-idx1-ubyte")),
          load_idx_pair<Scalar>(find("t10k-images-idx3-ubyte"), find("t10k-labels-idx1-ubyte"))};
}

}  // namespace slimnet::data
