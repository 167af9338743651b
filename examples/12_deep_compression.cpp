// Example 12: the Deep Compression pipeline (Han et al. 2016): prune -> retrain -> cluster the
// surviving weights -> fine-tune the centroids, with the pruning mask kept all the way.
//
//   deep_compression --model lenet300 --data mnist
//   deep_compression --model lenet5 --data mnist --baseline lenet5-mnist.safetensors
//   deep_compression --model lenet5 --data mnist --baseline out/lenet5-mnist.safetensors
//       --pruned out/lenet5-mnist-dns.safetensors --bits conv1=4,conv2=4,fc1=4,fc2=4
//
// 1. Load the dense baseline from --baseline, or train one (example 1's recipe) and save it there.
// 2. With --pruned FILE, start from a model pruned elsewhere instead (example 3's DNS, or example
//    2's magnitude pruning): its parameters are loaded and its zeros become the masks of the
//    weights AND of the biases (DNS prunes biases too), so no weight it removed comes back.
//    Otherwise prune every Linear / Conv2d weight by magnitude to Han et al.'s per-layer densities in
//    --rounds rounds of retraining (prune::iterative, as example 2 does), the masks held. The masks
//    are NOT baked in: they stay on the parameters as the support the quantizers see.
// 3. Share weights: per layer, k-means with linear initialisation (Han's best) on the SURVIVING
//    weights only, 2^bits centroids (Han: 8 bits for conv, 5 bits for fc; --bits per layer).
//    Pruned weights are not clustered and 0 is not a centroid (nn/parameter.hpp: how transforms
//    compose).
// 4. Fine-tune the centroids for --finetune-epochs: each centroid moves by the summed gradient of
//    its surviving weights (quant::share_weights on top of the mask), the indices fixed. With
//    --distill alpha, retraining and fine-tuning also pull the outputs towards the dense
//    baseline's (as in examples 2 and 3). With --bias-f16, the biases are then rounded to half
//    precision (a file stores them in 2 bytes each; the accuracy reported is the rounded model's).
// 5. Report per layer: weights kept, bits, distinct nonzero values, and the Deep Compression
//    storage estimate (relative indices of --index-bits with filler zeros for longer gaps, the
//    survivors' cluster indices, 32-bit centroids), then check that the mask held: every pruned
//    weight is exactly 0 and no layer has more than 2^bits distinct nonzero values.
//    With --val N, N training images (stratified, fixed seed) are held out before the baseline is
//    trained and every stage is also evaluated on them, so that settings can be chosen on them
//    rather than on the test set (a baseline file records the N it was trained with, and a file
//    trained on all images is refused: its "validation" images would have been trained on).
//    --teacher FILE (--teacher-model NAME) distils another trained network instead of the dense
//    baseline (e.g. the VGG-style net for LeNet-5); --retrain-weight-decay sets the weight decay
//    of the retraining alone (the baseline keeps --weight-decay).
//    --thinned FILE starts from a DeepIoT-thinned model (example 11's --save): its widths are read
//    from the file's shapes, the first units of each layer of the model kept (deepiot::thin) and
//    the file's parameters loaded; the dense baseline stays the reference for bytes and accuracy.
//    --save-pruned FILE writes the pruned, retrained float model (for --pruned runs that try other
//    codebook settings without retraining again). --rounds 0 skips pruning, and 0 bits for a
//    layer leaves its weights unclustered (float).
// 6. Save the model as one compressed file (io::save_model: relative indices, codebook indices of
//    the survivors, Huffman where it pays) to --out, next to the dense baseline saved the same way
//    (--out with ".dense" before the extension), reload it and evaluate the reloaded model.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "slimnet/deepiot.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/quant.hpp"
#include "slimnet/slimnet.hpp"

using namespace slimnet;

namespace {

/// Han et al. 2015 / 2016 weights kept per layer (LeNet-300-100: 8%, 9%, 26%; LeNet-5: 66%, 12%,
/// 8%, 19%) as final sparsities.
std::string han_targets(const std::string& model) {
  if (model == "lenet300") return "fc1=0.92,fc2=0.91,fc3=0.74";
  if (model == "lenet5") return "conv1=0.34,conv2=0.88,fc1=0.92,fc2=0.81";
  // Example 2's VGG targets (12.9x): the convolutions hold 89% of the weights, so they go further
  // than Han et al.'s VGG-16 convolutions (22-58% kept).
  if (model == "vgg") return "conv1=0.5,conv2=0.75,conv3=0.85,conv4=0.9,conv5=0.92,conv6=0.94,fc1=0.95,fc2=0.8";
  throw config_error(fmt::format("deep_compression: no Deep Compression targets for '{}'", model));
}

/// Deep Compression's sparse storage of one layer (Han et al. 2016, sec. 2-3): the row-major
/// weights as (relative index, cluster index) pairs. A gap between survivors longer than the
/// relative index can hold (2^index_bits) costs a filler entry (a zero) per 2^index_bits positions.
struct layer_storage {
  index_t entries = 0;  // survivors + filler zeros
  std::uint64_t bits = 0;
};

layer_storage sparse_codebook_storage(const nn::parameter<float>& p, int bits, int index_bits) {
  const index_t span = index_t{1} << index_bits;
  layer_storage s;
  index_t last = -1;
  const tensor<float>& w = p.value();
  for (index_t i = 0; i < w.size(); ++i) {
    if (w[i] == 0.0f) continue;
    s.entries += (i - last - 1) / span + 1;  // fillers for the gap, then the survivor itself
    last = i;
  }
  s.bits = static_cast<std::uint64_t>(s.entries) * static_cast<std::uint64_t>(bits + index_bits) +
           (std::uint64_t{1} << bits) * 32;
  return s;
}

/// `model` with each hidden Linear / Conv2d cut to the number of units (rows of its weight) that
/// `path`, a thinned model's parameters file, has for it, and those parameters loaded.
nn::sequential<float> load_thinned(const nn::sequential<float>& model, const std::string& path) {
  const auto file = io::read_safetensors<float>(path);
  deepiot::unit_selection keep;
  std::string last;
  for (std::size_t i = 0; i < model.size(); ++i) {
    const auto kind = model[i].kind();
    if (kind == "Linear" || kind == "Conv2d") last = model.local_name(i);
  }
  for (std::size_t i = 0; i < model.size(); ++i) {
    const auto kind = model[i].kind();
    const std::string name = model.local_name(i);
    if ((kind != "Linear" && kind != "Conv2d") || name == last) continue;
    const auto it = file.tensors.find(name + ".weight");
    if (it == file.tensors.end()) {
      throw config_error(fmt::format("deep_compression: thinned model '{}' has no tensor '{}.weight'", path, name));
    }
    const index_t units = kind == "Linear" ? static_cast<const nn::linear<float>&>(model[i]).out_features()
                                           : static_cast<const nn::conv2d<float>&>(model[i]).out_channels();
    const index_t kept = it->second.dim(0);
    if (kept < 1 || kept > units) {
      throw config_error(fmt::format("deep_compression: '{}.weight' of '{}' has {} units, the model {}", name, path,
                                     kept, units));
    }
    std::vector<bool> k(static_cast<std::size_t>(units), false);
    std::fill(k.begin(), k.begin() + kept, true);
    keep[name] = std::move(k);
  }
  auto thinned = deepiot::thin(model, keep);
  io::load_parameters(thinned, path);
  return thinned;
}

}  // namespace

int main(int argc, char** argv) {
  cli::args a(argc, argv,
              {{"model", "lenet300"},
               {"data", "mnist"},
               {"baseline", ""},
               {"epochs", "10"},
               {"batch", "64"},
               {"lr", "0.05"},
               {"momentum", "0.9"},
               {"weight-decay", "5e-4"},
               {"seed", "1"},
               {"targets", ""},
               {"rounds", "4"},
               {"retrain-epochs", "3"},
               {"retrain-lr", "0.01"},
               {"conv-bits", "8"},
               {"fc-bits", "5"},
               {"index-bits", "0"},
               {"finetune-epochs", "3"},
               {"finetune-lr", "1e-4"},
               {"limit", "0"},
               {"pruned", ""},
               {"bits", ""},
               {"distill", "0"},
               {"temperature", "4"},
               {"bias-f16", "false"},
               {"val", "0"},
               {"teacher", ""},
               {"teacher-model", ""},
               {"retrain-weight-decay", "-1"},
               {"thinned", ""},
               {"save-pruned", ""},
               {"out", "deep-compression.safetensors"},
               {"quiet", "false"}},
              "deep_compression: prune, retrain, cluster the surviving weights with k-means and "
              "fine-tune the centroids (Han et al. 2016) for LeNet-300-100 (lenet300) or LeNet-5 "
              "(lenet5) or the VGG-style net (vgg)\n"
              "  --val N holds out N training images (before the baseline is trained) to choose "
              "settings on\n"
              "  --teacher FILE --teacher-model NAME distils another trained network (needs --distill)\n"
              "  --retrain-weight-decay W: weight decay of the retraining (default: --weight-decay)\n"
              "  --thinned FILE starts from a DeepIoT-thinned model (example 11's --save)\n"
              "  --save-pruned FILE writes the pruned, retrained float model; --rounds 0: no pruning\n"
              "  --index-bits 0 uses Han's relative-index widths: 8 bits for conv, 5 for fc\n"
              "  --pruned FILE starts from a pruned parameters file (e.g. example 3's DNS model)\n"
              "  --bits conv1=4,fc1=5 sets codebook bits per layer (others: --conv-bits / --fc-bits)");
  try {
    const std::string model_name = a.str("model");
    const auto seed = static_cast<std::uint64_t>(a.integer("seed"));
    const bool quiet = a.flag("quiet");
    auto data = cli::load_dataset(a.str("data"));
    cli::limit(data.train, a.integer("limit"), seed);
    cli::limit(data.test, a.integer("limit") > 0 ? std::max(a.integer("limit") / 4, 1L) : 0,
               seed + 1);
    // Validation split, held out before anything trains on the training set.
    const long n_val = a.integer("val");
    if (n_val < 0 || n_val >= data.train.size()) {
      throw config_error(fmt::format("deep_compression: --val {} must be in [0, {})", n_val, data.train.size()));
    }
    data::dataset<float> val;
    if (n_val > 0) {
      const auto [tr, va] = data::stratified_split(
          data.train.labels, data.train.num_classes,
          static_cast<double>(n_val) / static_cast<double>(data.train.size()), seed + 3);
      val = data.train.subset(va);
      data.train = data.train.subset(tr);
    }
    rng gen(seed);
    auto model = cli::make_model(model_name, gen, "deep_compression");
    const train::cross_entropy<float> ce;

    // 1. Baseline.
    const auto metadata = cli::load_or_train_baseline(
        model, a.str("baseline"), model_name, a.str("data"), data,
        {static_cast<int>(a.integer("epochs")), a.real("lr"), a.real("momentum"),
         a.real("weight-decay"), a.integer("batch"), seed, !quiet},
        "deep_compression", {{"val_holdout", std::to_string(n_val)}});
    {
      // A baseline trained on the images --val holds out would make them training images.
      const auto it = metadata.find("val_holdout");
      const std::string held = it == metadata.end() ? "0" : it->second;
      if (held != std::to_string(n_val)) {
        throw config_error(fmt::format("deep_compression: baseline '{}' was trained with --val {}, not {}",
                                       a.str("baseline"), held, n_val));
      }
      const auto m = metadata.find("input_mean"), sd = metadata.find("input_std");
      if (n_val > 0 && m != metadata.end() && sd != metadata.end()) {
        data::standardize(val, std::stod(m->second), std::stod(sd->second));
      }
    }
    // Accuracy on the test set and, with --val, on the held-out training images.
    const auto on_val = [&](nn::layer<float>& net) {
      return n_val > 0 ? fmt::format(" (val {:.2f}%)", 100 * train::evaluate(net, val, ce).accuracy)
                       : std::string();
    };
    const double baseline = train::evaluate(model, data.test, ce).accuracy;
    const double baseline_val_acc = n_val > 0 ? train::evaluate(model, val, ce).accuracy : 0.0;
    const std::string baseline_val = on_val(model);
    // The dense baseline (or --teacher) as teacher: with --distill alpha > 0 the training loss is
    // (1 - alpha) CE + alpha T^2 KL(teacher_T || student_T) (train/loss.hpp).
    nn::sequential<float> teacher(model);
    if (!a.str("teacher").empty()) {
      if (a.real("distill") <= 0) throw config_error("deep_compression: --teacher needs --distill alpha > 0");
      const std::string teacher_model =
          a.str("teacher-model").empty() ? model_name : a.str("teacher-model");
      rng teacher_gen(seed + 7);
      teacher = cli::make_model(teacher_model, teacher_gen, "deep_compression");
      cli::load_teacher(teacher, a.str("teacher"), teacher_model, a.str("data"), metadata,
                        "deep_compression");
      fmt::print("teacher {} from {}: test accuracy {:.2f}%{}\n", teacher_model, a.str("teacher"),
                 100 * train::evaluate(teacher, data.test, ce).accuracy, on_val(teacher));
    }
    const train::distillation<float> distilled(teacher, std::max(a.real("distill"), 0.0),
                                               a.real("temperature"));
    const train::loss_function<float>& loss =
        a.real("distill") > 0 ? static_cast<const train::loss_function<float>&>(distilled)
                              : static_cast<const train::loss_function<float>&>(ce);
    const std::filesystem::path out = a.str("out");
    std::filesystem::path dense_out = out;
    dense_out.replace_extension(".dense" + out.extension().string());
    io::save_model(model, dense_out);
    fmt::print("{} on {}: dense baseline {:.2f}%{} ({} train / {} validation / {} test images)\n",
               model_name, a.str("data"), 100 * baseline, baseline_val, data.train.size(), val.size(),
               data.test.size());

    if (!a.str("thinned").empty()) {
      model = load_thinned(model, a.str("thinned"));
      fmt::print("thinned model {}: {} weights, {:.2f}%{}\n", a.str("thinned"), deepiot::weight_count(model),
                 100 * train::evaluate(model, data.test, ce).accuracy, on_val(model));
    }

    // 2. Prune -> retrain, the masks kept on the parameters; or load a model pruned elsewhere.
    const bool from_file = !a.str("pruned").empty() || a.integer("rounds") == 0;
    if (!a.str("pruned").empty()) {
      io::load_parameters(model, a.str("pruned"));
      model.visit_parameters([](nn::parameter<float>& p) {
        tensor<float> mask(p.shape());
        for (index_t i = 0; i < p.size(); ++i) mask[i] = p.value()[i] != 0.0f ? 1.0f : 0.0f;
        prune::restrict_mask(p, mask);
      });
      fmt::print("pruned model {}: {:.2f}%{}\n", a.str("pruned"),
                 100 * train::evaluate(model, data.test, ce).accuracy, on_val(model));
    }
    const auto targets = cli::parse_layer_values(
        a.str("targets").empty() ? han_targets(model_name) : a.str("targets"), "deep_compression",
        "targets");
    std::vector<prune::layer_target<float>> t;
    for (const auto& [layer, s] : targets)
      t.push_back({&prune::find_parameter(model, layer + ".weight"), s});
    auto pruner = prune::magnitude_pruner<float>::layerwise(t);
    prune::iterative_options io;
    io.rounds = std::max(static_cast<int>(a.integer("rounds")), 1);  // 0: no pruning (from_file)
    io.epochs_per_round = static_cast<int>(a.integer("retrain-epochs"));
    prune::iterative<float> schedule(pruner, io);
    {
      const double retrain_wd = a.real("retrain-weight-decay") >= 0 ? a.real("retrain-weight-decay")
                                                                    : a.real("weight-decay");
      train::sgd<float> opt(
          train::sgd_options{}.with_lr(a.real("retrain-lr")).with_momentum(a.real("momentum")).with_weight_decay(retrain_wd));
      train::fit_options o;
      o.epochs = io.total_epochs();
      o.batch_size = a.integer("batch");
      o.seed = seed + 1;
      o.progress = !quiet;
      const int per_round = io.epochs_per_round;
      const double lr = a.real("retrain-lr");
      o.learning_rate = [=](int epoch) {  // cosine within each round
        return lr * 0.5 * (1.0 + std::cos(M_PI * (epoch % per_round) / std::max(per_round, 1)));
      };
      if (!from_file) train::fit(model, opt, loss, data.train, o, {&schedule});
    }
    const double pruned = train::evaluate(model, data.test, ce).accuracy;
    if (!a.str("save-pruned").empty()) {
      // The pruned, retrained float model, for --pruned runs that try other codebooks on it.
      io::save_parameters(model, a.str("save-pruned"), metadata);
      fmt::print("pruned model saved to {}\n", a.str("save-pruned"));
    }
    if (!from_file) {
      fmt::print("pruned and retrained ({} rounds x {} epochs): {:.2f}%{}\n", io.rounds,
                 io.epochs_per_round, 100 * pruned, on_val(model));
    }

    // 3. Weight sharing on the surviving weights.
    struct layer_row {
      nn::parameter<float>* p;
      bool conv;
      int bits;
      std::vector<std::uint8_t> support;
    };
    std::vector<layer_row> rows;
    quant::kmeans_options ko;
    ko.init = quant::kmeans_init::linear;
    ko.seed = seed;
    const auto layer_bits = a.str("bits").empty()
                                ? std::map<std::string, double>{}
                                : cli::parse_layer_values(a.str("bits"), "deep_compression", "bits");
    for (auto* p : prune::prunable_parameters(model)) {
      const bool conv = p->value().rank() == 4;
      const std::string layer = p->name().substr(0, p->name().rfind('.'));
      const int bits = layer_bits.count(layer)
                           ? static_cast<int>(layer_bits.at(layer))
                           : static_cast<int>(a.integer(conv ? "conv-bits" : "fc-bits"));
      auto support = quant::support_of(*p);  // the mask: pruned weights are not clustered
      if (bits <= 0) continue;  // left in float
      index_t alive = support.empty() ? p->size() : 0;  // empty: nothing prunes it
      for (auto v : support) alive += v;
      const index_t k = std::min<index_t>(index_t{1} << bits, alive);
      quant::share_weights(*p, quant::kmeans(p->value(), k, ko, support));
      if (support.empty()) support.assign(static_cast<std::size_t>(p->size()), 1);  // for the report
      rows.push_back({p, conv, bits, std::move(support)});
    }
    const double clustered = train::evaluate(model, data.test, ce).accuracy;
    std::string bits_text;
    for (const auto& r : rows) bits_text += fmt::format("{}{}={}", bits_text.empty() ? "" : ",", r.p->name(), r.bits);
    fmt::print("clustered ({} bits): {:.2f}%{}\n", bits_text, 100 * clustered, on_val(model));

    // 4. Fine-tune the centroids (Adam: see example 6 for why).
    double finetuned = clustered;
    if (a.integer("finetune-epochs") > 0) {
      train::adam<float> opt(train::adam_options{}.with_lr(a.real("finetune-lr")));
      train::fit_options o;
      o.epochs = static_cast<int>(a.integer("finetune-epochs"));
      o.batch_size = a.integer("batch");
      o.seed = seed + 2;
      o.progress = false;
      train::fit(model, opt, loss, data.train, o);
      finetuned = train::evaluate(model, data.test, ce).accuracy;
    }
    if (a.flag("bias-f16")) {
      // Biases to the nearest half-precision value (zeros stay zero, so their masks hold).
      model.visit_parameters([](nn::parameter<float>& p) {
        if (p.value().rank() != 1 || p.name().size() < 5 || p.name().substr(p.name().size() - 5) != ".bias") return;
        for (index_t i = 0; i < p.size(); ++i) p.value()[i] = io::f16_to_float(io::float_to_f16(p.value()[i]));
      });
      finetuned = train::evaluate(model, data.test, ce).accuracy;
      fmt::print("biases rounded to half precision: {:.2f}%{}\n", 100 * finetuned, on_val(model));
    }
    fmt::print("centroids fine-tuned ({} epochs): {:.2f}%{}\n\n", a.integer("finetune-epochs"),
               100 * finetuned, on_val(model));

    // 5. Per-layer report and the check that the mask held.
    fmt::print("{:<14} {:>9} {:>8} {:>5} {:>9} {:>10} {:>10}\n", "layer", "weights", "kept",
               "bits", "distinct", "entries", "KiB (DC)");
    bool mask_kept = true;
    index_t total_weights = 0, total_kept = 0;
    std::uint64_t total_bits = 0;
    for (const auto& r : rows) {
      const tensor<float>& w = r.p->value();
      std::set<float> distinct;
      index_t kept = 0;
      for (index_t i = 0; i < w.size(); ++i) {
        if (!r.support[static_cast<std::size_t>(i)]) {
          mask_kept = mask_kept && w[i] == 0.0f;
        } else if (w[i] != 0.0f) {
          distinct.insert(w[i]);
          ++kept;
        }
      }
      mask_kept = mask_kept && distinct.size() <= (std::size_t{1} << r.bits);
      const int index_bits =
          a.integer("index-bits") > 0 ? static_cast<int>(a.integer("index-bits")) : (r.conv ? 8 : 5);
      const auto s = sparse_codebook_storage(*r.p, r.bits, index_bits);
      fmt::print("{:<14} {:>9} {:>7.2f}% {:>5} {:>9} {:>10} {:>10.1f}\n", r.p->name(), w.size(),
                 100.0 * static_cast<double>(kept) / static_cast<double>(w.size()), r.bits,
                 distinct.size(), s.entries, static_cast<double>(s.bits) / 8192.0);
      total_weights += w.size();
      total_kept += kept;
      total_bits += s.bits;
    }
    const double dense_bits = 32.0 * static_cast<double>(total_weights);
    if (rows.empty()) {
      fmt::print("(no layer clustered: every layer has 0 bits)\n");
    } else {
      fmt::print("{:<14} {:>9} {:>7.2f}% {:>5} {:>9} {:>10} {:>10.1f}\n", "Total", total_weights,
                 100.0 * static_cast<double>(total_kept) / static_cast<double>(total_weights), "",
                 "", "", static_cast<double>(total_bits) / 8192.0);
      fmt::print(
          "\nweights of {:.1f} KiB as float32 -> {:.1f} KiB in Deep Compression's sparse + "
          "codebook storage (no Huffman, biases not counted): {:.1f}x\n",
          dense_bits / 8192.0, static_cast<double>(total_bits) / 8192.0,
          dense_bits / static_cast<double>(total_bits));
    }
    fmt::print("accuracy: dense {:.2f}%, pruned {:.2f}%, clustered {:.2f}%, fine-tuned {:.2f}% "
               "({:+.2f} pp against dense)\n",
               100 * baseline, 100 * pruned, 100 * clustered, 100 * finetuned,
               100 * (finetuned - baseline));
    // 6. The whole compressed model in one file, reloaded with no user code.
    io::save_model(model, out);
    const auto reloaded = io::load_model<float>(out);
    const double reloaded_accuracy = train::evaluate(*reloaded, data.test, ce).accuracy;
    const auto bytes = std::filesystem::file_size(out), dense_bytes = std::filesystem::file_size(dense_out);
    fmt::print("file {}: {} bytes against {} bytes for the dense model ({}): {:.1f}x; accuracy "
               "after reloading {:.2f}% ({:+.2f} pp against dense)\n",
               out.string(), bytes, dense_bytes, dense_out.string(),
               static_cast<double>(dense_bytes) / static_cast<double>(bytes),
               100 * reloaded_accuracy, 100 * (reloaded_accuracy - baseline));
    if (n_val > 0) {
      const double reloaded_val = train::evaluate(*reloaded, val, ce).accuracy;
      fmt::print("validation ({} held-out training images): dense {:.2f}%, after reloading {:.2f}% "
                 "({:+.2f} pp)\n",
                 val.size(), 100 * baseline_val_acc, 100 * reloaded_val,
                 100 * (reloaded_val - baseline_val_acc));
    }
    fmt::print("mask kept: {}\n",
               mask_kept ? "yes (every pruned weight is exactly 0, at most 2^bits distinct values "
                           "per layer)"
                         : "NO");
    return mask_kept ? 0 : 1;
  } catch (const slimnet::error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
