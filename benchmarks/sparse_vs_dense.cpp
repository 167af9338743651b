// Does sparsity pay on this machine? Sparse against dense products (issue 5): the seed's
// matrix-vector table at 1% density, a density sweep at batch 1 and batch 64 with the break-even
// density, the break-even for other layer shapes, and thread scaling. One thread unless stated;
// every ratio compares times taken in the same run, the variants interleaved round by round
// (absolute times on the shared machine move 15-30% between runs, ratios much less).
//
//   sparse_vs_dense [--rounds 7] [--csv sparse_vs_dense.csv] [--png sparse_vs_dense.png] [--quick]
//                   [--no-shapes] [--tune (adds every block width of each format)]
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "slimnet/core/eigen.hpp"  // Eigen, with GCC 12's false -Wuninitialized silenced
#include <Eigen/SparseCore>
#include <fmt/format.h>

#include "common/cli.hpp"
#include "common/timing.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/kernels/gemm.hpp"
#include "slimnet/kernels/sparse.hpp"

#if defined(SLIMNET_BENCH_OPENBLAS)
#include <cblas.h>
#endif

using namespace slimnet;
using namespace slimnet::bench;
using row_matrix_f = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace {


// --- one measured case ---------------------------------------------------------------------------

struct case_result {
  std::string section;
  index_t m = 0, k = 0, batch = 0;
  double density = 0;
  std::vector<std::string> names;
  std::vector<double> seconds;
  index_t nnz = 0;

  double time(const std::string& name) const {
    for (std::size_t i = 0; i < names.size(); ++i)
      if (names[i] == name) return seconds[i];
    return NAN;
  }
  double best_dense() const {
    double best = INFINITY;
    for (const char* n : {"eigen_dense", "openblas", "slimnet_gemm"})
      if (!std::isnan(time(n))) best = std::min(best, time(n));
    return best;
  }
  /// The format the library picks: SELL at batch 1, column-blocked CSR at batch >= 2.
  double slimnet_sparse() const { return batch == 1 ? time("slimnet_sell") : time("slimnet_blocked"); }
};

/// Calls f with a CSR matrix of the narrowest index type for `cols`.
template <class F>
void with_narrow_csr(kernels::matrix_ref<const float> w, F&& f) {
  switch (kernels::narrow_index_bytes(w.cols)) {
    case 1: f(kernels::csr_matrix<float, std::uint8_t>::from_dense(w)); break;
    case 2: f(kernels::csr_matrix<float, std::uint16_t>::from_dense(w)); break;
    default: f(kernels::csr_matrix<float, std::uint32_t>::from_dense(w)); break;
  }
}

double max_rel_diff(const float* a, const float* b, index_t n) {
  double worst = 0, scale = 1e-30;
  for (index_t i = 0; i < n; ++i) scale = std::max(scale, static_cast<double>(std::abs(b[i])));
  for (index_t i = 0; i < n; ++i) worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]) / scale);
  return worst;
}

case_result run_case(const std::string& section, index_t m, index_t k, index_t batch, double density, int rounds,
                     bool tune_blocks, std::uint64_t seed = 42) {
  rng gen(seed);
  row_matrix_f w = row_matrix_f::Zero(m, k);
  index_t nnz = 0;
  for (index_t i = 0; i < m; ++i)
    for (index_t j = 0; j < k; ++j)
      if (gen.uniform() < density) {
        w(i, j) = static_cast<float>(gen.uniform(-1, 1));
        ++nnz;
      }
  // Activations: X is (k x batch), batch-contiguous (row-major), the layout every variant gets.
  row_matrix_f x(k, batch);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<float>(gen.uniform(-1, 1));
  Eigen::SparseMatrix<float, Eigen::RowMajor, int> ws = w.sparseView();
  ws.makeCompressed();

  const auto wv = kernels::row_major<const float>(w.data(), m, k);
  const auto xv = kernels::row_major<const float>(x.data(), k, batch);
  std::vector<std::vector<float>> outputs;
  std::vector<std::string> names;
  std::vector<std::function<void()>> fs;
  auto add = [&](std::string name, auto&& fn_of_output) {
    outputs.emplace_back(static_cast<std::size_t>(m * batch), 0.0f);
    float* y = outputs.back().data();
    names.push_back(std::move(name));
    fs.push_back([fn = fn_of_output, y] { fn(y); });
  };

  // Dense peers.
  add("eigen_dense", [&](float* y) {
    if (batch == 1) {
      Eigen::Map<Eigen::VectorXf>(y, m).noalias() = w * Eigen::Map<const Eigen::VectorXf>(x.data(), k);
    } else {
      Eigen::Map<row_matrix_f>(y, m, batch).noalias() = w * x;
    }
  });
#if defined(SLIMNET_BENCH_OPENBLAS)
  add("openblas", [&](float* y) {
    if (batch == 1) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(m), static_cast<int>(k), 1.0f, w.data(), static_cast<int>(k), x.data(),
                  1, 0.0f, y, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(batch), static_cast<int>(k), 1.0f,
                  w.data(), static_cast<int>(k), x.data(), static_cast<int>(batch), 0.0f, y, static_cast<int>(batch));
    }
  });
#endif
  add("slimnet_gemm", [&](float* y) { kernels::gemm<float>(wv, xv, kernels::row_major(y, m, batch)); });
  // Sparse.
  add("eigen_sparse", [&](float* y) {
    if (batch == 1) {
      Eigen::Map<Eigen::VectorXf>(y, m).noalias() = ws * Eigen::Map<const Eigen::VectorXf>(x.data(), k);
    } else {
      Eigen::Map<row_matrix_f>(y, m, batch).noalias() = ws * x;
    }
  });
  // Formats live as long as the timing: keep them in shared pointers captured by the lambdas.
  with_narrow_csr(wv, [&](auto csr) {
    using csr_t = decltype(csr);
    auto a = std::make_shared<csr_t>(std::move(csr));
    if (batch == 1) {
      add("slimnet_csr", [a, &x](float* y) { kernels::spmv_csr(a->ref(), x.data(), y); });
      using sell_t = kernels::sell_matrix<float, std::uint8_t>;
      auto s = std::make_shared<sell_t>(sell_t::from_csr(*a));
      add("slimnet_sell", [s, &x](float* y) { kernels::spmv_sell(s->ref(), x.data(), y); });
      if (tune_blocks) {
        for (index_t bc : {16, 32, 64}) {
          for (bool sorted : {false, true}) {
            auto t = std::make_shared<sell_t>(sell_t::from_csr(*a, bc, sorted));
            add(fmt::format("sell_{}{}", bc, sorted ? "s" : ""), [t, &x](float* y) { kernels::spmv_sell(t->ref(), x.data(), y); });
          }
        }
        using wide_t = kernels::sell_matrix<float, typename csr_t::index_type>;
        auto g = std::make_shared<wide_t>(wide_t::from_csr(*a, k, true));
        add("sell_gather", [g, &x](float* y) { kernels::spmv_sell(g->ref(), x.data(), y); });
      }
    } else {
      add("slimnet_csr", [a, xv, m, batch](float* y) { kernels::spmm_csr(a->ref(), xv, kernels::row_major(y, m, batch)); });
    }
  });
  if (batch > 1) {
    // As the sparse layer does: panels from blocked_csr_block_cols, 2-byte indices for one wide panel.
    if (kernels::blocked_csr_block_cols(m, k, nnz) > 256 && k <= 65536) {
      using wide_t = kernels::blocked_csr_matrix<float, std::uint16_t>;
      auto b = std::make_shared<wide_t>(wide_t::from_dense(wv, kernels::blocked_csr_block_cols(m, k, nnz)));
      add("slimnet_blocked", [b, xv, m, batch](float* y) { kernels::spmm_blocked_csr(b->ref(), xv, kernels::row_major(y, m, batch)); });
    } else {
      auto b = std::make_shared<kernels::blocked_csr_matrix<float, std::uint8_t>>(
          kernels::blocked_csr_matrix<float, std::uint8_t>::from_dense(wv));
      add("slimnet_blocked", [b, xv, m, batch](float* y) { kernels::spmm_blocked_csr(b->ref(), xv, kernels::row_major(y, m, batch)); });
    }
    if (tune_blocks) {
      for (index_t bc : {64, 128, 192, 256}) {
        auto bb = std::make_shared<kernels::blocked_csr_matrix<float, std::uint8_t>>(
            kernels::blocked_csr_matrix<float, std::uint8_t>::from_dense(wv, bc));
        add(fmt::format("blocked_{}", bc),
            [bb, xv, m, batch](float* y) { kernels::spmm_blocked_csr(bb->ref(), xv, kernels::row_major(y, m, batch)); });
      }
    }
  }

  case_result r;
  r.section = section;
  r.m = m;
  r.k = k;
  r.batch = batch;
  r.density = density;
  r.nnz = nnz;
  r.names = names;
  r.seconds = time_side_by_side(fs, rounds);
  // Every variant computed the same product.
  for (std::size_t v = 1; v < outputs.size(); ++v) {
    const double d = max_rel_diff(outputs[v].data(), outputs[0].data(), m * batch);
    if (d > 1e-4) fmt::print(stderr, "warning: {} differs from {} by {:.2e} (relative to max |y|)\n", names[v], names[0], d);
  }
  return r;
}

std::string us(double s) { return std::isnan(s) ? "-" : fmt::format("{:.2f}", s * 1e6); }
std::string pct(double r) { return std::isnan(r) || std::isinf(r) ? "-" : fmt::format("{:.1f}%", 100 * r); }

/// Density where slimnet's sparse time equals the best dense time (log-linear interpolation
/// between sweep points); NAN when sparse wins (or loses) over the whole sweep.
double break_even(const std::vector<case_result>& sweep) {
  for (std::size_t i = 1; i < sweep.size(); ++i) {
    const double r0 = sweep[i - 1].slimnet_sparse() / sweep[i - 1].best_dense();
    const double r1 = sweep[i].slimnet_sparse() / sweep[i].best_dense();
    if (r0 < 1 && r1 >= 1) {
      const double t = (1 - r0) / (r1 - r0);
      return std::exp(std::log(sweep[i - 1].density) + t * (std::log(sweep[i].density) - std::log(sweep[i - 1].density)));
    }
  }
  return NAN;
}

void print_sweep(const std::vector<case_result>& sweep) {
  if (sweep.empty()) return;
  const auto& names = sweep[0].names;
  std::string head = fmt::format("{:>8} {:>8}", "density", "nnz");
  for (const auto& n : names) head += fmt::format(" {:>15}", n);
  head += fmt::format(" {:>13} {:>13}", "sparse/eigen", "sparse/best");
  fmt::print("{}\n", head);
  for (const auto& r : sweep) {
    std::string line = fmt::format("{:>7.1f}% {:>8}", 100 * r.density, r.nnz);
    for (double s : r.seconds) line += fmt::format(" {:>15}", us(s));
    line += fmt::format(" {:>13} {:>13}", pct(r.slimnet_sparse() / r.time("eigen_dense")), pct(r.slimnet_sparse() / r.best_dense()));
    fmt::print("{}\n", line);
  }
}

void write_csv(const std::string& path, const std::vector<case_result>& all) {
  std::ofstream out(path);
  out << "section,m,k,batch,density,nnz,variant,microseconds,ratio_to_eigen_dense,ratio_to_best_dense\n";
  for (const auto& r : all) {
    for (std::size_t v = 0; v < r.names.size(); ++v) {
      out << fmt::format("{},{},{},{},{},{},{},{:.3f},{:.4f},{:.4f}\n", r.section, r.m, r.k, r.batch, r.density, r.nnz, r.names[v],
                         r.seconds[v] * 1e6, r.seconds[v] / r.time("eigen_dense"), r.seconds[v] / r.best_dense());
    }
  }
}

/// Time against density for batch 1 and batch 64 with the break-even points marked, via gnuplot.
void write_png(const std::string& png, const std::string& csv_stem, const std::vector<case_result>& b1,
               const std::vector<case_result>& b64, double be1, double be64) {
  if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) {
    fmt::print("(no plot: gnuplot is not installed; `apt-get install gnuplot-nox` adds it)\n");
    return;
  }
  auto dat = [&](const std::vector<case_result>& sweep, const std::string& path) {
    std::ofstream out(path);
    out << "# density";
    for (const auto& n : sweep[0].names) out << ' ' << n;
    out << '\n';
    for (const auto& r : sweep) {
      out << r.density * 100;
      for (double s : r.seconds) out << ' ' << s * 1e6;
      out << '\n';
    }
  };
  const std::string d1 = csv_stem + "_batch1.dat", d64 = csv_stem + "_batch64.dat", script = csv_stem + ".gp";
  dat(b1, d1);
  dat(b64, d64);
  std::ofstream gp(script);
  gp << "set terminal pngcairo size 1400,560 font ',10'\nset output '" << png << "'\n";
  gp << "set multiplot layout 1,2 title 'slimnet: sparse vs dense, 1000 x 1000, one thread (time per product)'\n";
  gp << "set termoption noenhanced\nset logscale xy\nset xlabel 'density (% nonzeros)'\nset ylabel 'microseconds'\nset key top left\nset grid\n";
  auto panel = [&](const std::string& title, const std::string& d, const std::vector<case_result>& sweep, double be) {
    gp << "unset arrow\nunset label\n";
    if (!std::isnan(be)) {
      gp << fmt::format("set arrow from {0},graph 0 to {0},graph 1 nohead dashtype 2 lw 2 lc rgb 'red'\n", be * 100);
      gp << fmt::format("set label 'break-even {0:.1f}%' at {0},graph 0.95 right offset -0.5,0 tc rgb 'red'\n", be * 100);
    }
    gp << "set title '" << title << "'\nplot ";
    for (std::size_t v = 0; v < sweep[0].names.size(); ++v) {
      gp << (v ? ", " : "") << "'" << d << "' using 1:" << v + 2 << " with linespoints title '" << sweep[0].names[v] << "'";
    }
    gp << '\n';
  };
  panel("batch 1 (matrix-vector)", d1, b1, be1);
  panel("batch 64 (matrix-matrix)", d64, b64, be64);
  gp << "unset multiplot\n";
  gp.close();
  if (std::system(("gnuplot '" + script + "'").c_str()) == 0) fmt::print("wrote {}\n", png);
}

}  // namespace

int main(int argc, char** argv) {
  cli::args args(argc, argv,
                 {{"rounds", "7"}, {"csv", "sparse_vs_dense.csv"}, {"png", "sparse_vs_dense.png"}, {"quick", "false"}, {"tune", "false"}, {"no-shapes", "false"}},
                 "sparse_vs_dense: sparse against dense products, one thread, ratios from one run");
  const int rounds = static_cast<int>(args.integer("rounds"));
  Eigen::setNbThreads(1);  // Eigen's GEMM would use every OpenMP thread of the program
  const bool quick = args.flag("quick"), tune = args.flag("tune");
#if defined(SLIMNET_BENCH_OPENBLAS)
  openblas_set_num_threads(1);
  const char* blas_note = "OpenBLAS sgemv/sgemm (1 thread)";
#else
  const char* blas_note = "missing (built without OpenBLAS: install libopenblas-dev and re-run cmake)";
#endif
  fmt::print("sparse_vs_dense: one thread, CPU time of the thread, best of {} interleaved rounds; OpenBLAS column: {}\n", rounds,
             blas_note);
  fmt::print(
      "{}; run-time paths: SELL-16 {}, CSR and blocked CSR {}, dense GEMM {} (SLIMNET_ISA=avx2|avx512|portable forces one)\n",
      kernels::describe_cpu(), kernels::isa_name(kernels::sell_path()), kernels::isa_name(kernels::csr_path()),
      kernels::isa_name(kernels::gemm_path()));
  fmt::print("X is (k x batch), batch-contiguous; Eigen sparse is SparseMatrix<float, RowMajor> times the same X.\n");
  fmt::print("slimnet sparse = SELL-16 (batch 1) or column-blocked CSR (batch 64); ratios are its time / dense time.\n\n");
  std::vector<case_result> all;

  // 1. The seed's table: matrix-vector at 1% density.
  fmt::print("== seed table: matrix-vector (batch 1), density 1% ==\n");
  fmt::print("{:>11} {:>8} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>13} {:>13} {:>10}\n", "m x k", "nnz", "eigen_dense", "openblas",
             "slimnet_gemm", "eigen_sparse", "slimnet_csr", "slimnet_sell", "eigen sp/de", "slimnet/eigen", "slim/best");
  const double seed_ratio[4] = {0.517, 0.291, 0.336, 0.117};
  int si = 0;
  for (index_t m : {100, 1000}) {
    for (index_t k : {100, 1000}) {
      auto r = run_case("seed", m, k, 1, 0.01, rounds, false);
      fmt::print("{:>11} {:>8} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>13} {:>13} {:>10}   (seed: {:.1f}%)\n",
                 fmt::format("{}x{}", m, k), r.nnz, us(r.time("eigen_dense")), us(r.time("openblas")), us(r.time("slimnet_gemm")),
                 us(r.time("eigen_sparse")), us(r.time("slimnet_csr")), us(r.time("slimnet_sell")),
                 pct(r.time("eigen_sparse") / r.time("eigen_dense")), pct(r.slimnet_sparse() / r.time("eigen_dense")),
                 pct(r.slimnet_sparse() / r.best_dense()), 100 * seed_ratio[si++]);
      all.push_back(r);
    }
  }
  fmt::print("(times in microseconds)\n\n");

  // 2. Density sweep, 1000 x 1000, batch 1 and batch 64.
  const std::vector<double> densities = quick ? std::vector<double>{0.01, 0.1, 0.5}
                                              : std::vector<double>{0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9};
  std::vector<case_result> sweep1, sweep64;
  for (index_t batch : {1, 64}) {
    fmt::print("== density sweep: 1000 x 1000, batch {} (microseconds) ==\n", batch);
    auto& sweep = batch == 1 ? sweep1 : sweep64;
    for (double d : densities) sweep.push_back(run_case(fmt::format("sweep_batch{}", batch), 1000, 1000, batch, d, rounds, tune));
    print_sweep(sweep);
    const double be = break_even(sweep);
    fmt::print("break-even density (slimnet sparse = best dense): {}\n\n",
               std::isnan(be) ? std::string("outside the sweep") : fmt::format("{:.1f}%", 100 * be));
    all.insert(all.end(), sweep.begin(), sweep.end());
  }
  const double be1 = break_even(sweep1), be64 = break_even(sweep64);

  // 3. Break-even densities for other layer shapes (what kernels::sparse_choice encodes).
  if (!quick && !args.flag("no-shapes")) {
    fmt::print("== break-even density by shape (slimnet sparse vs best dense) ==\n");
    fmt::print("{:>12} {:>6} {:>12}\n", "m x k", "batch", "break-even");
    const std::vector<double> grid = {0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9};
    for (auto [m, k] : std::vector<std::pair<index_t, index_t>>{{100, 100}, {300, 784}, {100, 300}, {500, 800}, {4096, 1024}}) {
      for (index_t batch : {1, 64}) {
        std::vector<case_result> sweep;
        for (double d : grid) sweep.push_back(run_case("shape_break_even", m, k, batch, d, std::max(3, rounds / 2), false));
        const double be = break_even(sweep);
        const double r_last = sweep.back().slimnet_sparse() / sweep.back().best_dense();
        fmt::print("{:>12} {:>6} {:>12}\n", fmt::format("{}x{}", m, k), batch,
                   std::isnan(be) ? (r_last < 1 ? std::string("> 90%") : std::string("< 2%")) : fmt::format("{:.1f}%", 100 * be));
        all.insert(all.end(), sweep.begin(), sweep.end());
      }
    }
    fmt::print("\n");
  }

  // 4. Threads: the same products with 2 threads (OpenMP when compiled with it).
  {
    fmt::print("== threads: 1000 x 1000 at 10% density ({}; wall time, fastest of 300 single calls) ==\n",
               kernels::compiled_kernel_paths().openmp ? "OpenMP" : "std::thread");
    rng gen(7);
    row_matrix_f w = row_matrix_f::Zero(1000, 1000);
    for (index_t i = 0; i < w.size(); ++i)
      if (gen.uniform() < 0.1) w.data()[i] = static_cast<float>(gen.uniform(-1, 1));
    row_matrix_f x = row_matrix_f::Random(1000, 64), y(1000, 64);
    const auto wv = kernels::row_major<const float>(w.data(), 1000, 1000);
    const auto b = kernels::blocked_csr_matrix<float, std::uint8_t>::from_dense(wv);
    const auto s = kernels::sell_matrix<float, std::uint16_t>::from_dense(wv);
    kernels::sparse_params<float> one, two;
    two.threads = 2;
    const auto xv = kernels::row_major<const float>(x.data(), 1000, 64);
    const auto yv = kernels::row_major(y.data(), 1000, 64);
    fmt::print("load average before: {}", [] {
      std::ifstream in("/proc/loadavg");
      std::string line;
      std::getline(in, line);
      return line + "\n";
    }());
    const std::vector<double> t = {best_single_call([&] { kernels::spmm_blocked_csr(b.ref(), xv, yv, one); }),
                                   best_single_call([&] { kernels::spmm_blocked_csr(b.ref(), xv, yv, two); }),
                                   best_single_call([&] { kernels::spmv_sell(s.ref(), x.data(), y.data(), one); }),
                                   best_single_call([&] { kernels::spmv_sell(s.ref(), x.data(), y.data(), two); })};
    fmt::print("SpMM batch 64: 1 thread {} us, 2 threads {} us, speed-up {:.2f}x\n", us(t[0]), us(t[1]), t[0] / t[1]);
    fmt::print("SpMV batch 1:  1 thread {} us, 2 threads {} us, speed-up {:.2f}x\n\n", us(t[2]), us(t[3]), t[2] / t[3]);
  }

  write_csv(args.str("csv"), all);
  fmt::print("wrote {}\n", args.str("csv"));
  std::string stem = args.str("png");
  if (stem.size() > 4 && stem.substr(stem.size() - 4) == ".png") stem = stem.substr(0, stem.size() - 4);
  if (!sweep1.empty() && !sweep64.empty()) write_png(args.str("png"), stem, sweep1, sweep64, be1, be64);
  return 0;
}
