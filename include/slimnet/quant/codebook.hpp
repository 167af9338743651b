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
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
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
    return out;
  }

  /// Bits of the indices and the centroids at `centroid_bits` per centroid value, against weights
  /// of `weight_bits`.
  codebook_storage storage(int centroid_bits = 32, int weight_bits = 32) const {
    return detail::make_storage("slimnet::quant::codebook::storage", rows * cols,
                                layout_rows() * blocks() * stages, clusters,
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

}  // namespace detail

/// Scalar k-means (weight sharing): every weight becomes one of `clusters` shared values.
/// Throws config_error unless 1 <= clusters <= number of weights.
template <class T>
codebook<detail::view_scalar_t<const T>> kmeans(const T& w, index_t clusters,
                                                const kmeans_options& opt = {}) {
  using Scalar = detail::view_scalar_t<const T>;
  const detail::dmatrix x = detail::weights_as_double(w);
  codebook<Scalar> cb;
  cb.method = codebook_method::kmeans;
  cb.rows = x.rows();
  cb.cols = x.cols();
  cb.clusters = clusters;
  cb.block_offsets = {0, 1};
  const detail::dmatrix points = Eigen::Map<const detail::dmatrix>(x.data(), x.size(), 1);
  detail::store(cb, detail::lloyd(points, clusters, opt, "slimnet::quant::kmeans"));
  return cb;
}

/// Product quantization: the n columns split into `blocks` contiguous blocks (widths differ by at
/// most one, wider first), k-means with `clusters` centres on each block's m row sub-vectors.
/// Block b uses the seed sub_seed(opt.seed, b), so block 0 runs with opt.seed itself.
template <class T>
codebook<detail::view_scalar_t<const T>> product_quantize(const T& w, index_t blocks,
                                                          index_t clusters,
                                                          const kmeans_options& opt = {}) {
  constexpr const char* fn = "slimnet::quant::product_quantize";
  using Scalar = detail::view_scalar_t<const T>;
  const detail::dmatrix x = detail::weights_as_double(w);
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
    const detail::dmatrix part =
        x.middleCols(cb.block_offsets[static_cast<std::size_t>(b)], cb.block_width(b));
    detail::store(cb, detail::lloyd(part, clusters, o, fn));
  }
  return cb;
}

/// Residual quantization: `stages` rounds of k-means with `clusters` centres on the m rows, each on
/// the residual the earlier stages left (computed with the centroids as stored in Scalar). Stage t
/// uses the seed sub_seed(opt.seed, t).
template <class T>
codebook<detail::view_scalar_t<const T>> residual_quantize(const T& w, int stages, index_t clusters,
                                                           const kmeans_options& opt = {}) {
  constexpr const char* fn = "slimnet::quant::residual_quantize";
  using Scalar = detail::view_scalar_t<const T>;
  if (stages < 1) slimnet::detail::raise<config_error>(fn, "stages = {} must be >= 1", stages);
  detail::dmatrix residual = detail::weights_as_double(w);
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
    detail::store(cb, detail::lloyd(residual, clusters, o, fn));
    const detail::dmatrix c = cb.centroids.back().template cast<double>();
    const auto& idx = cb.indices.back();
    for (index_t r = 0; r < residual.rows(); ++r)
      residual.row(r) -= c.row(idx[static_cast<std::size_t>(r)]);
  }
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
