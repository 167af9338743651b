// Example 2: iterative magnitude pruning with retraining (Han et al. 2015) of LeNet-300-100,
// LeNet-5 or a VGG-style network, and the per-layer table of the seed paper next to the measured one.
//
//   prune_magnitude --model lenet300 --data mnist
//   prune_magnitude --model lenet5 --data fashion --baseline lenet5-fashion.safetensors
//   prune_magnitude --model vgg --data fashion --epochs 10 --baseline vgg-fashion.safetensors
//
// 1. Train the dense baseline (the recipe of example 1: SGD, momentum 0.9, weight decay 5e-4,
//    batch 64, cosine learning rate from 0.05), or load it from --baseline if that file exists
//    (it is written there otherwise). A baseline from train_lenet brings its input standardisation.
// 2. Prune -> retrain -> prune ...: --rounds rounds, each pruning every layer by magnitude to the
//    round's level on the way to its target sparsity (geometric levels: each round removes the same
//    fraction of the weights still there), then --retrain-epochs epochs of retraining with the
//    masks held (gradient masked before the step, weight after it), learning rate restarting at
//    --retrain-lr with a cosine decay in each round; then --final-epochs more at the final
//    sparsity.
// 3. Print the per-layer table (Weights, FLOP, Act%, Weights%, FLOP%) with the seed's columns,
//    the compression rate and the accuracy against the baseline; with --out, save the pruned model.
// With --schedule agp, step 2 is automated gradual pruning instead (Zhu & Gupta): the same epoch
// budget (rounds x retrain-epochs + final-epochs), sparsity rising along the cubic AGP curve every
// quarter epoch during the first two thirds of it, learning rate in one cosine from --retrain-lr.
// With --distill alpha, retraining also distils the dense baseline's outputs (Hinton et al. 2015;
// loss (1 - alpha) CE + alpha T^2 KL at temperature --temperature), beyond Han et al.'s recipe;
// --teacher PATH (--teacher-model NAME) distils another trained network instead, e.g. the
// VGG-style net into LeNet-5.
// With --control, the dense baseline is also retrained with the same schedule and loss and no
// pruning, so that the pruned accuracy can be compared with a model that had the same extra epochs.
#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>

#include "common/cli.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/report.hpp"
#include "slimnet/slimnet.hpp"

using namespace slimnet;

namespace {

/// Han et al. 2015, Table 1 and 2 (the seed's slides): per-layer Weights%, FLOP% and Act%.
std::vector<report::reference_column> seed_columns(const std::string& model) {
  if (model == "vgg") {  // the seed gives VGG-16's total only: 138M -> 10.3M weights, 13x
    return {{"Han VGG-16 W%", {{"Total", "7.5%"}}}};
  }
  if (model == "lenet300") {
    return {{"Han W%", {{"fc1", "8%"}, {"fc2", "9%"}, {"fc3", "26%"}, {"Total", "8%"}}},
            {"Han FLOP%", {{"fc1", "8%"}, {"fc2", "4%"}, {"fc3", "17%"}, {"Total", "8%"}}},
            {"Han Act%", {{"fc1", "38%"}, {"fc2", "65%"}, {"fc3", "100%"}, {"Total", "46%"}}}};
  }
  return {
      {"Han W%",
       {{"conv1", "66%"}, {"conv2", "12%"}, {"fc1", "8%"}, {"fc2", "19%"}, {"Total", "8%"}}},
      {"Han FLOP%",
       {{"conv1", "66%"}, {"conv2", "10%"}, {"fc1", "6%"}, {"fc2", "10%"}, {"Total", "16%"}}},
      {"Han Act%",
       {{"conv1", "82%"}, {"conv2", "72%"}, {"fc1", "55%"}, {"fc2", "100%"}, {"Total", "77%"}}}};
}

/// Default targets: Han et al.'s per-layer densities, slightly tightened so that the total is
/// below 1/12 of the weights (LeNet-300-100: 7.7%, LeNet-5: 8.0%).
std::string default_targets(const std::string& model) {
  if (model == "vgg") {
    // Han et al. keep 22-58% of VGG-16's convolution weights and 4% of its fully connected ones;
    // here the convolutions hold 89% of the weights, so they must go further for >= 12x: more the
    // deeper (wider) the layer, the first one spared as Han's conv1_1 (58% kept). 12.9x in total.
    return "conv1=0.5,conv2=0.75,conv3=0.85,conv4=0.9,conv5=0.92,conv6=0.94,fc1=0.95,fc2=0.8";
  }
  return model == "lenet300" ? "fc1=0.925,fc2=0.91,fc3=0.74"
                             : "conv1=0.34,conv2=0.88,fc1=0.925,fc2=0.81";
}

/// Prints the test accuracy and sparsity at the end of each round.
struct round_printer : train::callback<float> {
  std::vector<nn::parameter<float>*> params;
  int epochs_per_round = 1, rounds = 1;
  bool quiet = false;
  void on_epoch_end(train::train_state<float>& s) override {
    const int e = s.epoch + 1;
    const bool round_end = e <= rounds * epochs_per_round && e % epochs_per_round == 0;
    const bool last = e == s.epochs;
    if (!round_end && !last) return;
    index_t kept = 0, total = 0;
    for (auto* p : params) {
      kept += prune::count_nonzero(prune::masked_weight(*p));
      total += p->size();
    }
    const std::string what = round_end ? fmt::format("epoch {}", e) : "final";
    fmt::print("  {:<11} weights kept {:6.2f}% ({:.1f}x)  test accuracy {:.2f}%\n", what,
               100.0 * static_cast<double>(kept) / static_cast<double>(total),
               static_cast<double>(total) / static_cast<double>(std::max<index_t>(kept, 1)),
               100.0 * s.epoch_metrics.validation.accuracy);
    std::fflush(stdout);
  }
};

}  // namespace

int main(int argc, char** argv) {
  cli::args a(argc, argv,
              {{"model", "lenet300"},    {"data", "mnist"},         {"epochs", "20"},
               {"batch", "64"},          {"lr", "0.05"},            {"momentum", "0.9"},
               {"weight-decay", "5e-4"}, {"seed", "1"},             {"baseline", ""},
               {"out", ""},              {"distill", "0"},          {"temperature", "4"},
               {"teacher", ""},          {"teacher-model", ""},
               {"targets", ""},          {"global", "0"},           {"rounds", "4"},
               {"retrain-epochs", "3"},  {"retrain-lr", "0.01"},    {"final-epochs", "0"},
               {"schedule", "iterative"}, {"control", "false"},     {"csv", ""},
               {"limit", "0"},           {"quiet", "false"},        {"heldout", "0"}},
              "prune_magnitude: iterative magnitude pruning + retraining of LeNet-300-100 "
              "(lenet300), LeNet-5 (lenet5) or a VGG-style network (vgg)\n"
              "  --targets conv1=0.34,fc1=0.925,...  per-layer final sparsities (default: Han et "
              "al.'s, tightened)\n"
              "  --global 0.92                        one global ranking to this sparsity instead "
              "of --targets");
  try {
    const std::string model_name = a.str("model");
    auto data = cli::load_dataset(a.str("data"));
    const bool quiet = a.flag("quiet");
    const auto seed = static_cast<std::uint64_t>(a.integer("seed"));
    cli::limit(data.train, a.integer("limit"), seed);
    cli::limit(data.test, a.integer("limit") > 0 ? std::max(a.integer("limit") / 4, 1L) : 0,
                  seed + 1);
    rng gen(seed);
    auto model = cli::make_model(model_name, gen, "prune_magnitude");
    const train::cross_entropy<float> loss;
    // --heldout N: the training images examples 11 and 15 hold out stay out of training here too.
    const long heldout_n = a.integer("heldout");
    std::string heldout_tag;
    cli::split_heldout(data.train, heldout_n, seed, "prune_magnitude", heldout_tag);
    fmt::print("{} on {}: {} train / {} test images\n", model_name, a.str("data"),
               data.train.size(), data.test.size());

    // 1. Baseline.
    auto metadata = cli::load_or_train_baseline(
        model, a.str("baseline"), model_name, a.str("data"), data,
        {static_cast<int>(a.integer("epochs")), a.real("lr"), a.real("momentum"), a.real("weight-decay"), a.integer("batch"), seed, !quiet},
        "prune_magnitude", heldout_n > 0 ? std::map<std::string, std::string>{{"heldout", heldout_tag}} : std::map<std::string, std::string>{});
    if (heldout_n > 0 && (!metadata.count("heldout") || metadata.at("heldout") != heldout_tag)) {
      fmt::print("note: the baseline does not record training without the held-out split ({}): it may have seen those images\n",
                 metadata.count("heldout") ? metadata.at("heldout") : std::string("no record"));
    }
    const double baseline = train::evaluate(model, data.test, loss).accuracy;
    fmt::print("baseline test accuracy {:.2f}%, {} weights in Linear/Conv2d layers\n",
               100 * baseline, [&] {
                 index_t n = 0;
                 for (auto* p : prune::prunable_parameters(model)) n += p->size();
                 return n;
               }());

    // 2. Iterative pruning.
    const int rounds = static_cast<int>(a.integer("rounds")),
              per_round = static_cast<int>(a.integer("retrain-epochs")),
              final_epochs = static_cast<int>(a.integer("final-epochs"));
    const double retrain_lr = a.real("retrain-lr");
    const std::string schedule_name = a.str("schedule");
    if (schedule_name != "iterative" && schedule_name != "agp") {
      throw config_error(fmt::format("prune_magnitude: unknown --schedule '{}' (iterative or agp)",
                                     schedule_name));
    }
    const bool use_agp = schedule_name == "agp";
    const int budget = rounds * per_round + final_epochs;
    // Iterative: cosine decay from retrain_lr within each round, and over the final block.
    // AGP: one cosine over the whole budget.
    const auto retrain_schedule = [=](int epoch) {
      if (use_agp) return retrain_lr * 0.5 * (1.0 + std::cos(M_PI * epoch / std::max(budget, 1)));
      const bool in_rounds = epoch < rounds * per_round;
      const int length = in_rounds ? per_round : final_epochs;
      const int within = in_rounds ? epoch % per_round : epoch - rounds * per_round;
      return retrain_lr * 0.5 * (1.0 + std::cos(M_PI * within / std::max(length, 1)));
    };
    train::fit_options ro;
    ro.epochs = budget;
    ro.batch_size = a.integer("batch");
    ro.seed = seed + 1;
    ro.progress = !quiet;
    ro.learning_rate = retrain_schedule;
    nn::sequential<float> control_model(model);  // copied before any mask is attached
    // With --distill alpha > 0 the retraining loss also pulls the pruned network's outputs towards
    // the dense baseline's (knowledge distillation, temperature --temperature).
    nn::sequential<float> teacher(model);
    const double distill = a.real("distill");
    if (!a.str("teacher").empty()) {
      if (!(distill > 0))
        throw config_error("prune_magnitude: --teacher needs --distill alpha > 0");
      const std::string teacher_model =
          a.str("teacher-model").empty() ? model_name : a.str("teacher-model");
      rng teacher_gen(seed + 7);
      teacher = cli::make_model(teacher_model, teacher_gen, "prune_magnitude");
      cli::load_teacher(teacher, a.str("teacher"), teacher_model, a.str("data"), metadata,
                        "prune_magnitude");
      fmt::print("teacher {} from {}: test accuracy {:.2f}%\n", teacher_model, a.str("teacher"),
                 100 * train::evaluate(teacher, data.test, loss).accuracy);
    }
    const train::distillation<float> retrain_loss(teacher, distill, a.real("temperature"));
    if (distill > 0) {
      fmt::print("retraining distils {}: alpha {}, temperature {}\n",
                 a.str("teacher").empty() ? "the dense baseline" : "the teacher", distill,
                 a.real("temperature"));
    }

    auto params = prune::prunable_parameters(model);
    const double global_sparsity = a.real("global");
    std::optional<prune::magnitude_pruner<float>> pruner;
    if (global_sparsity > 0) {
      pruner = prune::magnitude_pruner<float>::global(params, global_sparsity);
      fmt::print("pruning: global magnitude ranking to {:.1f}% sparsity", 100 * global_sparsity);
    } else {
      const auto targets =
          cli::parse_layer_values(a.str("targets").empty() ? default_targets(model_name) : a.str("targets"), "prune_magnitude", "targets");
      std::vector<prune::layer_target<float>> t;
      for (const auto& [layer, s] : targets)
        t.push_back({&prune::find_parameter(model, layer + ".weight"), s});
      pruner = prune::magnitude_pruner<float>::layerwise(t);
      fmt::print("pruning: layer-wise magnitude to");
      for (const auto& [layer, s] : targets) fmt::print(" {} {:.1f}%", layer, 100 * s);
    }
    round_printer printer;
    printer.params = params;
    train::sgd<float> ropt(
        train::sgd_options{}.with_lr(retrain_lr).with_momentum(a.real("momentum")).with_weight_decay(a.real("weight-decay")));
    if (use_agp) {
      const index_t steps_per_epoch = (data.train.size() + ro.batch_size - 1) / ro.batch_size;
      prune::agp_options ao;
      ao.frequency = std::max<index_t>(1, steps_per_epoch / 4);
      ao.pruning_steps = std::max<index_t>(1, (2 * budget * steps_per_epoch / 3) / ao.frequency);
      fmt::print(
          " by AGP: every {} steps up to step {} of {}, then fine-tuning (lr {} cosine over {} "
          "epochs)\n",
          ao.frequency, ao.end_step(), budget * steps_per_epoch, retrain_lr, budget);
      prune::agp<float> schedule(*pruner, ao);
      printer.epochs_per_round = std::max(1, budget / 4);
      printer.rounds = 4;
      train::fit(model, ropt, retrain_loss, data.train, ro, {&schedule, &printer}, &data.test);
    } else {
      fmt::print(" in {} rounds of {} retraining epochs (lr {} cosine per round), then {} epochs\n",
                 rounds, per_round, retrain_lr, final_epochs);
      prune::iterative_options io;
      io.rounds = rounds;
      io.epochs_per_round = per_round;
      prune::iterative<float> schedule(*pruner, io);
      printer.epochs_per_round = per_round;
      printer.rounds = rounds;
      train::fit(model, ropt, retrain_loss, data.train, ro, {&schedule, &printer}, &data.test);
    }
    prune::remove_all(model);  // bake W * T: the model is now an ordinary, sparse one

    // 3. Report.
    auto r = report::analyze(model, data.test);
    r.baseline_accuracy = baseline;
    fmt::print(
        "\n{} pruned on {} (Act% = nonzero inputs of the layer; Han's Act% is the layer's "
        "output):\n",
        model_name, a.str("data"));
    report::print(r, seed_columns(model_name));
    if (!a.str("csv").empty()) {
      report::write_csv(r, a.str("csv"));
      fmt::print("wrote {}\n", a.str("csv"));
    }
    if (!a.str("out").empty()) {  // pruned weights are exact zeros in the saved tensors
      metadata["test_accuracy"] = fmt::format("{:.4f}", r.accuracy);
      metadata["compression"] = fmt::format("{:.2f}", r.compression_rate());
      io::save_parameters(model, a.str("out"), metadata);
      fmt::print("saved the pruned model to {}\n", a.str("out"));
    }
    if (a.flag("control")) {
      train::sgd<float> copt(
          train::sgd_options{}.with_lr(retrain_lr).with_momentum(a.real("momentum")).with_weight_decay(a.real("weight-decay")));
      train::fit(control_model, copt, retrain_loss, data.train, ro);
      fmt::print("control: the dense baseline retrained with the same schedule reaches {:.2f}%\n",
                 100 * train::evaluate(control_model, data.test, loss).accuracy);
    }
    fmt::print("result: {} {} {:.1f}x fewer weights, accuracy {:.2f}% -> {:.2f}% ({:+.2f} pp)\n",
               model_name, a.str("data"), r.compression_rate(), 100 * baseline, 100 * r.accuracy,
               100 * (r.accuracy - baseline));
  } catch (const slimnet::error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
