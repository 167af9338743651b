// A pruned Bi-LSTM against its dense float model (issue 15's recurrent rows): example 8's
// sequential-MNIST classifier, Bidirectional(LSTM(28, H, 2 layers, last step)) -> Linear(2H, 10),
// run as float layers (the pruned weights as dense matrices with zeros) and after
// nn::compressed::compress(model, format::sparse) (W_ih as one product over all 28 steps, W_hh per
// step, each sparse or dense by its own choice). One thread; float and compressed interleaved
// round by round, the median of the rounds reported (thread CPU time: other programs on the shared
// machine only add time). Same CSV columns as compressed_models.
//
//   compressed_recurrent [--model pruned.safetensors (example 10's --out)] [--density 0.072]
//                        [--rounds 21] [--csv compressed_recurrent.csv] [--profile] [--verbose] [--batch 1|64]
//                        [--measure (time dense vs sparse per matrix when converting)]
//                        [--accuracy (float and compressed model on the MNIST subset's test set, batch 256)]
//                        [--pytorch true|false] [--python /usr/bin/python3]
//                        [--deepsense true|false] [--deepsense-density 0.1]
//
// The "vs PyTorch" column: PyTorch 1.13 running the DENSE Bi-LSTM of the unthinned shape (layers x
// hidden per direction, the same 28 x 28 sequences; one thread, same timing rule), measured by
// pytorch_dense_models.py --models bilstm before the C++ rounds, with OPENBLAS_CORETYPE and
// OPENBLAS_L2_SIZE removed from its environment only (benchmarks/common/pytorch.hpp); the script
// prints the BLAS library and kernel it chose. Only for the 2 x 128 shape the script builds. The
// DeepSense rows' column: the same script's dense DeepSense (HHAR sizes, evaluation mode).
//
// Without --model (or when the file is missing) the weights are random with each weight matrix
// (W_ih, W_hh of both directions and layers, fc) kept at --density by a random mask: a stand-in
// for the DyNS-Ext model (README: 7.22% of the weights kept) with its shape and density, not its
// pattern (DNS leaves rows of different lengths and removes dead units, making the model smaller).
// The DeepSense rows (--deepsense): nn::models::deepsense at HHAR's sizes with random weights,
// each weight matrix magnitude-pruned to --deepsense-density (no trained DeepSense file exists),
// float against compress(format::sparse), which reaches the convolutions inside the per-interval
// frames (time_distributed, sensor_stack) and the two GRUs; --profile times each top-level layer.
//
// With --model, the "float" column is the thinned float model the file holds and "baseline us"
// the unthinned 2 x 128 shape with random dense weights (what the pruned model replaces).
// --profile times each weight matrix's product on its own (compressed engine and dense GEMM of
// the same shape, W_ih over the T*N columns once, W_hh over N columns T times) and the rest of a
// direction's pass (gate arithmetic, copies).
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/bilstm.hpp"
#include "common/cli.hpp"
#include "common/kernel_paths.hpp"
#include "common/pytorch.hpp"
#include "common/timing.hpp"
#include "common/weight_stats.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/io.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/nn/models_deepsense.hpp"
#include "slimnet/train.hpp"

using namespace slimnet;
using namespace slimnet::bench;
namespace nc = slimnet::nn::compressed;

namespace {

constexpr index_t steps = 28, features = 28;


/// Weight matrices of a float model: every rank-2 parameter.
std::vector<nn::parameter<float>*> weight_matrices(nn::sequential<float>& m) {
  std::vector<nn::parameter<float>*> out;
  m.visit_parameters([&](nn::parameter<float>& p) {
    if (p.value().rank() == 2) out.push_back(&p);
  });
  return out;
}


/// Keeps `density` of every weight matrix at random (the rest set to 0).
void prune_randomly(nn::sequential<float>& m, double density, rng& gen) {
  for (auto* p : weight_matrices(m))
    for (index_t i = 0; i < p->size(); ++i)
      if (gen.uniform() >= density) p->value()[i] = 0.0f;
}

/// Where the time of one compressed direction goes: each matrix's product alone (compressed
/// engine, then the dense GEMM of the same shape), and the whole direction.
void profile_direction(const char* label, nc::compressed_lstm<float>& c, nn::lstm<float>& f, const tensor<float>& x, int rounds) {
  const index_t n = x.dim(0), cols = n * steps;
  std::vector<std::function<void()>> fs;
  std::vector<std::string> names;
  std::vector<std::unique_ptr<nc::engine<float>>> engines;
  std::vector<row_matrix<float>> dense;
  std::vector<std::vector<float>> bufs;
  rng gen(3);
  auto random_buffer = [&](index_t size) {
    bufs.emplace_back(static_cast<std::size_t>(size));
    for (auto& v : bufs.back()) v = static_cast<float>(gen.uniform(-1, 1));
    return bufs.back().data();
  };
  bufs.reserve(64);
  engines.reserve(static_cast<std::size_t>(2 * c.num_layers()));
  dense.reserve(static_cast<std::size_t>(2 * c.num_layers()));
  for (index_t k = 0; k < c.num_layers(); ++k) {
    const index_t g = 4 * c.hidden_size(k), in = k == 0 ? features : c.hidden_size(k - 1), h = c.hidden_size(k);
    engines.push_back(c.input_weights(k).clone());
    engines.push_back(c.recurrent_weights(k).clone());
    dense.push_back(f.weight_ih(k).value().matrix());
    dense.push_back(f.weight_hh(k).value().matrix());
    nc::engine<float>* ih = engines[engines.size() - 2].get();
    nc::engine<float>* hh = engines.back().get();
    const row_matrix<float>* dih = &dense[dense.size() - 2];
    const row_matrix<float>* dhh = &dense.back();
    float* xin = random_buffer(in * cols);
    float* a = random_buffer(g * cols);
    float* hstate = random_buffer(h * n);
    float* b = random_buffer(g * n);
    float* a_rows = random_buffer(g * cols);
    fs.push_back([=] {
      ih->apply_cols(xin, cols, a);
      if (n == 1) nc::detail::transpose(a, g, cols, a_rows);  // as the layer does at batch 1
    });
    names.push_back(fmt::format("l{} W_ih compressed", k));
    fs.push_back([=] {
      kernels::gemm<float>(kernels::row_major(dih->data(), g, in), kernels::row_major<const float>(xin, in, cols), kernels::row_major(a, g, cols));
    });
    names.push_back(fmt::format("l{} W_ih dense GEMM", k));
    fs.push_back([=] {
      for (index_t t = 0; t < steps; ++t) hh->apply_cols(hstate, n, b);
    });
    names.push_back(fmt::format("l{} W_hh x{} compressed", k, steps));
    fs.push_back([=] {
      for (index_t t = 0; t < steps; ++t)
        kernels::gemm<float>(kernels::row_major(dhh->data(), g, h), kernels::row_major<const float>(hstate, h, n), kernels::row_major(b, g, n));
    });
    names.push_back(fmt::format("l{} W_hh x{} dense GEMM", k, steps));
  }
  tensor<float> y1, y2;
  fs.push_back([&] { c.forward(x, y1, {}); });
  names.push_back("whole direction compressed");
  fs.push_back([&] { f.forward(x, y2, {}); });
  names.push_back("whole direction float");
  const auto t = median_side_by_side(fs, rounds, 1e-3);
  fmt::print("  profile, {} direction (us):", label);
  for (std::size_t i = 0; i < t.size(); ++i) fmt::print("{}{} {:.1f}", i % 2 ? ", " : "\n    ", names[i], 1e6 * t[i]);
  double products = 0;
  for (std::size_t i = 0; i + 2 < t.size(); i += 2) products += t[i];
  fmt::print("\n    compressed: products {:.1f} us, rest (gate arithmetic, copies) {:.1f} us\n", 1e6 * products,
             1e6 * (t[t.size() - 2] - products));
}

/// Keeps the largest |w| `density` of every weight matrix and filter bank (DyNS's magnitude criterion
/// applied once, on random weights: the density and shapes of a pruned DeepSense, not its pattern).
void magnitude_prune_each(nn::layer<float>& m, double density) {
  m.visit_parameters([&](nn::parameter<float>& p) {
    if (p.value().rank() < 2 || p.local_name().rfind("weight", 0) != 0) return;
    auto& v = p.value();
    std::vector<float> mags(static_cast<std::size_t>(v.size()));
    for (index_t i = 0; i < v.size(); ++i) mags[static_cast<std::size_t>(i)] = std::abs(v[i]);
    const auto keep = std::max<std::size_t>(1, static_cast<std::size_t>(std::ceil(density * static_cast<double>(mags.size()))));
    std::nth_element(mags.begin(), mags.begin() + static_cast<std::ptrdiff_t>(mags.size() - keep), mags.end());
    const float cut = mags[mags.size() - keep];
    for (index_t i = 0; i < v.size(); ++i)
      if (std::abs(v[i]) < cut) v[i] = 0.0f;
  });
}

/// The DeepSense rows: nn::models::deepsense (HHAR sizes: 20 intervals of 120 features, 2 sensors,
/// 64 channels, GRUs of 120) with random weights magnitude-pruned per weight matrix to
/// --deepsense-density, float against compress(model, format::sparse), which converts the
/// convolutions inside the per-interval frames (time_distributed, sensor_stack) and both GRUs.
void deepsense_rows(const cli::args& args, int rounds, std::ofstream& csv, const std::map<std::pair<std::string, index_t>, double>& pytorch) {
  const double density = args.real("deepsense-density");
  nn::models::deepsense_options ds;
  rng gen(static_cast<std::uint64_t>(args.integer("seed")));
  nn::sequential<float> float_model = nn::models::deepsense<float>(gen, ds);
  const weight_stats bs = stats_of(float_model);
  magnitude_prune_each(float_model, density);
  const weight_stats fs = stats_of(float_model);
  const std::string name = "deepsense-magnitude", source = fmt::format("random, magnitude-pruned to {:.0f}% per matrix", 100 * density);
  for (index_t batch : {index_t{1}, index_t{64}}) {
    if (args.integer("batch") > 0 && batch != args.integer("batch")) continue;
    nn::sequential<float> compressed = float_model;
    nc::compress_options o;
    o.sparse.batch = batch;
    o.sparse.measure = args.flag("measure");
    o.input_shape = {batch, ds.intervals, ds.features()};
    const auto report = nc::compress(compressed, nc::format::sparse, o);
    if (args.flag("verbose"))
      for (const auto& line : report) fmt::print("  {}\n", line);
    const weight_stats cs = stats_of(compressed);
    rng xg(7);
    tensor<float> x({batch, ds.intervals, ds.features()});
    for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(xg.uniform(-1, 1));
    tensor<float> yf, yc;
    float_model.forward(x, yf, {});
    compressed.forward(x, yc, {});
    double diff = 0;
    for (index_t i = 0; i < yf.size(); ++i) diff = std::max(diff, static_cast<double>(std::abs(yf[i] - yc[i])));
    const auto t = median_side_by_side({[&] { float_model.forward(x, yf, {}); }, [&] { compressed.forward(x, yc, {}); }}, rounds);
    const double bpn = cs.sparse_nnz > 0 ? cs.sparse_bytes / cs.sparse_nnz : NAN;
    const auto pt = pytorch.find({"deepsense", batch});
    const double pt_s = pt == pytorch.end() ? NAN : pt->second;  // PyTorch running the dense DeepSense
    fmt::print("{:<20} {:>5} {:>7.2f}% {:>11.1f} {:>11.1f} {:>7.2f}x {:>11} {:>9} {:>11.1f} {:>7.2f}x {:>11.0f} {:>11.0f} {:>8.2f} {:>10.2e}  {}\n",
               name, batch, 100 * fs.nnz / bs.weights, 1e6 * t[0], 1e6 * t[1], t[0] / t[1], "", "", 1e6 * pt_s, pt_s / t[1], fs.bytes, cs.bytes,
               bpn, diff, source);
    csv << fmt::format("{},{},{:.5f},{:.4e},{:.4e},{:.3f},{:.4e},{:.3f},{:.0f},{:.0f},{:.3f},{:.3e},{},nan,nan\n", name, batch,
                       fs.nnz / bs.weights, t[0], t[1], t[0] / t[1], pt_s, pt_s / t[1], fs.bytes, cs.bytes, bpn, diff, source);
    if (args.flag("profile")) {
      for (auto* m : {&float_model, &compressed}) {
        std::string line = fmt::format("  {} layers (us):", m == &float_model ? "float" : "compressed");
        tensor<float> a = x, b;
        for (std::size_t i = 0; i < m->size(); ++i) {
          nn::layer<float>& l = (*m)[i];
          const auto tl = median_side_by_side({[&] { l.forward(a, b, {}); }}, std::max(5, rounds / 3));
          line += fmt::format("  {} {:.1f}", m->local_name(i), 1e6 * tl[0]);
          l.forward(a, b, {});
          a = b;
        }
        fmt::print("{}\n", line);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  cli::args args(argc, argv,
                 {{"rounds", "21"}, {"csv", "compressed_recurrent.csv"}, {"model", ""}, {"density", "0.072"}, {"layers", "2"},
                  {"hidden", "128"}, {"profile", "false"}, {"verbose", "false"}, {"batch", "0"}, {"seed", "42"}, {"measure", "false"}, {"accuracy", "false"},
                  {"pytorch", "true"}, {"python", "/usr/bin/python3"},
                  {"deepsense", "true"}, {"deepsense-density", "0.1"}},
                 "compressed_recurrent: a pruned Bi-LSTM against its dense float model, one thread");
  try {
    const int rounds = static_cast<int>(args.integer("rounds"));
    const index_t layers = args.integer("layers"), hidden = args.integer("hidden");
    rng gen(static_cast<std::uint64_t>(args.integer("seed")));
    // The unthinned shape with dense random weights: what the pruned model replaces.
    nn::sequential<float> baseline = cli::make_bilstm(layers, hidden, gen);
    nn::sequential<float> float_model;
    std::string name, source;
    const std::string path = args.str("model");
    if (!path.empty() && std::filesystem::exists(path)) {
      io::load_model_options lo;
      lo.decode = true;  // the float model; compress() below makes the compressed one
      auto loaded = io::load_model<float>(path, lo);
      auto* seq = dynamic_cast<nn::sequential<float>*>(loaded.get());
      if (seq == nullptr) throw config_error(fmt::format("compressed_recurrent: {} holds a {}, not a Sequential", path, loaded->kind()));
      float_model = std::move(*seq);
      name = "bilstm-dyns-ext";
      source = path;
    } else {
      if (!path.empty()) fmt::print("{} not found: random weights at the README's density instead\n", path);
      float_model = cli::make_bilstm(layers, hidden, gen);
      prune_randomly(float_model, args.real("density"), gen);
      name = "bilstm-random-mask";
      source = fmt::format("random, {:.1f}% per matrix", 100 * args.real("density"));
    }
    fmt::print("compressed_recurrent: one thread, {} rounds, median per call (thread CPU time), load average {}\n{}\n", rounds,
               load_average(), kernels::describe_cpu());
    fmt::print("float model: {}\n", float_model.describe());
    const weight_stats fs = stats_of(float_model);
    const weight_stats bs = stats_of(baseline);
    std::map<std::pair<std::string, index_t>, double> pytorch;
    std::vector<index_t> batches;
    for (index_t b : {index_t{1}, index_t{64}})
      if (args.integer("batch") <= 0 || b == args.integer("batch")) batches.push_back(b);
    if (args.flag("pytorch")) {
#if defined(SLIMNET_BENCH_SOURCE_DIR)
      std::vector<std::string> torch_models;
      if (layers == 2 && hidden == 128) {
        torch_models.push_back("bilstm");
      } else {
        fmt::print("PyTorch column skipped for the Bi-LSTM: pytorch_dense_models.py builds the 2 x 128 Bi-LSTM only\n");
      }
      if (args.flag("deepsense")) torch_models.push_back("deepsense");  // HHAR sizes, as deepsense_rows builds it
      if (!torch_models.empty()) pytorch = pytorch_dense_latencies(SLIMNET_BENCH_SOURCE_DIR, args.str("python"), rounds, torch_models, batches);
#endif
    }
    fmt::print("{:<20} {:>5} {:>8} {:>11} {:>11} {:>8} {:>11} {:>9} {:>11} {:>8} {:>11} {:>11} {:>8} {:>10}  {}\n", "model", "batch",
               "weights%", "float us", "compr. us", "speedup", "baseline us", "vs base.", "PyTorch us", "vs PyT.", "float B", "compr. B",
               "B/nnz", "max|diff|", "weights from");
    std::ofstream csv(args.str("csv"));
    csv << "model,batch,weights_kept,float_seconds,compressed_seconds,speedup,pytorch_dense_seconds,speedup_vs_pytorch_dense,"
           "float_weight_bytes,compressed_weight_bytes,sparse_bytes_per_nonzero,max_abs_diff,source,baseline_seconds,"
           "speedup_vs_baseline\n";
    for (index_t batch : {index_t{1}, index_t{64}}) {
      if (args.integer("batch") > 0 && batch != args.integer("batch")) continue;
      nn::sequential<float> compressed = float_model;
      nc::compress_options o;
      o.sparse.batch = batch;
      o.sparse.measure = args.flag("measure");
      o.input_shape = {batch, steps, features};
      const auto report = nc::compress(compressed, nc::format::sparse, o);
      if (args.flag("verbose"))
        for (const auto& line : report) fmt::print("  {}\n", line);
      const weight_stats cs = stats_of(compressed);
      rng xg(7);
      tensor<float> x({batch, steps, features});
      for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(xg.uniform(0, 1));
      tensor<float> yf, yc, yb;
      float_model.forward(x, yf, {});
      compressed.forward(x, yc, {});
      double diff = 0;
      for (index_t i = 0; i < yf.size(); ++i) diff = std::max(diff, static_cast<double>(std::abs(yf[i] - yc[i])));
      const auto t = median_side_by_side({[&] { float_model.forward(x, yf, {}); }, [&] { compressed.forward(x, yc, {}); },
                                          [&] { baseline.forward(x, yb, {}); }},
                                         rounds);
      const double bpn = cs.sparse_nnz > 0 ? cs.sparse_bytes / cs.sparse_nnz : NAN;
      const double kept = fs.nnz / bs.weights;  // of the unthinned model's weights
      const auto pt = pytorch.find({"bilstm", batch});
      const double pt_s = pt == pytorch.end() ? NAN : pt->second;
      fmt::print("{:<20} {:>5} {:>7.2f}% {:>11.1f} {:>11.1f} {:>7.2f}x {:>11.1f} {:>8.2f}x {:>11.1f} {:>7.2f}x {:>11.0f} {:>11.0f} {:>8.2f} "
                 "{:>10.2e}  {}\n",
                 name, batch, 100 * kept, 1e6 * t[0], 1e6 * t[1], t[0] / t[1], 1e6 * t[2], t[2] / t[1], 1e6 * pt_s, pt_s / t[1], fs.bytes,
                 cs.bytes, bpn, diff, source);
      csv << fmt::format("{},{},{:.5f},{:.4e},{:.4e},{:.3f},{:.4e},{:.3f},{:.0f},{:.0f},{:.3f},{:.3e},{},{:.4e},{:.3f}\n", name, batch, kept,
                         t[0], t[1], t[0] / t[1], pt_s, pt_s / t[1], fs.bytes, cs.bytes, bpn, diff, source, t[2], t[2] / t[1]);
      if (args.flag("profile")) {
        auto& fb = dynamic_cast<nn::bidirectional<float>&>(float_model.find("bilstm"));
        auto& cb = dynamic_cast<nc::compressed_bidirectional<float>&>(compressed.find("bilstm"));
        profile_direction("forward", dynamic_cast<nc::compressed_lstm<float>&>(cb.forward_layer()), fb.forward_as<nn::lstm<float>>(), x,
                          std::max(5, rounds / 3));
        profile_direction("backward", dynamic_cast<nc::compressed_lstm<float>&>(cb.backward_layer()), fb.backward_as<nn::lstm<float>>(),
                          x, std::max(5, rounds / 3));
      }
    }
    if (args.flag("deepsense")) deepsense_rows(args, rounds, csv, pytorch);
    if (args.flag("accuracy")) {
      auto data = cli::load_dataset("mnist");
      cli::as_sequences(data.test);
      nn::sequential<float> compressed = float_model;
      nc::compress_options o;
      o.sparse.batch = 256;
      o.input_shape = {256, steps, features};
      nc::compress(compressed, nc::format::sparse, o);
      const train::cross_entropy<float> loss;
      const double af = train::evaluate(float_model, data.test, loss).accuracy, ac = train::evaluate(compressed, data.test, loss).accuracy;
      fmt::print("test accuracy ({} sequences): float {:.2f}%, compressed {:.2f}%\n", data.test.size(), 100 * af, 100 * ac);
    }
    fmt::print("kernel paths that ran (calls): {}\nCSV: {}\n", kernel_paths_ran(), args.str("csv"));
  } catch (const slimnet::error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
