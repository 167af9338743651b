// Canonical Huffman coding of index streams (Deep Compression, Han et al. 2016, sec. 3: the
// distribution of quantized weight indices and of sparse relative indices is far from uniform,
// and Huffman coding them saves a further 20-30% of the network's storage).
//
// Only the code lengths are stored (one byte per symbol of the alphabet, 0 = unused): the codes
// are canonical (DEFLATE, RFC 1951 sec. 3.2.2), so the decoder rebuilds them. With l_s the length
// of symbol s and N_l the number of codes of length l, symbols are sorted by (l_s, s) and
//   code(first symbol of length l) = (code(first of length l - 1) + N_{l-1}) << 1,
// consecutive within a length. Codes are written most significant bit first into an LSB-first
// bit stream (bit_pack.hpp). A table is a prefix code iff Kraft's sum  sum_s 2^-l_s <= 1; the
// decoder rejects an over-subscribed table, and an incomplete one decodes only codes it assigns.
// Decoding follows zlib's puff.c (one bit at a time, bounded by the longest length), so a corrupt
// stream can only end early or hit an unassigned code, both reported as io_error.
#pragma once

#include <algorithm>
#include <cstdint>
#include <queue>
#include <string>
#include <utility>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/io/encoding/bit_pack.hpp"

namespace slimnet::io::encoding {

/// Longest code the encoder produces and the decoder accepts.
inline constexpr int max_huffman_length = 24;

/// Code lengths of a Huffman code for `freq` (0 = symbol unused), limited to `max_length`: when the
/// optimal tree is deeper, frequencies are halved (rounding up, so no used symbol vanishes) and the
/// tree rebuilt; a single used symbol gets length 1. Ties break by symbol, so the result is deterministic.
inline std::vector<std::uint8_t> huffman_code_lengths(std::vector<std::uint64_t> freq, int max_length = max_huffman_length) {
  const std::size_t a = freq.size();
  std::vector<std::uint8_t> lengths(a, 0);
  std::size_t used = 0;
  for (auto f : freq) used += f > 0;
  if (used == 0) return lengths;
  if (used == 1) {
    for (std::size_t s = 0; s < a; ++s)
      if (freq[s] > 0) lengths[s] = 1;
    return lengths;
  }
  for (;;) {
    // Nodes 0..a-1 are leaves, the rest internal; the heap orders by (weight, node id).
    using item = std::pair<std::uint64_t, std::size_t>;
    std::priority_queue<item, std::vector<item>, std::greater<item>> heap;
    std::vector<std::size_t> parent(a, 0);
    for (std::size_t s = 0; s < a; ++s)
      if (freq[s] > 0) heap.emplace(freq[s], s);
    while (heap.size() > 1) {
      const item x = heap.top();
      heap.pop();
      const item y = heap.top();
      heap.pop();
      const std::size_t node = parent.size();
      parent.push_back(0);
      parent[x.second] = node;
      parent[y.second] = node;
      heap.emplace(x.first + y.first, node);
    }
    const std::size_t root = heap.top().second;
    int deepest = 0;
    for (std::size_t s = 0; s < a; ++s) {
      if (freq[s] == 0) continue;
      int depth = 0;
      for (std::size_t n = s; n != root; n = parent[n]) ++depth;
      lengths[s] = static_cast<std::uint8_t>(std::min(depth, 255));
      deepest = std::max(deepest, depth);
    }
    if (deepest <= max_length) return lengths;
    for (auto& f : freq)
      if (f > 0) f = (f + 1) / 2;
  }
}

namespace detail {

/// Number of codes of each length and the symbols sorted by (length, symbol); validates the table.
struct canonical_table {
  std::vector<std::uint32_t> count;   // count[l], l = 0..max
  std::vector<std::uint32_t> symbol;  // symbols by (length, value)
  int longest = 0;
};

inline canonical_table canonical(const std::vector<std::uint8_t>& lengths, const std::string& what) {
  constexpr const char* fn = "slimnet::io::encoding::huffman_decode";
  canonical_table t;
  t.count.assign(max_huffman_length + 1, 0);
  for (std::size_t s = 0; s < lengths.size(); ++s) {
    if (lengths[s] > max_huffman_length) {
      slimnet::detail::raise<io_error>(fn, "{}: Huffman code length {} of symbol {} exceeds {}", what, lengths[s], s, max_huffman_length);
    }
    ++t.count[lengths[s]];
    if (lengths[s] > 0) t.longest = std::max<int>(t.longest, lengths[s]);
  }
  // Kraft: sum over codes of 2^(max - l) must not exceed 2^max.
  std::uint64_t kraft = 0;
  for (int l = 1; l <= max_huffman_length; ++l) kraft += static_cast<std::uint64_t>(t.count[static_cast<std::size_t>(l)]) << (max_huffman_length - l);
  if (kraft > (std::uint64_t{1} << max_huffman_length)) {
    slimnet::detail::raise<io_error>(fn, "{}: the Huffman code lengths are not a prefix code (Kraft sum {} / 2^{} > 1)", what, kraft,
                                     max_huffman_length);
  }
  for (int l = 1; l <= t.longest; ++l)
    for (std::size_t s = 0; s < lengths.size(); ++s)
      if (lengths[s] == l) t.symbol.push_back(static_cast<std::uint32_t>(s));
  return t;
}

}  // namespace detail

/// Canonical codes (value, length) of a length table, as the encoder writes them.
inline std::vector<std::pair<std::uint32_t, int>> huffman_codes(const std::vector<std::uint8_t>& lengths) {
  std::vector<std::uint32_t> count(max_huffman_length + 2, 0), next(max_huffman_length + 2, 0);
  for (auto l : lengths) ++count[l];
  count[0] = 0;
  std::uint32_t code = 0;
  for (int l = 1; l <= max_huffman_length; ++l) {
    code = (code + count[static_cast<std::size_t>(l - 1)]) << 1;
    next[static_cast<std::size_t>(l)] = code;
  }
  std::vector<std::pair<std::uint32_t, int>> codes(lengths.size(), {0, 0});
  for (std::size_t s = 0; s < lengths.size(); ++s)
    if (lengths[s] > 0) codes[s] = {next[lengths[s]]++, lengths[s]};
  return codes;
}

/// A Huffman-coded stream: the code length table (trimmed after the last used symbol) and the bits.
struct huffman_stream {
  std::vector<std::uint8_t> lengths;
  std::vector<std::uint8_t> bytes;
};

/// Huffman-codes `symbols` (each < alphabet) with the optimal length-limited code of their counts.
inline huffman_stream huffman_encode(const std::vector<std::uint32_t>& symbols, std::size_t alphabet) {
  std::vector<std::uint64_t> freq(alphabet, 0);
  for (std::size_t i = 0; i < symbols.size(); ++i) {
    if (symbols[i] >= alphabet) {
      slimnet::detail::raise<config_error>("slimnet::io::encoding::huffman_encode", "symbol {} = {} is outside the alphabet of {}", i,
                                           symbols[i], alphabet);
    }
    ++freq[symbols[i]];
  }
  huffman_stream out;
  out.lengths = huffman_code_lengths(freq);
  while (!out.lengths.empty() && out.lengths.back() == 0) out.lengths.pop_back();
  const auto codes = huffman_codes(out.lengths);
  bit_writer w;
  for (auto s : symbols) {
    const auto [code, len] = codes[s];
    for (int b = len - 1; b >= 0; --b) w.put(code >> b);
  }
  out.bytes = w.take();
  return out;
}

/// Decodes exactly n symbols; io_error naming `what` if the table is not a prefix code or holds a
/// symbol >= alphabet, the stream ends early, meets a bit pattern that is no code, or has more than
/// the padding of its last byte (which must be zero bits) left over. Never allocates more than the
/// stream can hold (every code is at least one bit).
inline std::vector<std::uint32_t> huffman_decode(const std::vector<std::uint8_t>& lengths, const std::vector<std::uint8_t>& bytes,
                                                 std::size_t n, std::size_t alphabet, const std::string& what) {
  constexpr const char* fn = "slimnet::io::encoding::huffman_decode";
  if (lengths.size() > alphabet) {
    slimnet::detail::raise<io_error>(fn, "{}: the Huffman table has {} symbols, the alphabet {}", what, lengths.size(), alphabet);
  }
  if (n > bytes.size() * 8) {
    slimnet::detail::raise<io_error>(fn, "{}: {} symbols cannot be coded in {} bytes (at least one bit each)", what, n, bytes.size());
  }
  const detail::canonical_table t = detail::canonical(lengths, what);
  if (n > 0 && t.symbol.empty()) slimnet::detail::raise<io_error>(fn, "{}: {} symbols but an empty Huffman table", what, n);
  std::vector<std::uint32_t> out;
  out.reserve(n);
  bit_reader r(bytes);
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t at = r.position();
    std::int64_t code = 0, first = 0, index = 0;
    bool found = false;
    for (int l = 1; l <= t.longest; ++l) {
      const int bit = r.get();
      if (bit < 0) {
        slimnet::detail::raise<io_error>(fn, "{}: the Huffman stream ends after {} of {} symbols", what, i, n);
      }
      code |= bit;
      const std::int64_t count = t.count[static_cast<std::size_t>(l)];
      if (code - first < count) {
        out.push_back(t.symbol[static_cast<std::size_t>(index + code - first)]);
        found = true;
        break;
      }
      index += count;
      first = (first + count) << 1;
      code <<= 1;
    }
    if (!found) {
      slimnet::detail::raise<io_error>(fn, "{}: the Huffman stream does not decode: bits from {} are no code (symbol {} of {})", what, at,
                                       i, n);
    }
  }
  if (bytes.size() != (r.position() + 7) / 8) {
    slimnet::detail::raise<io_error>(fn, "{}: {} bytes follow the {} coded symbols", what, bytes.size() - (r.position() + 7) / 8, n);
  }
  for (int bit; (bit = r.get()) >= 0;) {
    if (bit) slimnet::detail::raise<io_error>(fn, "{}: a padding bit after the last Huffman code is set", what);
  }
  return out;
}

}  // namespace slimnet::io::encoding
