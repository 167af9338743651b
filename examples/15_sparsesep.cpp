// Example 15: SparseSep (Bhattacharya & Lane, SenSys 2016) on a trained LeNet-5 (or LeNet-300-100,
// the VGG-style net): no retraining; every Linear layer becomes a dense basis times sparse codes
// learned by K-SVD, every Conv2d a vertical + horizontal separable pair (Tai et al.'s closed
// form), each layer's size chosen by a greedy bottom-to-top binary search that keeps the held-out
// accuracy within a budget of the dense model's. One search per budget; prints the per-layer table
// (weights kept, without biases, as DeepIoT's Table 2 counts them) and the test accuracy.
//
//   sparsesep --model lenet5 --data mnist --baseline out/lenet5-mnist.safetensors --budgets 0.005,0.01,0.02,0.05
//
// 1. Split --heldout images off the training set for the search (the test set is only reported).
// 2. Load the dense baseline, or train one on the rest of the training set (as example 2 does) and
//    record the split in its metadata, so that the held-out images are never seen by it.
// 3. For each budget: search (factorize::sparsesep_search), print the table; --csv writes one row
//    per budget and layer.
#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "common/cli.hpp"
#include "slimnet/factorize.hpp"
#include "slimnet/slimnet.hpp"

using namespace slimnet;

int main(int argc, char** argv) {
  cli::args a(argc, argv,
              {{"model", "lenet5"}, {"data", "mnist"}, {"epochs", "20"}, {"seed", "1"}, {"baseline", ""}, {"heldout", "1000"},
               {"budgets", "0.005,0.01,0.02,0.05"}, {"code-density", "0.25"}, {"iterations", "5"}, {"allow-growth", "false"},
               {"csv", ""}, {"limit", "0"}, {"quiet", "false"}},
              "sparsesep: SparseSep (sparse-coded FC layers, separable convolutions, no retraining) of lenet5, lenet300 or vgg\n"
              "  --budgets 0.005,0.01   allowed held-out accuracy drops, one search each\n"
              "  --code-density 0.25    nonzeros per code column as a fraction of the basis size\n"
              "  --allow-growth         let a layer's factored form exceed its dense weights (DeepIoT's runs)");
  try {
    const std::string model_name = a.str("model");
    auto data = cli::load_dataset(a.str("data"));
    const auto seed = static_cast<std::uint64_t>(a.integer("seed"));
    cli::limit(data.train, a.integer("limit"), seed);
    cli::limit(data.test, a.integer("limit") > 0 ? std::max(a.integer("limit") / 4, 1L) : 0, seed + 1);
    rng gen(seed);
    auto model = cli::make_model(model_name, gen, "sparsesep");
    // The search's held-out images come from the training set, split off before a baseline is
    // trained here (never seen by it); a loaded baseline says in its metadata whether it left them out.
    data::split<float> work = data;
    std::string split_tag;
    data::dataset<float> heldout = cli::split_heldout(work.train, a.integer("heldout"), seed, "sparsesep", split_tag);
    const bool split = heldout.size() > 0;
    if (!split) heldout = data.test;  // --heldout 0: the search scores on the test set itself
    cli::baseline_recipe recipe;
    recipe.epochs = static_cast<int>(a.integer("epochs"));
    recipe.seed = seed;
    recipe.progress = !a.flag("quiet");
    const auto meta = cli::load_or_train_baseline(model, a.str("baseline"), model_name, a.str("data"), work, recipe, "sparsesep",
                                                  {{"heldout", split_tag}});
    if (meta.count("input_mean") && meta.count("input_std")) {
      data::standardize(heldout, std::stod(meta.at("input_mean")), std::stod(meta.at("input_std")));
    }
    const bool unseen = meta.count("heldout") && meta.at("heldout") == split_tag;
    data.test = work.test;
    const train::cross_entropy<float> loss;
    const double base_test = train::evaluate(model, data.test, loss).accuracy;
    fmt::print("{} on {}: {} held-out images ({}) / {} test images; dense test accuracy {:.2f}%\n", model_name, a.str("data"),
               heldout.size(),
               !split ? "the test set itself" : unseen ? "from the training set, never seen by the baseline"
                                                       : "from the training set, seen by the loaded baseline",
               data.test.size(), 100 * base_test);

    std::vector<double> budgets;
    std::stringstream ss(a.str("budgets"));
    for (std::string item; std::getline(ss, item, ',');) budgets.push_back(std::stod(item));
    std::ofstream csv;
    if (!a.str("csv").empty()) {
      csv.open(a.str("csv"));
      csv << "budget,layer,kind,size,nonzeros_per_code,original_weights,kept_weights,kept_percent,relative_error,heldout_accuracy,"
             "test_accuracy\n";
    }
    const std::function<double(nn::sequential<float>&)> evaluate = [&](nn::sequential<float>& m) {
      return train::evaluate(m, heldout, loss).accuracy;
    };
    for (double budget : budgets) {
      nn::sequential<float> m(model);
      factorize::sparsesep_search_options o;
      o.accuracy_budget = budget;
      o.allow_growth = a.flag("allow-growth");
      o.factor.code_density = a.real("code-density");
      o.factor.iterations = a.integer("iterations");
      o.factor.seed = seed;
      const auto r = factorize::sparsesep_search(m, evaluate, o);
      const double test = train::evaluate(m, data.test, loss).accuracy;
      fmt::print("\nbudget {:.2f} pp: {} evaluations; held-out {:.2f}% -> {:.2f}%; test {:.2f}% -> {:.2f}%\n", 100 * budget,
                 r.evaluations, 100 * r.dense_accuracy, 100 * r.accuracy, 100 * base_test, 100 * test);
      fmt::print("  {:<8} {:<7} {:>6} {:>4} {:>9} {:>9} {:>8} {:>9}\n", "layer", "kind", "size", "s", "weights", "kept", "kept %",
                 "rel.err");
      for (const auto& l : r.layers) {
        fmt::print("  {:<8} {:<7} {:>6} {:>4} {:>9} {:>9} {:>7.2f}% {:>9.4f}\n", l.name, l.kind, l.size, l.nonzeros_per_code,
                   l.original_weights, l.kept_weights, 100 * l.kept_fraction(), l.relative_error);
        if (csv) {
          csv << fmt::format("{},{},{},{},{},{},{},{:.4f},{:.6f},{:.6f},{:.6f}\n", budget, l.name, l.kind, l.size, l.nonzeros_per_code,
                             l.original_weights, l.kept_weights, 100 * l.kept_fraction(), l.relative_error, r.accuracy, test);
        }
      }
      fmt::print("  {:<8} {:<7} {:>6} {:>4} {:>9} {:>9} {:>7.2f}%\n", "total", "", "", "", r.original_weights, r.kept_weights,
                 100 * r.kept_fraction());
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
