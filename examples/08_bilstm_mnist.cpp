// Example 8: sequential MNIST with a bidirectional LSTM. Each digit is read as a sequence of 28 rows
// of 28 pixels; one LSTM stack reads the rows top to bottom, a second one bottom to top, and a
// linear layer classifies the two final states.
//
//   bilstm_mnist                                   # 2 stacked layers of 128 units per direction
//   bilstm_mnist --layers 1 --hidden 64 --epochs 8 --out bilstm.safetensors
//
// Model: Bidirectional(LSTM(28, H, num_layers = L, last step)) -> Linear(2H, 10). As in the seed's
// Bi-LSTM (DeepIoT Table 4), the two directions are separate stacks: layer 2 of each direction
// reads only that direction's layer 1. Recipe: Adam, lr 2e-3 with a cosine decay, batch 64, seed 1.
#include <algorithm>

#include <fmt/format.h>

#include "common/bilstm.hpp"
#include "common/cli.hpp"
#include "slimnet/slimnet.hpp"

using namespace slimnet;

namespace {

}  // namespace

int main(int argc, char** argv) {
  // clang-format off
  cli::args a(argc, argv,
              {{"data", "mnist"}, {"layers", "2"}, {"hidden", "128"}, {"epochs", "12"}, {"batch", "64"}, {"lr", "2e-3"},
               {"seed", "1"}, {"limit", "0"}, {"out", ""}, {"quiet", "false"}},
              "bilstm_mnist: a bidirectional LSTM on sequential MNIST (28 steps of 28 pixels)");
  // clang-format on
  try {
    auto data = cli::load_dataset(a.str("data"));
    cli::limit(data.train, a.integer("limit"), 11);
    cli::limit(data.test, a.integer("limit") > 0 ? std::max(a.integer("limit") / 4, 1L) : 0, 12);
    cli::as_sequences(data.train);
    cli::as_sequences(data.test);
    const auto seed = static_cast<std::uint64_t>(a.integer("seed"));
    rng gen(seed);
    auto model = cli::make_bilstm(a.integer("layers"), a.integer("hidden"), gen);
    fmt::print("sequential {}: {} train / {} test digits, each 28 steps x 28 features\n", a.str("data"), data.train.size(),
               data.test.size());
    fmt::print("{}\n{} parameters\n", model.describe(), model.parameter_count());

    const int epochs = static_cast<int>(a.integer("epochs"));
    train::adam<float> opt(train::adam_options{}.with_lr(a.real("lr")));
    train::fit_options o;
    o.epochs = epochs;
    o.batch_size = a.integer("batch");
    o.seed = seed;
    o.progress = !a.flag("quiet");
    o.learning_rate = train::cosine_lr(a.real("lr"), epochs);
    const train::cross_entropy<float> loss;
    const auto h = train::fit(model, opt, loss, data.train, o, {}, &data.test);
    const auto test = train::evaluate(model, data.test, loss);
    double throughput = 0;
    for (const auto& e : h.epochs) throughput += e.samples_per_second / static_cast<double>(h.epochs.size());
    fmt::print("Bi-LSTM on sequential {}: test accuracy {:.2f}% (loss {:.4f}) after {} epochs, {:.0f} training sequences/s\n",
               a.str("data"), 100.0 * test.accuracy, test.loss, epochs, throughput);
    if (!a.str("out").empty()) {
      io::save_parameters(model, a.str("out"),
                          {{"model", fmt::format("bilstm layers={} hidden={}", a.integer("layers"), a.integer("hidden"))},
                           {"data", a.str("data")},
                           {"test_accuracy", fmt::format("{:.4f}", test.accuracy)}});
      fmt::print("saved {}\n", a.str("out"));
    }
  } catch (const slimnet::error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
