// Example 6: codebook quantization at equal compression rate (Gong et al. 2014) and fine-tuning
// of shared weights (Han et al. 2016), the seed's "Fully Quantization: Code book" experiment.
//
//   codebooks --model lenet5 --data mnist
//   codebooks --model lenet300 --data mnist --finetune-epochs 2 --csv lenet300-codebooks.csv
//
// A float network is trained (recipe of example 1), then every weight layer (Conv2d and Linear; the
// biases stay float, as in Gong et al.) is replaced by
//   kmeans  scalar k-means per layer, k = 2 ... 256 (1 to 8 bits per weight),
//   pq      product quantization: rows split into sub-vectors of d columns, k centres per block,
//   rq      residual quantization of the rows: t stages of k centres,
// and the whole network's compression rate is counted as Gong et al. do: float weight bits over
// index bits + codebook bits (32-bit centroids). A layer with fewer rows than a PQ / RQ setting's
// k cannot be quantized by it and stays float, counted at 32 bits per weight.
// Each setting is evaluated as quantized, then fine-tuned for --finetune-epochs with the indices
// fixed and each centroid moved by the summed gradient of its weights (quant::share_weights), with
// Adam at --finetune-lr.
// The program writes a CSV and, when gnuplot is installed, a PNG of accuracy against compression
// rate; it ends by checking that 4-bit k-means (16 clusters) loses at most --tolerance pp after
// fine-tuning.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "slimnet/quant.hpp"
#include "slimnet/slimnet.hpp"

using namespace slimnet;

namespace {

struct setting {
  quant::codebook_method method;
  index_t clusters;
  index_t param;  // PQ: sub-vector width d; RQ: stages t; k-means: unused
  std::string label() const {
    switch (method) {
      case quant::codebook_method::kmeans:
        return fmt::format("k={}", clusters);
      case quant::codebook_method::product:
        return fmt::format("d={} k={}", param, clusters);
      case quant::codebook_method::residual:
        return fmt::format("t={} k={}", param, clusters);
    }
    return "?";
  }
};

std::vector<setting> sweep(const std::string& which) {
  std::vector<setting> s;
  using m = quant::codebook_method;
  if (which.find("kmeans") != std::string::npos) {
    for (index_t k : {2, 4, 8, 16, 32, 64, 256}) s.push_back({m::kmeans, k, 0});
  }
  if (which.find("pq") != std::string::npos) {
    for (index_t d : {1, 2, 4, 8})
      for (index_t k : {8, 16}) s.push_back({m::product, k, d});
  }
  if (which.find("rq") != std::string::npos) {
    for (index_t t : {1, 2, 4})
      for (index_t k : {4, 8, 16}) s.push_back({m::residual, k, t});
  }
  return s;
}

/// The weight parameters of the model's Linear and Conv2d layers, in order.
std::vector<nn::parameter<float>*> weight_parameters(nn::sequential<float>& model) {
  std::vector<nn::parameter<float>*> out;
  model.visit_layers([&](nn::layer<float>& l) {
    if (auto* lin = dynamic_cast<nn::linear<float>*>(&l)) out.push_back(&lin->weight());
    if (auto* conv = dynamic_cast<nn::conv2d<float>*>(&l)) out.push_back(&conv->weight());
  });
  return out;
}

/// Quantizes every weight layer of `model` with `s` and ties it to its codebook for fine-tuning;
/// returns the network's storage.
quant::codebook_storage compress(nn::sequential<float>& model, const setting& s, std::uint64_t seed,
                                 std::vector<std::string>& kept_float) {
  quant::codebook_storage total;
  quant::kmeans_options o;
  o.seed = seed;
  o.init = s.method == quant::codebook_method::kmeans ? quant::kmeans_init::linear
                                                      : quant::kmeans_init::kmeans_plus_plus;
  for (auto* p : weight_parameters(model)) {
    const auto view = p->value().matrix();
    const index_t rows = view.rows(), cols = view.cols();
    const bool rows_are_points = s.method != quant::codebook_method::kmeans;
    if ((rows_are_points && s.clusters > rows) || (!rows_are_points && s.clusters > rows * cols)) {
      total += quant::codebook_storage::uncompressed(p->size());
      kept_float.push_back(p->name());
      continue;
    }
    quant::codebook<float> cb;
    switch (s.method) {
      case quant::codebook_method::kmeans:
        cb = quant::kmeans(p->value(), s.clusters, o);
        break;
      case quant::codebook_method::product:
        cb = quant::product_quantize(p->value(), (cols + s.param - 1) / s.param, s.clusters, o);
        break;
      case quant::codebook_method::residual:
        cb = quant::residual_quantize(p->value(), static_cast<int>(s.param), s.clusters, o);
        break;
    }
    total += cb.storage();
    quant::share_weights(*p, std::move(cb));
  }
  return total;
}

struct row {
  setting s;
  double rate = 0, bits_per_weight = 0, quantized = 0, finetuned = 0;
  std::string kept_float;
};

}  // namespace

int main(int argc, char** argv) {
  cli::args a(argc, argv,
              {{"model", "lenet5"},
               {"data", "mnist"},
               {"epochs", "10"},
               {"batch", "64"},
               {"lr", "0.05"},
               {"momentum", "0.9"},
               {"weight-decay", "1e-3"},
               {"seed", "1"},
               {"methods", "kmeans,pq,rq"},
               {"finetune-epochs", "1"},
               {"finetune-lr", "1e-4"},
               {"tolerance", "0.3"},
               {"limit", "0"},
               {"csv", "codebooks.csv"},
               {"png", "codebooks.png"},
               {"quiet", "false"},
               {"normalize", "true"}},
              "codebooks: accuracy against compression rate for k-means, product and residual "
              "quantization");
  try {
    auto data = cli::load_dataset(a.str("data"));
    cli::limit(data.train, a.integer("limit"));
    cli::limit(data.test, a.integer("limit") > 0 ? std::max(a.integer("limit") / 4, 1L) : 0);
    if (a.flag("normalize")) {
      const auto [mean, stddev] = data::input_mean_std(data.train);
      data::standardize(data.train, mean, stddev);
      data::standardize(data.test, mean, stddev);
    }
    const auto seed = static_cast<std::uint64_t>(a.integer("seed"));
    const std::string name = a.str("model");
    rng gen(seed);
    nn::sequential<float> baseline;
    if (name == "lenet5") {
      baseline = nn::models::lenet5<float>(gen);
    } else if (name == "lenet300") {
      baseline = nn::models::lenet_300_100<float>(gen);
    } else {
      throw config_error(fmt::format("codebooks: unknown model '{}' (lenet5 or lenet300)", name));
    }
    const train::cross_entropy<float> loss;
    const int epochs = static_cast<int>(a.integer("epochs"));
    {
      train::sgd<float> opt(
          train::sgd_options{}.with_lr(a.real("lr")).with_momentum(a.real("momentum")).with_weight_decay(a.real("weight-decay")));
      train::fit_options o;
      o.epochs = epochs;
      o.batch_size = a.integer("batch");
      o.seed = seed;
      o.progress = !a.flag("quiet");
      o.learning_rate = train::cosine_lr(a.real("lr"), std::max(epochs, 1));
      train::fit(baseline, opt, loss, data.train, o);
    }
    const double base = train::evaluate(baseline, data.test, loss).accuracy;
    index_t weights = 0;
    for (auto* p : weight_parameters(baseline)) weights += p->size();
    fmt::print(
        "{} on {}: float accuracy {:.2f}% after {} epochs; {} weights in {} layers ({:.0f} KiB as "
        "float)\n",
        name, a.str("data"), 100 * base, epochs, weights, weight_parameters(baseline).size(),
        weights * 4.0 / 1024);

    const int ft_epochs = static_cast<int>(a.integer("finetune-epochs"));
    std::vector<row> rows;
    fmt::print("\n{:<7} {:<10} {:>8} {:>11} {:>11} {:>11}  {}\n", "method", "setting", "rate",
               "bits/weight", "quantized", "fine-tuned", "left float");
    for (const auto& s : sweep(a.str("methods"))) {
      nn::sequential<float> model = baseline;  // a fresh copy of the float network
      std::vector<std::string> kept;
      const auto storage = compress(model, s, seed, kept);
      row r{s,
            storage.compression_rate(),
            static_cast<double>(storage.total_bits()) / static_cast<double>(storage.weights),
            0,
            0,
            ""};
      for (const auto& k : kept) r.kept_float += (r.kept_float.empty() ? "" : " ") + k;
      r.quantized = train::evaluate(model, data.test, loss).accuracy;
      r.finetuned = r.quantized;
      if (ft_epochs > 0) {
        // Adam: each centroid's gradient sums the gradients of all its weights, so its size grows
        // with the cluster (fc1 of LeNet-5 in 2 clusters: 200,000 weights each); Adam's per-element
        // normalisation (identical for the weights of a cluster, which therefore stay tied) moves
        // every centroid by about the rate per step whatever its cluster's size, where plain SGD
        // needs a rate per layer and k.
        train::adam<float> opt(train::adam_options{}.with_lr(a.real("finetune-lr")));
        train::fit_options o;
        o.epochs = ft_epochs;
        o.batch_size = a.integer("batch");
        o.seed = seed + 1;
        o.progress = false;
        train::fit(model, opt, loss, data.train, o);
        r.finetuned = train::evaluate(model, data.test, loss).accuracy;
      }
      fmt::print("{:<7} {:<10} {:>7.1f}x {:>11.2f} {:>10.2f}% {:>10.2f}%  {}\n",
                 quant::to_string(s.method), s.label(), r.rate, r.bits_per_weight,
                 100 * r.quantized, 100 * r.finetuned, r.kept_float);
      std::fflush(stdout);
      rows.push_back(r);
    }

    std::FILE* csv = std::fopen(a.str("csv").c_str(), "w");
    if (csv == nullptr) throw io_error(fmt::format("codebooks: cannot write '{}'", a.str("csv")));
    fmt::print(csv,
               "model,method,setting,clusters,param,compression_rate,bits_per_weight,accuracy_"
               "quantized,accuracy_finetuned,"
               "accuracy_float,kept_float\n");
    for (const auto& r : rows) {
      fmt::print(csv, "{},{},{},{},{},{:.3f},{:.4f},{:.4f},{:.4f},{:.4f},{}\n", name,
                 quant::to_string(r.s.method), r.s.label(), r.s.clusters, r.s.param, r.rate,
                 r.bits_per_weight, r.quantized, r.finetuned, base, r.kept_float);
    }
    std::fclose(csv);
    fmt::print("\nwrote {}\n", a.str("csv"));

    // The plot: accuracy against compression rate, one curve per method, before and after
    // fine-tuning.
    const std::string png = a.str("png");
    if (!png.empty()) {
      if (std::system("command -v gnuplot > /dev/null 2>&1") != 0) {
        fmt::print(
            "gnuplot not found: no plot (apt-get install gnuplot-nox); the CSV has the numbers\n");
      } else {
        const std::string script_path = png + ".gp";
        std::FILE* gp = std::fopen(script_path.c_str(), "w");
        if (gp == nullptr) throw io_error(fmt::format("codebooks: cannot write '{}'", script_path));
        fmt::print(gp, "set terminal pngcairo size 1000,650 font ',11'\nset output '{}'\n", png);
        fmt::print(gp, "set datafile separator ','\nset grid\nset logscale x 2\n");
        fmt::print(gp,
                   "set xlabel 'compression rate (float weight bits / index + codebook bits)'\n");
        fmt::print(gp, "set ylabel 'test accuracy (%)'\n");
        fmt::print(
            gp,
            "set title '{} on {}: codebook quantization of all weight layers (float {:.2f}%)'\n",
            name, a.str("data"), 100 * base);
        fmt::print(gp, "set yrange [*:{}]\nset key outside right\n", 100 * base + 1);
        fmt::print(gp, "plot {:.4f} with lines dt 2 lc rgb 'black' title 'float'", 100 * base);
        const char* colours[] = {"#1f77b4", "#d62728", "#2ca02c"};
        int c = 0;
        for (const char* method : {"kmeans", "pq", "rq"}) {
          bool any = false;
          for (const auto& r : rows)
            any = any || quant::to_string(r.s.method) == std::string(method);
          if (any) {
            fmt::print(gp,
                       ", \\\n  '< grep \",{}\" {}' using 6:($8*100) with points pt 7 lc rgb '{}' "
                       "title '{} quantized'",
                       method, a.str("csv"), colours[c], method);
            if (ft_epochs > 0) {
              fmt::print(gp,
                         ", \\\n  '< grep \",{}\" {}' using 6:($9*100) with points pt 5 lc rgb "
                         "'{}' title '{} fine-tuned'",
                         method, a.str("csv"), colours[c], method);
            }
          }
          ++c;
        }
        fmt::print(gp, "\n");
        std::fclose(gp);
        if (std::system(fmt::format("gnuplot '{}'", script_path).c_str()) == 0) {
          fmt::print("wrote {}\n", png);
        } else {
          fmt::print("gnuplot failed on {}: no plot\n", script_path);
        }
      }
    }

    for (const auto& r : rows) {
      if (r.s.method == quant::codebook_method::kmeans && r.s.clusters == 16) {
        const double diff = 100 * (r.finetuned - base);
        fmt::print(
            "4-bit k-means (16 clusters per layer, {:.1f}x): {:.2f}% after fine-tuning, {:+.2f} pp "
            "against float: {}\n",
            r.rate, 100 * r.finetuned, diff,
            diff >= -a.real("tolerance") - 1e-9 ? "within the tolerance"
                                                : "NOT within the tolerance");
      }
    }
  } catch (const slimnet::error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
