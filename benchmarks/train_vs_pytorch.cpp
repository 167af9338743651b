// Training throughput and inference latency, slimnet against PyTorch 1.13, side by side in one run:
// LeNet-5 and LeNet-300-100, one epoch of Fashion-MNIST at batch 64 (SGD, momentum 0.9, lr 0.01,
// weight decay 5e-4), one thread each; then batch-1 and batch-64 inference latency. The two
// frameworks alternate, `--repeats` times each, and the best run of each is reported (the
// machine's clock moves; the best run is the least disturbed one).
// PyTorch runs at its best by default (--pytorch-isa best): OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE,
// which may hold OpenBLAS (PyTorch's BLAS) to older kernels, are removed from its command only.
// --pytorch-isa avx2 holds it to AVX2 (ATEN_CPU_CAPABILITY=avx2, OPENBLAS_CORETYPE=Haswell), to
// compare with slimnet forced to AVX2 (SLIMNET_ISA=avx2). The script prints the ATen capability and
// the OpenBLAS core it ran; slimnet's side prints its CPU report and GEMM path.
//
//   train_vs_pytorch [--repeats 2] [--samples 0] [--pytorch-isa best|avx2] [--csv out/train_vs_pytorch.csv]
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>

#include <nlohmann/json.hpp>

#include "common/cli.hpp"
#include "slimnet/slimnet.hpp"

#ifndef SLIMNET_BENCHMARK_DIR
#define SLIMNET_BENCHMARK_DIR "benchmarks"
#endif

using namespace slimnet;
using clock_type = std::chrono::steady_clock;

namespace {

struct result {
  double train_samples_per_s = 0, latency_b1_ms = 0, latency_b64_ms = 0;
};

nn::sequential<float> make(const std::string& name, rng& gen) {
  return name == "lenet5" ? nn::models::lenet5<float>(gen) : nn::models::lenet_300_100<float>(gen);
}

double latency_ms(nn::sequential<float>& model, const tensor<float>& x, int reps) {
  tensor<float> y;
  for (int i = 0; i < 10; ++i) model.forward(x, y, {});
  const auto t = clock_type::now();
  for (int i = 0; i < reps; ++i) model.forward(x, y, {});
  return std::chrono::duration<double>(clock_type::now() - t).count() / reps * 1e3;
}

result run_slimnet(const std::string& name, const data::dataset<float>& train) {
  rng gen(1);
  auto model = make(name, gen);
  train::sgd<float> opt(train::sgd_options{}.with_lr(0.01).with_momentum(0.9).with_weight_decay(5e-4));
  train::fit_options o;
  o.epochs = 1;
  o.batch_size = 64;
  o.progress = false;
  const auto start = clock_type::now();
  train::fit(model, opt, train::cross_entropy<float>(), train, o);
  result r;
  r.train_samples_per_s = static_cast<double>(train.size()) / std::chrono::duration<double>(clock_type::now() - start).count();
  tensor<float> b1, b64;
  data::dataset<float>::gather_rows(train.inputs, std::vector<index_t>{0}, b1);
  std::vector<index_t> first64(64);
  for (index_t i = 0; i < 64; ++i) first64[static_cast<std::size_t>(i)] = i;
  data::dataset<float>::gather_rows(train.inputs, first64, b64);
  r.latency_b1_ms = latency_ms(model, b1, 2000);
  r.latency_b64_ms = latency_ms(model, b64, 200);
  return r;
}

/// The environment of PyTorch's command for `isa` ("best" or "avx2"); config_error otherwise.
std::string pytorch_environment(const std::string& isa) {
  if (isa == "best") return "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE";
  if (isa == "avx2") return "env -u OPENBLAS_L2_SIZE ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell";
  throw config_error(fmt::format("train_vs_pytorch: --pytorch-isa '{}' (expected best or avx2)", isa));
}

result run_pytorch(const std::string& python, const std::string& name, long samples, const std::string& isa, bool report) {
  const std::string cmd =
      fmt::format("{} OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 {} {}/pytorch_lenet.py --model {} --samples {}",
                  pytorch_environment(isa), python, SLIMNET_BENCHMARK_DIR, name, samples);
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (!pipe) throw io_error("train_vs_pytorch: cannot run " + cmd);
  std::string out;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, pipe.get())) {
    if (buf[0] == '#') {
      if (report) fmt::print("  pytorch {}", buf);  // its version, ATen capability and OpenBLAS core
    } else {
      out += buf;
    }
  }
  const auto json = nlohmann::json::parse(out.substr(out.find('{')), nullptr, false);
  if (json.is_discarded() || !json.contains("train_samples_per_s")) {
    throw io_error(fmt::format("train_vs_pytorch: PyTorch run failed (is python3-torch installed?): {}", out));
  }
  return {json["train_samples_per_s"].get<double>(), json["latency_b1_ms"].get<double>(), json["latency_b64_ms"].get<double>()};
}

}  // namespace

int main(int argc, char** argv) {
  cli::args a(argc, argv,
              {{"repeats", "2"},
               {"samples", "0"},
               {"python", "/usr/bin/python3"},
               {"pytorch-isa", "best"},
               {"csv", "train_vs_pytorch.csv"}},
              "train_vs_pytorch: slimnet vs PyTorch 1.13, one thread, LeNet training throughput and inference latency");
  try {
    auto data = cli::load_dataset("fashion");
    cli::limit(data.train, a.integer("samples"));
    const std::string pytorch_isa = a.str("pytorch-isa");
    pytorch_environment(pytorch_isa);  // rejects a bad value before any run
    fmt::print("Fashion-MNIST, {} training samples, batch 64, one thread, best of {} alternating runs\n", data.train.size(),
               a.integer("repeats"));
    fmt::print("slimnet: {}; fp32 GEMM path {}\nPyTorch: --pytorch-isa {} ({})\n\n", kernels::describe_cpu(),
               kernels::isa_name(kernels::gemm_path()), pytorch_isa, pytorch_environment(pytorch_isa));
    std::ofstream csv(a.str("csv"));
    csv << "model,metric,slimnet,pytorch,ratio\n";
    fmt::print("{:<14} {:<28} {:>12} {:>12} {:>8}\n", "model", "metric", "slimnet", "PyTorch", "ratio");
    for (const std::string name : {"lenet5", "lenet300"}) {
      result s{0, 1e30, 1e30}, p{0, 1e30, 1e30};
      for (long r = 0; r < a.integer("repeats"); ++r) {
        const auto rs = run_slimnet(name, data.train);
        const auto rp = run_pytorch(a.str("python"), name, data.train.size(), pytorch_isa, r == 0);
        s = {std::max(s.train_samples_per_s, rs.train_samples_per_s), std::min(s.latency_b1_ms, rs.latency_b1_ms),
             std::min(s.latency_b64_ms, rs.latency_b64_ms)};
        p = {std::max(p.train_samples_per_s, rp.train_samples_per_s), std::min(p.latency_b1_ms, rp.latency_b1_ms),
             std::min(p.latency_b64_ms, rp.latency_b64_ms)};
      }
      const std::string label = name == "lenet5" ? "LeNet-5" : "LeNet-300-100";
      auto row = [&](const char* metric, double sv, double pv, double ratio, const char* unit) {
        fmt::print("{:<14} {:<28} {:>12.3f} {:>12.3f} {:>7.2f}x\n", label, fmt::format("{} ({})", metric, unit), sv, pv, ratio);
        csv << fmt::format("{},{},{},{},{}\n", label, metric, sv, pv, ratio);
      };
      row("training throughput", s.train_samples_per_s, p.train_samples_per_s, s.train_samples_per_s / p.train_samples_per_s,
          "samples/s");
      row("inference latency, batch 1", s.latency_b1_ms, p.latency_b1_ms, p.latency_b1_ms / s.latency_b1_ms, "ms");
      row("inference latency, batch 64", s.latency_b64_ms, p.latency_b64_ms, p.latency_b64_ms / s.latency_b64_ms, "ms");
    }
    fmt::print("\nratio = how many times faster slimnet is. CSV: {}\n", a.str("csv"));
  } catch (const slimnet::error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
