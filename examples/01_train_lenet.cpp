// Example 1: train LeNet-300-100 or LeNet-5 on real data, report test accuracy, save the model.
//
//   train_lenet --model lenet5 --data mnist --epochs 20
//   train_lenet --model lenet300 --data fashion --epochs 30 --out lenet300-fashion.safetensors
//
// Recipe: SGD with momentum 0.9, batch 64, fixed seed (as the PyTorch reference, which uses weight
// decay 5e-4 and a constant rate 0.01), plus inputs standardised with the training set's mean and
// standard deviation, weight decay 1e-3 and a cosine learning-rate schedule from 0.05.
#include <tuple>

#include <fmt/format.h>

#include "common/cli.hpp"
#include "slimnet/slimnet.hpp"

using namespace slimnet;

int main(int argc, char** argv) {
  cli::args a(argc, argv,
              {{"model", "lenet5"}, {"data", "mnist"}, {"epochs", "20"}, {"batch", "64"}, {"lr", "0.05"},
               {"momentum", "0.9"}, {"weight-decay", "1e-3"}, {"schedule", "cosine"}, {"seed", "1"},
               {"limit", "0"}, {"out", ""}, {"quiet", "false"}, {"normalize", "true"}},
              "train_lenet: train LeNet-300-100 (lenet300), LeNet-5 (lenet5) or the VGG-style net (vgg) on mnist "
              "(the 10k subset) or fashion");
  try {
    auto data = cli::load_dataset(a.str("data"));
    cli::limit(data.train, a.integer("limit"));
    cli::limit(data.test, a.integer("limit") > 0 ? std::max(a.integer("limit") / 4, 1L) : 0);
    double input_mean = 0, input_std = 0;  // recorded with the model so later programs standardise alike
    if (a.flag("normalize")) {  // standardise with the training set's statistics
      std::tie(input_mean, input_std) = data::input_mean_std(data.train);
      data::standardize(data.train, input_mean, input_std);
      data::standardize(data.test, input_mean, input_std);
    }
    rng gen(static_cast<std::uint64_t>(a.integer("seed")));
    const std::string name = a.str("model");
    auto model = cli::make_model(name, gen, "train_lenet");
    fmt::print("{} on {}: {} train / {} test images, {} parameters\n", name, a.str("data"), data.train.size(),
               data.test.size(), model.parameter_count());

    const double lr = a.real("lr");
    const int epochs = static_cast<int>(a.integer("epochs"));
    train::sgd<float> opt(
        train::sgd_options{}.with_lr(lr).with_momentum(a.real("momentum")).with_weight_decay(a.real("weight-decay")));
    train::fit_options o;
    o.epochs = epochs;
    o.batch_size = a.integer("batch");
    o.seed = static_cast<std::uint64_t>(a.integer("seed"));
    o.progress = !a.flag("quiet");
    const std::string schedule = a.str("schedule");
    if (schedule == "cosine") {
      o.learning_rate = train::cosine_lr(lr, epochs);
    } else if (schedule != "constant") {
      throw config_error(fmt::format("train_lenet: unknown schedule '{}' (cosine or constant)", schedule));
    }
    const train::cross_entropy<float> loss;
    const auto h = train::fit(model, opt, loss, data.train, o, {}, &data.test);
    const auto test = train::evaluate(model, data.test, loss);
    double throughput = 0;
    for (const auto& e : h.epochs) throughput += e.samples_per_second / static_cast<double>(h.epochs.size());
    fmt::print("{} on {}: test accuracy {:.2f}% (loss {:.4f}) after {} epochs, {:.0f} training samples/s\n", name,
               a.str("data"), 100.0 * test.accuracy, test.loss, epochs, throughput);
    if (!a.str("out").empty()) {
      auto meta = cli::baseline_metadata(name, a.str("data"), input_mean, input_std);
      meta["test_accuracy"] = fmt::format("{:.4f}", test.accuracy);
      io::save_parameters(model, a.str("out"), meta);
      fmt::print("saved {}\n", a.str("out"));
    }
  } catch (const slimnet::error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
