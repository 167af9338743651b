// Codebook (k-bit indices + centroid table) products against the dense fp32 ones: GEMV at batch 1,
// where the 4- or 5-bit indices cut the bytes streamed per weight 8x / 6.4x, and GEMM at batch 64,
// where decoding is amortised. One thread; ratios compare times taken in the same run.
//
//   codebook_vs_dense [--rounds 5] [--csv codebook_vs_dense.csv]
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "slimnet/core/eigen.hpp"  // Eigen, with GCC 12's false -Wuninitialized silenced
#include <fmt/format.h>

#include "common/cli.hpp"
#include "common/timing.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/kernels/codebook_gemm.hpp"
#include "slimnet/kernels/gemm.hpp"

#if defined(SLIMNET_BENCH_OPENBLAS)
#include <cblas.h>
#endif

using namespace slimnet;
using namespace slimnet::bench;
using row_matrix_f = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace {


}  // namespace

int main(int argc, char** argv) {
  cli::args args(argc, argv, {{"rounds", "5"}, {"csv", "codebook_vs_dense.csv"}},
                 "codebook_vs_dense: codebook GEMV / GEMM against dense fp32, one thread, ratios from one run");
  const int rounds = static_cast<int>(args.integer("rounds"));
  Eigen::setNbThreads(1);
#if defined(SLIMNET_BENCH_OPENBLAS)
  openblas_set_num_threads(1);
#endif
  fmt::print("codebook_vs_dense: one thread, CPU time of the thread, best of {} interleaved rounds; OpenBLAS column {}\n", rounds,
#if defined(SLIMNET_BENCH_OPENBLAS)
             "present"
#else
             "missing (built without OpenBLAS)"
#endif
  );
  fmt::print("dense best = fastest of Eigen, OpenBLAS, slimnet gemm; ratio = codebook time / dense best\n\n");
  fmt::print("{:>11} {:>5} {:>4} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}\n", "m x k", "batch", "bits", "eigen", "openblas", "sl_gemm",
             "codebook", "bytes/w", "ratio");
  std::ofstream csv(args.str("csv"));
  csv << "m,k,batch,bits,variant,microseconds,ratio_to_best_dense\n";
  rng gen(12);
  for (auto [m, k] : std::vector<std::pair<index_t, index_t>>{{1000, 1000}, {4096, 1024}, {500, 800}}) {
    for (index_t batch : {1, 64}) {
      for (int bits : {4, 5, 8}) {
        const int clusters = 1 << bits;
        std::vector<float> centroids(static_cast<std::size_t>(clusters));
        for (auto& c : centroids) c = static_cast<float>(gen.uniform(-1, 1));
        std::vector<int> idx(static_cast<std::size_t>(m * k));
        for (auto& i : idx) i = static_cast<int>(gen.below(static_cast<std::uint64_t>(clusters)));
        const auto cb = kernels::codebook_matrix<float>::from_indices(m, k, bits, idx, centroids);
        row_matrix_f w(m, k), x(k, batch), y(m, batch);
        for (index_t i = 0; i < m; ++i)
          for (index_t j = 0; j < k; ++j) w(i, j) = centroids[static_cast<std::size_t>(idx[static_cast<std::size_t>(i * k + j)])];
        for (index_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(gen.uniform(-1, 1));
        std::vector<std::string> names = {"eigen"};
        std::vector<std::function<void()>> fs = {[&] {
          if (batch == 1) {
            Eigen::Map<Eigen::VectorXf>(y.data(), m).noalias() = w * Eigen::Map<const Eigen::VectorXf>(x.data(), k);
          } else {
            y.noalias() = w * x;
          }
        }};
#if defined(SLIMNET_BENCH_OPENBLAS)
        names.push_back("openblas");
        fs.push_back([&] {
          if (batch == 1) {
            cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(m), static_cast<int>(k), 1.0f, w.data(), static_cast<int>(k), x.data(), 1,
                        0.0f, y.data(), 1);
          } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(batch), static_cast<int>(k), 1.0f,
                        w.data(), static_cast<int>(k), x.data(), static_cast<int>(batch), 0.0f, y.data(), static_cast<int>(batch));
          }
        });
#endif
        names.push_back("slimnet_gemm");
        fs.push_back([&] {
          kernels::gemm<float>(kernels::row_major<const float>(w.data(), m, k), kernels::row_major<const float>(x.data(), k, batch),
                               kernels::row_major(y.data(), m, batch));
        });
        names.push_back("codebook");
        fs.push_back([&] {
          if (batch == 1) {
            kernels::gemv_codebook(cb.ref(), x.data(), y.data());
          } else {
            kernels::gemm_codebook(cb.ref(), kernels::row_major<const float>(x.data(), k, batch), kernels::row_major(y.data(), m, batch));
          }
        });
        const auto t = time_side_by_side(fs, rounds);
        double best = INFINITY;
        for (std::size_t i = 0; i + 1 < t.size(); ++i) best = std::min(best, t[i]);
        auto time_of = [&](const std::string& n) -> double {
          for (std::size_t i = 0; i < names.size(); ++i)
            if (names[i] == n) return t[i];
          return NAN;
        };
        auto us = [](double v) { return std::isnan(v) ? std::string("-") : fmt::format("{:.1f}", v * 1e6); };
        fmt::print("{:>11} {:>5} {:>4} {:>10} {:>10} {:>10} {:>10} {:>10.3f} {:>7.1f}%\n", fmt::format("{}x{}", m, k), batch, bits,
                   us(time_of("eigen")), us(time_of("openblas")), us(time_of("slimnet_gemm")), us(time_of("codebook")),
                   static_cast<double>(cb.bytes()) / static_cast<double>(m * k), 100 * time_of("codebook") / best);
        for (std::size_t i = 0; i < names.size(); ++i)
          csv << fmt::format("{},{},{},{},{},{:.2f},{:.4f}\n", m, k, batch, bits, names[i], t[i] * 1e6, t[i] / best);
      }
    }
  }
  fmt::print("(microseconds; bytes/w = codebook bytes per weight, against 4 for fp32)\nwrote {}\n", args.str("csv"));
  return 0;
}
