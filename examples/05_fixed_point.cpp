// Example 5: training in 16-bit fixed point, round-to-nearest against stochastic rounding
// (Gupta et al. 2015, "Deep Learning with Limited Numerical Precision"), the seed's
// "Fully Quantization: Fixed-point format" experiment on MNIST.
//
//   fixed_point --models lenet300,lenet5 --data mnist --epochs 10
//   fixed_point --models lenet5 --fl 8,14 --modes stochastic --quantize
//   weights,activations,gradients
//
// Recipe as example 1 (standardised inputs, SGD with momentum 0.9, weight decay 1e-3, batch 64,
// cosine schedule from 0.05). Each network is trained once in float and then, from the same initial
// weights and the same batches, once per fraction length FL and rounding mode with WL = 16 (IL = 16
// - FL):
//   - weights and biases are stored in <IL,FL>: every optimizer step is rounded back onto the
//     grid (no real-valued copy), as in the paper, so round-to-nearest drops every update smaller
//     than epsilon/2 = 2^-(FL+1) while stochastic rounding keeps it in expectation;
//   - the output of every Linear / Conv2d is rounded to <IL,FL> (nearest at test time);
//   - with "gradients" in --quantize, the back-propagated errors dL/dx and the weight gradients
//     dL/dW are rounded too, with the same rounding mode, to a format of their own
//     <--grad-il, --grad-fl> (default <0,16>: gradients are small, so their 16 bits go to the
//     fraction).
// The table reports test accuracy against the float baseline; the program ends by checking the
// seed's finding: stochastic rounding matches float within --tolerance percentage points at every
// FL, and round-to-nearest falls behind at some FL.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "slimnet/quant.hpp"
#include "slimnet/slimnet.hpp"

using namespace slimnet;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

nn::sequential<float> make_model(const std::string& name, std::uint64_t seed) {
  rng gen(seed);
  return cli::make_model(name, gen, "fixed_point");
}

quant::rounding parse_mode(const std::string& s) {
  if (s == "nearest") return quant::rounding::nearest;
  if (s == "stochastic") return quant::rounding::stochastic;
  throw config_error(fmt::format("fixed_point: unknown rounding '{}' (nearest or stochastic)", s));
}

struct run_result {
  std::string model;
  int fl = -1;  // -1: float
  std::string mode;
  double accuracy = 0;
  double seconds = 0;
};

}  // namespace

int main(int argc, char** argv) {
  cli::args a(argc, argv,
              {{"models", "lenet300,lenet5"},
               {"data", "mnist"},
               {"epochs", "10"},
               {"batch", "64"},
               {"lr", "0.05"},
               {"momentum", "0.9"},
               {"weight-decay", "1e-3"},
               {"seed", "1"},
               {"wl", "16"},
               {"fl", "8,10,12,14"},
               {"modes", "nearest,stochastic"},
               {"quantize", "weights,activations"},
               {"grad-il", "0"},
               {"grad-fl", "16"},
               {"tolerance", "0.3"},
               {"limit", "0"},
               {"csv", "fixed_point.csv"},
               {"quiet", "false"},
               {"normalize", "true"}},
              "fixed_point: train LeNet-300-100 / LeNet-5 / the VGG-style net in <IL,FL> fixed point with nearest and "
              "stochastic rounding");
  try {
    auto data = cli::load_dataset(a.str("data"));
    cli::limit(data.train, a.integer("limit"));
    cli::limit(data.test, a.integer("limit") > 0 ? std::max(a.integer("limit") / 4, 1L) : 0);
    if (a.flag("normalize")) {  // standardise with the training set's statistics, as example 1
      const auto [mean, stddev] = data::input_mean_std(data.train);
      data::standardize(data.train, mean, stddev);
      data::standardize(data.test, mean, stddev);
    }
    const int wl = static_cast<int>(a.integer("wl"));
    const auto seed = static_cast<std::uint64_t>(a.integer("seed"));
    const int epochs = static_cast<int>(a.integer("epochs"));
    const double lr = a.real("lr");
    std::vector<int> fls;
    for (const auto& s : split(a.str("fl"))) fls.push_back(std::stoi(s));
    std::vector<quant::rounding> modes;
    for (const auto& s : split(a.str("modes"))) modes.push_back(parse_mode(s));
    bool q_weights = false, q_acts = false, q_grads = false;
    for (const auto& s : split(a.str("quantize"))) {
      if (s == "weights")
        q_weights = true;
      else if (s == "activations")
        q_acts = true;
      else if (s == "gradients")
        q_grads = true;
      else
        throw config_error(fmt::format(
            "fixed_point: unknown --quantize item '{}' (weights, activations, gradients)", s));
    }
    fmt::print(
        "{} train / {} test images; WL = {}; quantized: {}{}{}; SGD lr {} (cosine), momentum {}, "
        "{} epochs\n",
        data.train.size(), data.test.size(), wl, q_weights ? "weights " : "",
        q_acts ? "activations " : "",
        q_grads ? fmt::format("gradients <{},{}>", a.integer("grad-il"), a.integer("grad-fl")) : "",
        lr, a.real("momentum"), epochs);

    const train::cross_entropy<float> loss;
    auto train_one = [&](nn::sequential<float>& model, std::vector<train::callback<float>*> callbacks) {
      train::sgd<float> opt(
          train::sgd_options{}.with_lr(lr).with_momentum(a.real("momentum")).with_weight_decay(a.real("weight-decay")));
      train::fit_options o;
      o.epochs = epochs;
      o.batch_size = a.integer("batch");
      o.seed = seed;
      o.progress = !a.flag("quiet");
      o.learning_rate = train::cosine_lr(lr, std::max(epochs, 1));
      const auto start = std::chrono::steady_clock::now();
      train::fit(model, opt, loss, data.train, o, callbacks);
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      return std::make_pair(train::evaluate(model, data.test, loss).accuracy, seconds);
    };

    std::vector<run_result> results;
    for (const auto& name : split(a.str("models"))) {
      {
        auto model = make_model(name, seed);
        const auto [acc, sec] = train_one(model, {});
        results.push_back({name, -1, "float", acc, sec});
        fmt::print("{:<9} float32              test accuracy {:.2f}%  ({:.0f} s)\n", name,
                   100 * acc, sec);
      }
      for (int fl : fls) {
        for (auto mode : modes) {
          const quant::fixed_point_format format{wl - fl, fl};
          quant::limited_precision_options lp;
          if (q_weights) {
            quant::fixed_point_weight_options w;
            w.format = format;
            w.mode = mode;
            lp.weights = w;
          }
          const quant::fixed_point_format grad_format{static_cast<int>(a.integer("grad-il")),
                                                      static_cast<int>(a.integer("grad-fl"))};
          if (q_acts || q_grads) {
            quant::activation_quantization_options act;
            if (q_acts) {
              act.activations = format;
              act.activation_mode = mode;
            } else {
              act.activations.reset();
            }
            if (q_grads) {
              act.gradients = grad_format;
              act.gradient_mode = mode;
            }
            lp.activations = act;
          }
          auto model = quant::limited_precision(make_model(name, seed), lp, seed);
          quant::gradient_quantizer<float> gq(grad_format, mode, seed + 7);
          std::vector<train::callback<float>*> callbacks;
          if (q_grads) callbacks.push_back(&gq);
          const auto [acc, sec] = train_one(model, callbacks);
          results.push_back({name, fl, quant::to_string(mode), acc, sec});
          fmt::print("{:<9} {} {:<10}  test accuracy {:.2f}%  ({:.0f} s)\n", name,
                     format.describe(), quant::to_string(mode), 100 * acc, sec);
          std::fflush(stdout);
        }
      }
    }

    // The table: one row per model and FL, one column per rounding mode, differences to float.
    fmt::print("\nTest accuracy, WL = {} (difference to float32 in percentage points)\n", wl);
    fmt::print("{:<10} {:<9} {:>22} {:>22}\n", "model", "format", "round-to-nearest", "stochastic");
    const double tolerance = a.real("tolerance");
    bool stochastic_matches = true, nearest_degrades = false;
    std::string degrade_at;
    std::FILE* csv = std::fopen(a.str("csv").c_str(), "w");
    if (csv)
      fmt::print(csv, "model,wl,fl,rounding,test_accuracy,float_accuracy,difference_pp,seconds\n");
    for (const auto& name : split(a.str("models"))) {
      double base = 0;
      for (const auto& r : results)
        if (r.model == name && r.fl < 0) base = r.accuracy;
      fmt::print("{:<10} {:<9} {:>22}\n", name, "float32", fmt::format("{:.2f}%", 100 * base));
      for (int fl : fls) {
        std::string cells[2];
        for (const auto& r : results) {
          if (r.model != name || r.fl != fl) continue;
          const double diff = 100 * (r.accuracy - base);
          const int column = r.mode == "nearest" ? 0 : 1;
          cells[column] = fmt::format("{:.2f}% ({:+.2f})", 100 * r.accuracy, diff);
          if (column == 1 && diff < -tolerance - 1e-9) stochastic_matches = false;
          if (column == 0 && diff < -tolerance - 1e-9) {
            nearest_degrades = true;
            degrade_at += fmt::format(" {} FL={} ({:+.2f} pp)", name, fl, diff);
          }
          if (csv) {
            fmt::print(csv, "{},{},{},{},{:.4f},{:.4f},{:.2f},{:.1f}\n", name, wl, fl, r.mode,
                       r.accuracy, base, diff, r.seconds);
          }
        }
        fmt::print("{:<10} {:<9} {:>22} {:>22}\n", "", fmt::format("<{},{}>", wl - fl, fl),
                   cells[0], cells[1]);
      }
      if (csv) fmt::print(csv, "{},32,-1,float,{:.4f},{:.4f},0,0\n", name, base, base);
    }
    if (csv) {
      std::fclose(csv);
      fmt::print("\nwrote {}\n", a.str("csv"));
    }
    const bool has_both = modes.size() == 2;
    fmt::print("stochastic rounding within {} pp of float at every FL: {}\n", tolerance,
               stochastic_matches ? "yes" : "NO");
    if (has_both) {
      fmt::print("round-to-nearest more than {} pp below float at some FL: {}{}\n", tolerance,
                 nearest_degrades ? "yes," : "no", degrade_at);
    }
  } catch (const slimnet::error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
