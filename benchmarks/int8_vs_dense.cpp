// int8 (VNNI, AVX-VNNI or vpmaddwd, chosen at run time) and fixed-point int16 GEMM against fp32 GEMM of the same shape (issue 5): 1024^3 and
// LeNet / VGG-16 layer shapes as GEMMs (convolutions through im2row: M = output positions,
// K = in_c * kh * kw, N = out_c). One thread unless stated; ratios compare times taken in the same
// run, interleaved round by round.
//
//   int8_vs_dense [--rounds 5] [--csv int8_vs_dense.csv] [--quick]
//   int8_vs_dense --accuracy out/lenet5-mnist.safetensors [--data mnist]
//     accuracy of a trained LeNet-5 and of its int8 form (nn::compressed::compress, format::int8:
//     one activation step per image in the convolutions, per sample in the Linear layers) on the
//     test set; exit status 1 when they differ by more than 0.3 percentage points.
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
#include "slimnet/kernels/gemm.hpp"
#include "slimnet/kernels/int8_gemm.hpp"
#include "slimnet/nn/compressed/convert.hpp"

#if defined(SLIMNET_BENCH_OPENBLAS)
#include <cblas.h>
#endif

using namespace slimnet;
using namespace slimnet::bench;
using row_matrix_f = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace {

/// Test-set accuracy of the float LeNet-5 in `file` and of its int8 form; 0 when within 0.3 pp.
int int8_accuracy(const std::string& file, const std::string& data_name) {
  auto data = cli::load_dataset(data_name);
  rng gen(1);
  nn::sequential<float> model = cli::make_model("lenet5", gen, "int8_vs_dense");
  cli::load_baseline(model, file, "lenet5", data_name, data, "int8_vs_dense");
  auto int8 = model;
  for (const auto& line : nn::compressed::compress(int8, nn::compressed::format::int8)) fmt::print("  {}\n", line);
  const train::cross_entropy<float> loss;
  const double af = train::evaluate(model, data.test, loss).accuracy;
  const double ai = train::evaluate(int8, data.test, loss).accuracy;
  // How often the two agree on the class, and how far the logits move.
  tensor<float> yf, yi;
  model.forward(data.test.inputs, yf, {});
  int8.forward(data.test.inputs, yi, {});
  index_t agree = 0;
  double worst = 0;
  const index_t classes = yf.dim(1);
  for (index_t n = 0; n < yf.dim(0); ++n) {
    index_t bf = 0, bi = 0;
    for (index_t j = 0; j < classes; ++j) {
      if (yf[n * classes + j] > yf[n * classes + bf]) bf = j;
      if (yi[n * classes + j] > yi[n * classes + bi]) bi = j;
      worst = std::max(worst, static_cast<double>(std::abs(yf[n * classes + j] - yi[n * classes + j])));
    }
    agree += bf == bi;
  }
  fmt::print("{} test images: float {:.2f}%, int8 {:.2f}% ({:+.2f} pp); same class on {} images ({:.2f}%); max |logit difference| {:.3g}\n",
             data.test.size(), 100 * af, 100 * ai, 100 * (ai - af), agree, 100.0 * static_cast<double>(agree) / static_cast<double>(yf.dim(0)),
             worst);
  return std::abs(ai - af) <= 0.003 + 1e-12 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  cli::args args(argc, argv, {{"rounds", "5"}, {"csv", "int8_vs_dense.csv"}, {"quick", "false"}, {"accuracy", ""}, {"data", "mnist"}},
                 "int8_vs_dense: int8 / int16 GEMM against fp32 GEMM, one thread, ratios from one run");
  if (!args.str("accuracy").empty()) return int8_accuracy(args.str("accuracy"), args.str("data"));
  const int rounds = static_cast<int>(args.integer("rounds"));
  Eigen::setNbThreads(1);
#if defined(SLIMNET_BENCH_OPENBLAS)
  openblas_set_num_threads(1);
  const bool have_blas = true;
#else
  const bool have_blas = false;
#endif
  const auto paths = kernels::compiled_kernel_paths();
  // Paths are chosen at run time (SLIMNET_ISA=avx2 forces the AVX2 family, OPENBLAS_CORETYPE=Haswell
  // OpenBLAS's AVX2 kernels): say which ones run.
  const kernels::isa int_path = kernels::gemm_int_path();
  fmt::print("{}\n", kernels::describe_cpu());
  fmt::print("int8_vs_dense: one thread, CPU time of the thread, best of {} interleaved rounds; integer path {}{}; fp32 gemm path {}; OpenBLAS column {}\n",
             rounds, kernels::isa_name(int_path),
             int_path == kernels::isa::avx2 ? (kernels::gemm_int8_avx_vnni() ? " (int8: AVX-VNNI vpdpbusd)" : " (int8: vpmaddwd)") : "",
             kernels::isa_name(kernels::gemm_path()),
             have_blas ? "present" : "missing (built without OpenBLAS: install libopenblas-dev and re-run cmake)");
  fmt::print("C (M x N) = A (M x K) W^T with W (N x K) as a layer stores it; fp32 best = fastest of Eigen, OpenBLAS, slimnet gemm.\n");
  fmt::print("int8: A uint8 (post-ReLU activations) x W int8, int32 out; int8s: A int8 (shifted by 128 + correction);\n");
  fmt::print("+deq: float out = row_scale * col_scale * sum + bias (a layer's dequantization); int16: vpdpwssd (avx512) or vpmaddwd (avx2).\n\n");

  const auto shapes = layer_gemm_shapes(args.flag("quick"));

  std::ofstream csv(args.str("csv"));
  csv << "shape,m,k,n,variant,microseconds,speedup_vs_best_fp32\n";
  fmt::print("{:<22} {:>5} {:>5} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7}\n", "shape", "M", "K", "N",
             "eigen", "openblas", "sl_gemm", "int8", "int8s", "int8+deq", "int16", "int8", "int8s", "+deq", "int16");
  rng gen(3);
  for (const auto& s : shapes) {
    row_matrix_f a(s.m, s.k), w(s.n, s.k), c(s.m, s.n);
    for (index_t i = 0; i < a.size(); ++i) a.data()[i] = static_cast<float>(gen.uniform(-1, 1));
    for (index_t i = 0; i < w.size(); ++i) w.data()[i] = static_cast<float>(gen.uniform(-1, 1));
    std::vector<std::uint8_t> au(static_cast<std::size_t>(s.m * s.k));
    std::vector<std::int8_t> as(au.size()), wq(static_cast<std::size_t>(s.n * s.k));
    std::vector<std::int16_t> a16(au.size()), w16(wq.size());
    for (std::size_t i = 0; i < au.size(); ++i) {
      au[i] = static_cast<std::uint8_t>(gen.below(256));
      as[i] = static_cast<std::int8_t>(static_cast<int>(gen.below(255)) - 127);
      a16[i] = static_cast<std::int16_t>(static_cast<int>(gen.below(2001)) - 1000);
    }
    for (std::size_t i = 0; i < wq.size(); ++i) {
      wq[i] = static_cast<std::int8_t>(static_cast<int>(gen.below(255)) - 127);
      w16[i] = static_cast<std::int16_t>(static_cast<int>(gen.below(2001)) - 1000);
    }
    const auto av = kernels::row_major<const float>(a.data(), s.m, s.k);
    const auto wv = kernels::row_major<const float>(w.data(), s.n, s.k);
    const kernels::int8_packed_rhs w8(kernels::row_major<const std::int8_t>(wq.data(), s.n, s.k).transposed());
    const kernels::int16_packed_rhs w16p(kernels::row_major<const std::int16_t>(w16.data(), s.n, s.k).transposed());
    std::vector<std::int32_t> ci(static_cast<std::size_t>(s.m * s.n));
    std::vector<float> row_scale(static_cast<std::size_t>(s.m), 0.01f), col_scale(static_cast<std::size_t>(s.n), 0.02f),
        bias(static_cast<std::size_t>(s.n), 0.5f);
    kernels::int_gemm_params deq;
    deq.row_scale = row_scale.data();
    deq.col_scale = col_scale.data();
    deq.col_bias = bias.data();
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
    names.push_back("int8");
    fs.push_back([&] {
      kernels::gemm_int8(kernels::row_major<const std::uint8_t>(au.data(), s.m, s.k), w8, kernels::row_major(ci.data(), s.m, s.n));
    });
    names.push_back("int8s");
    fs.push_back([&] {
      kernels::gemm_int8(kernels::row_major<const std::int8_t>(as.data(), s.m, s.k), w8, kernels::row_major(ci.data(), s.m, s.n));
    });
    names.push_back("int8+deq");
    fs.push_back([&] {
      kernels::gemm_int8(kernels::row_major<const std::uint8_t>(au.data(), s.m, s.k), w8, kernels::row_major(c.data(), s.m, s.n), deq);
    });
    names.push_back("int16");
    fs.push_back([&] {
      kernels::gemm_int16(kernels::row_major<const std::int16_t>(a16.data(), s.m, s.k), w16p, kernels::row_major(ci.data(), s.m, s.n));
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
    fmt::print("{:<22} {:>5} {:>5} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6.2f}x {:>6.2f}x {:>6.2f}x {:>6.2f}x\n", s.name, s.m,
               s.k, s.n, us(time_of("eigen")), us(time_of("openblas")), us(time_of("slimnet_gemm")), us(time_of("int8")),
               us(time_of("int8s")), us(time_of("int8+deq")), us(time_of("int16")), best / time_of("int8"), best / time_of("int8s"),
               best / time_of("int8+deq"), best / time_of("int16"));
    for (std::size_t i = 0; i < names.size(); ++i) {
      csv << fmt::format("{},{},{},{},{},{:.2f},{:.3f}\n", s.name, s.m, s.k, s.n, names[i], t[i] * 1e6, best / t[i]);
    }
    // Spot-check the int8 result against a direct sum.
    kernels::gemm_int8(kernels::row_major<const std::int8_t>(as.data(), s.m, s.k), w8, kernels::row_major(ci.data(), s.m, s.n));
    index_t wrong = 0;
    for (index_t i = 0; i < s.m; i += std::max<index_t>(1, s.m / 7)) {
      for (index_t j = 0; j < s.n; j += std::max<index_t>(1, s.n / 7)) {
        std::int64_t sum = 0;
        for (index_t k = 0; k < s.k; ++k)
          sum += std::int64_t{as[static_cast<std::size_t>(i * s.k + k)]} * wq[static_cast<std::size_t>(j * s.k + k)];
        wrong += sum != ci[static_cast<std::size_t>(i * s.n + j)];
      }
    }
    if (wrong) fmt::print(stderr, "error: {} sampled int8 outputs are wrong\n", wrong);
  }
  fmt::print("(microseconds; the last four columns: best fp32 time / integer time)\n\n");

  {
    const index_t n = 1024;
    std::vector<std::uint8_t> au(static_cast<std::size_t>(n * n), 3);
    std::vector<std::int8_t> wq(static_cast<std::size_t>(n * n), -2);
    const kernels::int8_packed_rhs w8(kernels::row_major<const std::int8_t>(wq.data(), n, n).transposed());
    std::vector<std::int32_t> ci(static_cast<std::size_t>(n * n));
    kernels::int_gemm_params one, two;
    two.threads = 2;
    const std::vector<double> t = {
        best_single_call([&] { kernels::gemm_int8(kernels::row_major<const std::uint8_t>(au.data(), n, n), w8, kernels::row_major(ci.data(), n, n), one); }, 100),
        best_single_call([&] { kernels::gemm_int8(kernels::row_major<const std::uint8_t>(au.data(), n, n), w8, kernels::row_major(ci.data(), n, n), two); }, 100)};
    fmt::print("threads ({}; wall time, fastest of 100 single calls): int8 GEMM 1024^3: 1 thread {:.1f} us, 2 threads {:.1f} us, speed-up {:.2f}x\n",
               paths.openmp ? "OpenMP" : "std::thread", t[0] * 1e6, t[1] * 1e6, t[0] / t[1]);
  }
  fmt::print("wrote {}\n", args.str("csv"));
  return 0;
}
