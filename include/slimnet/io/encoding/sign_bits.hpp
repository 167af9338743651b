// Binarized weights (BinaryConnect / BNN / XNOR-Net: W_eff row j = alpha_j sign(W_j)) as one sign
// bit per weight and one float alpha per row. Bit convention as kernels/bitpack.hpp and Larq:
// bit 1 = -alpha, bit 0 = +alpha, packed with bit_pack.hpp. Taken only when every weight of row j
// has the magnitude alpha_j > 0 (then the decode is exact). Storage: n / 8 bytes + 4 per row.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"

namespace slimnet::io::encoding {

struct sign_bits_code {
  std::vector<float> alphas;        ///< alpha_j, one per row
  std::vector<std::uint32_t> bits;  ///< 1 = negative, row-major
};

inline std::optional<sign_bits_code> encode_sign_bits(const float* w, std::int64_t rows, std::int64_t cols) {
  sign_bits_code c;
  c.alphas.resize(static_cast<std::size_t>(rows));
  c.bits.resize(static_cast<std::size_t>(rows * cols));
  for (std::int64_t j = 0; j < rows; ++j) {
    const float alpha = cols > 0 ? std::abs(w[j * cols]) : 1.0f;
    if (!(alpha > 0) || !std::isfinite(alpha)) return std::nullopt;
    for (std::int64_t k = 0; k < cols; ++k) {
      const float v = w[j * cols + k];
      if (std::abs(v) != alpha) return std::nullopt;
      c.bits[static_cast<std::size_t>(j * cols + k)] = v < 0 ? 1u : 0u;
    }
    c.alphas[static_cast<std::size_t>(j)] = alpha;
  }
  return c;
}

/// out = bit ? -alpha_j : alpha_j; io_error naming `what` on an alpha that is not positive and finite.
inline void decode_sign_bits(const std::vector<float>& alphas, const std::vector<std::uint32_t>& bits, std::int64_t cols, float* out,
                             const std::string& what) {
  for (std::size_t j = 0; j < alphas.size(); ++j) {
    if (!(alphas[j] > 0) || !std::isfinite(alphas[j])) {
      slimnet::detail::raise<io_error>("slimnet::io::encoding::decode_sign_bits", "{}: alpha {} of row {} is not positive", what, alphas[j], j);
    }
    for (std::int64_t k = 0; k < cols; ++k) {
      const std::size_t i = j * static_cast<std::size_t>(cols) + static_cast<std::size_t>(k);
      out[i] = bits[i] ? -alphas[j] : alphas[j];
    }
  }
}

}  // namespace slimnet::io::encoding
