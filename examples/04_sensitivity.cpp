// Example 4: per-layer pruning sensitivity of a trained network (Han et al. 2015, Fig. 6): each
// Linear/Conv2d weight alone is pruned by magnitude to 0%, 5%, ..., 95%, the network is evaluated
// and the weights restored. The table says how far each layer can go before accuracy drops,
// which is how per-layer targets for example 2 are chosen.
//
//   sensitivity --model lenet5 --data mnist --baseline out/lenet5-mnist.safetensors --csv
//   lenet5-sensitivity.csv sensitivity --model lenet5 --structured      (whole filters / neurons
//   instead of single weights)
#include <fmt/format.h>

#include <filesystem>

#include "common/cli.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/report.hpp"
#include "slimnet/slimnet.hpp"

using namespace slimnet;

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
               {"structured", "false"},
               {"tolerance", "0.5"},
               {"csv", ""},
               {"limit", "0"},
               {"quiet", "false"}},
              "sensitivity: accuracy of LeNet-5 (lenet5), LeNet-300-100 (lenet300) or the VGG-style net "
              "(vgg) with one layer pruned at a time");
  try {
    const std::string model_name = a.str("model");
    const auto seed = static_cast<std::uint64_t>(a.integer("seed"));
    auto data = cli::load_dataset(a.str("data"));
    cli::limit(data.train, a.integer("limit"), seed);
    cli::limit(data.test, a.integer("limit") > 0 ? std::max(a.integer("limit") / 4, 1L) : 0,
                  seed + 1);
    rng gen(seed);
    auto model = cli::make_model(model_name, gen, "sensitivity");
    const train::cross_entropy<float> loss;
    cli::load_or_train_baseline(
        model, a.str("baseline"), model_name, a.str("data"), data,
        {static_cast<int>(a.integer("epochs")), a.real("lr"), a.real("momentum"), a.real("weight-decay"), a.integer("batch"), seed,
         !a.flag("quiet")},
        "sensitivity");
    fmt::print("{} on {}: test accuracy {:.2f}% on {} images\n\n", model_name, a.str("data"),
               100 * train::evaluate(model, data.test, loss).accuracy, data.test.size());

    prune::sensitivity_options o;
    o.structured = a.flag("structured");
    const auto r =
        prune::sensitivity_analysis(model, prune::prunable_parameters(model), data.test, loss, o);
    fmt::print("test accuracy (%) with one layer pruned {} by magnitude:\n",
               o.structured ? "row by row (L2 norm)" : "weight by weight");
    report::print(r, a.real("tolerance"));
    if (!a.str("csv").empty()) {
      report::write_csv(r, a.str("csv"));
      fmt::print("wrote {}\n", a.str("csv"));
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
