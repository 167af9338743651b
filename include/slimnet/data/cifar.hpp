// CIFAR-10 binary format: records of 1 label byte + 3072 pixel bytes (3 x 32 x 32, channel-major).
#pragma once

#include <filesystem>
#include <new>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/data/byte_source.hpp"
#include "slimnet/data/dataset.hpp"
#include "slimnet/data/idx.hpp"

namespace slimnet::data {

inline constexpr index_t cifar10_record_bytes = 1 + 3 * 32 * 32;

/// Reads one or more CIFAR-10 binary batch files (data_batch_1.bin ... , test_batch.bin; plain or
/// .gz) into inputs (N, 3, 32, 32) scaled to [0, 1] and labels in [0, 10). Throws config_error for
/// an empty file list and io_error for a file that is not a regular file, is not a positive
/// multiple of the record size, holds a label outside [0, 10), or is a corrupt gzip stream.
template <class Scalar = float>
dataset<Scalar> load_cifar10_bin(const std::vector<std::filesystem::path>& files) {
  constexpr const char* fn = "slimnet::data::load_cifar10_bin";
  if (files.empty()) slimnet::detail::raise<config_error>(fn, "no files given: a CIFAR-10 dataset needs at least one batch file");
  std::vector<std::vector<std::uint8_t>> contents;
  index_t total = 0;
  try {
    for (const auto& path : files) {
      detail::byte_source src(path, fn);
      // A plain file's size is known: refuse a wrong one before reading it. A gzip stream may
      // expand up to the deflate bound only; the buffer grows with what it really holds.
      if (!src.gzip() && (src.file_size() == 0 || src.file_size() % cifar10_record_bytes != 0)) {
        slimnet::detail::raise<io_error>(fn, "'{}' has {} bytes, not a positive multiple of the {}-byte record",
                                         path.string(), src.file_size(), cifar10_record_bytes);
      }
      contents.push_back(src.read_rest(src.max_bytes()));
      const auto bytes = static_cast<index_t>(contents.back().size());
      if (bytes == 0 || bytes % cifar10_record_bytes != 0) {
        slimnet::detail::raise<io_error>(fn, "'{}' has {} bytes, not a positive multiple of the {}-byte record",
                                         path.string(), bytes, cifar10_record_bytes);
      }
      total += bytes / cifar10_record_bytes;
    }
  } catch (const std::bad_alloc&) {
    slimnet::detail::raise<io_error>(fn, "not enough memory to read {} CIFAR-10 file(s) ({} records read)", files.size(), total);
  }
  dataset<Scalar> d;
  d.num_classes = 10;
  d.inputs.resize({total, 3, 32, 32});
  d.labels.resize(static_cast<std::size_t>(total));
  index_t k = 0;
  for (std::size_t f = 0; f < contents.size(); ++f) {
    const auto& raw = contents[f];
    for (std::size_t off = 0; off < raw.size(); off += cifar10_record_bytes, ++k) {
      if (raw[off] > 9) {
        slimnet::detail::raise<io_error>(fn, "'{}': record {} has label {}, outside [0, 10)", files[f].string(),
                                         off / cifar10_record_bytes, raw[off]);
      }
      d.labels[static_cast<std::size_t>(k)] = raw[off];
      Scalar* dst = d.inputs.data() + k * (cifar10_record_bytes - 1);
      for (index_t j = 0; j < cifar10_record_bytes - 1; ++j) dst[j] = static_cast<Scalar>(raw[off + 1 + j] / 255.0);
    }
  }
  return d;
}

/// Loads <dir>/data_batch_{1..5}.bin as train and <dir>/test_batch.bin as test.
template <class Scalar = float>
split<Scalar> load_cifar10_dir(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> train;
  for (int i = 1; i <= 5; ++i) train.push_back(dir / ("data_batch_" + std::to_string(i) + ".bin"));
  return {load_cifar10_bin<Scalar>(train), load_cifar10_bin<Scalar>({dir / "test_batch.bin"})};
}

}  // namespace slimnet::data
