// Example 9: DeepSense (Yao et al., WWW 2017) for heterogeneous human activity recognition and
// user identification, the network DeepIoT compresses in its Tables 5 and 6.
//
//   deepsense_hhar                      # SYNTHETIC phone IMU data (the real HHAR cannot be downloaded here)
//   deepsense_hhar --task userid        # identify the user (9 classes) from walking windows, random split
//   deepsense_hhar --hhar DIR           # the real UCI HHAR files DIR/Phones_{accelerometer,gyroscope}.csv
//   deepsense_hhar --csv-dir DIR        # also write the synthetic streams as HHAR CSV files and read them back
//   deepsense_hhar --save bl.safetensors                       # train the dense model once (10% held out) and keep it
//   deepsense_hhar --baseline bl.safetensors --deepiot 1500 --deepiot-tau-every 40 --finetune-epochs 10   # Table 5
//   deepsense_hhar --baseline bl.safetensors --dyns-epochs 10  # DyNS-Ext from the same dense model
//
// 1. Data. Phone accelerometer and gyroscope streams go through DeepSense's preprocessing
//    (data/hhar.hpp): acc/gyro pairing, 0.5 s intervals interpolated to 10 points, FFT per axis
//    (real and imaginary parts), windows of 20 intervals with stride 5, zero-padded, with their
//    lengths. Activity task: one user left out (--test-user), 6 activities. UserID task: the
//    walking windows of every user, 10% of each user's windows held out at random, 9 users.
//    Without --hhar the streams come from data::generate_synthetic_imu: 9 users, 4 phone models,
//    6 activities; device heterogeneity (rates, response, noise, gain, bias, cross-axis
//    sensitivity, sampling jitter and bursts, rate drift), per-user gait (cadence, harmonics,
//    left/right asymmetry) and overlapping activities (--overlap). They are NOT measurements.
// 2. Model: nn::models::deepsense, per-sensor convolutions, merge convolutions, two GRU-120 layers
//    over the valid intervals, their time average, a linear classifier; its per-layer weights are
//    printed next to DeepIoT's Table 5.
// 3. Training: Adam (lr 1e-3, L2 5e-4 as the reference), batch 64, cosine decay, 12 epochs
//    (UserID: 40); test accuracy, per class. --save writes the trained model with what it was
//    trained on (task, data, held-out split); --baseline reloads it and refuses a file trained on
//    anything else, so DeepIoT and DyNS compress one baseline (issue #14).
// 4. Compression (DeepIoT's Table 5; both from the dense model, held-out windows split off before
//    it trained): --deepiot N, DeepIoT's compressor-critic training, hard mask, BatchNorm
//    re-estimation, thinning and --finetune-epochs of the thinned network; --dyns-epochs N, DNS on
//    every conv, GRU and Linear weight (DyNS-Ext; --dyns-recurrent false: DyNS). Each prints the
//    per-layer table (units and weights kept next to the paper's DeepIoT column), DeepIoT also
//    the Table 1 row (size, time at batch 1, energy) of the thinned network.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include <fmt/format.h>

#include "common/cli.hpp"
#include "common/table1.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/slimnet.hpp"

using namespace slimnet;
namespace hhar = slimnet::data::hhar;

namespace {

// The generator's knobs from the command line (defaults: synthetic_imu_options').
data::synthetic_imu_options generator_options(const cli::args& a, std::uint64_t seed) {
  data::synthetic_imu_options g;
  g.seconds = a.real("seconds");
  g.seed = 2017 + seed;
  if (!a.str("overlap").empty()) g.activity_overlap = a.real("overlap");
  if (!a.str("gait-spread").empty()) g.gait_spread = a.real("gait-spread");
  if (!a.str("asymmetry").empty()) g.gait_asymmetry = a.real("asymmetry");
  if (!a.str("wander").empty()) {  // scales both wanders
    g.cadence_wander *= a.real("wander");
    g.amplitude_wander *= a.real("wander");
  }
  if (!a.str("jitter-scale").empty()) g.jitter_scale = a.real("jitter-scale");
  if (!a.str("burst-scale").empty()) g.burst_scale = a.real("burst-scale");
  if (!a.str("rate-drift").empty()) g.rate_drift = a.real("rate-drift");
  if (!a.str("cross-axis").empty()) g.cross_axis = a.real("cross-axis");
  if (!a.str("misalignment").empty()) g.misalignment_degrees = a.real("misalignment");
  return g;
}

/// Weights of a layer (parameters named weight*: conv, Linear, a GRU's weight_ih / weight_hh); with
/// `nonzero`, only the nonzero ones (a DNS-pruned layer keeps its zeros in dense matrices).
index_t weights_of(nn::sequential<float>& model, const std::string& layer, bool nonzero = false) {
  index_t n = 0;
  model.find(layer).visit_parameters([&](nn::parameter<float>& p) {
    if (p.local_name().rfind("weight", 0) != 0) return;
    n += nonzero ? static_cast<index_t>((p.value().flat().array() != 0.0f).count()) : p.size();
  });
  return n;
}

/// Output channels of a conv, hidden units of a (one-layer) GRU, outputs of a Linear.
index_t units_of(nn::sequential<float>& model, const std::string& layer) {
  auto& l = model.find(layer);
  if (auto* c = dynamic_cast<nn::conv2d<float>*>(&l)) return c->out_channels();
  if (auto* r = dynamic_cast<nn::recurrent_layer<float>*>(&l)) return r->output_size();
  if (auto* f = dynamic_cast<nn::linear<float>*>(&l)) return f->out_features();
  slimnet::detail::raise<config_error>("deepsense_hhar::units_of", "layer '{}' is a {}, not a conv, GRU or Linear", layer,
                                       l.kind());
}

/// One row of DeepIoT's Table 5 per DeepSense layer (a sensor pair on one row).
struct table_row {
  std::string name, shape;
  std::vector<std::string> layers;
  std::string paper_weights, paper_units, paper_kept;  // the original's weights; DeepIoT's units and % kept
};

const std::vector<table_row>& table_rows() {
  static const std::vector<table_row> rows{
      {"conv1a/b",
       "64 @ 1x18 /6",
       {"frames.sensors.acc.conv1", "frames.sensors.gyro.conv1"},
       "1.1K / 1.1K",
       "20 / 19",
       "31.25 / 29.69%"},
      {"conv2a/b",
       "64 @ 1x3",
       {"frames.sensors.acc.conv2", "frames.sensors.gyro.conv2"},
       "12.3K / 12.3K",
       "20 / 14",
       "9.76 / 6.49%"},
      {"conv3a/b",
       "64 @ 1x3",
       {"frames.sensors.acc.conv3", "frames.sensors.gyro.conv3"},
       "12.3K / 12.3K",
       "23 / 23",
       "11.23 / 7.86%"},
      {"conv4", "64 @ 2x8", {"frames.conv4"}, "65.5K", "10", "5.61%"},
      {"conv5", "64 @ 2x6", {"frames.conv5"}, "24.6K (*)", "12", "2.93%"},
      {"conv6", "64 @ 2x4", {"frames.conv6"}, "16.4K (*)", "17", "4.98%"},
      {"gru1", "GRU 512->120", {"gru1"}, "227.5K", "27", "5.80%"},
      {"gru2", "GRU 120->120", {"gru2"}, "86.4K", "31", "6.24%"},
      {"fc", "120->classes", {"fc"}, "0.7K", "6", "25.83%"},
  };
  return rows;
}

/// The network's weights per layer next to the paper's Table 5. With `compressed` (the thinned
/// DeepIoT model or the DNS-pruned one, `nonzero`), also its units and weights kept per layer and
/// in total, and one CSV row per layer and a total row to `csv` (if open).
void print_layer_table(nn::sequential<float>& m, nn::sequential<float>* compressed = nullptr, bool nonzero = false,
                       std::ofstream* csv = nullptr, const std::string& csv_prefix = "") {
  if (!compressed) {
    fmt::print("\n{:<9} {:<14} {:>17}  {:>14}\n", "layer", "shape", "weights (slimnet)", "DeepIoT Tab. 5");
  } else {
    fmt::print("\n{:<9} {:>17} {:>13} {:>19} {:>15} | {:>9} {:>15}\n", "layer", "weights (orig.)", "units kept", "weights kept",
               "kept", "paper units", "paper kept");
  }
  index_t total = 0, total_kept = 0;
  for (const auto& r : table_rows()) {
    std::string counts, units, kept, percent;
    for (std::size_t i = 0; i < r.layers.size(); ++i) {
      const index_t w = weights_of(m, r.layers[i]);
      total += w;
      const std::string sep = i ? " / " : "";
      counts += sep + std::to_string(w);
      if (!compressed) continue;
      const index_t u0 = units_of(m, r.layers[i]), u1 = units_of(*compressed, r.layers[i]);
      const index_t w1 = weights_of(*compressed, r.layers[i], nonzero);
      total_kept += w1;
      units += sep + fmt::format("{}/{}", u1, u0);
      kept += sep + std::to_string(w1);
      percent += sep + fmt::format("{:.2f}", 100.0 * static_cast<double>(w1) / static_cast<double>(w));
      if (csv && *csv)
        *csv << fmt::format("{},{},{},{},{},{},{:.4f}\n", csv_prefix, r.layers[i], u1, u0, w1, w,
                            100.0 * static_cast<double>(w1) / static_cast<double>(w));
    }
    if (!compressed) {
      fmt::print("{:<9} {:<14} {:>17}  {:>14}\n", r.name, r.shape, counts, r.paper_weights);
    } else {
      fmt::print("{:<9} {:>17} {:>13} {:>19} {:>14}% | {:>9} {:>15}\n", r.name, counts, units, kept, percent, r.paper_units,
                 r.paper_kept);
    }
  }
  if (!compressed) {
    fmt::print("{:<9} {:<14} {:>17}  {:>14}\n", "total", "", total, "472.5K");
    fmt::print("(weights only, as the paper counts; with biases and BN: {} parameters)\n", m.parameter_count());
    fmt::print(
        "(*) the authors' code convolves 2x6 and 2x4 over both sensor rows (49.2K, 32.8K weights, as here);\n"
        "    the paper's table counts 1x6 and 1x4 kernels.\n\n");
    return;
  }
  const double fraction = static_cast<double>(total_kept) / static_cast<double>(total);
  fmt::print("{:<9} {:>17} {:>13} {:>19} {:>14.2f}% | {:>9} {:>15}\n", "total", total, "", total_kept, 100 * fraction, "",
             "6.16%");
  if (csv && *csv) *csv << fmt::format("{},total,0,0,{},{},{:.4f}\n", csv_prefix, total_kept, total, 100 * fraction);
  fmt::print("(weights only; the paper's DeepIoT column is Table 5 on the real HHAR, 472.5K weights, 94.6% -> 94.7%)\n");
}

/// Training options of the examples' Adam runs: batch, seed, cosine learning rate from `lr`.
train::fit_options fit_settings(int epochs, index_t batch, std::uint64_t seed, bool progress, double lr) {
  train::fit_options o;
  o.epochs = epochs;
  o.batch_size = batch;
  o.seed = seed;
  o.progress = progress;
  o.learning_rate = train::cosine_lr(lr, epochs);
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  // clang-format off
  cli::args a(argc, argv,
              {{"hhar", ""}, {"csv-dir", ""}, {"test-user", "a"}, {"seconds", "45"}, {"epochs", ""}, {"batch", "64"},
               {"lr", "1e-3"}, {"weight-decay", "5e-4"}, {"augment", "0"}, {"seed", "1"}, {"limit", "0"}, {"quiet", "false"},
               {"save", ""}, {"baseline", ""}, {"csv", ""},
               {"deepiot", "0"}, {"deepiot-tau-every", "50"}, {"deepiot-tau-step", "0.025"}, {"deepiot-tau-final", "0.825"},
               {"deepiot-heldout", "0.1"}, {"deepiot-check-every", "0"}, {"deepiot-alpha", "0.07"}, {"deepiot-min-accuracy", "-1"},
               {"deepiot-critic-lr", "1e-4"}, {"bn-batches", "20"}, {"bn-finetune", "20"}, {"finetune-epochs", "0"},
               {"finetune-lr", "1e-3"},
               {"dyns-epochs", "0"}, {"dyns-surgery-epochs", "-1"}, {"dyns-recurrent", "true"}, {"dyns-c-rate", "3.0"},
               {"dyns-fc-c-rate", "1.0"}, {"dyns-conv-c-rate", "1.0"}, {"dyns-gamma", "1e-4"}, {"dyns-lr", "1e-3"},
               {"dyns-thin", "true"}, {"task", "activity"},
               {"overlap", ""}, {"gait-spread", ""}, {"asymmetry", ""}, {"wander", ""}, {"jitter-scale", ""},
               {"burst-scale", ""}, {"rate-drift", ""}, {"cross-axis", ""}, {"misalignment", ""}},
              "deepsense_hhar: DeepSense on HHAR-style phone IMU windows (synthetic unless --hhar DIR is given)\n"
              "  --save FILE / --baseline FILE      write the trained dense model / load it instead of training\n"
              "  --deepiot N                        DeepIoT, at most N compressor-critic iterations (Table 5)\n"
              "  --dyns-epochs N                    DyNS-Ext: DNS on every conv, GRU and Linear weight for N epochs\n"
              "                                     (--dyns-recurrent false: the GRUs stay dense, the paper's DyNS)\n"
              "  --csv FILE                         one row per layer (units and weights kept) and a total row");
  // clang-format on
  try {
    const bool synthetic = a.str("hhar").empty();
    const bool userid = a.str("task") == "userid";
    if (!userid && a.str("task") != "activity") {
      slimnet::detail::raise<config_error>("deepsense_hhar", "--task must be activity or userid, got '{}'", a.str("task"));
    }
    const auto seed = static_cast<std::uint64_t>(a.integer("seed"));
    const bool quiet = a.flag("quiet");
    std::vector<hhar::recording> recordings;
    hhar::preprocess_options prep;
    prep.augment_copies = a.integer("augment");
    prep.seed = seed;
    std::string source;  // the data a saved baseline was trained on (checked when it is loaded)
    if (synthetic) {
      fmt::print(
          "DATA: SYNTHETIC. These windows come from slimnet's seeded IMU generator (data/synthetic_imu.hpp),\n"
          "      not from the UCI HHAR recordings; accuracy on them says nothing about accuracy on HHAR.\n");
      const auto g = generator_options(a, seed);
      source = fmt::format(
          "synthetic, seconds {} seed {}: overlap {} gait spread {} asymmetry {} wander {}/{} jitter x{} bursts x{} rate drift {} "
          "cross-axis {} misalignment {} deg",
          g.seconds, g.seed, g.activity_overlap, g.gait_spread, g.gait_asymmetry, g.cadence_wander, g.amplitude_wander,
          g.jitter_scale, g.burst_scale, g.rate_drift, g.cross_axis, g.misalignment_degrees);
      fmt::print("      generator: {}\n", source);
      const auto streams = data::generate_synthetic_imu(g);
      if (!a.str("csv-dir").empty()) {
        const std::filesystem::path dir = a.str("csv-dir");
        std::filesystem::create_directories(dir);
        hhar::write_sensor_csv(dir / "Phones_accelerometer.csv", streams.accelerometer);
        hhar::write_sensor_csv(dir / "Phones_gyroscope.csv", streams.gyroscope);
        fmt::print("      written as HHAR CSV files to {} and read back from there\n", dir.string());
        recordings = hhar::read_recordings(dir, prep);
      } else {
        recordings = hhar::pair_sensors(streams.accelerometer, streams.gyroscope, prep);
      }
    } else {
      fmt::print("DATA: UCI HHAR phone recordings from {}\n", a.str("hhar"));
      source = "HHAR " + a.str("hhar");
      recordings = hhar::read_recordings(a.str("hhar"), prep);
    }
    // Activity: leave one user out (the authors' protocol). UserID: a random, per-user stratified
    // 10% of the walking windows (augmentation is refused there: a noisy copy of a test window
    // would be trained on).
    hhar::user_id_options uo;
    uo.seed = seed;
    const auto names = userid ? hhar::user_names(recordings) : hhar::activities();
    auto split = userid ? hhar::user_id_split<float>(recordings, uo, prep) : hhar::leave_one_user_out<float>(recordings, a.str("test-user"), prep);
    const std::string protocol = userid ? "UserID (walking windows, random 10% per user)" : "leave-user-'" + a.str("test-user") + "'-out";
    cli::limit(split.train, a.integer("limit"), 11);
    cli::limit(split.test, a.integer("limit") > 0 ? std::max(a.integer("limit") / 4, 1L) : 0, 12);
    index_t padded = 0;
    for (auto len : split.train.lengths) padded += len < 20;
    fmt::print("{} recordings -> {} training windows ({} shorter than 20 intervals), {} test windows ({})\n",
               recordings.size(), split.train.size(), padded, split.test.size(), protocol);

    // Held-out windows for DeepIoT's stop rule and DyNS's per-epoch report: split off the training
    // set (cli::split_heldout: stratified, --seed) before the dense model trains, so it never sees
    // them, and recorded in a saved baseline, so every method compressing it retrains on the same
    // windows (issue #14: one baseline per network). Runs that neither compress nor save or load
    // a baseline train on every training window, as before.
    const index_t deepiot_iterations = a.integer("deepiot"), dyns_epochs = a.integer("dyns-epochs");
    const std::string baseline_path = a.str("baseline"), save_path = a.str("save");
    const bool loading = !baseline_path.empty();
    if (loading && !std::filesystem::exists(baseline_path)) {
      slimnet::detail::raise<config_error>("deepsense_hhar", "--baseline '{}' does not exist (train one with --save)",
                                           baseline_path);
    }
    const double heldout_fraction = a.real("deepiot-heldout");
    if (!(heldout_fraction >= 0 && heldout_fraction < 1)) {
      slimnet::detail::raise<config_error>("deepsense_hhar", "--deepiot-heldout {} is outside [0, 1)", heldout_fraction);
    }
    std::string split_note = "none";
    data::dataset<float> heldout;
    if (deepiot_iterations > 0 || dyns_epochs > 0 || loading || !save_path.empty()) {
      const long n =
          heldout_fraction > 0 ? std::max(1L, std::lround(heldout_fraction * static_cast<double>(split.train.size()))) : 0;
      heldout = cli::split_heldout(split.train, n, seed, "deepsense_hhar", split_note);
      fmt::print("{} training windows held out for DeepIoT's stop rule and DyNS's checks ({}), {} left for training\n",
                 heldout.size(), split_note, split.train.size());
    }
    if ((deepiot_iterations > 0 || dyns_epochs > 0) && heldout.size() == 0) {
      slimnet::detail::raise<config_error>("deepsense_hhar",
                                           "--deepiot / --dyns-epochs need held-out windows (--deepiot-heldout > 0)");
    }

    rng gen(seed);
    nn::models::deepsense_options mo;
    mo.classes = static_cast<index_t>(names.size());
    auto model = nn::models::deepsense<float>(gen, mo);
    print_layer_table(model);

    // Default epochs: 12 for the activity task; 40 for UserID, whose ~550 walking windows (a sixth
    // of the activity task's) give 9 steps an epoch: 12 epochs leave it at ~92%.
    const int epochs = a.str("epochs").empty() ? (userid ? 40 : 12) : static_cast<int>(a.integer("epochs"));
    const std::string model_name = "deepsense-" + a.str("task");
    const std::string data_name =
        fmt::format("{}; {}; limit {}; augment {}; seed {}", source, protocol, a.integer("limit"), a.integer("augment"), seed);
    const train::cross_entropy<float> loss;
    double throughput = 0;
    if (loading) {
      // A file trained on other windows, another task or with another held-out split would give a
      // wrong accuracy or one that has seen the held-out windows: refused.
      const auto meta = io::read_safetensors<float>(baseline_path).metadata;
      cli::require_model_and_data(meta, "baseline", baseline_path, model_name, data_name, "deepsense_hhar");
      const auto recorded = meta.find("heldout");
      if (recorded == meta.end() || recorded->second != split_note || meta.count("data") == 0) {
        slimnet::detail::raise<config_error>(
            "deepsense_hhar", "baseline '{}' records held-out split '{}' and data '{}', this run holds out '{}'", baseline_path,
            recorded == meta.end() ? "(none)" : recorded->second, meta.count("data") ? meta.at("data") : "(none)", split_note);
      }
      io::load_parameters(model, baseline_path);
      fmt::print("dense model loaded from {}\n", baseline_path);
    } else {
      train::adam<float> opt(train::adam_options{}.with_lr(a.real("lr")).with_weight_decay(a.real("weight-decay")));
      const auto h = train::fit(model, opt, loss, split.train,
                                fit_settings(epochs, a.integer("batch"), seed, !quiet, a.real("lr")), {}, &split.test);
      for (const auto& e : h.epochs) throughput += e.samples_per_second / static_cast<double>(h.epochs.size());
      if (!save_path.empty()) {
        io::save_parameters(
            model, save_path,
            {{"model", model_name}, {"data", data_name}, {"heldout", split_note}, {"epochs", std::to_string(epochs)}});
        fmt::print("dense model saved to {}\n", save_path);
      }
    }

    // Per-class accuracy on the test windows.
    std::vector<index_t> correct(names.size(), 0), count(names.size(), 0);
    data::batch<float> b;
    rng unused(0);
    data::batcher<float> batches(split.test, 256, false, unused);
    tensor<float> out;
    nn::forward_context ctx;
    while (batches.next(b)) {
      ctx.lengths = &b.lengths;
      model.forward(b.inputs, out, ctx);
      for (index_t i = 0; i < b.size(); ++i) {
        index_t best = 0;
        out.matrix().row(i).maxCoeff(&best);
        const auto y = static_cast<std::size_t>(b.labels[static_cast<std::size_t>(i)]);
        ++count[y];
        correct[y] += best == static_cast<index_t>(y);
      }
    }
    const auto test = train::evaluate(model, split.test, loss);
    if (userid) {
      fmt::print("\nper user:");
    } else {
      fmt::print("\nper activity (user '{}'):", a.str("test-user"));
    }
    for (std::size_t c = 0; c < names.size(); ++c) {
      fmt::print("  {} {:.1f}%", names[c],
                 count[c] ? 100.0 * static_cast<double>(correct[c]) / static_cast<double>(count[c]) : 0.0);
    }
    fmt::print("\nDeepSense on {} data, {}: test accuracy {:.2f}% (loss {:.4f}) {}\n", synthetic ? "SYNTHETIC" : "HHAR", protocol,
               100.0 * test.accuracy, test.loss,
               loading ? "(loaded " + baseline_path + ")" : fmt::format("after {} epochs, {:.0f} windows/s", epochs, throughput));
    if (synthetic) {
      fmt::print("(synthetic data: not comparable with DeepIoT's {} on the real HHAR)\n", userid ? "99.6% (UserID)" : "94.6%");
    }
    if (deepiot_iterations <= 0 && dyns_epochs <= 0) return 0;

    const double base_heldout = train::evaluate(model, heldout, loss).accuracy;
    fmt::print("dense model: held-out accuracy {:.2f}% on {} windows\n", 100 * base_heldout, heldout.size());
    nn::sequential<float> dense = model;  // the compressor-critic training and DNS change the weights
    std::ofstream csv;
    if (!a.str("csv").empty()) {
      csv.open(a.str("csv"));
      if (!csv) slimnet::detail::raise<io_error>("deepsense_hhar", "cannot write --csv '{}'", a.str("csv"));
      csv << "method,settings,baseline_accuracy,before_finetune_accuracy,test_accuracy,layer,units_kept,units_original,weights_kept,"
             "weights_original,kept_percent\n";
    }
    std::string settings;
    for (int i = 1; i < argc; ++i) settings += (i > 1 ? " " : "") + std::string(argv[i]);
    const auto csv_prefix = [&](const char* method, double before, double after) {
      return fmt::format("{},\"{}\",{:.6f},{:.6f},{:.6f}", method, settings, test.accuracy, before, after);
    };
    const auto t_start = std::chrono::steady_clock::now();
    const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count(); };

    // --deepiot N: at most N compressor-critic iterations (deepiot::compress) on the dense model,
    // its gates on each sensor's conv1 / conv2, the shared conv3, conv4-6 and both GRUs; τ rises
    // by --deepiot-tau-step every --deepiot-tau-every iterations up to --deepiot-tau-final (the
    // authors: 0.025 every 500 up to 0.825, 16,500 iterations; too long here, ~1.2 s each). Every
    // --deepiot-check-every iterations the hard mask's weight fraction and held-out accuracy are
    // checked; the run stops below --deepiot-alpha of the weights at >= --deepiot-min-accuracy
    // (the authors: 7% at 93% dev accuracy; -1: the dense model's held-out accuracy minus 2
    // points). Then the hard mask (p folded), BatchNorm statistics re-estimated under it,
    // thinning, and --finetune-epochs of Adam on the thinned dense network.
    if (deepiot_iterations > 0) {
      auto g = deepiot::attach_gates(model);
      deepiot::deepiot_options co;
      co.seed = seed;
      co.critic_lr = a.real("deepiot-critic-lr");
      co.tau = {0.0, a.real("deepiot-tau-step"), a.integer("deepiot-tau-every"), a.real("deepiot-tau-final")};
      const std::int64_t check_every = a.integer("deepiot-check-every") > 0 ? a.integer("deepiot-check-every")
                                                                            : std::max<std::int64_t>(1, deepiot_iterations / 10);
      const double min_acc =
          a.real("deepiot-min-accuracy") >= 0 ? a.real("deepiot-min-accuracy") : std::max(0.0, base_heldout - 0.02);
      co.stop = {a.real("deepiot-alpha"), min_acc, check_every, deepiot_iterations};
      co.batch_norm_batches = a.integer("bn-batches");
      fmt::print(
          "DeepIoT: τ += {} every {} iterations up to {}, stop below {:.2f}% of the weights at >= {:.2f}% held-out accuracy "
          "(checked every {}, BatchNorm re-estimated over {} batches), at most {} iterations\n",
          co.tau.step, co.tau.every, co.tau.final_value, 100 * co.stop.max_fraction, 100 * co.stop.min_accuracy, check_every,
          co.batch_norm_batches, deepiot_iterations);
      std::fflush(stdout);
      auto r = deepiot::compress(g, split.train, heldout, co, [&](const deepiot::compress_check& c) {
        std::string kept;
        for (std::size_t k = 0; k < c.kept.size(); ++k) kept += fmt::format("{}{}={}", k ? " " : "", g.layers[k].name, c.kept[k]);
        fmt::print("  it {:5}  τ {:.3f}  loss {:.4f}  kept [{}]  weights {:.2f}%  held-out {:.2f}%  {:.0f}s\n", c.iteration,
                   c.tau, c.critic_loss, kept, 100 * c.fraction, 100 * c.accuracy, elapsed());
        std::fflush(stdout);
      });
      fmt::print("compression {} after {} iterations ({:.0f}s): τ {:.3f}, {:.2f}% of the weights, held-out {:.2f}%\n",
                 r.stopped ? "stopped by the rule" : "reached the iteration cap", r.iterations, elapsed(), r.tau,
                 100 * r.last.fraction, 100 * r.last.accuracy);
      deepiot::harden(g, r.probabilities, r.tau, true);
      // BatchNorm statistics for the hard mask (as example 11): those of the compressor-critic
      // phase were averaged under random masks.
      const index_t bn_final = a.integer("bn-finetune");
      if (bn_final != 0) {
        const double before = train::evaluate(g.net, heldout, loss).accuracy;
        rng bn_gen(seed + 11);
        if (train::recalibrate_batch_norm(g.net, split.train, bn_final, co.eval_batch, bn_gen) > 0) {
          fmt::print(
              "hard mask: held-out accuracy {:.2f}% with the BatchNorm statistics left by compression, {:.2f}% re-estimated over "
              "{} batches of {}\n",
              100 * before, 100 * train::evaluate(g.net, heldout, loss).accuracy, bn_final, co.eval_batch);
        }
      }
      auto thinned = deepiot::thin(g);
      const double gated_acc = train::evaluate(g.net, split.test, loss).accuracy;
      const double thin_acc = train::evaluate(thinned, split.test, loss).accuracy;
      fmt::print("hard mask: test accuracy {:.2f}% (gated) {} {:.2f}% (thinned)\n", 100 * gated_acc,
                 gated_acc == thin_acc ? "=" : "!=", 100 * thin_acc);
      // Thinning removes only units whose gates are 0: a different accuracy is a bug in thinning.
      if (gated_acc != thin_acc) {
        fmt::print(stderr, "deepsense_hhar: the thinned network's accuracy differs from the hard-masked network's\n");
        return 2;
      }
      const int ft_epochs = static_cast<int>(a.integer("finetune-epochs"));
      if (ft_epochs > 0) {
        train::adam<float> opt(train::adam_options{}.with_lr(a.real("finetune-lr")).with_weight_decay(a.real("weight-decay")));
        train::fit(thinned, opt, loss, split.train,
                   fit_settings(ft_epochs, a.integer("batch"), seed + 7, !quiet, a.real("finetune-lr")));
      }
      const double final_acc = train::evaluate(thinned, split.test, loss).accuracy;
      print_layer_table(dense, &thinned, false, &csv, csv_prefix("deepiot", thin_acc, final_acc));
      const double kept = static_cast<double>(deepiot::weight_count(thinned)) / static_cast<double>(deepiot::weight_count(dense));
      fmt::print(
          "DeepIoT on DeepSense: {:.2f}% of the weights kept ({:.1f}x), test accuracy {:.2f}% -> {:.2f}% hard-masked -> {:.2f}% "
          "after {} epochs of fine-tuning ({:+.2f} pp); {:.0f}s\n",
          100 * kept, 1 / kept, 100 * test.accuracy, 100 * thin_acc, 100 * final_acc, ft_epochs,
          100 * (final_acc - test.accuracy), elapsed());
      cli::print_table1(
          dense, thinned, split.test,
          fmt::format("{:<16} {:>26} {:>28} {:>28}", "paper (Edison)", userid ? "1.89 / 0.02 / 98.9%" : "1.89 / 0.12 / 93.7%",
                      userid ? "130 / 25.1 / 80.7%" : "130 / 36.7 / 71.8%",
                      userid ? "105.1 / 18.1 / 82.8%" : "99.6 / 27.7 / 72.2%"));
    }

    // --dyns-epochs N: DyNS-Ext (DeepIoT §5.1) from the same dense model: prune::attach_dyns_ext
    // puts DNS (Guo et al. 2016) on both GRUs' weight_ih / weight_hh and the classifier; it does
    // not reach convolutions, so every conv weight gets its own DNS group here (prune::attach_dns,
    // --dyns-conv-c-rate). Adam (no weight decay, as example 10) trains W under W * T, surgery
    // during --dyns-surgery-epochs (-1: all), cosine learning rate; then W * T is baked and dead
    // GRU units removed (dyns_ext_run::finish). --dyns-recurrent false is the paper's plain DyNS.
    if (dyns_epochs > 0) {
      nn::sequential<float> pruned = dense;
      const index_t steps_per_epoch = (split.train.size() + a.integer("batch") - 1) / a.integer("batch");
      const index_t surgery_epochs = a.integer("dyns-surgery-epochs") < 0 ? dyns_epochs : a.integer("dyns-surgery-epochs");
      prune::dyns_ext_options o;
      o.prune_recurrent = a.flag("dyns-recurrent");
      o.recurrent_c_rate = a.real("dyns-c-rate");
      o.linear_c_rate = a.real("dyns-fc-c-rate");
      o.gamma = a.real("dyns-gamma");
      o.iter_stop = surgery_epochs * steps_per_epoch;
      o.seed = seed;
      auto run = prune::attach_dyns_ext(pruned, o);
      std::vector<nn::parameter<float>*> conv_weights;
      pruned.visit_layers([&](nn::layer<float>& l) {
        if (auto* c = dynamic_cast<nn::conv2d<float>*>(&l)) conv_weights.push_back(&c->weight());
      });
      for (std::size_t k = 0; k < conv_weights.size(); ++k) {
        auto d = o.dns(false, run.entries().size() + k);  // seeds after attach_dyns_ext's matrices
        d.c_rate = a.real("dyns-conv-c-rate");
        prune::attach_dns(*conv_weights[k], nullptr, d, conv_weights[k]->name());
      }
      const auto kept_now = [&] {
        index_t n = 0, total = 0;
        for (const auto& e : run.entries()) total += e.size;
        for (auto* p : conv_weights) total += p->size(), n += (prune::masked_weight(*p).flat().array() != 0.0f).count();
        return std::pair{n + run.kept(), total};
      };
      const auto k0 = kept_now();
      fmt::print(
          "DyNS{}: DNS on {} conv weights (c_rate {}){} and fc (c_rate {}); gamma {}, surgery during {} of {} epochs; after the "
          "first surgery {:.2f}% of these {} weights kept\n",
          o.prune_recurrent ? "-Ext" : "", conv_weights.size(), a.real("dyns-conv-c-rate"),
          o.prune_recurrent ? fmt::format(", both GRUs (c_rate {})", o.recurrent_c_rate) : std::string(", GRUs dense"),
          o.linear_c_rate, o.gamma, surgery_epochs, dyns_epochs,
          100.0 * static_cast<double>(k0.first) / static_cast<double>(k0.second), k0.second);
      struct progress : train::callback<float> {
        std::function<std::pair<index_t, index_t>()> kept;
        std::function<double()> seconds;
        void on_epoch_end(train::train_state<float>& s) override {
          const auto k = kept();
          fmt::print("  epoch {:2}  weights kept {:6.2f}%  held-out accuracy {:.2f}%  {:.0f}s\n", s.epoch + 1,
                     100.0 * static_cast<double>(k.first) / static_cast<double>(k.second),
                     100.0 * s.epoch_metrics.validation.accuracy, seconds());
          std::fflush(stdout);
        }
      } printer;
      printer.kept = kept_now;
      printer.seconds = elapsed;
      train::adam<float> opt(train::adam_options{}.with_lr(a.real("dyns-lr")));
      train::fit(pruned, opt, loss, split.train,
                 fit_settings(static_cast<int>(dyns_epochs), a.integer("batch"), seed + 1, !quiet, a.real("dyns-lr")), {&printer},
                 &heldout);
      for (auto* p : conv_weights) prune::remove(*p);  // W <- W * T; the GRU / fc matrices: finish
      auto baked = pruned;
      prune::remove_all(baked);
      const double baked_acc = train::evaluate(baked, split.test, loss).accuracy;
      const auto rep = run.finish(pruned, {a.flag("dyns-thin"), true});
      const double final_acc = train::evaluate(pruned, split.test, loss).accuracy;
      print_layer_table(dense, &pruned, true, &csv, csv_prefix(o.prune_recurrent ? "dyns-ext" : "dyns", baked_acc, final_acc));
      index_t kept = 0, total = 0;
      for (const auto& r : table_rows())
        for (const auto& l : r.layers) kept += weights_of(pruned, l, true), total += weights_of(dense, l);
      fmt::print(
          "DyNS{} on DeepSense: {:.2f}% of the weights kept (nonzero; {:.1f}x), test accuracy {:.2f}% -> {:.2f}% ({} dead GRU / fc "
          "units removed: {:.2f}%; {:+.2f} pp); {:.0f}s\n",
          o.prune_recurrent ? "-Ext" : "", 100.0 * static_cast<double>(kept) / static_cast<double>(total),
          static_cast<double>(total) / static_cast<double>(kept), 100 * test.accuracy, 100 * baked_acc, rep.units_removed,
          100 * final_acc, 100 * (final_acc - test.accuracy), elapsed());
    }
  } catch (const slimnet::error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
