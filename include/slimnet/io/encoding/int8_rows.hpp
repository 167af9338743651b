// int8 weights with one scale per output row: w_jk = s_j q_jk, q_jk in [-127, 127] (the layout of
// nn::compressed::int8_engine). The file stores what the model computes with, so this encoding
// is taken only when the weights already are such codes: for each row the encoder tries
// s_j = max_k |w_jk| / q_max (q_max = 127, 126, ..., 1, in float) and keeps the first s_j for which
// float(round(w / s_j)) * s_j reproduces every weight of the row exactly; the decoder evaluates the
// same float product. Storage: one byte per weight and one float per row.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"

namespace slimnet::io::encoding {

struct int8_rows_code {
  std::vector<float> scales;         ///< s_j, one per row
  std::vector<std::uint32_t> codes;  ///< q_jk as 8-bit two's complement, row-major
};

inline std::optional<int8_rows_code> encode_int8_rows(const float* w, std::int64_t rows, std::int64_t cols) {
  int8_rows_code c;
  c.scales.resize(static_cast<std::size_t>(rows));
  c.codes.resize(static_cast<std::size_t>(rows * cols));
  for (std::int64_t j = 0; j < rows; ++j) {
    const float* row = w + j * cols;
    float m = 0;
    for (std::int64_t k = 0; k < cols; ++k) {
      if (!std::isfinite(row[k])) return std::nullopt;
      m = std::max(m, std::abs(row[k]));
    }
    float scale = 1;
    bool found = m == 0;
    for (int q_max = 127; !found && q_max >= 1; --q_max) {
      const float s = m / static_cast<float>(q_max);
      if (!(s > 0)) break;
      bool ok = true;
      for (std::int64_t k = 0; k < cols && ok; ++k) {
        const float q = std::nearbyint(row[k] / s);
        ok = std::abs(q) <= 127 && q * s == row[k];
      }
      if (ok) {
        scale = s;
        found = true;
      }
    }
    if (!found) return std::nullopt;
    c.scales[static_cast<std::size_t>(j)] = scale;
    for (std::int64_t k = 0; k < cols; ++k) {
      const auto q = static_cast<std::int32_t>(std::nearbyint(row[k] / scale));
      c.codes[static_cast<std::size_t>(j * cols + k)] = static_cast<std::uint32_t>(q) & 0xffu;
    }
  }
  return c;
}

/// out = s_j q_jk; io_error naming `what` on a code of -128 (outside the symmetric range) or a scale
/// that is not positive and finite.
inline void decode_int8_rows(const std::vector<float>& scales, const std::vector<std::uint32_t>& codes, std::int64_t cols, float* out,
                             const std::string& what) {
  constexpr const char* fn = "slimnet::io::encoding::decode_int8_rows";
  for (std::size_t j = 0; j < scales.size(); ++j) {
    if (!(scales[j] > 0) || !std::isfinite(scales[j])) slimnet::detail::raise<io_error>(fn, "{}: scale {} of row {} is not positive", what, scales[j], j);
    for (std::int64_t k = 0; k < cols; ++k) {
      const std::size_t i = j * static_cast<std::size_t>(cols) + static_cast<std::size_t>(k);
      const std::int32_t q = codes[i] >= 128 ? static_cast<std::int32_t>(codes[i]) - 256 : static_cast<std::int32_t>(codes[i]);
      if (q < -127) slimnet::detail::raise<io_error>(fn, "{}: code {} of row {} is -128, outside [-127, 127]", what, k, j);
      out[i] = static_cast<float>(q) * scales[j];
    }
  }
}

}  // namespace slimnet::io::encoding
