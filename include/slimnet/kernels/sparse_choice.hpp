// The dense-or-sparse choice, made once per layer when it is converted: the layer's density
// against the break-even density for its shape and batch, measured on this machine class by
// benchmarks/sparse_vs_dense, or measured on the layer's own weights on the spot.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
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

/// The batch-1 form of a sparse Linear for inputs with a known fraction of nonzeros: the row form
/// (SELL-16, rows sorted by length, every nonzero weight per call) or the column form (CSC,
/// kernels/sparse_csc.hpp: only the columns of nonzero inputs, work nnz x input density). Both
/// forms do not fit the 12 bytes per nonzero of issue 15 together (SELL-16 ~9.3 + CSC ~6.2 at
/// 8%), so a layer keeps one.
struct column_form_choice {
  bool column = false;       ///< CSC faster (by the 10% margin) at this input density
  double input_density = 1;  ///< fraction of nonzero inputs timed
  double row_seconds = 0, column_seconds = 0;
  /// Input density below which the column form wins, assuming its time proportional to the
  /// nonzero inputs (the row form's does not depend on them).
  double break_even = 0;
  std::string describe() const {
    return fmt::format("{} form at {:.0f}% nonzero inputs (SELL-16 {:.2f} us, CSC {:.2f} us, break-even {:.0f}% nonzero inputs, measured)",
                       column ? "column" : "row", 100 * input_density, 1e6 * row_seconds, 1e6 * column_seconds, 100 * break_even);
  }
};

/// Times SELL-16 (as sparse_engine builds it) against the CSC product on `w` itself for inputs
/// with `input_density` nonzeros at random positions (best of `rounds` rounds of >= 1 ms); the
/// column form is chosen when it takes under 0.9 x the row form's time. Depends
/// on timing: near break-even two runs may choose differently (outputs agree within rounding).
/// Throws config_error unless 0 <= input_density <= 1.
inline column_form_choice measure_column_form(matrix_ref<const float> w, double input_density, int rounds = 5) {
  if (!(input_density >= 0 && input_density <= 1)) {
    slimnet::detail::raise<config_error>("slimnet::kernels::measure_column_form", "input density {} is not in [0, 1]", input_density);
  }
  column_form_choice c;
  c.input_density = input_density;
  if (w.rows == 0 || w.cols == 0 || w.rows > 65536) return c;
  const auto csr = csr_matrix<float, std::uint32_t>::from_dense(w);
  const auto sell = sell_matrix<float, std::uint8_t>::from_csr(csr, 0, /*sort_rows=*/true);
  const auto csc = csc_matrix<float>::from_dense(w);
  // 16 different inputs, cycled: one input repeated lets the branch predictor learn its zeros.
  constexpr index_t inputs = 16;
  std::vector<float> x(static_cast<std::size_t>(w.cols * inputs)), y(static_cast<std::size_t>(w.rows));
  rng gen(3);
  for (auto& v : x) v = gen.uniform() < input_density ? static_cast<float>(gen.uniform(0.1, 1)) : 0.0f;
  index_t next_row = 0, next_column = 0;
  auto best_time = [&](auto&& f) { return best_seconds_per_call(f, rounds); };
  // Interleaved, so a burst of load on the shared machine hits both.
  c.row_seconds = c.column_seconds = INFINITY;
  for (int r = 0; r < 2; ++r) {
    c.row_seconds = std::min(c.row_seconds, best_time([&] { spmv_sell(sell.ref(), x.data() + (next_row++ % inputs) * w.cols, y.data()); }));
    c.column_seconds =
        std::min(c.column_seconds, best_time([&] { spmv_csc(csc.ref(), x.data() + (next_column++ % inputs) * w.cols, y.data()); }));
  }
  // A margin, as choose_sparse's 0.9: near break-even the timing noise of a shared machine decides.
  c.column = c.column_seconds < 0.9 * c.row_seconds;
  c.break_even = std::min(1.0, input_density * c.row_seconds / c.column_seconds);
  return c;
}

}  // namespace slimnet::kernels
