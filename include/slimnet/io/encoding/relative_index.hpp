// Relative (delta) indices of the nonzeros of a sparse matrix (Deep Compression, Han et al. 2016,
// sec. 2 and fig. 2): the row-major flattened matrix is walked once, and each nonzero stores the
// number of zeros skipped since the previous one in `bits` bits (4 or 8), instead of an absolute
// column index plus row pointers.
//
// Stream semantics, with a cursor c = 0 (the first position not yet passed) and E = 2^bits - 1:
//   symbol s < E:  a nonzero at position c + s; then c = c + s + 1
//   symbol s = E:  a filler: c = c + E (a gap longer than the symbols can say)
// This is Han et al.'s filler zero with the zero implied by the escape symbol rather than stored
// as a value: the values (or codebook indices) are then the nonzeros only, so zero need not be a
// centroid when the same weights are also clustered, and no filler costs a value's bytes.
// The encoding is unique (gaps are cut greedily; a stream never ends in a filler), and the decoder
// checks every step against the matrix size, so a corrupt stream cannot address outside it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"

namespace slimnet::io::encoding {

/// Symbols for the increasing `positions` (each < size) at `bits` bits per symbol.
inline std::vector<std::uint32_t> encode_relative_indices(const std::vector<std::uint64_t>& positions, int bits) {
  constexpr const char* fn = "slimnet::io::encoding::encode_relative_indices";
  if (bits < 1 || bits > 16) slimnet::detail::raise<config_error>(fn, "bits = {} outside [1, 16]", bits);
  const std::uint64_t escape = (std::uint64_t{1} << bits) - 1;
  std::vector<std::uint32_t> out;
  std::uint64_t cursor = 0;
  for (std::size_t i = 0; i < positions.size(); ++i) {
    if (positions[i] < cursor) slimnet::detail::raise<config_error>(fn, "position {} = {} is not increasing", i, positions[i]);
    std::uint64_t gap = positions[i] - cursor;
    for (; gap >= escape; gap -= escape) out.push_back(static_cast<std::uint32_t>(escape));
    out.push_back(static_cast<std::uint32_t>(gap));
    cursor = positions[i] + 1;
  }
  return out;
}

/// Number of symbols encode_relative_indices emits (for sizing without building the stream).
inline std::uint64_t relative_index_count(const std::vector<std::uint64_t>& positions, int bits) {
  const std::uint64_t escape = (std::uint64_t{1} << bits) - 1;
  std::uint64_t n = 0, cursor = 0;
  for (auto p : positions) {
    n += (p - cursor) / escape + 1;
    cursor = p + 1;
  }
  return n;
}

/// Positions of the nonzeros; io_error naming `what` if a symbol exceeds `bits`, a position falls
/// outside [0, size), the stream ends in a filler, or it holds other than `nonzeros` nonzeros.
inline std::vector<std::uint64_t> decode_relative_indices(const std::vector<std::uint32_t>& symbols, int bits, std::uint64_t size,
                                                          std::uint64_t nonzeros, const std::string& what) {
  constexpr const char* fn = "slimnet::io::encoding::decode_relative_indices";
  if (bits < 1 || bits > 16) slimnet::detail::raise<io_error>(fn, "{}: relative index width {} outside [1, 16]", what, bits);
  if (nonzeros > size) slimnet::detail::raise<io_error>(fn, "{}: {} nonzeros in a matrix of {} entries", what, nonzeros, size);
  const std::uint64_t escape = (std::uint64_t{1} << bits) - 1;
  std::vector<std::uint64_t> positions;
  positions.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(nonzeros, symbols.size())));
  std::uint64_t cursor = 0;
  for (std::size_t i = 0; i < symbols.size(); ++i) {
    const std::uint64_t s = symbols[i];
    if (s > escape) slimnet::detail::raise<io_error>(fn, "{}: relative index {} = {} does not fit {} bits", what, i, s, bits);
    if (s == escape) {
      cursor += escape;
      if (i + 1 == symbols.size()) slimnet::detail::raise<io_error>(fn, "{}: the index stream ends in a filler", what);
      if (cursor >= size) slimnet::detail::raise<io_error>(fn, "{}: filler {} skips to position {}, past the {} entries", what, i, cursor, size);
      continue;
    }
    const std::uint64_t p = cursor + s;
    if (p >= size) slimnet::detail::raise<io_error>(fn, "{}: relative index {} addresses position {}, outside the {} entries", what, i, p, size);
    if (positions.size() == nonzeros) {
      slimnet::detail::raise<io_error>(fn, "{}: the index stream holds more than the {} nonzeros its header states", what, nonzeros);
    }
    positions.push_back(p);
    cursor = p + 1;
  }
  if (positions.size() != nonzeros) {
    slimnet::detail::raise<io_error>(fn, "{}: the index stream holds {} nonzeros, its header states {}", what, positions.size(), nonzeros);
  }
  return positions;
}

}  // namespace slimnet::io::encoding
