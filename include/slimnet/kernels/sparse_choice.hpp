// The dense-or-sparse choice, made once per layer when it is converted: the layer's density
// against the break-even density for its shape and batch, measured on this machine class by
// benchmarks/sparse_vs_dense, or measured on the layer's own weights on the spot.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/gemm.hpp"
#include "slimnet/kernels/sparse_blocked.hpp"
#include "slimnet/kernels/sparse_csc.hpp"
#include "slimnet/kernels/sparse_sell.hpp"

namespace slimnet::kernels {

/// Seconds per call of f(): one warm-up call, then `rounds` rounds of at least 1 ms each (repeated
/// calls), the fastest round's mean. The shared timer of every measured choice (dense or sparse,
/// row or column form, codebook engines): other programs on the machine only add time, so the
/// fastest round is the closest to the kernel's own cost.
template <class F>
double best_seconds_per_call(F&& f, int rounds) {
  using clock = std::chrono::steady_clock;
  f();
  double best = INFINITY;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = clock::now();
    int reps = 0;
    do {
      f();
      ++reps;
    } while (std::chrono::duration<double>(clock::now() - t0).count() < 1e-3);
    best = std::min(best, std::chrono::duration<double>(clock::now() - t0).count() / reps);
  }
  return best;
}

/// The decision and why.
struct sparse_choice {
  bool sparse = false;
  double density = 0;     ///< nonzeros / (rows * cols)
  double break_even = 0;  ///< sparse pays below this density
  bool measured = false;  ///< break_even timed on the weights themselves (else the model below)
  std::string column_form;  ///< a batch-1 Linear with a known input density: column_form_choice::describe()
  std::string describe() const {
    return fmt::format("{} ({:.1f}% nonzeros, break-even {:.1f}%{}){}", sparse ? "sparse" : "dense", 100 * density, 100 * break_even,
                       measured ? ", measured" : "", column_form.empty() ? "" : "; " + column_form);
  }
};

/// Break-even density of slimnet's sparse kernels against the best dense product (Eigen, OpenBLAS,
/// slimnet's GEMM) on AMD Zen 4, one thread, from benchmarks/sparse_vs_dense ("break-even density
/// by shape"; ranges over two runs on the shared machine):
///   batch 1, SELL-16 against a dense GEMV that streams 4 bytes per weight: 34-40% for 300 x 784,
///     100 x 300 and 500 x 800, 43-47% at 1000 x 1000 and 100 x 100, 44-61% at 4096 x 1024 (16 MB,
///     where the dense GEMV runs from DRAM);
///   batch >= 2, column-blocked CSR against a compute-bound GEMM: 71-85%, beyond 90% at
///     4096 x 1024 (the strip kernel issues the same 64 FMAs per weight as the GEMM, at nearly the
///     same rate), so dense wins only for nearly dense matrices.
/// The model takes the low end of each range; sparse is chosen only below 0.9 x break-even, where
/// it wins by a margin the run-to-run noise cannot reverse.
inline double sparse_break_even(index_t rows, index_t cols, index_t batch) {
  const double bytes = 4.0 * static_cast<double>(rows) * static_cast<double>(cols);
  if (batch <= 1) return bytes < 1.2e6 ? 0.34 : 0.43;
  return 0.72;
}

/// The choice for a rows x cols matrix with nnz nonzeros used at `batch` columns.
inline sparse_choice choose_sparse(index_t rows, index_t cols, index_t nnz, index_t batch) {
  sparse_choice c;
  c.density = rows * cols == 0 ? 0.0 : static_cast<double>(nnz) / (static_cast<double>(rows) * static_cast<double>(cols));
  c.break_even = sparse_break_even(rows, cols, batch);
  c.sparse = c.density < 0.9 * c.break_even;
  return c;
}

/// Break-even density of the direct sparse convolution (sparse_conv.hpp) against im2col plus the
/// dense GEMM, from benchmarks/compressed_models --sweep (LeNet-5's convolutions with the 2x2 pool
/// fused into both forms, one thread, Zen 4, a loaded machine): with few taps per filter (conv1,
/// 1 x 5 x 5) the GEMM's reduction is too short to run at speed and the direct kernel wins up to
/// 80-90% density (time ratio 0.92 at 80%, 1.04-1.15 at 100%); with 500 taps (conv2) the GEMM runs
/// near peak and the direct kernel wins below 50% at batch 1 (ratio 1.00 at 50%) and 60% at
/// batch 64 (0.93 at 60%, 1.11 at 70%).
inline double sparse_conv_break_even(index_t /*out_channels*/, index_t taps, index_t batch = 1) {
  if (taps <= 64) return 0.85;
  return batch <= 1 ? 0.5 : 0.62;
}

/// The choice for a convolution's out_channels x taps filters with nnz nonzeros, run at `batch` images.
inline sparse_choice choose_sparse_conv(index_t out_channels, index_t taps, index_t nnz, index_t batch = 1) {
  sparse_choice c;
  c.density = out_channels * taps == 0 ? 0.0 : static_cast<double>(nnz) / (static_cast<double>(out_channels) * static_cast<double>(taps));
  c.break_even = sparse_conv_break_even(out_channels, taps, batch);
  c.sparse = c.density < 0.9 * c.break_even;
  return c;
}

/// The choice from timing both kernels on `w` itself (dense GEMM/GEMV vs SELL or column-blocked
/// CSR at `batch` columns, best of `rounds`): exact for this machine and matrix, but it depends on
/// timing, so two runs may choose differently near break-even (both give the same outputs within
/// float rounding). break_even is the density at which the measured sparse time would equal the
/// dense time, assuming sparse time proportional to the nonzeros.
// The three functions below are templates with one unused parameter only so that a program that
// includes this header without calling them does not instantiate every sparse kernel they time
// (a non-template inline body is compiled in every translation unit: 6-7 s of CPU each).
template <class = void>
inline sparse_choice measure_sparse_choice(matrix_ref<const float> w, index_t batch, int rounds = 5) {
  sparse_choice c = choose_sparse(w.rows, w.cols, 0, batch);
  const auto csr = csr_matrix<float, std::uint32_t>::from_dense(w);
  c.density = csr.density();
  c.measured = true;
  if (w.rows == 0 || w.cols == 0 || csr.nnz() == 0) {
    c.sparse = true;
    return c;
  }
  batch = std::max<index_t>(batch, 1);
  std::vector<float> dense(static_cast<std::size_t>(w.rows * w.cols)), x(static_cast<std::size_t>(w.cols * batch)),
      y(static_cast<std::size_t>(w.rows * batch));
  for (index_t i = 0; i < w.rows; ++i)
    for (index_t j = 0; j < w.cols; ++j) dense[static_cast<std::size_t>(i * w.cols + j)] = w(i, j);
  rng gen(1);
  for (auto& v : x) v = static_cast<float>(gen.uniform(-1, 1));
  const auto dv = row_major<const float>(dense.data(), w.rows, w.cols);
  const auto xv = row_major<const float>(x.data(), w.cols, batch);
  const auto yv = row_major(y.data(), w.rows, batch);
  auto best_time = [&](auto&& f) { return best_seconds_per_call(f, rounds); };
  const double t_dense = best_time([&] { gemm<float>(dv, xv, yv); });
  double t_sparse;
  if (batch == 1) {
    const auto s = sell_matrix<float, std::uint8_t>::from_csr(csr);
    t_sparse = best_time([&] { spmv_sell(s.ref(), x.data(), y.data()); });
  } else {
    const auto b = blocked_csr_matrix<float, std::uint8_t>::from_dense(w);
    t_sparse = best_time([&] { spmm_blocked_csr(b.ref(), xv, yv); });
  }
  c.break_even = std::min(1.0, c.density * t_dense / t_sparse);
  c.sparse = t_sparse < t_dense;
  return c;
}

/// The columns of w that hold a nonzero, those whose input is most often nonzero first (ties, and
/// every column when `input_frequency` is empty: the columns with more nonzeros first): the order
/// of sparse_engine's reordered SELL-16 form. Grouping the rarely-nonzero inputs (a digit's border
/// pixels, units ReLU keeps at zero) into the same 64-column blocks lets spmv_sell skip whole
/// blocks of steps on most inputs; dropping the empty columns (a trained MNIST layer's
/// always-zero border pixels) and grouping columns of similar weight counts pads the steps less
/// (LeNet-300-100 fc1 of the demo: 2,278 SELL steps in the original order, 1,718 reordered, 1,533
/// of them on blocks with a nonzero input on average over MNIST test digits).
/// Throws shape_error when input_frequency is given with a length other than w.cols.
template <class = void>
inline std::vector<std::int32_t> reordered_columns(matrix_ref<const float> w, const std::vector<double>& input_frequency = {}) {
  if (!input_frequency.empty() && static_cast<index_t>(input_frequency.size()) != w.cols) {
    slimnet::detail::raise<shape_error>("slimnet::kernels::reordered_columns", "{} input frequencies for {} columns", input_frequency.size(),
                                        w.cols);
  }
  std::vector<index_t> count(static_cast<std::size_t>(w.cols), 0);
  for (index_t i = 0; i < w.rows; ++i)
    for (index_t j = 0; j < w.cols; ++j) count[static_cast<std::size_t>(j)] += w(i, j) != 0.0f || w(i, j) != w(i, j);
  std::vector<std::int32_t> order;
  for (index_t j = 0; j < w.cols; ++j)
    if (count[static_cast<std::size_t>(j)] > 0) order.push_back(static_cast<std::int32_t>(j));
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t p, std::int32_t q) {
    const auto up = static_cast<std::size_t>(p), uq = static_cast<std::size_t>(q);
    if (!input_frequency.empty() && input_frequency[up] != input_frequency[uq]) return input_frequency[up] > input_frequency[uq];
    return count[up] > count[uq];
  });
  return order;
}

/// The batch-1 form of a sparse Linear whose input statistics are unknown: SELL-16 over its columns
/// as they are, SELL-16 over reordered_columns(w) (the columns that hold nonzeros, those with more
/// nonzeros first; each input gathered into that order per call), or the compact CSR (16-bit column
/// indices, spmv_csr_compact). Dropping the empty columns and putting columns of similar weight
/// counts into the same 64-column blocks pads the SELL steps less (the demo's LeNet-300-100 fc1:
/// 2,278 steps over its 784 columns, about 1,700 over its 485 nonempty ones), at the price of the
/// gather. SELL-16 pays where its lookups of x are register permutes (AVX-512); where they are
/// gathers (AVX2) or scalar, CSR, which pads nothing, can be faster: 1000 x 1000 at 1% on an AMD
/// EPYC with AVX2 only, CSR 6.5 us against SELL-16 20.6 us (benchmarks/sparse_vs_dense).
struct column_order_choice {
  bool reordered = false;  ///< the reordered form timed under 0.9 x the plain one and fits 12 bytes per nonzero
  bool csr = false;        ///< the compact CSR timed under 0.9 x the SELL-16 form chosen above: kept instead
  double plain_seconds = 0, reordered_seconds = INFINITY, csr_seconds = INFINITY;  ///< not timed: inf
  index_t plain_steps = 0, reordered_steps = 0;                                    ///< SELL-16 steps stored (16 lanes each)
  std::vector<std::int32_t> order_of_columns;                                      ///< reordered_columns(w)
  std::string describe() const {
    return fmt::format(
        "{} (SELL-16 over the columns as they are {} steps {:.2f} us, over {} reordered columns {} steps {:.2f} us, "
        "compact CSR {:.2f} us, measured)",
        csr         ? "compact CSR"
        : reordered ? "reordered columns"
                    : "columns as they are",
        plain_steps, 1e6 * plain_seconds, order_of_columns.size(), reordered_steps, 1e6 * reordered_seconds, 1e6 * csr_seconds);
  }
};

/// Times the forms of column_order_choice on `w` itself (as the engines build and run them, 16
/// random inputs without zeros cycled, best of `rounds` rounds of >= 1 ms, interleaved). The
/// reordered SELL-16 form is chosen when it takes under 0.9 x the plain time and costs at most 12
/// bytes per nonzero; the compact CSR (at most 65536 columns) when it takes under 0.9 x the SELL-16
/// form chosen. Near a margin two runs may choose differently; outputs agree within rounding.
template <class = void>
inline column_order_choice measure_column_order(matrix_ref<const float> w, int rounds = 5) {
  column_order_choice c;
  if (w.rows == 0 || w.cols == 0) return c;
  const auto csr = csr_matrix<float, std::uint32_t>::from_dense(w);
  const auto sell = sell_matrix<float, std::uint8_t>::from_csr(csr, 0, /*sort_rows=*/true);
  c.plain_steps = sell.stored() / sell_slice_height;
  c.order_of_columns = reordered_columns(w);
  const index_t nk = static_cast<index_t>(c.order_of_columns.size());
  bool moved = nk != w.cols;
  for (index_t k = 0; k < nk && !moved; ++k) moved = c.order_of_columns[static_cast<std::size_t>(k)] != static_cast<std::int32_t>(k);
  std::optional<sell_matrix<float, std::uint8_t>> sell_kept;
  if (moved && nk > 0) {
    std::vector<float> kept(static_cast<std::size_t>(w.rows * nk));
    for (index_t i = 0; i < w.rows; ++i)
      for (index_t k = 0; k < nk; ++k)
        kept[static_cast<std::size_t>(i * nk + k)] = w(i, c.order_of_columns[static_cast<std::size_t>(k)]);
    sell_kept = sell_matrix<float, std::uint8_t>::from_csr(
        csr_matrix<float, std::uint32_t>::from_dense(row_major<const float>(kept.data(), w.rows, nk)), 0, /*sort_rows=*/true);
    c.reordered_steps = sell_kept->stored() / sell_slice_height;
  }
  std::optional<csr_matrix<float, std::uint16_t>> compact;
  if (w.cols <= 65536 && csr.nnz() > 0) compact = csr_matrix<float, std::uint16_t>::from_dense(w);
  constexpr index_t inputs = 16;
  std::vector<float> x(static_cast<std::size_t>(w.cols * inputs)), xg(static_cast<std::size_t>(nk) + 1), y(static_cast<std::size_t>(w.rows));
  std::vector<float> products;
  rng gen(5);
  for (auto& v : x) v = static_cast<float>(gen.uniform(0.1, 1));
  index_t next_plain = 0, next_reordered = 0, next_csr = 0;
  c.plain_seconds = INFINITY;
  for (int r = 0; r < 2; ++r) {  // interleaved, so a burst of load on the shared machine hits every form
    c.plain_seconds = std::min(c.plain_seconds, best_seconds_per_call([&] { spmv_sell(sell.ref(), x.data() + (next_plain++ % inputs) * w.cols, y.data()); },
                                                                      rounds));
    if (sell_kept) {
      c.reordered_seconds = std::min(c.reordered_seconds, best_seconds_per_call(
                                                              [&] {
                                                                const float* xi = x.data() + (next_reordered++ % inputs) * w.cols;
                                                                for (index_t k = 0; k < nk; ++k)
                                                                  xg[static_cast<std::size_t>(k)] =
                                                                      xi[c.order_of_columns[static_cast<std::size_t>(k)]];
                                                                spmv_sell(sell_kept->ref(), xg.data(), y.data());
                                                              },
                                                              rounds));
    }
    if (compact) {
      c.csr_seconds = std::min(
          c.csr_seconds,
          best_seconds_per_call(
              [&] { spmv_csr_compact(compact->ref(), x.data() + (next_csr++ % inputs) * w.cols, y.data(), products); }, rounds));
    }
  }
  if (sell_kept) {
    const bool fits = static_cast<double>(sell_kept->bytes() + c.order_of_columns.size() * sizeof(std::int32_t)) <=
                      12.0 * static_cast<double>(std::max<index_t>(csr.nnz(), 1));
    c.reordered = fits && c.reordered_seconds < 0.9 * c.plain_seconds;
  }
  c.csr = c.csr_seconds < 0.9 * (c.reordered ? c.reordered_seconds : c.plain_seconds);
  return c;
}

/// The batch-1 form of a sparse Linear for inputs with a known fraction of nonzeros: the row form
/// (SELL-16, rows sorted by length, every nonzero weight per call except blocks of zero inputs),
/// the same over reordered columns (reordered_columns) or the column form (CSC,
/// kernels/sparse_csc.hpp: only the columns of nonzero inputs, work nnz x input density). Two
/// forms do not fit the 12 bytes per nonzero of issue 15 together (SELL-16 ~9.3 + CSC ~6.2 at
/// 8%), so a layer keeps one: the fastest, the others only when 10% faster than SELL-16 as it is.
struct column_form_choice {
  bool column = false;       ///< CSC faster (by the 10% margin) at this input density
  bool reordered = false;    ///< SELL-16 over reordered columns (order_of_columns) chosen instead
  double input_density = 1;  ///< fraction of nonzero inputs timed
  double row_seconds = 0, column_seconds = 0;
  double reordered_seconds = INFINITY;  ///< not timed: inf
  std::vector<std::int32_t> order_of_columns;  ///< the reordered form's columns (reordered_columns)
  /// Input density below which the column form wins, assuming its time proportional to the
  /// nonzero inputs (the row form's does not depend on them).
  double break_even = 0;
  std::string describe() const {
    return fmt::format(
        "{} form at {:.0f}% nonzero inputs (SELL-16 {:.2f} us, reordered SELL-16 over {} columns {:.2f} us, CSC {:.2f} us, break-even {:.0f}% "
        "nonzero inputs, measured)",
        column ? "column" : reordered ? "reordered row" : "row", 100 * input_density, 1e6 * row_seconds, order_of_columns.size(),
        1e6 * reordered_seconds, 1e6 * column_seconds, 100 * break_even);
  }
};

/// Times SELL-16 (as sparse_engine builds it), SELL-16 over reordered_columns(w, input_frequency)
/// (when that drops or moves any column) and the CSC product on `w` itself for inputs with
/// `input_density` nonzeros, column j nonzero with probability input_frequency[j] when given (its
/// mean rescaled to input_density), at random positions otherwise (best of `rounds` rounds of
/// >= 1 ms, interleaved). A form other than SELL-16 is chosen when it takes under 0.9 x SELL-16's
/// time; of two such, the faster. Depends on timing: near break-even two runs may choose
/// differently (outputs agree within rounding). Throws config_error unless 0 <= input_density <= 1,
/// shape_error when input_frequency's length is not w.cols.
template <class = void>
inline column_form_choice measure_column_form(matrix_ref<const float> w, double input_density, int rounds = 5,
                                              const std::vector<double>& input_frequency = {}) {
  if (!(input_density >= 0 && input_density <= 1)) {
    slimnet::detail::raise<config_error>("slimnet::kernels::measure_column_form", "input density {} is not in [0, 1]", input_density);
  }
  column_form_choice c;
  c.input_density = input_density;
  if (w.rows == 0 || w.cols == 0 || w.rows > 65536) return c;
  const auto csr = csr_matrix<float, std::uint32_t>::from_dense(w);
  const auto sell = sell_matrix<float, std::uint8_t>::from_csr(csr, 0, /*sort_rows=*/true);
  const auto csc = csc_matrix<float>::from_dense(w);
  c.order_of_columns = reordered_columns(w, input_frequency);
  bool moved = static_cast<index_t>(c.order_of_columns.size()) != w.cols;
  for (std::size_t k = 0; k < c.order_of_columns.size() && !moved; ++k) moved = c.order_of_columns[k] != static_cast<std::int32_t>(k);
  std::vector<float> kept(static_cast<std::size_t>(w.rows) * c.order_of_columns.size());
  const index_t nk = static_cast<index_t>(c.order_of_columns.size());
  for (index_t i = 0; i < w.rows; ++i)
    for (index_t k = 0; k < nk; ++k) kept[static_cast<std::size_t>(i * nk + k)] = w(i, c.order_of_columns[static_cast<std::size_t>(k)]);
  const auto sell_kept = sell_matrix<float, std::uint8_t>::from_csr(
      csr_matrix<float, std::uint32_t>::from_dense(row_major<const float>(kept.data(), w.rows, nk)), 0, /*sort_rows=*/true);
  // 16 different inputs, cycled: one input repeated lets the branch predictor learn its zeros.
  constexpr index_t inputs = 16;
  std::vector<float> x(static_cast<std::size_t>(w.cols * inputs)), xg(static_cast<std::size_t>(nk) + 1), y(static_cast<std::size_t>(w.rows));
  double mean_frequency = 0;
  for (const double f : input_frequency) mean_frequency += f / static_cast<double>(input_frequency.size());
  rng gen(3);
  for (index_t s = 0; s < inputs; ++s)
    for (index_t j = 0; j < w.cols; ++j) {
      const double p = input_frequency.empty() || mean_frequency <= 0
                           ? input_density
                           : std::min(1.0, input_frequency[static_cast<std::size_t>(j)] * input_density / mean_frequency);
      x[static_cast<std::size_t>(s * w.cols + j)] = gen.uniform() < p ? static_cast<float>(gen.uniform(0.1, 1)) : 0.0f;
    }
  index_t next_row = 0, next_column = 0, next_reordered = 0;
  auto best_time = [&](auto&& f) { return best_seconds_per_call(f, rounds); };
  // Interleaved, so a burst of load on the shared machine hits all of them.
  c.row_seconds = c.column_seconds = INFINITY;
  for (int r = 0; r < 2; ++r) {
    c.row_seconds = std::min(c.row_seconds, best_time([&] { spmv_sell(sell.ref(), x.data() + (next_row++ % inputs) * w.cols, y.data()); }));
    c.column_seconds =
        std::min(c.column_seconds, best_time([&] { spmv_csc(csc.ref(), x.data() + (next_column++ % inputs) * w.cols, y.data()); }));
    if (moved) {
      // As sparse_engine runs it: the input gathered into the column order, then SELL-16.
      c.reordered_seconds = std::min(c.reordered_seconds, best_time([&] {
                                       const float* xi = x.data() + (next_reordered++ % inputs) * w.cols;
                                       for (index_t k = 0; k < nk; ++k) xg[static_cast<std::size_t>(k)] = xi[c.order_of_columns[static_cast<std::size_t>(k)]];
                                       spmv_sell(sell_kept.ref(), xg.data(), y.data());
                                     }));
    }
  }
  // A margin, as choose_sparse's 0.9: near break-even the timing noise of a shared machine decides.
  c.column = c.column_seconds < 0.9 * c.row_seconds && c.column_seconds <= c.reordered_seconds;
  // The memory rule of issue 15 (<= 1.5 x nnz x 8 bytes): an order that pads the steps beyond it
  // is not taken, however fast.
  const bool fits = static_cast<double>(sell_kept.bytes() + c.order_of_columns.size() * sizeof(std::int32_t)) <=
                    12.0 * static_cast<double>(std::max<index_t>(csr.nnz(), 1));
  c.reordered = !c.column && fits && c.reordered_seconds < 0.9 * c.row_seconds;
  c.break_even = std::min(1.0, input_density * std::min(c.row_seconds, c.reordered_seconds) / c.column_seconds);
  return c;
}

}  // namespace slimnet::kernels
