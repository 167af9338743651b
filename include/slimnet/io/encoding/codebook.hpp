// Weight sharing as stored (Deep Compression, Han et al. 2016, sec. 3): a table of K centroids and
// one k-bit index per weight, k = ceil(log2 K) (at least 1), w_i = centroid[index_i]. The file
// records the weights a trained codebook produced, so the centroids are exactly the distinct
// values (compared as bit patterns, so the decode is bitwise exact), sorted ascending; when the
// weights are also pruned only the nonzeros are indexed (relative_index.hpp) and zero is not a
// centroid. Storage: K floats + ceil(n k / 8) bytes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"

namespace slimnet::io::encoding {

struct codebook_code {
  std::vector<float> centroids;
  std::vector<std::uint32_t> indices;
  int bits = 1;
};

/// Index width for K centroids: ceil(log2 K), at least 1.
inline int codebook_bits(std::size_t k) {
  int bits = 1;
  while ((std::size_t{1} << bits) < k) ++bits;
  return bits;
}

/// The codebook of `values` (n of them), or nothing when they hold more than 2^max_bits distinct values.
inline std::optional<codebook_code> encode_codebook(const float* values, std::size_t n, int max_bits = 8) {
  std::vector<std::uint32_t> pattern(n);
  if (n > 0) std::memcpy(pattern.data(), values, n * sizeof(float));  // an empty tensor may have values == nullptr
  std::vector<std::uint32_t> distinct = pattern;
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  if (distinct.size() > (std::size_t{1} << max_bits)) return std::nullopt;
  codebook_code c;
  for (auto p : distinct) {
    float v;
    std::memcpy(&v, &p, 4);
    c.centroids.push_back(v);
  }
  // Ascending by value (the bit-pattern order puts negatives after positives); stable for ties
  // such as 0.0 / -0.0 so the order is deterministic.
  std::vector<std::size_t> order(distinct.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return c.centroids[a] < c.centroids[b]; });
  std::vector<float> sorted(order.size());
  std::vector<std::uint32_t> sorted_pattern(order.size());
  for (std::size_t i = 0; i < order.size(); ++i) {
    sorted[i] = c.centroids[order[i]];
    sorted_pattern[i] = distinct[order[i]];
  }
  c.centroids = std::move(sorted);
  std::vector<std::pair<std::uint32_t, std::uint32_t>> lookup;  // pattern -> index
  for (std::size_t i = 0; i < sorted_pattern.size(); ++i) lookup.emplace_back(sorted_pattern[i], static_cast<std::uint32_t>(i));
  std::sort(lookup.begin(), lookup.end());
  c.indices.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto it = std::lower_bound(lookup.begin(), lookup.end(), std::make_pair(pattern[i], std::uint32_t{0}));
    c.indices[i] = it->second;
  }
  c.bits = codebook_bits(c.centroids.size());
  return c;
}

/// Writes centroid[index_i] to out[i]; io_error naming `what` on an index past the table.
inline void decode_codebook(const std::vector<float>& centroids, const std::vector<std::uint32_t>& indices, float* out,
                            const std::string& what) {
  for (std::size_t i = 0; i < indices.size(); ++i) {
    if (indices[i] >= centroids.size()) {
      slimnet::detail::raise<io_error>("slimnet::io::encoding::decode_codebook", "{}: index {} = {} is outside the {} centroids", what, i,
                                       indices[i], centroids.size());
    }
    out[i] = centroids[indices[i]];
  }
}

}  // namespace slimnet::io::encoding
