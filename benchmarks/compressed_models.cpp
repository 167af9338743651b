// Whole compressed models against their dense float models (issue 15): LeNet-5 and LeNet-300-100
// magnitude-pruned to the demo's densities, DNS-pruned LeNet-5, the int8 form of the dense LeNet-5
// and the compressed "dense" form of the unpruned LeNet-5. One thread; the float and compressed
// models are timed side by side in one run, interleaved round by round, and the median of the
// rounds is reported (CPU time of the thread: other programs on the shared machine only add time).
//
//   compressed_models [--rounds 21] [--csv compressed_models.csv] [--profile] [--dir out] [--only NAME]
//                     [--measure (time dense vs sparse per layer when converting)] [--verbose (conversion report)]
//                     [--sweep (direct sparse vs dense convolution over densities)] [--batch 1|64 (only this batch)]
//                     [--pytorch true|false] [--python /usr/bin/python3]
//
// The "vs PyTorch" column: PyTorch 1.13 running the DENSE float model of the row (one thread, same
// timing rule), measured by pytorch_dense_models.py, run before the C++ rounds with
// OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its environment only (this machine sets
// OPENBLAS_CORETYPE=Haswell, holding OpenBLAS to AVX2); the script prints the BLAS kernel chosen.
//
// With --dir holding lenet5-mnist-magnitude.safetensors / lenet5-mnist-dns.safetensors (written by
// scripts/demo.sh) those real pruned models are used; otherwise random weights are magnitude-pruned
// per layer to the densities below (Han et al. 2015 for magnitude, the demo's DNS run for DNS).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/cli.hpp"
#include "common/timing.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/io.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/nn/models.hpp"

using namespace slimnet;
using namespace slimnet::bench;
namespace nc = slimnet::nn::compressed;

namespace {

struct model_case {
  std::string name;      // "lenet5-dns"
  std::string model;     // "lenet5" or "lenet300"
  std::map<std::string, double> density;  // per layer; missing: dense
  std::string file;      // a real pruned model, used when it exists
  bool int8 = false;     // int8 form instead of the sparse one
};

/// Zeros all but the largest-magnitude `density` of each listed layer's weights.
void magnitude_prune(nn::sequential<float>& m, const std::map<std::string, double>& density) {
  for (const auto& [layer, d] : density) {
    nn::parameter<float>* w = nullptr;
    m.find(layer).visit_parameters([&](nn::parameter<float>& p) {
      if (p.name() == layer + ".weight") w = &p;
    });
    auto& v = w->value();
    std::vector<float> mags(static_cast<std::size_t>(v.size()));
    for (index_t i = 0; i < v.size(); ++i) mags[static_cast<std::size_t>(i)] = std::abs(v[i]);
    const auto keep = static_cast<std::size_t>(std::llround(d * static_cast<double>(mags.size())));
    if (keep >= mags.size()) continue;
    std::nth_element(mags.begin(), mags.begin() + static_cast<std::ptrdiff_t>(mags.size() - keep - 1), mags.end());
    const float threshold = mags[mags.size() - keep - 1];  // keep strictly larger magnitudes
    for (index_t i = 0; i < v.size(); ++i)
      if (std::abs(v[i]) <= threshold) v[i] = 0;
  }
}

/// Weight bytes, stored nonzeros and bytes of sparse layers of a model (float layers: 4 bytes per weight).
struct weight_stats {
  double bytes = 0, sparse_bytes = 0, sparse_nnz = 0, nnz = 0, weights = 0;
};
void add_engine(weight_stats& s, const nc::engine<float>& e) {
  s.bytes += static_cast<double>(e.bytes());
  if (auto* se = dynamic_cast<const nc::sparse_engine<float>*>(&e)) {
    s.sparse_bytes += static_cast<double>(se->bytes());
    s.sparse_nnz += static_cast<double>(se->nnz());
  } else if (auto* ce = dynamic_cast<const nc::csr16_engine<float>*>(&e)) {
    s.sparse_bytes += static_cast<double>(ce->bytes());
    s.sparse_nnz += static_cast<double>(ce->nnz());
  }
}
weight_stats stats_of(nn::sequential<float>& m) {
  weight_stats s;
  m.visit_layers([&](nn::layer<float>& l) {
    if (auto* cl = dynamic_cast<nc::compressed_linear<float>*>(&l)) {
      add_engine(s, cl->weights());
    } else if (auto* cc = dynamic_cast<nc::compressed_conv2d<float>*>(&l)) {
      add_engine(s, cc->weights());
    } else if (l.kind() == "Linear" || l.kind() == "Conv2d") {
      l.visit_parameters([&](nn::parameter<float>& p) {
        if (p.name().size() >= 7 && p.name().compare(p.name().size() - 7, 7, ".weight") == 0) {
          s.bytes += 4.0 * static_cast<double>(p.size());
          for (index_t i = 0; i < p.size(); ++i) s.nnz += p.value()[i] != 0.0f;
          s.weights += static_cast<double>(p.size());
        }
      });
    }
  });
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n == 0 ? NAN : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// Median seconds per call of each function over `rounds` rounds, the functions interleaved within
/// each round; each sample runs the function for >= min_sample seconds of thread CPU time.
std::vector<double> median_side_by_side(const std::vector<std::function<void()>>& fs, int rounds, double min_sample = 2e-3) {
  std::vector<long> reps(fs.size(), 1);
  for (std::size_t v = 0; v < fs.size(); ++v) {
    fs[v]();
    for (;;) {
      const double t0 = thread_seconds();
      for (long r = 0; r < reps[v]; ++r) fs[v]();
      const double s = thread_seconds() - t0;
      if (s >= min_sample) break;
      reps[v] = std::max(reps[v] * 2, static_cast<long>(static_cast<double>(reps[v]) * min_sample / std::max(s, 1e-9) * 1.2));
    }
  }
  std::vector<std::vector<double>> samples(fs.size());
  for (int round = 0; round < rounds; ++round) {
    for (std::size_t v = 0; v < fs.size(); ++v) {
      const double t0 = thread_seconds();
      for (long r = 0; r < reps[v]; ++r) fs[v]();
      samples[v].push_back((thread_seconds() - t0) / static_cast<double>(reps[v]));
    }
  }
  std::vector<double> out;
  for (auto& s : samples) out.push_back(median(s));
  return out;
}

tensor<float> random_input(const std::string& model, index_t batch, rng& gen) {
  tensor<float> x({batch, 1, 28, 28});
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(gen.uniform(0, 1));
  (void)model;
  return x;
}

/// Per-layer median times of a Sequential's forward at the input x (each layer on its own input).
std::vector<std::pair<std::string, double>> profile_layers(nn::sequential<float>& m, const tensor<float>& x, int rounds) {
  tensor<float> y;
  m.forward(x, y, {});
  std::vector<std::function<void()>> fs;
  std::vector<tensor<float>> outs(m.size());
  std::vector<std::string> names;
  for (std::size_t i = 0; i < m.size(); ++i) {
    const tensor<float>* in = i == 0 ? &x : &m.activation(i - 1);
    fs.push_back([&m, i, in, &outs] { m[i].forward(*in, outs[i], {}); });
    names.push_back(m.local_name(i) + " " + m[i].kind());
  }
  const auto t = median_side_by_side(fs, rounds, 1e-3);
  std::vector<std::pair<std::string, double>> r;
  for (std::size_t i = 0; i < names.size(); ++i) r.emplace_back(names[i], t[i]);
  return r;
}

/// Direct sparse convolution against the dense compressed form (im2col + GEMM) for LeNet-5's two
/// convolutions at batch 1 and 64 over densities: where the dense-or-sparse choice should switch.
void conv_sweep(int rounds) {
  struct geometry {
    const char* name;
    index_t in, out, h;
  };
  fmt::print("\ndirect sparse convolution / dense im2col convolution (time ratio < 1: sparse faster)\n{:<6} {:>5}", "conv", "batch");
  const double densities[] = {0.03, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0};
  for (double d : densities) fmt::print(" {:>6.0f}%", 100 * d);
  fmt::print("\n");
  for (const geometry g : {geometry{"conv1", 1, 20, 28}, geometry{"conv2", 20, 50, 12}}) {
    for (index_t batch : {index_t{1}, index_t{64}}) {
      fmt::print("{:<6} {:>5}", g.name, batch);
      for (double d : densities) {
        nn::conv2d<float> conv(g.in, g.out, 5);
        rng gen(3);
        conv.reset_parameters(gen);
        auto& w = conv.weight().value();
        for (index_t i = 0; i < w.size(); ++i)
          if (!(gen.uniform() < d)) w[i] = 0;
        nc::sparse_options so;
        so.force_sparse = true;
        auto sparse = nc::to_sparse(conv, so);
        nc::compressed_conv2d<float> dense(std::make_unique<nc::dense_engine<float>>(w.matrix(), conv.bias()->value().flat()), g.in,
                                           conv.window());
        sparse.fuse({false, 2, 2});
        dense.fuse({false, 2, 2});
        tensor<float> x({batch, g.in, g.h, g.h}), y1, y2;
        for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(gen.uniform(-1, 1));
        const auto t = median_side_by_side({[&] { sparse.forward(x, y1, {}); }, [&] { dense.forward(x, y2, {}); }}, rounds, 1e-3);
        fmt::print(" {:>7.2f}", t[0] / t[1]);
      }
      fmt::print("\n");
    }
  }
}

/// PyTorch's dense latency per (model, batch) from pytorch_dense_models.py (empty when it cannot
/// run); its "#" lines (version, BLAS library, OpenBLAS core) are printed as they come.
std::map<std::pair<std::string, index_t>, double> pytorch_latencies(const std::string& python, int rounds) {
  std::map<std::pair<std::string, index_t>, double> out;
#if defined(SLIMNET_BENCH_SOURCE_DIR)
  const std::string script = std::string(SLIMNET_BENCH_SOURCE_DIR) + "/pytorch_dense_models.py";
  if (!std::filesystem::exists(script) || !std::filesystem::exists(python)) {
    fmt::print("PyTorch column skipped: {} or {} not found\n", python, script);
    return out;
  }
  // `env -u` removes the two variables for the peer's command only; this process keeps them.
  const std::string cmd = fmt::format("env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 '{}' '{}' --rounds {} 2>&1", python,
                                      script, rounds);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    fmt::print("PyTorch column skipped: could not run {}\n", cmd);
    return out;
  }
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) {
    std::string line(buffer);
    if (!line.empty() && line.back() == '\n') line.pop_back();
    std::istringstream in(line);
    std::string tag, model;
    index_t batch = 0;
    double seconds = 0;
    if (in >> tag >> model >> batch >> seconds && tag == "latency") {
      out[{model, batch}] = seconds;
    } else {
      fmt::print("  pytorch: {}\n", line);
    }
  }
  const int status = pclose(pipe);
  if (status != 0) fmt::print("  pytorch: {} exited with status {}\n", script, status);
#else
  (void)python;
  (void)rounds;
#endif
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  cli::args args(argc, argv, {{"rounds", "21"}, {"csv", "compressed_models.csv"}, {"profile", "false"}, {"dir", "out"}, {"only", ""}, {"measure", "false"}, {"verbose", "false"}, {"sweep", "false"}, {"batch", "0"}, {"pytorch", "true"}, {"python", "/usr/bin/python3"}},
                 "compressed_models: whole compressed models against their float models, one thread");
  const int rounds = static_cast<int>(args.integer("rounds"));
  const std::filesystem::path dir = args.str("dir");
  const std::vector<model_case> cases = {
      {"lenet5-dense-form", "lenet5", {}, "", false},
      {"lenet5-magnitude", "lenet5", {{"conv1", 0.66}, {"conv2", 0.12}, {"fc1", 0.08}, {"fc2", 0.19}}, "lenet5-mnist-magnitude.safetensors", false},
      {"lenet5-dns", "lenet5", {{"conv1", 0.14}, {"conv2", 0.03}, {"fc1", 0.005}, {"fc2", 0.04}}, "lenet5-mnist-dns.safetensors", false},
      {"lenet300-magnitude", "lenet300", {{"fc1", 0.08}, {"fc2", 0.09}, {"fc3", 0.26}}, "", false},
      {"lenet5-int8", "lenet5", {}, "", true},
  };
  fmt::print("compressed_models: one thread, {} rounds, median per call (thread CPU time), load average {}\n", rounds, load_average());
  std::map<std::pair<std::string, index_t>, double> pytorch;
  if (args.flag("pytorch")) pytorch = pytorch_latencies(args.str("python"), rounds);
  fmt::print("{:<20} {:>5} {:>8} {:>11} {:>11} {:>8} {:>11} {:>8} {:>11} {:>11} {:>8} {:>10}  {}\n", "model", "batch", "weights%",
             "float us", "compr. us", "speedup", "PyTorch us", "vs PyT.", "float B", "compr. B", "B/nnz", "max|diff|", "weights from");
  std::ofstream csv(args.str("csv"));
  csv << "model,batch,weights_kept,float_seconds,compressed_seconds,speedup,pytorch_dense_seconds,speedup_vs_pytorch_dense,"
         "float_weight_bytes,compressed_weight_bytes,sparse_bytes_per_nonzero,max_abs_diff,source\n";
  for (const auto& c : cases) {
    if (!args.str("only").empty() && c.name.find(args.str("only")) == std::string::npos) continue;
    rng gen(42);
    nn::sequential<float> float_model = cli::make_model(c.model, gen, "compressed_models");
    std::string source = "random, magnitude-pruned per layer";
    if (!c.file.empty() && std::filesystem::exists(dir / c.file)) {
      io::load_parameters(float_model, dir / c.file);
      source = (dir / c.file).string();
    } else {
      magnitude_prune(float_model, c.density);
    }
    if (c.density.empty() && c.file.empty()) source = "random, dense";
    const weight_stats fs = stats_of(float_model);
    for (index_t batch : {index_t{1}, index_t{64}}) {
      if (args.integer("batch") > 0 && batch != args.integer("batch")) continue;
      nn::sequential<float> compressed = float_model;
      nc::compress_options o;
      o.sparse.batch = batch;
      o.sparse.measure = args.flag("measure");
      o.input_shape = {batch, 1, 28, 28};
      const auto report = nc::compress(compressed, c.int8 ? nc::format::int8 : nc::format::sparse, o);
      const weight_stats cs = stats_of(compressed);
      if (args.flag("verbose"))
        for (const auto& line : report) fmt::print("  {}\n", line);
      rng xg(7);
      const tensor<float> x = random_input(c.model, batch, xg);
      tensor<float> yf, yc;
      float_model.forward(x, yf, {});
      compressed.forward(x, yc, {});
      double diff = 0;
      for (index_t i = 0; i < yf.size(); ++i) diff = std::max(diff, static_cast<double>(std::abs(yf[i] - yc[i])));
      const auto t = median_side_by_side({[&] { float_model.forward(x, yf, {}); }, [&] { compressed.forward(x, yc, {}); }}, rounds);
      const double bpn = cs.sparse_nnz > 0 ? cs.sparse_bytes / cs.sparse_nnz : NAN;
      const auto pt = pytorch.find({c.model, batch});
      const double pt_s = pt == pytorch.end() ? NAN : pt->second;
      fmt::print("{:<20} {:>5} {:>7.2f}% {:>11.1f} {:>11.1f} {:>7.2f}x {:>11.1f} {:>7.2f}x {:>11.0f} {:>11.0f} {:>8.2f} {:>10.2e}  {}\n",
                 c.name, batch, 100 * fs.nnz / fs.weights, 1e6 * t[0], 1e6 * t[1], t[0] / t[1], 1e6 * pt_s, pt_s / t[1], fs.bytes,
                 cs.bytes, bpn, diff, source);
      csv << fmt::format("{},{},{:.5f},{:.4e},{:.4e},{:.3f},{:.4e},{:.3f},{:.0f},{:.0f},{:.3f},{:.3e},{}\n", c.name, batch,
                         fs.nnz / fs.weights, t[0], t[1], t[0] / t[1], pt_s, pt_s / t[1], fs.bytes, cs.bytes, bpn, diff, source);
      if (args.flag("profile")) {
        for (auto* m : {&float_model, &compressed}) {
          const auto p = profile_layers(*m, x, std::max(5, rounds / 3));
          std::string line = fmt::format("  {} layers:", m == &float_model ? "float" : "compressed");
          for (const auto& [n, s] : p) line += fmt::format("  {} {:.1f}", n, 1e6 * s);
          fmt::print("{} (us)\n", line);
        }
      }
    }
  }
  if (args.flag("sweep")) conv_sweep(std::max(3, rounds / 3));
  fmt::print("CSV: {}\n", args.str("csv"));
  return 0;
}
