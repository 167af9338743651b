// Example 14: structured magnitude pruning (Li et al., "Pruning Filters for Efficient ConvNets",
// ICLR 2017) of LeNet-5, LeNet-300-100 or the VGG-style network: whole filters / units with the
// smallest L1 (or L2) weight norms are removed, giving a smaller dense network
// (prune::structured_prune through structure::thin), then fine-tuned. Prints accuracy against the
// units kept, one row per fraction.
//
//   structured_pruning --model lenet5 --data mnist --baseline out/lenet5-mnist.safetensors
//   structured_pruning --model lenet5 --data mnist --fractions 0.5,0.8 --norm l2 --global
//
// 1. Load the dense baseline from --baseline (or train it, as example 2 does).
// 2. For each fraction f of --fractions: prune f of the units of every layer but the output one
//    (per layer, Li et al.'s choice, or ranked globally by norm per weight with --global), measure
//    the test accuracy, fine-tune --retrain-epochs epochs (SGD, cosine learning rate from
//    --retrain-lr) and measure it again. Each fraction starts from the baseline.
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "common/cli.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/slimnet.hpp"
#include "slimnet/structure.hpp"

using namespace slimnet;

namespace {

index_t weight_count(nn::sequential<float>& m) {
  index_t n = 0;
  for (auto* p : prune::prunable_parameters(m)) n += p->size();
  return n;
}

/// "conv1 10/20 conv2 25/50 ..." from the unit groups of the pruned and the original model.
std::string units_kept(nn::sequential<float>& pruned, nn::sequential<float>& original) {
  const auto a = structure::unit_groups(pruned), b = structure::unit_groups(original);
  std::string s;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
    s += fmt::format("{}{} {}/{}", s.empty() ? "" : "  ", a[i].keys.front(), a[i].units, b[i].units);
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  cli::args a(argc, argv,
              {{"model", "lenet5"},
               {"data", "mnist"},
               {"epochs", "20"},
               {"batch", "64"},
               {"lr", "0.05"},
               {"momentum", "0.9"},
               {"weight-decay", "5e-4"},
               {"seed", "1"},
               {"baseline", ""},
               {"fractions", "0.25,0.5,0.75,0.9"},
               {"norm", "l1"},
               {"global", "false"},
               {"retrain-epochs", "2"},
               {"retrain-lr", "0.01"},
               {"csv", ""},
               {"limit", "0"},
               {"quiet", "false"}},
              "structured_pruning: structured magnitude pruning (Li et al. 2017) + fine-tuning of lenet5, lenet300 or vgg\n"
              "  --fractions 0.25,0.5   fractions of each layer's units to remove, one run each\n"
              "  --norm l1|l2           unit ranking criterion; --global ranks all layers together");
  try {
    const std::string model_name = a.str("model");
    auto data = cli::load_dataset(a.str("data"));
    const bool quiet = a.flag("quiet");
    const auto seed = static_cast<std::uint64_t>(a.integer("seed"));
    cli::limit(data.train, a.integer("limit"), seed);
    cli::limit(data.test, a.integer("limit") > 0 ? std::max(a.integer("limit") / 4, 1L) : 0, seed + 1);
    rng gen(seed);
    auto model = cli::make_model(model_name, gen, "structured_pruning");
    const train::cross_entropy<float> loss;
    fmt::print("{} on {}: {} train / {} test images\n", model_name, a.str("data"), data.train.size(), data.test.size());
    cli::load_or_train_baseline(model, a.str("baseline"), model_name, a.str("data"), data,
                                {static_cast<int>(a.integer("epochs")), a.real("lr"), a.real("momentum"), a.real("weight-decay"),
                                 a.integer("batch"), seed, !quiet},
                                "structured_pruning");
    const double baseline = train::evaluate(model, data.test, loss).accuracy;
    const index_t dense_weights = weight_count(model);
    fmt::print("baseline test accuracy {:.2f}%, {} weights in Linear/Conv2d layers\n", 100 * baseline, dense_weights);

    prune::structured_options so;
    if (a.str("norm") != "l1" && a.str("norm") != "l2")
      throw config_error(fmt::format("structured_pruning: --norm '{}' is not l1 or l2", a.str("norm")));
    so.criterion = a.str("norm") == "l1" ? prune::norm::l1 : prune::norm::l2;
    so.global = a.flag("global");
    const int epochs = static_cast<int>(a.integer("retrain-epochs"));
    fmt::print("pruning {} by {} norm, fine-tuning {} epochs from lr {}\n", so.global ? "globally" : "each layer", a.str("norm"),
               epochs, a.real("retrain-lr"));

    std::string csv = "fraction,units_kept,weights_kept_pct,accuracy_pruned,accuracy_finetuned,baseline_accuracy\n";
    std::stringstream list(a.str("fractions"));
    std::string item;
    while (std::getline(list, item, ',')) {
      const double f = std::stod(item);
      auto small = prune::structured_prune(model, f, so);
      const double pruned = train::evaluate(small, data.test, loss).accuracy;
      train::sgd<float> opt(train::sgd_options{}
                                .with_lr(a.real("retrain-lr"))
                                .with_momentum(a.real("momentum"))
                                .with_weight_decay(a.real("weight-decay")));
      train::fit_options o;
      o.epochs = epochs;
      o.batch_size = a.integer("batch");
      o.seed = seed + 1;
      o.progress = !quiet;
      o.learning_rate = train::cosine_lr(a.real("retrain-lr"), std::max(epochs, 1));
      if (epochs > 0) train::fit(small, opt, loss, data.train, o);
      const double tuned = train::evaluate(small, data.test, loss).accuracy;
      const double kept = 100.0 * static_cast<double>(weight_count(small)) / static_cast<double>(dense_weights);
      const std::string units = units_kept(small, model);
      fmt::print("fraction {:.2f}: {}  weights kept {:6.2f}%  accuracy pruned {:.2f}%  fine-tuned {:.2f}% ({:+.2f} pp)\n", f,
                 units, kept, 100 * pruned, 100 * tuned, 100 * (tuned - baseline));
      std::fflush(stdout);
      csv += fmt::format("{},{},{:.4f},{:.4f},{:.4f},{:.4f}\n", f, units, kept, pruned, tuned, baseline);
    }
    if (!a.str("csv").empty()) {
      std::ofstream(a.str("csv")) << csv;
      fmt::print("wrote {}\n", a.str("csv"));
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
