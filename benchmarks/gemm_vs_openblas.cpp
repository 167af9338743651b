// Dense fp32 GEMM: slimnet's kernel against OpenBLAS and Eigen, one thread, on the products the
// layers compute. C (M x N, row-major) = op(A) op(B) with
//   NN: A (M x K), B (K x N)                 e.g. dX = dY W, a conv layer's W * cols
//   NT: A (M x K), B stored (N x K) = W^T    the forward pass C = X W^T (PyTorch weight layout)
//   TN: A stored (K x M), B (K x N)          the weight gradient dW = dY^T X
// all operands row-major and contiguous. Convolutions are written as GEMMs through im2row
// (M = output positions x batch, K = in_c * kh * kw, N = out_c). Ratios compare times taken in the
// same run: thread CPU time, fastest of interleaved rounds (benchmarks/common/timing.hpp).
//
// slimnet's path is chosen at run time (kernels/gemm.hpp): SLIMNET_ISA=avx2 forces the AVX2 + FMA
// kernels, to compare with OpenBLAS's Haswell ones (OPENBLAS_CORETYPE=Haswell).
//
//   gemm_vs_openblas [--rounds 5] [--csv gemm_vs_openblas.csv] [--quick] [--filter substring]
//                    [--kc K --mc M --nc N]   (override slimnet's cache blocking, for tuning)
#include <algorithm>
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
#include "slimnet/kernels/gemm.hpp"

#if defined(SLIMNET_BENCH_OPENBLAS)
#include <cblas.h>
#endif

using namespace slimnet;
using namespace slimnet::bench;
using row_matrix_f = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace {

struct shape {
  std::string name;
  index_t m, k, n;
  bool ta, tb;  // A stored transposed (K x M), B stored transposed (N x K)
  float beta = 0;  // 1 for weight gradients, which the layers accumulate (dW += dY^T X)
};

std::string layout(const shape& s) { return std::string(s.ta ? "T" : "N") + (s.tb ? "T" : "N"); }

// A linear layer (in -> out) at a batch: forward X W^T, and, unless it is the first layer (whose input
// gradient is never computed), dX = dY W; the weight gradient dW = dY^T X.
void add_linear(std::vector<shape>& v, const std::string& name, index_t batch, index_t in, index_t out, bool first) {
  const std::string b = fmt::format(" b{}", batch);
  v.push_back({name + " fwd" + b, batch, in, out, false, true});
  if (!first) v.push_back({name + " dX" + b, batch, out, in, false, false});
  v.push_back({name + " dW" + b, out, batch, in, true, false, 1.0f});
}

std::vector<shape> all_shapes() {
  std::vector<shape> v = {{"square 1024^3", 1024, 1024, 1024, false, false},
                          {"square 1024^3", 1024, 1024, 1024, false, true},
                          {"square 1024^3", 1024, 1024, 1024, true, false}};
  for (index_t batch : {1, 64}) {
    // LeNet-5 (28x28 input): conv1 1->20 5x5 (24x24 out), conv2 20->50 5x5 (8x8 out), fc 800-500-10.
    add_linear(v, "LeNet-5 conv1", batch * 24 * 24, 25, 20, true);
    add_linear(v, "LeNet-5 conv2", batch * 8 * 8, 500, 50, false);
    add_linear(v, "LeNet-5 fc1", batch, 800, 500, false);
    add_linear(v, "LeNet-5 fc2", batch, 500, 10, false);
    // LeNet-300-100: 784-300-100-10.
    add_linear(v, "LeNet-300 fc1", batch, 784, 300, true);
    add_linear(v, "LeNet-300 fc2", batch, 300, 100, false);
    add_linear(v, "LeNet-300 fc3", batch, 100, 10, false);
  }
  // VGG-16 convolutions at CIFAR's 32x32 input, batch 1 (forward, im2row), one row per distinct shape.
  struct conv {
    const char* name;
    index_t side, in_c, out_c;
  };
  for (const conv& c : {conv{"conv1_1", 32, 3, 64}, conv{"conv1_2", 32, 64, 64}, conv{"conv2_1", 16, 64, 128},
                        conv{"conv2_2", 16, 128, 128}, conv{"conv3_1", 8, 128, 256}, conv{"conv3_2", 8, 256, 256},
                        conv{"conv4_1", 4, 256, 512}, conv{"conv4_2", 4, 512, 512}, conv{"conv5_x", 2, 512, 512}}) {
    v.push_back({fmt::format("VGG-16/32 {} b1", c.name), c.side * c.side, c.in_c * 9, c.out_c, false, true});
  }
  // VGG-16 at 224x224 (the shapes the other kernel benchmarks use) and its classifier.
  v.push_back({"VGG-16 conv3_2 b1", 56 * 56, 256 * 9, 256, false, true});
  v.push_back({"VGG-16 conv4_2 b1", 28 * 28, 512 * 9, 512, false, true});
  v.push_back({"VGG-16 conv5_2 b1", 14 * 14, 512 * 9, 512, false, true});
  v.push_back({"VGG-16 conv4_2 b1 (W*cols)", 512, 512 * 9, 28 * 28, false, false});  // as slimnet's conv2d calls it
  v.push_back({"VGG-16 fc6 b1", 1, 25088, 4096, false, true});
  add_linear(v, "VGG-16 fc7", 64, 4096, 4096, false);
  v.push_back({"VGG-16 fc7 b1", 1, 4096, 4096, false, true});
  v.push_back({"VGG-16 fc8 b64", 64, 4096, 1000, false, true});
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  cli::args args(argc, argv, {{"rounds", "5"}, {"csv", "gemm_vs_openblas.csv"}, {"quick", "false"}, {"filter", ""}, {"kc", "0"}, {"mc", "0"}, {"nc", "0"}},
                 "gemm_vs_openblas: slimnet's dense fp32 GEMM against OpenBLAS and Eigen, one thread, ratios from one run");
  const int rounds = static_cast<int>(args.integer("rounds"));
  Eigen::setNbThreads(1);
  const kernels::isa path = kernels::gemm_path();
#if defined(SLIMNET_GEMM_AVX512)
  // --kc/--mc/--nc override the active family's cache blocking (for tuning); 0 keeps the default.
  auto tune = [&](auto& blocking) {
    if (args.integer("kc") > 0) blocking.kc = args.integer("kc");
    if (args.integer("mc") > 0) blocking.mc = args.integer("mc");
    if (args.integer("nc") > 0) blocking.nc = args.integer("nc");
    fmt::print("slimnet blocking: kc {} mc {} nc {}\n", blocking.kc, blocking.mc, blocking.nc);
  };
  if (path == kernels::isa::avx512) tune(kernels::detail::avx512::gemm_blocking());
  if (path == kernels::isa::avx2) tune(kernels::detail::avx2::gemm_blocking());
#endif
  fmt::print("{}\n", kernels::describe_cpu());
#if defined(SLIMNET_BENCH_OPENBLAS)
  openblas_set_num_threads(1);
  const bool have_blas = true;
  fmt::print("gemm_vs_openblas: OpenBLAS {} (core {})\n", openblas_get_config(), openblas_get_corename());
#else
  const bool have_blas = false;
  fmt::print("NOTICE: built without OpenBLAS: the openblas and ratio columns are empty.\n"
             "        Install libopenblas-dev (pkg-config openblas) and re-run cmake to compare against it.\n");
#endif
  fmt::print("one thread, CPU time of the thread, best of {} interleaved rounds, load average {}; slimnet GEMM path: {}{} (SLIMNET_ISA picks it)\n",
             rounds, load_average(), kernels::isa_name(path), path == kernels::isa::portable ? " (Eigen)" : "");
  fmt::print("C = op(A) op(B), row-major; NT = forward X W^T, NN = dX = dY W, TN = dW += dY^T X (beta 1). ratio = OpenBLAS time / slimnet time (>1: slimnet faster)\n\n");

  std::vector<shape> shapes = all_shapes();
  if (args.flag("quick")) shapes.resize(3);
  const std::string filter = args.str("filter");
  if (!filter.empty()) shapes.erase(std::remove_if(shapes.begin(), shapes.end(), [&](const shape& s) { return s.name.find(filter) == std::string::npos; }),
                                    shapes.end());

  std::ofstream csv(args.str("csv"));
  csv << "shape,layout,m,k,n,eigen_us,openblas_us,slimnet_us,eigen_gflops,openblas_gflops,slimnet_gflops,slimnet_vs_openblas,slimnet_vs_eigen\n";
  fmt::print("{:<28} {:>3} {:>6} {:>6} {:>6} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8}\n", "shape", "op", "M", "K", "N", "eigen_us",
             "openblas_us", "slimnet_us", "sl_GF/s", "vs_blas", "vs_eigen");
  rng gen(7);
  double worst_ratio = INFINITY;
  std::string worst_name;
  for (const auto& s : shapes) {
    const index_t ar = s.ta ? s.k : s.m, ac = s.ta ? s.m : s.k, br = s.tb ? s.n : s.k, bc = s.tb ? s.k : s.n;
    row_matrix_f a(ar, ac), b(br, bc), c(s.m, s.n);
    for (index_t i = 0; i < a.size(); ++i) a.data()[i] = static_cast<float>(gen.uniform(-1, 1));
    for (index_t i = 0; i < b.size(); ++i) b.data()[i] = static_cast<float>(gen.uniform(-1, 1));
    c.setZero();
    auto av = kernels::row_major<const float>(a.data(), ar, ac);
    auto bv = kernels::row_major<const float>(b.data(), br, bc);
    if (s.ta) av = av.transposed();
    if (s.tb) bv = bv.transposed();
    const auto cv = kernels::row_major(c.data(), s.m, s.n);

    std::vector<std::function<void()>> fs;
    fs.push_back([&] {
      if (s.beta == 0.0f) {
        if (s.ta) c.noalias() = a.transpose() * b;
        else if (s.tb) c.noalias() = a * b.transpose();
        else c.noalias() = a * b;
      } else {
        if (s.ta) c.noalias() += a.transpose() * b;
        else if (s.tb) c.noalias() += a * b.transpose();
        else c.noalias() += a * b;
      }
    });
    fs.push_back([&] { kernels::gemm<float>(av, bv, cv, 1.0f, s.beta); });
#if defined(SLIMNET_BENCH_OPENBLAS)
    fs.push_back([&] {
      cblas_sgemm(CblasRowMajor, s.ta ? CblasTrans : CblasNoTrans, s.tb ? CblasTrans : CblasNoTrans, static_cast<int>(s.m),
                  static_cast<int>(s.n), static_cast<int>(s.k), 1.0f, a.data(), static_cast<int>(ac), b.data(), static_cast<int>(bc),
                  s.beta, c.data(), static_cast<int>(s.n));
    });
#endif
    // Correctness: slimnet against Eigen on this shape (from the same C when accumulating).
    const row_matrix_f c0 = c;
    fs[1]();
    const row_matrix_f got = c;
    c = c0;
    fs[0]();
    const double err = (got - c).cwiseAbs().maxCoeff(), scale = std::max(1.0f, c.cwiseAbs().maxCoeff());
    if (!(err <= 1e-4 * scale * std::sqrt(static_cast<double>(s.k)))) {
      fmt::print(stderr, "error: {} {}: slimnet differs from Eigen by {}\n", s.name, layout(s), err);
      return 1;
    }

    const auto t = time_side_by_side(fs, rounds);
    const double t_eigen = t[0], t_slim = t[1], t_blas = have_blas ? t[2] : NAN;
    const double flops = 2.0 * static_cast<double>(s.m) * static_cast<double>(s.k) * static_cast<double>(s.n);
    const double ratio = t_blas / t_slim;
    if (have_blas && ratio < worst_ratio) {
      worst_ratio = ratio;
      worst_name = s.name + " " + layout(s);
    }
    auto us = [](double v) { return std::isnan(v) ? std::string("-") : fmt::format("{:.1f}", v * 1e6); };
    auto rs = [](double v) { return std::isnan(v) ? std::string("-") : fmt::format("{:.2f}", v); };
    fmt::print("{:<28} {:>3} {:>6} {:>6} {:>6} {:>10} {:>10} {:>10} {:>8.1f} {:>8} {:>8}\n", s.name, layout(s), s.m, s.k, s.n,
               us(t_eigen), us(t_blas), us(t_slim), flops / t_slim * 1e-9, rs(ratio), rs(t_eigen / t_slim));
    std::fflush(stdout);
    csv << fmt::format("{},{},{},{},{},{:.2f},{},{:.2f},{:.2f},{},{:.2f},{},{:.3f}\n", s.name, layout(s), s.m, s.k, s.n, t_eigen * 1e6,
                       have_blas ? fmt::format("{:.2f}", t_blas * 1e6) : "", t_slim * 1e6, flops / t_eigen * 1e-9,
                       have_blas ? fmt::format("{:.2f}", flops / t_blas * 1e-9) : "", flops / t_slim * 1e-9,
                       have_blas ? fmt::format("{:.3f}", ratio) : "", t_eigen / t_slim);
  }
  if (have_blas) fmt::print("\nlowest slimnet/OpenBLAS ratio: {:.2f} ({})\n", worst_ratio, worst_name);
  else fmt::print("\nNOTICE: no OpenBLAS column (built without OpenBLAS).\n");
  fmt::print("wrote {}\n", args.str("csv"));
  return 0;
}
