// Example 10: DyNS-Ext, DeepIoT's extension of Dynamic Network Surgery to recurrent layers, on the
// sequential-MNIST Bi-LSTM of example 8, with a table shaped like the seed's Bi-LSTM table
// (DeepIoT Table 4).
//
//   dyns_ext_bilstm --baseline bilstm.safetensors        # example 8's model (trained and saved here if missing)
//   dyns_ext_bilstm --c-rate 2.0 --dns-epochs 8 --surgery-epochs 5     # milder pruning
//   dyns_ext_bilstm --method magnitude --sparsity 0.9                   # magnitude pruning instead of DNS
//   dyns_ext_bilstm --baseline bilstm.safetensors --out bilstm-dyns-ext.safetensors   # save the pruned model
//   dyns_ext_bilstm --method dyns                                       # plain DyNS: DNS on fc only, LSTMs dense
//   dyns_ext_bilstm --layers 2 --hidden 64 --limit 8000 --limit-seed 1 --heldout 1000 --baseline bl.safetensors
//                                                                       # deepiot --model bilstm --seed 1's subsets
//
// 1. Baseline: Bidirectional(LSTM(28, 128, 2 layers, last step)) -> Linear(256, 10), example 8's
//    recipe, loaded from --baseline or trained. --limit N keeps N training and N/4 test images
//    drawn with --limit-seed (test: --limit-seed + 1; example 11 draws them with its --seed, so
//    --limit-seed 1 gives `deepiot --seed 1`'s subsets). --heldout N sets N training images aside
//    (data::stratified_split with --seed, as example 11 does) before anything is trained, so a
//    baseline saved here never saw example 11's held-out set; they take no part in DNS either.
// 2. DNS (prune::attach_dyns_ext: prune::attach_dns per matrix) on every weight matrix: weight_ih_l{k} and weight_hh_l{k} of both
//    directions and fc.weight, each with its own thresholds t = max(mu + c_rate sigma, 0) over
//    |w|, pruning at 0.9 t and splicing at 1.1 t; surgery with probability (1 + gamma iter)^-power
//    during the first --surgery-epochs; Adam on dL/d(W * T) for every weight (pruned ones too).
//    Biases stay dense (DeepIoT's tables count weights only). With --method magnitude each matrix
//    is instead pruned once to --sparsity by |w| (prune::l1_unstructured) and retrained with its mask.
//    --method dyns is the paper's plain DyNS on a recurrent net: DNS on fc.weight only, the LSTM
//    matrices left dense.
// 3. Bake W * T (dyns_ext_run::finish), then remove hidden units left with no incoming connections (the unit's four gate
//    rows in weight_ih and weight_hh all zero) or no outgoing ones (its column in weight_hh and in
//    the next layer's input weights, or fc's, all zero), until none is left; the thinned LSTMs are
//    ordinary, smaller layers (structure::remove_dead_units, with biases ignored as DyNS-Ext
//    counts weights only). A unit without outgoing connections
//    changes nothing; one without incoming connections still adds a bias-driven, input-independent
//    signal, so its removal can move the accuracy: both accuracies are printed, and
//    --finetune-epochs retrains the thinned model with its zeros kept (prune masks).
// 4. --out FILE: the pruned, thinned model as one model file (io::save_model: its widths in the
//    architecture, the zeros as sparse encodings), reloaded and checked against the model in
//    memory; benchmarks/compressed_recurrent --model FILE times it against its dense float form.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>

#include <fmt/format.h>

#include "common/bilstm.hpp"
#include "common/cli.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/slimnet.hpp"

using namespace slimnet;
using lstm_t = nn::lstm<float>;

namespace {

lstm_t& direction(nn::sequential<float>& m, int d) {
  auto& bi = static_cast<nn::bidirectional<float>&>(m.find("bilstm"));
  return d == 0 ? bi.forward_as<lstm_t>() : bi.backward_as<lstm_t>();
}

/// Every weight matrix: LSTM weight_ih / weight_hh of both directions and the classifier's weight.
std::vector<nn::parameter<float>*> weight_matrices(nn::sequential<float>& m) {
  std::vector<nn::parameter<float>*> out;
  m.visit_parameters([&](nn::parameter<float>& p) {
    if (p.value().rank() == 2 && p.local_name().rfind("weight", 0) == 0) out.push_back(&p);
  });
  return out;
}

index_t nonzeros(const tensor<float>& t) { return (t.flat().array() != 0.0f).count(); }

/// Keeps the current zeros of every weight matrix fixed (for fine-tuning after thinning).
void freeze_zeros(nn::sequential<float>& m) {
  for (auto* p : weight_matrices(m)) prune::threshold_unstructured(*p, 0.0);
}

}  // namespace

int main(int argc, char** argv) {
  // clang-format off
  cli::args a(argc, argv,
              {{"data", "mnist"}, {"layers", "2"}, {"hidden", "128"}, {"epochs", "12"}, {"batch", "64"}, {"lr", "2e-3"},
               {"seed", "1"}, {"baseline", ""}, {"method", "dns"}, {"c-rate", "3.0"}, {"fc-c-rate", "1.0"}, {"gamma", "1e-4"},
               {"power", "1"}, {"sparsity", "0.9"}, {"dns-epochs", "8"}, {"surgery-epochs", "5"}, {"dns-lr", "1e-3"},
               {"finetune-epochs", "1"}, {"limit", "0"}, {"limit-seed", "11"}, {"heldout", "0"}, {"quiet", "false"}, {"out", ""}},
              "dyns_ext_bilstm: DyNS-Ext (DNS on the recurrent weight matrices, then removal of dead hidden units)\n"
              "  on the sequential-MNIST Bi-LSTM of example 8\n"
              "  --method magnitude --sparsity 0.9   one-shot magnitude pruning + retraining instead of DNS\n"
              "  --method dyns                        plain DyNS: DNS on the classifier only, the LSTMs left dense");
  // clang-format on
  try {
    const bool quiet = a.flag("quiet");
    const auto seed = static_cast<std::uint64_t>(a.integer("seed"));
    auto data = cli::load_dataset(a.str("data"));
    const auto limit_seed = static_cast<std::uint64_t>(a.integer("limit-seed"));
    cli::limit(data.train, a.integer("limit"), limit_seed);
    cli::limit(data.test, a.integer("limit") > 0 ? std::max(a.integer("limit") / 4, 1L) : 0, limit_seed + 1);
    cli::as_sequences(data.train);
    cli::as_sequences(data.test);
    std::string heldout_note = "none";
    if (a.integer("heldout") > 0 && a.integer("heldout") < data.train.size()) {
      // The same split as example 11's (fraction and seed): these images are never trained on here.
      const double frac = static_cast<double>(a.integer("heldout")) / static_cast<double>(data.train.size());
      const auto [tr, ho] = data::stratified_split(data.train.labels, data.train.num_classes, frac, seed);
      fmt::print("{} training images set aside (example 11's held-out split), {} left for training\n", ho.size(), tr.size());
      data.train = data.train.subset(tr);
      heldout_note = fmt::format("{} images, stratified, seed {}", a.integer("heldout"), seed);
    }
    rng gen(seed);
    const index_t layers = a.integer("layers"), hidden = a.integer("hidden"), batch = a.integer("batch");
    auto model = cli::make_bilstm(layers, hidden, gen);
    const train::cross_entropy<float> loss;

    // 1. Baseline.
    const std::string baseline_path = a.str("baseline");
    if (!baseline_path.empty() && std::filesystem::exists(baseline_path)) {
      io::load_parameters(model, baseline_path);
      fmt::print("baseline loaded from {}\n", baseline_path);
    } else {
      const int epochs = static_cast<int>(a.integer("epochs"));
      train::adam<float> opt(train::adam_options{}.with_lr(a.real("lr")));
      train::fit_options o;
      o.epochs = epochs;
      o.batch_size = batch;
      o.seed = seed;
      o.progress = !quiet;
      o.learning_rate = train::cosine_lr(a.real("lr"), epochs);
      train::fit(model, opt, loss, data.train, o);
      if (!baseline_path.empty()) {
        // Example 11's baseline metadata ("model" bilstm, "data"), so `deepiot --model bilstm` loads it.
        auto meta = cli::baseline_metadata("bilstm", a.str("data"));
        meta["layers"] = std::to_string(layers);
        meta["hidden"] = std::to_string(hidden);
        meta["recipe"] = fmt::format("dyns_ext_bilstm: adam lr {} cosine, {} epochs, batch {}, seed {}, limit {} (seed {}), heldout {}",
                                     a.real("lr"), epochs, batch, seed, a.integer("limit"), limit_seed, a.integer("heldout"));
        // The split in example 11's words, so `deepiot --baseline` knows this file never saw its
        // held-out images (and does not warn that it may have).
        meta["heldout"] = heldout_note;
        io::save_parameters(model, baseline_path, meta);
        fmt::print("baseline saved to {}\n", baseline_path);
      }
    }
    const double baseline = train::evaluate(model, data.test, loss).accuracy;
    // Per layer and direction: units and weights (weight_ih + weight_hh) before compression.
    std::vector<std::array<index_t, 2>> units0(static_cast<std::size_t>(layers)), weights0(static_cast<std::size_t>(layers));
    for (int d = 0; d < 2; ++d)
      for (index_t k = 0; k < layers; ++k) {
        auto& l = direction(model, d);
        units0[static_cast<std::size_t>(k)][static_cast<std::size_t>(d)] = l.hidden_size(k);
        weights0[static_cast<std::size_t>(k)][static_cast<std::size_t>(d)] = l.weight_ih(k).size() + l.weight_hh(k).size();
      }
    index_t total0 = 0;
    for (auto* p : weight_matrices(model)) total0 += p->size();
    const index_t fc0 = static_cast<nn::linear<float>&>(model.find("fc")).weight().size();
    fmt::print("baseline: test accuracy {:.2f}%, {} weights in {} matrices\n", 100 * baseline, total0,
               weight_matrices(model).size());

    // 2. DNS on every weight matrix.
    const int dns_epochs = static_cast<int>(a.integer("dns-epochs")),
              surgery_epochs = static_cast<int>(a.integer("surgery-epochs"));
    if (dns_epochs <= 0 || surgery_epochs < 0 || surgery_epochs > dns_epochs) {
      throw config_error(fmt::format("dyns_ext_bilstm: need 0 <= --surgery-epochs ({}) <= --dns-epochs ({}) and dns-epochs > 0",
                                     surgery_epochs, dns_epochs));
    }
    const index_t steps_per_epoch = (data.train.size() + batch - 1) / batch;
    auto kept = [&] {
      index_t n = 0;
      for (auto* p : weight_matrices(model)) n += nonzeros(prune::masked_weight(*p));
      return n;
    };
    const std::string method = a.str("method");
    std::optional<prune::dyns_ext_run<float>> run;
    if (method == "dns" || method == "dyns") {
      prune::dyns_ext_options o;
      o.prune_recurrent = method == "dns";
      o.recurrent_c_rate = a.real("c-rate");
      o.linear_c_rate = a.real("fc-c-rate");
      o.gamma = a.real("gamma");
      o.power = a.real("power");
      o.iter_stop = surgery_epochs * steps_per_epoch;
      o.seed = seed;
      run = prune::attach_dyns_ext(model, o);
      fmt::print(
          "{}: c_rate {} (fc {}), gamma {}, surgery during {} of {} epochs; after the first surgery {:.1f}% of the weights "
          "kept\n",
          method == "dns" ? "DNS on every weight matrix (DyNS-Ext)" : "DNS on fc only (DyNS)", a.real("c-rate"), a.real("fc-c-rate"),
          a.real("gamma"), surgery_epochs, dns_epochs, 100.0 * static_cast<double>(kept()) / static_cast<double>(total0));
    } else if (method == "magnitude") {
      // One-shot magnitude pruning of each matrix to --sparsity, then retraining with the masks.
      for (auto* p : weight_matrices(model)) prune::l1_unstructured(*p, prune::amount::sparsity(a.real("sparsity")));
      fmt::print("magnitude pruning: each weight matrix to sparsity {}, then {} epochs of retraining with the masks\n",
                 a.real("sparsity"), dns_epochs);
    } else {
      throw config_error(fmt::format("dyns_ext_bilstm: unknown --method '{}' (dns, dyns or magnitude)", method));
    }
    struct progress : train::callback<float> {
      std::function<index_t()> kept;
      index_t total;
      void on_epoch_end(train::train_state<float>& s) override {
        fmt::print("  epoch {:2}  weights kept {:6.2f}%  test accuracy {:.2f}%\n", s.epoch + 1,
                   100.0 * static_cast<double>(kept()) / static_cast<double>(total), 100.0 * s.epoch_metrics.validation.accuracy);
        std::fflush(stdout);
      }
    } printer;
    printer.kept = kept;
    printer.total = total0;
    {
      const double lr = a.real("dns-lr");
      train::adam<float> opt(train::adam_options{}.with_lr(lr));
      train::fit_options o;
      o.epochs = dns_epochs;
      o.batch_size = batch;
      o.seed = seed + 1;
      o.progress = !quiet;
      o.learning_rate = [=](int epoch) {
        if (epoch < surgery_epochs) return lr;
        return lr * 0.5 * (1.0 + std::cos(M_PI * (epoch - surgery_epochs) / std::max(dns_epochs - surgery_epochs, 1)));
      };
      train::fit(model, opt, loss, data.train, o, {&printer}, &data.test);
    }
    // 3. Bake W * T, then remove the hidden units left without incoming or outgoing connections.
    index_t removed = 0;
    double after_dns = 0;
    if (run) {
      // Accuracy of the baked model before thinning, on a copy (finish thins in place).
      auto baked = model;
      prune::remove_all(baked);
      after_dns = train::evaluate(baked, data.test, loss).accuracy;
      removed = run->finish(model).units_removed;  // DyNS-Ext's rule: biases ignored
    } else {
      prune::remove_all(model);
      after_dns = train::evaluate(model, data.test, loss).accuracy;
      removed = structure::remove_dead_units(model, {/*ignore_biases*/ true});
    }
    const double after_removal = train::evaluate(model, data.test, loss).accuracy;
    fmt::print("after {}: test accuracy {:.2f}%; {} hidden units without incoming or outgoing connections removed -> {:.2f}%\n",
               method, 100 * after_dns, removed, 100 * after_removal);
    double final_accuracy = after_removal;
    const int finetune = static_cast<int>(a.integer("finetune-epochs"));
    if (finetune > 0) {
      freeze_zeros(model);
      train::adam<float> opt(train::adam_options{}.with_lr(a.real("dns-lr") * 0.1));
      train::fit_options o;
      o.epochs = finetune;
      o.batch_size = batch;
      o.seed = seed + 2;
      o.progress = !quiet;
      train::fit(model, opt, loss, data.train, o);
      prune::remove_all(model);
      final_accuracy = train::evaluate(model, data.test, loss).accuracy;
      fmt::print("fine-tuned {} epoch(s) with the zeros kept: test accuracy {:.2f}%\n", finetune, 100 * final_accuracy);
    }

    // 4. The table.
    fmt::print("\nBi-LSTM on sequential {} (DeepIoT Table 4 layout; weights only, as the paper counts)\n", a.str("data"));
    const std::string label = method == "dns" ? "DyNS-Ext" : method == "dyns" ? "DyNS" : "magnitude";
    // "in x hidden": the seed's per-layer LSTM percentage, n'_{l-1} n'_l / (n_{l-1} n_l) (units
    // only, the input-hidden product; n_0 = the 28 input features, never removed).
    fmt::print("{:<6} {:>13} {:>16} {:>16} {:>16} {:>22} {:>24}\n", "layer", "hidden units", "weights", label + " units",
               "in x hidden", label + " weights kept", "seed DyNS-Ext (Tab. 4)");
    index_t total1 = 0;
    for (index_t k2 = 0; k2 < layers; ++k2) {
      std::array<index_t, 2> units{}, nz{};
      for (int d = 0; d < 2; ++d) {
        auto& l = direction(model, d);
        units[static_cast<std::size_t>(d)] = l.hidden_size(k2);
        nz[static_cast<std::size_t>(d)] = nonzeros(l.weight_ih(k2).value()) + nonzeros(l.weight_hh(k2).value());
        total1 += nz[static_cast<std::size_t>(d)];
      }
      const auto& u0 = units0[static_cast<std::size_t>(k2)];
      const auto& w0 = weights0[static_cast<std::size_t>(k2)];
      std::array<double, 2> product{};
      for (int d = 0; d < 2; ++d) {
        const auto sd = static_cast<std::size_t>(d);
        auto& l = direction(model, d);
        const double in1 = static_cast<double>(k2 == 0 ? l.input_size() : l.hidden_size(k2 - 1));
        const double in0 = static_cast<double>(k2 == 0 ? l.input_size() : units0[static_cast<std::size_t>(k2 - 1)][sd]);
        product[sd] = 100.0 * in1 * static_cast<double>(units[sd]) / (in0 * static_cast<double>(u0[sd]));
      }
      fmt::print("L{:<5} {:>13} {:>16} {:>16} {:>16} {:>22} {:>24}\n", k2 + 1, fmt::format("{}/{}", u0[0], u0[1]),
                 fmt::format("{}/{}", w0[0], w0[1]), fmt::format("{}/{}", units[0], units[1]),
                 fmt::format("{:.1f}% / {:.1f}%", product[0], product[1]),
                 fmt::format("{:.1f}% / {:.1f}%", 100.0 * static_cast<double>(nz[0]) / static_cast<double>(w0[0]),
                             100.0 * static_cast<double>(nz[1]) / static_cast<double>(w0[1])),
                 "");
    }
    auto& fc = static_cast<nn::linear<float>&>(model.find("fc"));
    const index_t fc_nz = nonzeros(fc.weight().value());
    total1 += fc_nz;
    fmt::print("{:<6} {:>13} {:>16} {:>16} {:>16} {:>22} {:>24}\n", "fc", 10, fc0, 10, "",
               fmt::format("{:.1f}%", 100.0 * static_cast<double>(fc_nz) / static_cast<double>(fc0)), "");
    index_t dense_after = 0;
    for (auto* p : weight_matrices(model)) dense_after += p->size();
    fmt::print("{:<6} {:>13} {:>16} {:>16} {:>16} {:>22} {:>24}\n", "total", "", total0, "", "",
               fmt::format("{:.2f}%", 100.0 * static_cast<double>(total1) / static_cast<double>(total0)), "37.1%");
    fmt::print("{:<6} {:>13} {:>16} {:>16} {:>16} {:>22} {:>24}\n", "acc.", "", fmt::format("{:.2f}%", 100 * baseline), "", "",
               fmt::format("{:.2f}%", 100 * final_accuracy), "WER 9.31 -> 9.62");
    fmt::print(
        "(the thinned dense matrices hold {:.1f}% of the original weights; the seed's column is LibriSpeech,\n"
        " 5 x 512 units per direction, and is shown for its shape only)\n",
        100.0 * static_cast<double>(dense_after) / static_cast<double>(total0));
    fmt::print("result: {} Bi-LSTM sequential {}: {:.2f}% of the weights remain, accuracy {:.2f}% -> {:.2f}%\n", label,
               a.str("data"), 100.0 * static_cast<double>(total1) / static_cast<double>(total0), 100 * baseline,
               100 * final_accuracy);
    // 5. The pruned model as a file, reloaded as float layers and checked on the test set.
    const std::string out = a.str("out");
    if (!out.empty()) {
      io::save_model_options so;
      std::string widths;
      for (index_t k2 = 0; k2 < layers; ++k2)
        widths += fmt::format("{}{}/{}", k2 ? ", " : "", direction(model, 0).hidden_size(k2), direction(model, 1).hidden_size(k2));
      so.metadata = {{"model", fmt::format("bilstm layers={} hidden={} dyns-ext", layers, hidden)},
                     {"hidden_units", widths},
                     {"weights_kept", fmt::format("{:.5f}", static_cast<double>(total1) / static_cast<double>(total0))},
                     {"test_accuracy", fmt::format("{:.4f}", final_accuracy)}};
      io::save_model(model, out, so);
      io::load_model_options lo;
      lo.decode = true;
      auto reloaded = io::load_model<float>(out, lo);
      const double reloaded_accuracy = train::evaluate(*reloaded, data.test, loss).accuracy;
      fmt::print("saved to {} (hidden units forward/backward per layer: {}); reloaded: test accuracy {:.2f}%\n", out, widths,
                 100 * reloaded_accuracy);
      if (reloaded_accuracy != final_accuracy) {
        throw io_error(fmt::format("dyns_ext_bilstm: {} reloads with accuracy {:.4f}, not {:.4f}", out, reloaded_accuracy, final_accuracy));
      }
    }
  } catch (const slimnet::error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
