// IDX files (LeCun's MNIST format, also Fashion-MNIST), plain or gzip-compressed, via zlib.
// Layout: 0x00 0x00 <type> <rank>, rank big-endian uint32 dimensions, then the data big-endian.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <new>
#include <string>
#include <vector>

#include <zlib.h>

#include "slimnet/core/checked.hpp"
#include "slimnet/core/error.hpp"
#include "slimnet/core/file.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/data/byte_source.hpp"
#include "slimnet/data/dataset.hpp"

// Functions of this header that are not templates by nature are written `template <class = void>`
// (called as before: the parameter is never named) so that a translation unit that includes the
// header without calling them does not compile them (a non-template inline body, with the fmt,
// file and parsing code it instantiates, is compiled in every unit that includes it).

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

/// Reads an IDX file (plain or .gz). Throws io_error, naming the file, when it is not a regular
/// file, on a wrong magic number, an unknown type, dimensions whose byte count overflows, a
/// payload shorter or longer than the product of the dimensions (trailing data included), or a
/// corrupt gzip stream. The declared size is checked against what the file can hold before any
/// allocation, and a gzip stream is inflated only up to the declared size plus one byte.
template <class = void>
idx_array read_idx(const std::filesystem::path& path) {
  constexpr const char* fn = "slimnet::data::read_idx";
  detail::byte_source src(path, fn);
  std::uint8_t head[4 + 4 * 255];
  const std::size_t got = src.read(head, 4);
  if (got < 4) slimnet::detail::raise<io_error>(fn, "'{}' has {} bytes, too short for an IDX header", path.string(), got);
  if (head[0] != 0 || head[1] != 0) {
    slimnet::detail::raise<io_error>(fn, "'{}' has magic bytes 0x{:02x} 0x{:02x}, expected 0x00 0x00", path.string(), head[0], head[1]);
  }
  idx_array a;
  a.type = static_cast<idx_type>(head[2]);
  if (idx_type_size(a.type) == 0) slimnet::detail::raise<io_error>(fn, "'{}' has unknown element type 0x{:02x}", path.string(), head[2]);
  const std::size_t rank = head[3];
  const std::size_t header = 4 + 4 * rank;
  const std::size_t dims_read = rank == 0 ? 0 : src.read(head + 4, 4 * rank);
  if (rank == 0 || dims_read < 4 * rank) {
    slimnet::detail::raise<io_error>(fn, "'{}' is truncated in its header (rank {}, {} bytes)", path.string(), rank, 4 + dims_read);
  }
  std::vector<std::uint32_t> written(rank);
  for (std::size_t d = 0; d < rank; ++d) {
    const std::uint8_t* p = head + 4 + 4 * d;
    written[d] = (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3]);
  }
  // Up to 255 dimensions of up to 2^32 - 1 each: the element and byte counts are checked
  // products, so a header whose product wraps to a small number is refused here.
  const std::string what = fmt::format("'{}' declares dimensions", path.string());
  const index_t count = checked_product<io_error, index_t>(written, fn, what.c_str());
  const index_t expected = checked_mul<io_error>(count, static_cast<index_t>(idx_type_size(a.type)), fn, "payload bytes");
  a.dims.assign(written.begin(), written.end());
  const auto need = static_cast<std::uint64_t>(expected);
  if (!src.gzip() && src.file_size() != header + need) {
    slimnet::detail::raise<io_error>(fn, "'{}' holds {} data bytes but its dimensions {} need {}", path.string(),
                                     src.file_size() - std::min<std::uint64_t>(src.file_size(), header), shape_string(a.dims), need);
  }
  if (src.gzip() && need > src.max_bytes()) {
    slimnet::detail::raise<io_error>(fn, "'{}' declares dimensions {} ({} data bytes), more than its {} compressed bytes can hold",
                                     path.string(), shape_string(a.dims), need, src.file_size());
  }
  try {
    // Grows with the data actually read: a gzip stream that ends early costs what it held.
    const std::size_t chunk = std::size_t{1} << 20;
    std::size_t have = 0;
    while (have < need) {
      const std::size_t step = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, need - have));
      a.bytes.resize(have + step);
      const std::size_t n = src.read(a.bytes.data() + have, step);
      have += n;
      if (n < step) {
        slimnet::detail::raise<io_error>(fn, "'{}' holds {} data bytes but its dimensions {} need {}", path.string(), have,
                                         shape_string(a.dims), need);
      }
    }
  } catch (const std::bad_alloc&) {
    slimnet::detail::raise<io_error>(fn, "not enough memory for the {} data bytes of '{}'", need, path.string());
  }
  if (!src.at_end()) {
    slimnet::detail::raise<io_error>(fn, "'{}' holds more than the {} data bytes its dimensions {} need (trailing data)",
                                     path.string(), need, shape_string(a.dims));
  }
  return a;
}

/// Writes unsigned-byte data as an IDX file (uncompressed), atomically: a unique temporary file,
/// fsynced and renamed over `path`, removed on failure (see slimnet::detail::write_file_atomically).
template <class = void>
void write_idx_u8(const std::filesystem::path& path, const std::vector<index_t>& dims, const std::vector<std::uint8_t>& data) {
  constexpr const char* fn = "slimnet::data::write_idx_u8";
  if (dims.empty() || dims.size() > 255) {
    slimnet::detail::raise<shape_error>(fn, "IDX files hold 1 to 255 dimensions, got {}", shape_string(dims));
  }
  for (index_t d : dims) {
    if (d < 0 || d > index_t{0xFFFFFFFF}) {
      slimnet::detail::raise<shape_error>(fn, "dimension {} of {} does not fit IDX's unsigned 32 bits", d, shape_string(dims));
    }
  }
  if (static_cast<std::size_t>(shape_size(dims, fn)) != data.size()) {
    slimnet::detail::raise<shape_error>(fn, "{} bytes do not match dimensions {}", data.size(), shape_string(dims));
  }
  std::vector<std::uint8_t> header = {0, 0, static_cast<std::uint8_t>(idx_type::u8), static_cast<std::uint8_t>(dims.size())};
  for (index_t d : dims) {
    const auto v = static_cast<std::uint32_t>(d);
    header.insert(header.end(), {std::uint8_t(v >> 24), std::uint8_t(v >> 16), std::uint8_t(v >> 8), std::uint8_t(v)});
  }
  slimnet::detail::write_file_atomically(path, fn, [&](slimnet::detail::file_sink& out) {
    out.write(header.data(), header.size());
    out.write(data.data(), data.size());
  });
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
      std::error_code ec;  // the non-throwing overload: an unreadable folder is reported below
      if (std::filesystem::exists(candidate, ec)) return candidate;
    }
    slimnet::detail::raise<io_error>("slimnet::data::load_mnist_dir", "'{}' has no {} or {}.gz", dir.string(), stem, stem);
  };
  return {load_idx_pair<Scalar>(find("train-images-idx3-ubyte"), find("train-labels-idx1-ubyte")),
          load_idx_pair<Scalar>(find("t10k-images-idx3-ubyte"), find("t10k-labels-idx1-ubyte"))};
}

}  // namespace slimnet::data
