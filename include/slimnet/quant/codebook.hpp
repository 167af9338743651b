// Codebook quantization of a weight tensor (Gong et al. 2014; Han et al. 2016 weight sharing),
// on the out_units x rest view W (m x n) of any Eigen object or slimnet::tensor:
//   kmeans             every weight is a point: m*n scalars share k values;
//   product_quantize   W = [W^1, ..., W^s] split into s column blocks; k-means on the m row
//                      sub-vectors of each block, k centres per block;
//   residual_quantize  t stages of k-means on the rows: stage 1 quantizes W, stage i the residual
//                      left by stages 1..i-1; a row is the sum of its t centres.
// and the storage they need, codebooks included, as Gong et al. compare methods at equal rate
// (b = bits per stored value, 32 for float; log2 k rounded up per index):
//   k-means  m n log2(k) + b k            PQ  m s log2(k) + b k n            RQ  m t log2(k) + b t
//   k n
// against b m n for the float weights.
//
// Pruned weights (Deep Compression: prune, then share weights). Every builder takes an optional
// support, the 0/1 pattern of surviving weights (row-major over the m x n view, as
// quant::support_of(parameter) returns it). Pruned weights are not clustered and are not a
// centroid: k-means clusters the surviving values only; PQ and RQ cluster the rows with the
// pruned coordinates unobserved (kmeans.hpp's masked Lloyd). The reconstruction is exactly 0 at
// every pruned weight, so the k centroids are shared by the surviving weights alone and a pruned
// layer of k-means holds at most k distinct nonzero values. k-means then needs indices for the
// surviving weights only: weights_bits counts s log2(k) for s survivors (where they are, the
// sparse format's business, is not counted here).
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/core/view.hpp"
#include "slimnet/quant/kmeans.hpp"

namespace slimnet::quant {

/// Bits of one index into k centres: ceil(log2 k), 0 for k = 1.
inline int index_bits(index_t clusters) {
  if (clusters < 1)
    slimnet::detail::raise<config_error>("slimnet::quant::index_bits", "clusters = {} must be >= 1",
                                         clusters);
  int bits = 0;
  while ((index_t{1} << bits) < clusters) ++bits;
  return bits;
}

/// Storage of quantized weights in bits. Layers add up with +=; weights left as they are count
/// through uncompressed().
struct codebook_storage {
  std::uint64_t weights = 0;            ///< number of weights represented
  std::uint64_t original_bits = 0;      ///< weights * bits of an uncompressed weight
  std::uint64_t index_bits = 0;         ///< all indices
  std::uint64_t codebook_bits = 0;      ///< all centroids
  std::uint64_t uncompressed_bits = 0;  ///< weights stored as they are

  std::uint64_t total_bits() const { return index_bits + codebook_bits + uncompressed_bits; }
  double total_bytes() const { return static_cast<double>(total_bits()) / 8.0; }
  /// original / compressed size.
  double compression_rate() const {
    return total_bits() == 0
               ? 0.0
               : static_cast<double>(original_bits) / static_cast<double>(total_bits());
  }

  codebook_storage& operator+=(const codebook_storage& o) {
    weights += o.weights;
    original_bits += o.original_bits;
    index_bits += o.index_bits;
    codebook_bits += o.codebook_bits;
    uncompressed_bits += o.uncompressed_bits;
    return *this;
  }
  friend codebook_storage operator+(codebook_storage a, const codebook_storage& b) {
    return a += b;
  }

  /// `weights` kept at `weight_bits` each.
  static codebook_storage uncompressed(index_t weights, int weight_bits = 32) {
    codebook_storage s;
    s.weights = static_cast<std::uint64_t>(weights);
    s.original_bits = s.uncompressed_bits = s.weights * static_cast<std::uint64_t>(weight_bits);
    return s;
  }
};

namespace detail {
inline codebook_storage make_storage(const char* fn, index_t weights, index_t indices,
                                     index_t clusters, index_t centroid_values, int centroid_bits,
                                     int weight_bits) {
  if (centroid_bits < 1 || weight_bits < 1 || weights < 0) {
    slimnet::detail::raise<config_error>(
        fn, "invalid sizes: weights={} centroid_bits={} weight_bits={}", weights, centroid_bits,
        weight_bits);
  }
  codebook_storage s;
  s.weights = static_cast<std::uint64_t>(weights);
  s.original_bits = s.weights * static_cast<std::uint64_t>(weight_bits);
  s.index_bits =
      static_cast<std::uint64_t>(indices) * static_cast<std::uint64_t>(index_bits(clusters));
  s.codebook_bits =
      static_cast<std::uint64_t>(centroid_values) * static_cast<std::uint64_t>(centroid_bits);
  return s;
}
}  // namespace detail

/// Scalar k-means of `weights` values into k: weights * log2(k) + b * k bits.
inline codebook_storage kmeans_storage(index_t weights, index_t clusters, int centroid_bits = 32,
                                       int weight_bits = 32) {
  return detail::make_storage("slimnet::quant::kmeans_storage", weights, weights, clusters,
                              clusters, centroid_bits, weight_bits);
}
/// Product quantization of an m x n matrix in s blocks of k centres: m s log2(k) + b k n bits.
inline codebook_storage product_storage(index_t rows, index_t cols, index_t blocks,
                                        index_t clusters, int centroid_bits = 32,
                                        int weight_bits = 32) {
  return detail::make_storage("slimnet::quant::product_storage", rows * cols, rows * blocks,
                              clusters, clusters * cols, centroid_bits, weight_bits);
}
/// Residual quantization of an m x n matrix in t stages of k centres: m t log2(k) + b t k n bits.
inline codebook_storage residual_storage(index_t rows, index_t cols, index_t stages,
                                         index_t clusters, int centroid_bits = 32,
                                         int weight_bits = 32) {
  return detail::make_storage("slimnet::quant::residual_storage", rows * cols, rows * stages,
                              clusters, stages * clusters * cols, centroid_bits, weight_bits);
}

enum class codebook_method { kmeans, product, residual };

inline const char* to_string(codebook_method m) {
  switch (m) {
    case codebook_method::kmeans:
      return "kmeans";
    case codebook_method::product:
      return "pq";
    case codebook_method::residual:
      return "rq";
  }
  return "?";
}

/// A quantized weight matrix: centroids and indices per stage and block.
///
/// The points being clustered are the rows of a "layout" matrix: for k-means the (m*n) x 1 column
/// of all weights in row-major order, for PQ and RQ the m x n view itself. Column block b of the
/// layout spans [block_offsets[b], block_offsets[b+1]); stage t and block b own
/// centroids[t * blocks() + b] (k x width) and indices[t * blocks() + b] (one per layout row).
/// Layout row r, block b is reconstructed as sum_t centroids[t, b].row(indices[t, b][r]).
template <class Scalar>
struct codebook {
  codebook_method method = codebook_method::kmeans;
  index_t rows = 0, cols = 0;  ///< the m x n out_units x rest view of the weights
  index_t clusters = 0;
  int stages = 1;
  std::vector<index_t> block_offsets{0};
  std::vector<row_matrix<Scalar>> centroids;
  std::vector<std::vector<std::int32_t>> indices;
  /// Surviving weights (1) of a pruned matrix, rows * cols in row-major order; empty when every
  /// weight is represented. The index stored for a pruned weight is 0 and means nothing: the
  /// reconstruction is 0 there and fine-tuning ignores it.
  std::vector<std::uint8_t> support;

  bool pruned() const { return !support.empty(); }
  /// Number of represented weights: the survivors of a pruned matrix, else rows * cols.
  index_t surviving() const {
    if (support.empty()) return rows * cols;
    index_t n = 0;
    for (auto v : support) n += v;
    return n;
  }

  index_t blocks() const { return static_cast<index_t>(block_offsets.size()) - 1; }
  index_t layout_rows() const { return method == codebook_method::kmeans ? rows * cols : rows; }
  index_t layout_cols() const { return method == codebook_method::kmeans ? 1 : cols; }
  const row_matrix<Scalar>& centroids_of(int stage, index_t block) const {
    return centroids.at(slot(stage, block));
  }
  row_matrix<Scalar>& centroids_of(int stage, index_t block) {
    return centroids.at(slot(stage, block));
  }
  const std::vector<std::int32_t>& indices_of(int stage, index_t block) const {
    return indices.at(slot(stage, block));
  }
  std::size_t slot(int stage, index_t block) const {
    return static_cast<std::size_t>(stage * blocks() + block);
  }

  std::string describe() const {
    switch (method) {
      case codebook_method::kmeans:
        return fmt::format("k-means k={}", clusters);
      case codebook_method::product:
        return fmt::format("PQ s={} k={}", blocks(), clusters);
      case codebook_method::residual:
        return fmt::format("RQ t={} k={}", stages, clusters);
    }
    return "?";
  }

  /// Throws shape_error if the parts do not fit together (e.g. after editing them by hand).
  void validate(const char* function = "slimnet::quant::codebook") const {
    const index_t lr = layout_rows(), lc = layout_cols();
    bool ok = stages >= 1 && blocks() >= 1 && block_offsets.front() == 0 &&
              block_offsets.back() == lc && clusters >= 1 &&
              centroids.size() == static_cast<std::size_t>(stages * blocks()) &&
              indices.size() == centroids.size();
    for (index_t b = 0; ok && b < blocks(); ++b) {
      ok = block_offsets[static_cast<std::size_t>(b)] <
           block_offsets[static_cast<std::size_t>(b) + 1];
      for (int t = 0; ok && t < stages; ++t) {
        const auto& c = centroids_of(t, b);
        const auto& idx = indices_of(t, b);
        ok = c.rows() == clusters && c.cols() == block_width(b) &&
             static_cast<index_t>(idx.size()) == lr;
        for (std::size_t i = 0; ok && i < idx.size(); ++i) ok = idx[i] >= 0 && idx[i] < clusters;
      }
    }
    ok = ok && (support.empty() || static_cast<index_t>(support.size()) == rows * cols);
    for (std::size_t i = 0; ok && i < support.size(); ++i) ok = support[i] <= 1;
    if (!ok) {
      slimnet::detail::raise<shape_error>(
          function, "inconsistent codebook ({}, {} x {} weights, {} stages, {} blocks)", describe(),
          rows, cols, stages, blocks());
    }
  }

  index_t block_width(index_t b) const {
    return block_offsets[static_cast<std::size_t>(b) + 1] -
           block_offsets[static_cast<std::size_t>(b)];
  }

  /// The m x n reconstruction from the first `use_stages` stages (all by default).
  row_matrix<Scalar> reconstruct(int use_stages = -1) const {
    validate("slimnet::quant::codebook::reconstruct");
    const int t_end = use_stages < 0 ? stages : use_stages;
    if (t_end > stages) {
      slimnet::detail::raise<config_error>("slimnet::quant::codebook::reconstruct",
                                           "use_stages = {} exceeds the {} stages", use_stages,
                                           stages);
    }
    row_matrix<Scalar> out = row_matrix<Scalar>::Zero(rows, cols);
    Eigen::Map<row_matrix<Scalar>> layout(out.data(), layout_rows(), layout_cols());
    for (int t = 0; t < t_end; ++t) {
      for (index_t b = 0; b < blocks(); ++b) {
        const auto& c = centroids_of(t, b);
        const auto& idx = indices_of(t, b);
        const index_t off = block_offsets[static_cast<std::size_t>(b)], w = block_width(b);
        for (index_t r = 0; r < layout_rows(); ++r)
          layout.row(r).segment(off, w) += c.row(idx[static_cast<std::size_t>(r)]);
      }
    }
    for (std::size_t i = 0; i < support.size(); ++i) {
      if (support[i] == 0) out.data()[i] = Scalar(0);
    }
    return out;
  }

  /// Bits of the indices and the centroids at `centroid_bits` per centroid value, against weights
  /// of `weight_bits`.
  /// A pruned k-means matrix needs indices for its survivors only.
  codebook_storage storage(int centroid_bits = 32, int weight_bits = 32) const {
    const index_t points = method == codebook_method::kmeans ? surviving() : layout_rows();
    return detail::make_storage("slimnet::quant::codebook::storage", rows * cols,
                                points * blocks() * stages, clusters,
                                static_cast<index_t>(stages) * clusters * layout_cols(),
                                centroid_bits, weight_bits);
  }
};

namespace detail {

template <class T>
using view_scalar_t =
    std::remove_cv_t<std::remove_reference_t<decltype(as_matrix(std::declval<T&>())(0, 0))>>;

/// The out_units x rest view of w copied into a row-major double matrix.
template <class T>
dmatrix weights_as_double(const T& w) {
  auto&& m = as_matrix(w);
  dmatrix x(m.rows(), m.cols());
  for (index_t i = 0; i < m.rows(); ++i)
    for (index_t j = 0; j < m.cols(); ++j) x(i, j) = static_cast<double>(m(i, j));
  return x;
}

template <class Scalar>
void store(codebook<Scalar>& cb, const kmeans_result<double>& r) {
  cb.centroids.push_back(r.centroids.template cast<Scalar>());
  cb.indices.push_back(r.assignment);
}

/// Checks a support against an m x n view and returns it as the 0/1 matrix of observed entries
/// (empty support: nullopt, every weight observed).
inline std::optional<dmatrix> observed_from(const std::vector<std::uint8_t>& support, index_t rows,
                                            index_t cols, const char* fn) {
  if (support.empty()) return std::nullopt;
  if (static_cast<index_t>(support.size()) != rows * cols) {
    slimnet::detail::raise<shape_error>(
        fn, "the support has {} entries but the weights are {} x {} = {}", support.size(), rows,
        cols, rows * cols);
  }
  dmatrix o(rows, cols);
  for (index_t i = 0; i < rows * cols; ++i) {
    const auto v = support[static_cast<std::size_t>(i)];
    if (v > 1)
      slimnet::detail::raise<config_error>(fn, "support entry {} is {}, not 0 or 1", i, int{v});
    o.data()[i] = v;
  }
  return o;
}

/// Rows x cols points that no support entry observes cannot be told apart; k must not exceed the
/// number of points that do (surviving weights for k-means, rows with a survivor for PQ / RQ).
inline void check_clusters_for_support(index_t clusters, index_t usable, const char* what,
                                       const char* fn) {
  if (clusters > usable) {
    slimnet::detail::raise<config_error>(
        fn, "clusters = {} exceeds the {} {} of the pruned weights", clusters, usable, what);
  }
}

}  // namespace detail

/// Scalar k-means (weight sharing): every weight becomes one of `clusters` shared values; with a
/// support, every surviving weight, the pruned ones being 0 (see the header comment).
/// Throws config_error unless 1 <= clusters <= number of (surviving) weights.
template <class T>
codebook<detail::view_scalar_t<const T>> kmeans(const T& w, index_t clusters,
                                                const kmeans_options& opt = {},
                                                const std::vector<std::uint8_t>& support = {}) {
  constexpr const char* fn = "slimnet::quant::kmeans";
  using Scalar = detail::view_scalar_t<const T>;
  const detail::dmatrix x = detail::weights_as_double(w);
  codebook<Scalar> cb;
  cb.method = codebook_method::kmeans;
  cb.rows = x.rows();
  cb.cols = x.cols();
  cb.clusters = clusters;
  cb.block_offsets = {0, 1};
  if (detail::observed_from(support, x.rows(), x.cols(), fn)) {
    cb.support = support;
    const index_t alive = cb.surviving();
    detail::check_clusters_for_support(clusters, alive, "surviving weights", fn);
    detail::dmatrix points(alive, 1);
    index_t n = 0;
    for (index_t i = 0; i < x.size(); ++i) {
      if (support[static_cast<std::size_t>(i)] != 0) points(n++, 0) = x.data()[i];
    }
    const auto r = detail::lloyd(points, clusters, opt, fn);
    cb.centroids.push_back(r.centroids.template cast<Scalar>());
    std::vector<std::int32_t> idx(static_cast<std::size_t>(x.size()), 0);
    n = 0;
    for (index_t i = 0; i < x.size(); ++i) {
      if (support[static_cast<std::size_t>(i)] != 0)
        idx[static_cast<std::size_t>(i)] = r.assignment[static_cast<std::size_t>(n++)];
    }
    cb.indices.push_back(std::move(idx));
    return cb;
  }
  const detail::dmatrix points = Eigen::Map<const detail::dmatrix>(x.data(), x.size(), 1);
  detail::store(cb, detail::lloyd(points, clusters, opt, fn));
  return cb;
}

/// Product quantization: the n columns split into `blocks` contiguous blocks (widths differ by at
/// most one, wider first), k-means with `clusters` centres on each block's m row sub-vectors.
/// Block b uses the seed sub_seed(opt.seed, b), so block 0 runs with opt.seed itself.
/// With a support, each block's rows are clustered on their surviving coordinates only.
template <class T>
codebook<detail::view_scalar_t<const T>> product_quantize(
    const T& w, index_t blocks, index_t clusters, const kmeans_options& opt = {},
    const std::vector<std::uint8_t>& support = {}) {
  constexpr const char* fn = "slimnet::quant::product_quantize";
  using Scalar = detail::view_scalar_t<const T>;
  const detail::dmatrix x = detail::weights_as_double(w);
  const auto observed = detail::observed_from(support, x.rows(), x.cols(), fn);
  if (blocks < 1 || blocks > x.cols()) {
    slimnet::detail::raise<config_error>(
        fn, "blocks = {} must be in [1, {}] (the number of columns)", blocks, x.cols());
  }
  codebook<Scalar> cb;
  cb.method = codebook_method::product;
  cb.rows = x.rows();
  cb.cols = x.cols();
  cb.clusters = clusters;
  cb.block_offsets.assign(1, 0);
  const index_t base = x.cols() / blocks, extra = x.cols() % blocks;
  for (index_t b = 0; b < blocks; ++b)
    cb.block_offsets.push_back(cb.block_offsets.back() + base + (b < extra ? 1 : 0));
  for (index_t b = 0; b < blocks; ++b) {
    kmeans_options o = opt;
    o.seed = detail::sub_seed(opt.seed, static_cast<std::uint64_t>(b));
    const index_t off = cb.block_offsets[static_cast<std::size_t>(b)], width = cb.block_width(b);
    const detail::dmatrix part = x.middleCols(off, width);
    if (observed) {
      const detail::dmatrix seen = observed->middleCols(off, width);
      detail::check_clusters_for_support(
          clusters, (seen.rowwise().sum().array() > 0).count(), "rows with a surviving weight", fn);
      detail::store(cb, detail::lloyd(part, clusters, o, fn, &seen));
    } else {
      detail::store(cb, detail::lloyd(part, clusters, o, fn));
    }
  }
  cb.support = support;
  return cb;
}

/// Residual quantization: `stages` rounds of k-means with `clusters` centres on the m rows, each on
/// the residual the earlier stages left (computed with the centroids as stored in Scalar). Stage t
/// uses the seed sub_seed(opt.seed, t).
/// With a support, every stage clusters the rows on their surviving coordinates only.
template <class T>
codebook<detail::view_scalar_t<const T>> residual_quantize(
    const T& w, int stages, index_t clusters, const kmeans_options& opt = {},
    const std::vector<std::uint8_t>& support = {}) {
  constexpr const char* fn = "slimnet::quant::residual_quantize";
  using Scalar = detail::view_scalar_t<const T>;
  if (stages < 1) slimnet::detail::raise<config_error>(fn, "stages = {} must be >= 1", stages);
  detail::dmatrix residual = detail::weights_as_double(w);
  const auto observed = detail::observed_from(support, residual.rows(), residual.cols(), fn);
  if (observed) {
    detail::check_clusters_for_support(
        clusters, (observed->rowwise().sum().array() > 0).count(), "rows with a surviving weight",
        fn);
  }
  codebook<Scalar> cb;
  cb.method = codebook_method::residual;
  cb.rows = residual.rows();
  cb.cols = residual.cols();
  cb.clusters = clusters;
  cb.stages = stages;
  cb.block_offsets = {0, residual.cols()};
  for (int t = 0; t < stages; ++t) {
    kmeans_options o = opt;
    o.seed = detail::sub_seed(opt.seed, static_cast<std::uint64_t>(t));
    detail::store(cb, detail::lloyd(residual, clusters, o, fn, observed ? &*observed : nullptr));
    const detail::dmatrix c = cb.centroids.back().template cast<double>();
    const auto& idx = cb.indices.back();
    for (index_t r = 0; r < residual.rows(); ++r)
      residual.row(r) -= c.row(idx[static_cast<std::size_t>(r)]);
  }
  cb.support = support;
  return cb;
}

/// Writes the reconstruction of `cb` into `w`, whose out_units x rest view must be rows x cols.
template <class Scalar, class T>
void apply(const codebook<Scalar>& cb, T&& w) {
  auto&& m = as_matrix(w);
  if (m.rows() != cb.rows || m.cols() != cb.cols) {
    slimnet::detail::raise<shape_error>("slimnet::quant::apply",
                                        "codebook of {} x {} weights does not fit a {} x {} view",
                                        cb.rows, cb.cols, m.rows(), m.cols());
  }
  const row_matrix<Scalar> r = cb.reconstruct();
  using target = std::remove_cv_t<std::remove_reference_t<decltype(m(0, 0))>>;
  for (index_t i = 0; i < m.rows(); ++i)
    for (index_t j = 0; j < m.cols(); ++j) m(i, j) = static_cast<target>(r(i, j));
}

}  // namespace slimnet::quant
