// Example 11: DeepIoT (Yao et al., SenSys 2017): structure pruning of LeNet-5 or LeNet-300-100
// by compressor-critic training, then thinning into a smaller dense network.
//
//   deepiot --model lenet5 --data mnist --baseline out/lenet5-mnist.safetensors
//   deepiot --model bilstm --layers 1 --hidden 64 --limit 8000 --epochs 15   # Bi-LSTM, sequential MNIST
//   deepiot --model vgg --data fashion --limit 40000 --heldout 5000 --epochs 5   # VGG-style net (scripts/figure4_vgg.sh)
//
// With --model bilstm every stacked layer of each LSTM direction is one droppable layer, gated by
// its own unit mask (one mask per sequence at every step, on the input and the recurrent path);
// the compressor reads its packed weight_ih / weight_hh rows; thinning removes the hidden units.
//
// 1. Load the dense baseline from --baseline, or train one (SGD, momentum 0.9, weight decay 5e-4,
//    cosine learning rate from 0.05; written to --baseline if that is given).
// 2. Put a unit gate after every hidden layer (conv1, conv2, fc1 of LeNet-5; fc1, fc2 of
//    LeNet-300-100) and train the compressor (an LSTM reading the live weights and emitting keep
//    probabilities p) against the network (the critic): per iteration one Adam step on W under
//    masks z ~ Bernoulli(p̂) and one REINFORCE step on the compressor, with the threshold τ rising
//    and units below it decayed (p̂ = 0.5 p). Every --check-every iterations the units with p >= τ
//    give the remaining weight fraction and the accuracy on a held-out part of the training set;
//    training stops once the fraction is below --alpha and the accuracy at least --min-accuracy.
// 3. Fix the mask ẑ = 1[p >= τ] (Eq. 11; kept units scaled by p, which the next layer absorbs),
//    re-estimate BatchNorm statistics under it (VGG), remove the pruned units physically (thin),
//    and fine-tune the thinned dense network.
//    Defaults: τ += 0.025 every 250 iterations up to 0.95 (the authors stop at 0.825, which left
//    ~15% of LeNet-5's weights here), at most 16,000 iterations (~15 min on one core).
// 4. Print the per-layer table with the paper's Table 2, the compression rate, accuracies, the
//    inference time of the thinned network against the original at batch 1 and 64, and the
//    paper's Table 1 row: size, time and energy (report::estimate_energy's 45 nm model).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include "common/bilstm.hpp"
#include "common/cli.hpp"
#include "slimnet/slimnet.hpp"

using namespace slimnet;

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) { return std::chrono::duration<double>(clock_type::now() - t0).count(); }

/// Median time of one forward pass at this batch size, in milliseconds.
double forward_ms(nn::layer<float>& model, const tensor<float>& all, index_t batch, int reps) {
  std::vector<index_t> idx(static_cast<std::size_t>(batch));
  for (index_t i = 0; i < batch; ++i) idx[static_cast<std::size_t>(i)] = i % all.dim(0);
  tensor<float> x, y;
  data::dataset<float>::gather_rows(all, idx, x);
  nn::forward_context ctx;
  for (int i = 0; i < 5; ++i) model.forward(x, y, ctx);
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = clock_type::now();
    model.forward(x, y, ctx);
    t.push_back(1e3 * seconds_since(t0));
  }
  std::nth_element(t.begin(), t.begin() + reps / 2, t.end());
  return t[static_cast<std::size_t>(reps / 2)];
}

/// Weights (no biases) of a Linear / Conv2d layer.
index_t layer_weights(nn::layer<float>& l) { return deepiot::weight_count(l); }

}  // namespace

int main(int argc, char** argv) {
  cli::args a(argc, argv,
              // clang-format off
              {{"model", "lenet5"},        {"data", "mnist"},          {"baseline", ""},
               {"epochs", "10"},           {"seed", "1"},              {"limit", "0"},
               {"heldout", "1000"},        {"iterations", "16000"},    {"check-every", "200"},
               {"alpha", "0.02"},          {"min-accuracy", "-1"},     {"tau-step", "0.025"},
               {"tau-every", "250"},       {"tau-final", "0.95"},      {"gamma", "0.5"},
               {"critic-lr", "1e-4"},      {"compressor-lr", "1e-3"},  {"conv-keep", "0.8"},
               {"fc-keep", "0.5"},         {"weight-decay", "5e-4"},   {"fold", "true"},
               {"finetune-epochs", "20"},  {"finetune-lr", "1e-3"},    {"save", ""},
               {"quiet", "false"},         {"layers", "1"},            {"hidden", "64"},
               {"rnn-keep", "0.5"},        {"baseline-lr", "0.05"},    {"csv", ""},
               {"distill", "0"},           {"temperature", "4"},       {"bn-batches", "20"},
               {"bn-finetune", "20"}},
              // clang-format on
              "deepiot: DeepIoT compressor-critic structure pruning and thinning of LeNet-5 (lenet5), "
              "LeNet-300-100 (lenet300), the VGG-style net (vgg) or the Bi-LSTM on sequential MNIST (bilstm: --layers, "
              "--hidden per direction; every stacked layer of each direction gated by its unit mask)\n"
              "  --alpha 0.02 --min-accuracy 0.98   stop once < 2% of the weights remain at >= 98% held-out "
              "accuracy\n"
              "  (--min-accuracy -1: the baseline's test accuracy minus 1 point)\n"
              "  --distill 0.5 --temperature 4      fine-tune the thinned network against the dense baseline's outputs too\n"
              "  --csv out.csv                      one row per layer (units and weights kept) and a total row with accuracies\n"
              "  --bn-batches 20 --bn-finetune 20   re-estimate BatchNorm statistics under the hard mask over this many batches "
              "before each check / before fine-tuning (0: keep those of the random masks)");
  try {
    const auto t_start = clock_type::now();
    const std::string model_name = a.str("model");
    const bool quiet = a.flag("quiet");
    const auto seed = static_cast<std::uint64_t>(a.integer("seed"));
    auto data = cli::load_dataset(a.str("data"));
    cli::limit(data.train, a.integer("limit"), seed);
    cli::limit(data.test, a.integer("limit") > 0 ? std::max(a.integer("limit") / 4, 1L) : 0, seed + 1);
    rng gen(seed);
    const bool recurrent_model = model_name == "bilstm";
    auto model = recurrent_model ? cli::make_bilstm(a.integer("layers"), a.integer("hidden"), gen)
                                 : cli::make_model(model_name, gen, "deepiot");
    if (recurrent_model) {  // 28 steps of 28 pixels
      cli::as_sequences(data.train);
      cli::as_sequences(data.test);
    }
    const train::cross_entropy<float> loss;

    // 1. Baseline.
    cli::baseline_recipe recipe;
    recipe.epochs = static_cast<int>(a.integer("epochs"));
    recipe.seed = seed;
    recipe.progress = !quiet;
    recipe.lr = a.real("baseline-lr");
    // The stop rule's held-out set comes from the training set and is split off BEFORE the baseline
    // trains, so a baseline trained here never sees it (a baseline file records the split it was
    // trained without); the test set is only reported.
    // cli::split_heldout, as examples 2, 3 and 15 take it and record it, so one baseline file serves
    // them all. The older note of this example ("N images, seed S") names the same split and is
    // accepted too.
    const index_t heldout_count = a.integer("heldout");
    std::string split_note;
    data::dataset<float> heldout = cli::split_heldout(data.train, heldout_count, seed, "deepiot", split_note);
    const bool split_heldout = heldout.size() > 0;
    const std::string legacy_split_note = fmt::format("{} images, seed {}", heldout_count, seed);
    const bool loading = !a.str("baseline").empty() && std::filesystem::exists(a.str("baseline"));
    auto metadata = cli::load_or_train_baseline(model, a.str("baseline"), model_name, a.str("data"), data, recipe, "deepiot",
                                                {{"heldout", split_note}});
    if (!split_heldout) {
      heldout = data.test;
    } else if (loading) {
      // The loaded file standardised data.train / data.test as it was trained: the held-out part too.
      const auto mean = metadata.find("input_mean"), stddev = metadata.find("input_std");
      if (mean != metadata.end() && stddev != metadata.end())
        data::standardize(heldout, std::stod(mean->second), std::stod(stddev->second));
      const auto recorded = metadata.find("heldout");
      if (recorded == metadata.end() || (recorded->second != split_note && recorded->second != legacy_split_note)) {
        fmt::print("note: the baseline file does not record training without this held-out split ({}): it may have seen "
                   "the held-out images\n", recorded == metadata.end() ? std::string("no record") : recorded->second);
      }
    }
    const data::dataset<float>& train_part = data.train;
    const double base_test = train::evaluate(model, data.test, loss).accuracy;
    const double base_heldout = train::evaluate(model, heldout, loss).accuracy;
    fmt::print("{} on {}: {} train / {} held-out / {} test images; baseline test accuracy {:.2f}% (held-out {:.2f}%), "
               "{} weights\n",
               model_name, a.str("data"), train_part.size(), heldout.size(), data.test.size(), 100 * base_test,
               100 * base_heldout, deepiot::weight_count(model));

    // With --distill the fine-tuning of step 3 also matches the dense baseline's outputs (Hinton et
    // al., as examples 2 and 3 do); the compressor-critic training changes the weights, so the
    // teacher is a copy taken here, before the gates.
    const double distill = a.real("distill");
    std::optional<nn::sequential<float>> teacher;
    if (distill > 0) teacher.emplace(model);

    // 2. Compressor-critic training.
    auto g = deepiot::attach_gates(model);
    deepiot::deepiot_options o;
    o.seed = seed;
    o.critic_lr = a.real("critic-lr");
    o.weight_decay = a.real("weight-decay");
    o.compressor_optimizer.lr = a.real("compressor-lr");
    o.gamma = a.real("gamma");
    o.conv_keep = a.real("conv-keep");
    o.fc_keep = a.real("fc-keep");
    o.rnn_keep = a.real("rnn-keep");
    o.tau = {0.0, a.real("tau-step"), a.integer("tau-every"), a.real("tau-final")};
    // The default floor follows the baseline's test accuracy: one point below it (a baseline that
    // has seen the held-out images would score about 100% there).
    const double min_acc = a.real("min-accuracy") >= 0 ? a.real("min-accuracy") : std::max(0.0, base_test - 0.01);
    o.stop = {a.real("alpha"), min_acc, a.integer("check-every"), a.integer("iterations")};
    o.batch_norm_batches = a.integer("bn-batches");
    fmt::print("compressor-critic: τ += {} every {} iterations up to {}, stop below {:.2f}% of the weights at >= {:.2f}% "
               "held-out accuracy (checked every {}), at most {} iterations\n",
               o.tau.step, o.tau.every, o.tau.final_value, 100 * o.stop.max_fraction, 100 * o.stop.min_accuracy,
               o.stop.check_every, o.stop.max_iterations);
    std::fflush(stdout);
    const auto t_compress = clock_type::now();
    auto result = deepiot::compress(g, train_part, heldout, o, [&](const deepiot::compress_check& c) {
      if (quiet) return;
      std::string kept;
      for (std::size_t k = 0; k < c.kept.size(); ++k) kept += fmt::format("{}{}={}", k ? " " : "", g.layers[k].name, c.kept[k]);
      fmt::print("  it {:6}  τ {:.3f}  loss {:.4f}  kept [{}]  weights {:6.2f}%  held-out acc {:.2f}%  {:.0f}s\n", c.iteration,
                 c.tau, c.critic_loss, kept, 100 * c.fraction, 100 * c.accuracy, seconds_since(t_compress));
      std::fflush(stdout);
    });
    const double compress_s = seconds_since(t_compress);
    fmt::print("compression {} after {} iterations ({:.0f}s, {:.1f} ms/iteration): τ {:.3f}, {:.2f}% of the weights, "
               "held-out {:.2f}%\n",
               result.stopped ? "stopped by the rule" : "reached the iteration cap", result.iterations, compress_s,
               1e3 * compress_s / static_cast<double>(result.iterations), result.tau, 100 * result.last.fraction,
               100 * result.last.accuracy);

    // 3. Hard mask, thinning, fine-tuning of the thinned dense network.
    const auto hard_keep = deepiot::harden(g, result.probabilities, result.tau, a.flag("fold"));
    // BatchNorm statistics for the hard mask (train::recalibrate_batch_norm): those of the
    // compressor-critic phase were averaged under random masks (or, with --bn-batches, under the
    // last check's mask, which --fold false changes). No-op without BatchNorm (LeNet-5).
    const index_t bn_final = a.integer("bn-finetune");
    if (bn_final != 0) {  // negative: recalibrate_batch_norm names the bad value
      const double before = train::evaluate(g.net, heldout, loss).accuracy;
      rng bn_gen(seed + 11);
      if (train::recalibrate_batch_norm(g.net, train_part, bn_final, o.eval_batch, bn_gen) > 0) {
        fmt::print(
            "hard mask: held-out accuracy {:.2f}% with the BatchNorm statistics left by compression, {:.2f}% re-estimated "
            "over {} batches of {}\n",
            100 * before, 100 * train::evaluate(g.net, heldout, loss).accuracy, bn_final, o.eval_batch);
      }
    }
    auto thinned = deepiot::thin(g);
    const double hard_acc = train::evaluate(g.net, data.test, loss).accuracy;
    const double thin_acc = train::evaluate(thinned, data.test, loss).accuracy;
    fmt::print("hard mask: test accuracy {:.2f}% (gated) {} {:.2f}% (thinned)\n", 100 * hard_acc, hard_acc == thin_acc ? "=" : "!=",
               100 * thin_acc);
    // Thinning removes only units whose gates are 0: the thinned network computes what the gated
    // one does, so a different accuracy is a bug in thinning, not a result.
    if (hard_acc != thin_acc) {
      fmt::print(stderr, "deepiot: the thinned network's accuracy differs from the hard-masked network's\n");
      return 2;
    }
    const int ft_epochs = static_cast<int>(a.integer("finetune-epochs"));
    if (ft_epochs > 0) {
      train::adam<float> opt(train::adam_options{}.with_lr(a.real("finetune-lr")));
      train::fit_options fo;
      fo.epochs = ft_epochs;
      fo.seed = seed + 7;
      fo.progress = !quiet;
      fo.learning_rate = train::cosine_lr(a.real("finetune-lr"), ft_epochs);
      if (teacher) {
        const train::distillation<float> ft_loss(*teacher, distill, a.real("temperature"));
        fmt::print("fine-tuning distils the dense baseline: alpha {}, temperature {}\n", distill, a.real("temperature"));
        train::fit(thinned, opt, ft_loss, train_part, fo);
      } else {
        train::fit(thinned, opt, loss, train_part, fo);
      }
    }
    const double final_acc = train::evaluate(thinned, data.test, loss).accuracy;
    if (!a.str("save").empty()) {
      metadata["model"] = model_name + "-deepiot";  // a thinned model has other shapes than the baseline
      io::save_parameters(thinned, a.str("save"), metadata);
      fmt::print("thinned model saved to {}\n", a.str("save"));
    }

    // 4. Tables.
    const std::map<std::string, std::pair<std::string, std::string>> paper =
        model_name == "lenet5"
            ? std::map<std::string, std::pair<std::string, std::string>>{{"conv1", {"10", "50.0%"}},
                                                                         {"conv2", {"20", "20.0%"}},
                                                                         {"fc1", {"10", "0.8%"}},
                                                                         {"fc2", {"10", "2.0%"}},
                                                                         {"total", {"", "1.98%"}}}
            : std::map<std::string, std::pair<std::string, std::string>>{};
    fmt::print("\n{} on {}\n{:<7} {:>15} {:>17} {:>8} | {:>11} {:>12}\n", model_name, a.str("data"), "Layer", "units kept/orig",
               "weights kept/orig", "params%", "paper units", "paper params");
    const auto plain = deepiot::detail::without_gates(g.net);
    auto& orig = const_cast<nn::sequential<float>&>(plain);
    std::ofstream csv;
    if (!a.str("csv").empty()) {
      csv.open(a.str("csv"));
      if (!csv) throw io_error(fmt::format("deepiot: cannot write --csv {}", a.str("csv")));
      csv << "model,tau_final,layer,units_kept,units_original,weights_kept,weights_original,kept_percent,baseline_accuracy,"
             "hard_mask_accuracy,test_accuracy\n";
    }
    const auto csv_row = [&](const std::string& layer, index_t u1, index_t u0, double w1, double w0) {
      if (!csv) return;
      csv << fmt::format("{},{},{},{},{},{:.0f},{:.0f},{:.4f},{:.6f},{:.6f},{:.6f}\n", model_name, a.real("tau-final"), layer, u1, u0, w1,
                         w0, 100 * w1 / w0, base_test, thin_acc, final_acc);
    };
    for (std::size_t i = 0, j = 0; i < orig.size(); ++i) {
      if (!deepiot::detail::droppable_kind(orig[i].kind())) continue;
      while (j < thinned.size() && thinned.local_name(j) != orig.local_name(i)) ++j;
      auto& t = thinned[j];
      const shape_t& ws = t.kind() == "Linear" ? static_cast<nn::linear<float>&>(t).weight().shape()
                                               : static_cast<nn::conv2d<float>&>(t).weight().shape();
      const shape_t& os = orig[i].kind() == "Linear" ? static_cast<nn::linear<float>&>(orig[i]).weight().shape()
                                                     : static_cast<nn::conv2d<float>&>(orig[i]).weight().shape();
      const auto it = paper.find(orig.local_name(i));
      fmt::print("{:<7} {:>15} {:>17} {:>7.2f}% | {:>11} {:>12}\n", orig.local_name(i), fmt::format("{}/{}", ws[0], os[0]),
                 fmt::format("{}/{}", layer_weights(t), layer_weights(orig[i])),
                 100.0 * static_cast<double>(layer_weights(t)) / static_cast<double>(layer_weights(orig[i])),
                 it != paper.end() ? it->second.first : "", it != paper.end() ? it->second.second : "");
      csv_row(orig.local_name(i), ws[0], os[0], static_cast<double>(layer_weights(t)), static_cast<double>(layer_weights(orig[i])));
    }
    const double total_thin = static_cast<double>(deepiot::weight_count(thinned)),
                 total_orig = static_cast<double>(deepiot::weight_count(orig));
    fmt::print("{:<7} {:>15} {:>17} {:>7.2f}% | {:>11} {:>12}\n", "total", "",
               fmt::format("{:.0f}/{:.0f}", total_thin, total_orig), 100 * total_thin / total_orig, "",
               paper.empty() ? "" : paper.at("total").second);
    csv_row("total", 0, 0, total_thin, total_orig);
    // Recurrent stacked layers (one row per layer and direction): units kept, and the weights of
    // weight_ih / weight_hh, which also shrink with the layer below.
    for (const auto& d : g.layers) {
      if (!d.recurrent) continue;
      const auto& kk = hard_keep.at(d.name);
      const auto kept = std::count(kk.begin(), kk.end(), true);
      auto stack_weights = [&](nn::sequential<float>& m) {
        index_t w = 0;
        for (std::size_t i = 0; i < m.size(); ++i) {
          if (m.local_name(i) != g.net.local_name(d.layer)) continue;
          auto* bi = dynamic_cast<nn::bidirectional<float>*>(&m[i]);
          auto& dir = bi ? (d.reverse ? bi->backward_layer() : bi->forward_layer()) : dynamic_cast<nn::recurrent_layer<float>&>(m[i]);
          deepiot::detail::with_stack(dir, [&](auto& st) { w = st.weight_ih(d.stacked).size() + st.weight_hh(d.stacked).size(); });
        }
        return w;
      };
      const index_t w1 = stack_weights(thinned), w0 = stack_weights(orig);
      fmt::print("{:<18} {:>15} {:>17} {:>7.2f}%\n", d.name, fmt::format("{}/{}", kept, kk.size()), fmt::format("{}/{}", w1, w0),
                 100.0 * static_cast<double>(w1) / static_cast<double>(w0));
      csv_row(d.name, static_cast<index_t>(kept), static_cast<index_t>(kk.size()), static_cast<double>(w1), static_cast<double>(w0));
    }
    fmt::print("compression {:.1f}x (weights; biases not counted, as the paper); with biases {} -> {} parameters\n",
               total_orig / total_thin, orig.parameter_count(), thinned.parameter_count());
    fmt::print("test accuracy: baseline {:.2f}%, hard-masked before fine-tuning {:.2f}%, thinned + fine-tuned {:.2f}% "
               "({:+.2f} pp; error {:.2f}%{})\n",
               100 * base_test, 100 * thin_acc, 100 * final_acc, 100 * (final_acc - base_test), 100 * (1 - final_acc),
               paper.empty() ? "" : ", paper's LeNet-5 error 0.85%");
    fmt::print("\ninference, one thread, median forward time:\n{:<7} {:>12} {:>12} {:>8}\n", "batch", "original ms", "thinned ms",
               "speed-up");
    double ms_b1[2] = {0, 0};
    for (const index_t b : {index_t{1}, index_t{64}}) {
      const int reps = b == 1 ? 2000 : 200;
      const double t0 = forward_ms(orig, data.test.inputs, b, reps), t1 = forward_ms(thinned, data.test.inputs, b, reps);
      fmt::print("{:<7} {:>12.4f} {:>12.4f} {:>7.1f}x\n", b, t0, t1, t0 / t1);
      if (b == 1) ms_b1[0] = t0, ms_b1[1] = t1;
    }
    // The paper's Table 1 row: size (fp32 parameters, biases included), time (batch 1, measured
    // above) and energy per inference (report::estimate_energy's 45 nm model; the paper measured an
    // Intel Edison with a power meter, so only the reductions compare).
    shape_t one = data.test.inputs.shape();
    one[0] = 1;
    const auto e0 = report::estimate_energy(orig, one), e1 = report::estimate_energy(thinned, one);
    const double mb0 = 4e-6 * static_cast<double>(orig.parameter_count()),
                 mb1 = 4e-6 * static_cast<double>(thinned.parameter_count());
    const auto cut = [](double before, double after) { return 100 * (1 - after / before); };
    fmt::print("\nTable 1 (original / thinned / reduction):\n{:<16} {:>26} {:>28} {:>28}\n", "", "size (MB)",
               "time (ms, batch 1)", "energy (mJ, 45 nm model)");
    fmt::print("{:<16} {:>26} {:>28} {:>28}\n", "measured",
               fmt::format("{:.3f} / {:.4f} / {:.1f}%", mb0, mb1, cut(mb0, mb1)),
               fmt::format("{:.4f} / {:.4f} / {:.1f}%", ms_b1[0], ms_b1[1], cut(ms_b1[0], ms_b1[1])),
               fmt::format("{:.4f} / {:.5f} / {:.1f}%", e0.total_mj(), e1.total_mj(), cut(e0.total_mj(), e1.total_mj())));
    if (model_name == "lenet5") {
      fmt::print("{:<16} {:>26} {:>28} {:>28}\n", "paper (Edison)", "1.72 / 0.04 / 97.6%", "50.2 / 14.2 / 71.4%",
                 "47.1 / 12.5 / 73.5%");
    } else if (model_name == "vgg") {  // the paper's VGGNet on CIFAR-10, 29.7M weights (vgg_small: 0.32M)
      fmt::print("{:<16} {:>26} {:>28} {:>28}\n", "paper VGGNet", "118.8 / 2.9 / 97.6%", "1.5K / 82.2 / 94.5%",
                 "1.7K / 74 / 95.6%");
    }
    fmt::print("energy model: original {}\n              thinned  {}\n", report::summary(e0), report::summary(e1));
    fmt::print("total run time {:.0f}s\n", seconds_since(t_start));
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
