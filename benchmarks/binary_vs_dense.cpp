// XNOR/popcount GEMM against fp32 GEMM of the same shape (issue 5): 1024^3 and LeNet / VGG-16 layer
// shapes as GEMMs (convolutions through im2row: M = output positions, K = in_c * kh * kw, N = out_c),
// then two fully connected layers at batch 1.
// One thread unless stated; ratios compare times taken in the same run, interleaved round by round.
//
//   binary_vs_dense [--rounds 5] [--csv binary_vs_dense.csv] [--quick]
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
#include "common/shapes.hpp"
#include "common/timing.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/kernels/binary_gemm.hpp"
#include "slimnet/kernels/gemm.hpp"

#if defined(SLIMNET_BENCH_OPENBLAS)
#include <cblas.h>
#endif

using namespace slimnet;
using namespace slimnet::bench;
using row_matrix_f = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

int main(int argc, char** argv) {
  cli::args args(argc, argv, {{"rounds", "5"}, {"csv", "binary_vs_dense.csv"}, {"quick", "false"}},
                 "binary_vs_dense: XNOR/popcount GEMM against fp32 GEMM, one thread, ratios from one run");
  const int rounds = static_cast<int>(args.integer("rounds"));
  Eigen::setNbThreads(1);
#if defined(SLIMNET_BENCH_OPENBLAS)
  openblas_set_num_threads(1);
  const bool have_blas = true;
#else
  const bool have_blas = false;
#endif
  fmt::print("binary_vs_dense: one thread, CPU time of the thread, best of {} interleaved rounds; XNOR path {}; OpenBLAS column {}\n{}\n",
             rounds, kernels::isa_name(kernels::gemm_xnor_path()),
             have_blas ? "present" : "missing (built without OpenBLAS: install libopenblas-dev and re-run cmake)", kernels::describe_cpu());
  fmt::print("C (M x N) = A (M x K) W^T with W (N x K) as a layer stores it. fp32 best = fastest of Eigen, OpenBLAS, slimnet gemm.\n");
  fmt::print("xnor = gemm_xnor on packed A and prepacked W (int32 out); +pack adds packing A's signs from floats.\n\n");

  auto shapes = layer_gemm_shapes(args.flag("quick"));
  // Batch 1: a fully connected layer on one input is a GEMV (M = 1), where the kernels' row tiles
  // are mostly empty.
  if (!args.flag("quick")) {
    shapes.push_back({"LeNet-5 fc1 (b1)", 1, 800, 500});
    shapes.push_back({"VGG-16 fc7 (b1)", 1, 4096, 4096});
  }

  std::ofstream csv(args.str("csv"));
  csv << "shape,m,k,n,variant,microseconds,speedup_vs_best_fp32\n";
  fmt::print("{:<22} {:>5} {:>5} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}\n", "shape", "M", "K", "N", "eigen", "openblas",
             "sl_gemm", "xnor", "xnor+pack", "speedup", "+pack");
  rng gen(3);
  for (const auto& s : shapes) {
    row_matrix_f a(s.m, s.k), w(s.n, s.k), c(s.m, s.n);
    for (index_t i = 0; i < a.size(); ++i) a.data()[i] = static_cast<float>(gen.uniform(-1, 1));
    for (index_t i = 0; i < w.size(); ++i) w.data()[i] = gen.uniform() < 0.5 ? -1.0f : 1.0f;
    const auto av = kernels::row_major<const float>(a.data(), s.m, s.k);
    const auto wv = kernels::row_major<const float>(w.data(), s.n, s.k);
    kernels::bit_matrix abits = kernels::pack_signs(av);
    const kernels::xnor_packed_rhs wpacked(kernels::pack_signs(wv).ref());
    std::vector<std::int32_t> ci(static_cast<std::size_t>(s.m * s.n));
    std::vector<std::string> names;
    std::vector<std::function<void()>> fs;
    names.push_back("eigen");
    fs.push_back([&] { c.noalias() = a * w.transpose(); });
#if defined(SLIMNET_BENCH_OPENBLAS)
    names.push_back("openblas");
    fs.push_back([&] {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(s.m), static_cast<int>(s.n), static_cast<int>(s.k), 1.0f,
                  a.data(), static_cast<int>(s.k), w.data(), static_cast<int>(s.k), 0.0f, c.data(), static_cast<int>(s.n));
    });
#endif
    names.push_back("slimnet_gemm");
    fs.push_back([&] { kernels::gemm<float>(av, wv.transposed(), kernels::row_major(c.data(), s.m, s.n)); });
    names.push_back("xnor");
    fs.push_back([&] { kernels::gemm_xnor(abits.ref(), wpacked, kernels::row_major(ci.data(), s.m, s.n)); });
    names.push_back("xnor+pack");
    fs.push_back([&] {
      kernels::pack_signs(av, abits);
      kernels::gemm_xnor(abits.ref(), wpacked, kernels::row_major(ci.data(), s.m, s.n));
    });
    const auto t = time_side_by_side(fs, rounds);
    auto time_of = [&](const std::string& n) -> double {
      for (std::size_t i = 0; i < names.size(); ++i)
        if (names[i] == n) return t[i];
      return NAN;
    };
    double best = INFINITY;
    for (const char* n : {"eigen", "openblas", "slimnet_gemm"})
      if (!std::isnan(time_of(n))) best = std::min(best, time_of(n));
    auto us = [](double v) { return std::isnan(v) ? std::string("-") : fmt::format("{:.1f}", v * 1e6); };
    fmt::print("{:<22} {:>5} {:>5} {:>5} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8.1f}x {:>8.1f}x\n", s.name, s.m, s.k, s.n,
               us(time_of("eigen")), us(time_of("openblas")), us(time_of("slimnet_gemm")), us(time_of("xnor")), us(time_of("xnor+pack")),
               best / time_of("xnor"), best / time_of("xnor+pack"));
    for (std::size_t i = 0; i < names.size(); ++i) {
      csv << fmt::format("{},{},{},{},{},{:.2f},{:.3f}\n", s.name, s.m, s.k, s.n, names[i], t[i] * 1e6, best / t[i]);
    }
    // The XNOR result is the fp32 product of the +-1 matrices (exact in float for K < 2^24).
    row_matrix_f asign = (a.array() < 0).select(row_matrix_f::Constant(s.m, s.k, -1.0f), row_matrix_f::Constant(s.m, s.k, 1.0f));
    row_matrix_f expect = asign * w.transpose();
    index_t wrong = 0;
    for (index_t i = 0; i < expect.size(); ++i) wrong += expect.data()[i] != static_cast<float>(ci[static_cast<std::size_t>(i)]);
    if (wrong) fmt::print(stderr, "error: {} outputs of the XNOR GEMM differ from the fp32 product of the signs\n", wrong);
  }
  fmt::print("(microseconds; speedup = best fp32 time / XNOR time)\n\n");

  // Threads: the square shape with 1 and 2 threads.
  {
    const index_t n = 1024;
    rng g2(5);
    row_matrix_f a(n, n), w(n, n);
    for (index_t i = 0; i < a.size(); ++i) a.data()[i] = static_cast<float>(g2.uniform(-1, 1));
    for (index_t i = 0; i < w.size(); ++i) w.data()[i] = static_cast<float>(g2.uniform(-1, 1));
    const auto abits = kernels::pack_signs(kernels::row_major<const float>(a.data(), n, n));
    const kernels::xnor_packed_rhs wp(kernels::pack_signs(kernels::row_major<const float>(w.data(), n, n)).ref());
    std::vector<std::int32_t> ci(static_cast<std::size_t>(n * n));
    kernels::xnor_params one, two;
    two.threads = 2;
    fmt::print("== threads ({}; wall time, fastest of 300 single calls), load average {} ==\n",
               kernels::compiled_kernel_paths().openmp ? "OpenMP" : "std::thread",
               load_average());
    const std::vector<double> t = {best_single_call([&] { kernels::gemm_xnor(abits.ref(), wp, kernels::row_major(ci.data(), n, n), one); }),
                                   best_single_call([&] { kernels::gemm_xnor(abits.ref(), wp, kernels::row_major(ci.data(), n, n), two); })};
    fmt::print("XNOR GEMM 1024^3: 1 thread {:.1f} us, 2 threads {:.1f} us, speed-up {:.2f}x\n", t[0] * 1e6, t[1] * 1e6, t[0] / t[1]);
  }
  fmt::print("wrote {}\n", args.str("csv"));
  return 0;
}
