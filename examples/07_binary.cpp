// Example 7: BinaryConnect (Courbariaux et al. 2015) and binarized neural networks (Hubara et al.
// 2016) against their float baseline, the seed's "Quantization with full-precision copy" table,
// on the MNIST subset and Fashion-MNIST with an MLP and a LeNet-5 style network.
//
//   binary --data mnist,fashion --nets mlp,lenet5
//   binary --data mnist --nets mlp --methods float,bnn,bnn-shift --epochs 30
//
// Every method trains the same architecture from the same initial weights and batches:
//   mlp     784-H-H-10 (H = --hidden), BatchNorm after every Linear, the output included;
//   lenet5  conv 5x5 (C1) - maxpool 2 - BN - act - conv 5x5 (C2) - maxpool 2 - BN - act -
//           fc F - BN - act - fc 10 - BN  (C1, C2, F = --channels, default LeNet-5's 20,50,500)
// with act = ReLU for float and BinaryConnect, sign (straight-through) for BNN.
//   float      real weights and activations;
//   bc-det     BinaryConnect, deterministic sign(W) in both passes, real W updated and clipped;
//   bc-stoch   BinaryConnect with stochastic binarization (hard sigmoid) in training; tested with
//              the binary weights sign(W), after re-estimating BatchNorm's running statistics with
//              them (--recalibrate; 50 forward passes of 500 training images, no update), or with
//              --bc-test real with W itself, the paper's choice;
//   bnn        binary weights and activations; the first layer sees the real-valued input;
//   bnn-shift  bnn with shift-based BatchNorm and shift-based AdaMax (powers of two throughout).
// Binarized weights start from the float network's initial weights scaled to fill [-1, 1]
// (--rescale): invisible to the forward pass behind BatchNorm, it puts the stochastic form's
// probabilities hard_sigmoid(w) away from 1/2 and gives every layer's real weights the same range,
// as the paper's U(-H, H) initialisation with per-layer learning rates 1/H does. They then train
// with one rate for all binarized methods (--lr-binary), the float network with its own (--lr);
// --lr-shift gives bnn-shift its own: AdaMax divides by the running maximum of |g| rather than by
// Adam's root mean square, so its steps are smaller at the same rate.
// Optimizer: Adam (shift-based AdaMax for bnn-shift), cosine schedule down to 1/100 of the rate,
// batch 64, standardised inputs. After training, each BNN is deployed through nn::compressed's
// XNOR engine (nn::compressed::compress_bnn, binary_model.hpp: compress(model, format::xnor) with
// the first layer, fed the real-valued input, and the last layer kept float): the layers between
// them run as packed sign bits with the XNOR/popcount GEMM (the convolution binarizes its input
// before gathering it), the first convolution in its compressed dense form with its max-pool
// fused, each BatchNorm + sign pair one comparison per channel (sign_threshold.hpp), and the
// program checks on the whole test set that the deployed
// model computes exactly the float model's outputs (scale 1 = a power of two: the integer dot
// products make the XNOR layers exact) and gives the same predictions.
//
//   binary --data mnist --nets lenet5 --channels 32,64,512 --methods bnn --epochs 20
//          --out out/lenet5-mnist-bnn.safetensors
// --out writes the one trained BNN (one data set, one net, one of bnn / bnn-shift) as a model file
// (io::save_model): binarized weights as sign bits with per-row scales, except the first layer's
// (codebook: its input is real-valued, and a sign-bit layer loads as an XNOR layer that would
// binarize the input), BatchNorm statistics, and the input standardisation. The program reloads
// it (io::load_model) and prints its bytes against the dense float32 file of the same net and its
// accuracy on the whole test set.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "slimnet/io/model_file.hpp"
#include "slimnet/nn/compressed/binary_model.hpp"
#include "slimnet/quant.hpp"
#include "slimnet/slimnet.hpp"
#include "slimnet/train/batch_norm_statistics.hpp"

using namespace slimnet;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

struct architecture {
  std::string net;
  index_t hidden = 1024;
  std::vector<index_t> channels{20, 50, 500};
};

template <class Model>
void add_norm(Model& m, const std::string& name, index_t features, int rank, bool shift) {
  if (shift) {
    m.add(name, quant::shift_batch_norm<float>(features));
  } else {
    m.add(name, nn::batch_norm<float>(features, rank, {}));
  }
}

template <class Model>
void add_act(Model& m, const std::string& name, bool binary) {
  if (binary) {
    m.add(name, quant::sign_activation<float>());
  } else {
    m.add(name, nn::relu<float>());
  }
}

nn::sequential<float> build(const architecture& a, bool binary_activations, bool shift_bn,
                            std::uint64_t seed) {
  nn::sequential<float> m;
  if (a.net == "mlp") {
    m.add("flatten", nn::flatten<float>());
    m.add("fc1", nn::linear<float>(784, a.hidden));
    add_norm(m, "bn1", a.hidden, 1, shift_bn);
    add_act(m, "act1", binary_activations);
    m.add("fc2", nn::linear<float>(a.hidden, a.hidden));
    add_norm(m, "bn2", a.hidden, 1, shift_bn);
    add_act(m, "act2", binary_activations);
    m.add("fc3", nn::linear<float>(a.hidden, 10));
    add_norm(m, "bn3", 10, 1, shift_bn);
  } else if (a.net == "lenet5") {
    const index_t c1 = a.channels.at(0), c2 = a.channels.at(1), f = a.channels.at(2);
    m.add("conv1", nn::conv2d<float>(1, c1, 5));
    m.add("pool1", nn::max_pool2d<float>(2));
    add_norm(m, "bn1", c1, 2, shift_bn);
    add_act(m, "act1", binary_activations);
    m.add("conv2", nn::conv2d<float>(c1, c2, 5));
    m.add("pool2", nn::max_pool2d<float>(2));
    add_norm(m, "bn2", c2, 2, shift_bn);
    add_act(m, "act2", binary_activations);
    m.add("flatten", nn::flatten<float>());
    m.add("fc1", nn::linear<float>(c2 * 16, f));
    add_norm(m, "bn3", f, 1, shift_bn);
    add_act(m, "act3", binary_activations);
    m.add("fc2", nn::linear<float>(f, 10));
    add_norm(m, "bn4", 10, 1, shift_bn);
  } else {
    throw config_error(fmt::format("binary: unknown net '{}' (mlp or lenet5)", a.net));
  }
  rng gen(seed);
  m.reset_parameters(gen);
  return m;
}

/// BatchNorm's running statistics of a stochastic BinaryConnect network were gathered under random
/// weight draws; at test time the weights are sign(W) (or W itself with `real_weights`), whose
/// pre-activations have other statistics. Re-estimate them with the test-time weights
/// (train::recalibrate_batch_norm: the average over `batches` training batches of 500); no
/// parameter is updated.
void recalibrate_batch_norm(nn::sequential<float>& model, const data::dataset<float>& train_data,
                            int batches, std::uint64_t seed, bool real_weights) {
  std::vector<quant::binary_connect_transform<float>*> transforms;
  model.visit_parameters([&](nn::parameter<float>& p) {
    for (const auto& t : p.transforms())
      if (auto* b = dynamic_cast<quant::binary_connect_transform<float>*>(t.get()))
        transforms.push_back(b);
  });
  for (auto* t : transforms) {
    t->set_mode(quant::binarization::deterministic);
    t->set_passthrough(real_weights);
  }
  rng gen(seed);
  train::recalibrate_batch_norm(model, train_data, batches, 500, gen);
  for (auto* t : transforms) {
    t->set_mode(quant::binarization::stochastic);
    t->set_passthrough(false);
  }
}

/// Local names of the first and last Linear / Conv2d of a Sequential: the layers a BNN keeps float
/// (the first sees the real-valued input; the last gives the class scores).
std::pair<std::string, std::string> first_and_last_weight_layers(const nn::sequential<float>& m) {
  std::string first, last;
  for (std::size_t i = 0; i < m.size(); ++i) {
    const std::string kind = m[i].kind();
    if (kind != "Linear" && kind != "Conv2d") continue;
    if (first.empty()) first = m.local_name(i);
    last = m.local_name(i);
  }
  return {first, last};
}

/// The model's outputs (evaluation mode) on every example of `d`, 500 at a time.
tensor<float> outputs_on(nn::layer<float>& model, const data::dataset<float>& d) {
  rng unused(0);
  const index_t n = d.size(), chunk = 500;
  tensor<float> all, y;
  for (index_t i0 = 0; i0 < n; i0 += chunk) {
    std::vector<index_t> idx;
    for (index_t i = i0; i < std::min(n, i0 + chunk); ++i) idx.push_back(i);
    model.forward(d.subset(idx).inputs, y, {false, &unused});
    if (i0 == 0) all.resize({n, y.dim(1)});
    std::copy_n(y.data(), y.size(), all.data() + i0 * y.dim(1));
  }
  return all;
}

index_t argmax_row(const tensor<float>& y, index_t i) {
  const float* r = y.data() + i * y.dim(1);
  return static_cast<index_t>(std::max_element(r, r + y.dim(1)) - r);
}

/// Weight bytes of a deployed BNN: its XNOR engines (sign bits + one scale per output), and the
/// rest as float32: the trained model's parameters other than the XNOR layers' weights (first and
/// last layers, biases, BatchNorm: folded, the BatchNorm's 4 values per channel become 1 threshold,
/// but they are counted as trained).
struct deployed_bytes {
  std::size_t xnor = 0, floats = 0;
};
deployed_bytes bytes_of(nn::sequential<float>& model, nn::sequential<float>& deployed) {
  deployed_bytes b;
  std::vector<std::string> xnor_weights;
  for (std::size_t i = 0; i < deployed.size(); ++i) {
    const nn::compressed::engine<float>* e = nullptr;
    if (auto* cl = dynamic_cast<nn::compressed::compressed_linear<float>*>(&deployed[i])) e = &cl->weights();
    if (auto* cc = dynamic_cast<nn::compressed::compressed_conv2d<float>*>(&deployed[i])) e = &cc->weights();
    if (e == nullptr || e->kind_prefix() != "Xnor") continue;
    b.xnor += e->bytes();
    xnor_weights.push_back(deployed.local_name(i) + ".weight");
  }
  model.visit_parameters([&](nn::parameter<float>& p) {
    if (std::find(xnor_weights.begin(), xnor_weights.end(), p.name()) == xnor_weights.end())
      b.floats += static_cast<std::size_t>(p.size()) * sizeof(float);
  });
  return b;
}

/// --out: the trained BNN as one model file (sign bits with per-row scales for the binarized
/// layers fed sign activations, the last included; the first layer, fed the real-valued input, as a 1-bit codebook:
/// stored as sign bits it would load as an XNOR layer, which binarizes its input), reloaded with
/// io::load_model and evaluated on the whole test set; its bytes against the same net written as
/// dense float32.
void save_and_reload(const nn::sequential<float>& model, const std::string& first, const std::filesystem::path& out,
                     io::input_standardisation input, const data::dataset<float>& test, const train::loss_function<float>& loss,
                     double float_accuracy) {
  if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path());
  io::save_model_options o;
  o.input = input;
  o.metadata["example"] = "07_binary";
  // Automatic encoding would pick the smallest exact one (fixed point, 1 bit per weight after
  // Huffman coding), which loads as an int8 layer: ask for sign bits, which load as XNOR layers.
  io::tensor_encode_options first_layer, signs;
  first_layer.encoding = io::tensor_encoding::codebook;
  signs.encoding = io::tensor_encoding::sign_bits;
  for (std::size_t i = 0; i < model.size(); ++i) {
    const std::string kind = model[i].kind();
    if (kind != "Linear" && kind != "Conv2d") continue;
    const std::string name = model.local_name(i);
    o.overrides[name + ".weight"] = name == first ? first_layer : signs;
  }
  io::save_model(model, out, o);
  // The dense float32 file of the same net (every tensor F32), only to count its bytes.
  std::filesystem::path dense = out;
  dense += ".dense-f32.tmp";
  io::save_model_options d;
  d.input = input;
  d.defaults.encoding = io::tensor_encoding::dense_f32;
  io::save_model(model, dense, d);
  const auto file_bytes = std::filesystem::file_size(out), dense_bytes = std::filesystem::file_size(dense);
  std::filesystem::remove(dense);
  auto loaded = io::read_model<float>(out);
  const double acc = train::evaluate(*loaded.model, test, loss).accuracy;
  std::map<std::string, int> encodings;
  for (const auto& [t, e] : loaded.encodings) ++encodings[e];
  std::string enc;
  for (const auto& [e, count] : encodings) enc += fmt::format("{}{} x {}", enc.empty() ? "" : ", ", count, e);
  fmt::print("  wrote {}: {} bytes, dense float32 file of the same net {} bytes: {:.1f}x smaller ({})\n", out.string(), file_bytes,
             dense_bytes, static_cast<double>(dense_bytes) / static_cast<double>(file_bytes), enc);
  fmt::print("  reloaded with io::load_model: test accuracy {:.2f}% on {} images (trained model {:.2f}%)\n", 100 * acc, test.size(),
             100 * float_accuracy);
}

const std::vector<std::string> all_methods{"float", "bc-det", "bc-stoch", "bnn", "bnn-shift"};

std::string header(const std::string& m) {
  static const std::map<std::string, std::string> names{{"float", "float"},
                                                        {"bc-det", "BC (det.)"},
                                                        {"bc-stoch", "BC (stoch.)"},
                                                        {"bnn", "BNN"},
                                                        {"bnn-shift", "BNN (shift)"}};
  return names.at(m);
}

}  // namespace

int main(int argc, char** argv) {
  cli::args a(argc, argv,
              {{"data", "mnist,fashion"},
               {"nets", "mlp,lenet5"},
               {"methods", "float,bc-det,bc-stoch,bnn,bnn-shift"},
               {"epochs", "20"},
               {"batch", "64"},
               {"lr", "3e-3"},
               {"lr-binary", "0.1"},
               {"lr-shift", "0"},
               {"seed", "1"},
               {"hidden", "1024"},
               {"channels", "20,50,500"},
               {"bc-test", "binary"},
               {"limit", "0"},
               {"csv", "binary.csv"},
               {"quiet", "false"},
               {"rescale", "true"},
               {"recalibrate", "true"},
               {"bc-tolerance", "1.0"},
               {"bnn-tolerance", "3.0"},
               {"out", ""}},
              "binary: BinaryConnect and BNN against float on the MNIST subset and Fashion-MNIST");
  try {
    architecture arch;
    arch.hidden = a.integer("hidden");
    arch.channels.clear();
    for (const auto& c : split(a.str("channels"))) arch.channels.push_back(std::stol(c));
    if (arch.channels.size() != 3)
      throw config_error("binary: --channels needs three numbers C1,C2,F");
    const auto methods = split(a.str("methods"));
    bool packed_all_exact = true;  // an internal check: a failure is a bug, and the exit code says so
    bool saved_out = false;
    for (const auto& m : methods) {
      if (std::find(all_methods.begin(), all_methods.end(), m) == all_methods.end()) {
        throw config_error(fmt::format(
            "binary: unknown method '{}' (float, bc-det, bc-stoch, bnn, bnn-shift)", m));
      }
    }
    if (a.str("bc-test") != "binary" && a.str("bc-test") != "real") {
      throw config_error(
          fmt::format("binary: --bc-test is 'binary' or 'real', got '{}'", a.str("bc-test")));
    }
    const auto seed = static_cast<std::uint64_t>(a.integer("seed"));
    const int epochs = static_cast<int>(a.integer("epochs"));
    const train::cross_entropy<float> loss;

    // results[data][net][method] = test accuracy
    std::map<std::string, std::map<std::string, std::map<std::string, double>>> results;
    std::FILE* csv = std::fopen(a.str("csv").c_str(), "w");
    if (csv == nullptr) throw io_error(fmt::format("binary: cannot write '{}'", a.str("csv")));
    fmt::print(csv,
               "data,net,method,epochs,test_accuracy,test_error,seconds,packed_exact,packed_bytes,"
               "float_bytes\n");
    for (const auto& data_name : split(a.str("data"))) {
      auto data = cli::load_dataset(data_name);
      cli::limit(data.train, a.integer("limit"));
      cli::limit(data.test, a.integer("limit") > 0 ? std::max(a.integer("limit") / 4, 1L) : 0);
      const auto [mean, stddev] = data::input_mean_std(data.train);
      data::standardize(data.train, mean, stddev);
      data::standardize(data.test, mean, stddev);
      fmt::print("{}: {} train / {} test images\n", data_name, data.train.size(), data.test.size());
      for (const auto& net : split(a.str("nets"))) {
        arch.net = net;
        for (const auto& method : methods) {
          const bool bnn = method == "bnn" || method == "bnn-shift";
          const bool shift = method == "bnn-shift";
          auto model = build(arch, bnn, shift, seed);
          if (method != "float") {
            quant::binary_connect_options bc;
            bc.mode = method == "bc-stoch" ? quant::binarization::stochastic
                                           : quant::binarization::deterministic;
            bc.real_weights_at_test = method == "bc-stoch" && a.str("bc-test") == "real";
            bc.rescale = a.flag("rescale");
            quant::binary_connect(model, bc);
          }
          double lr = method == "float" ? a.real("lr") : a.real("lr-binary");
          if (shift && a.real("lr-shift") > 0) lr = a.real("lr-shift");
          std::unique_ptr<train::optimizer<float>> opt;
          if (shift) {
            opt = std::make_unique<quant::shift_adamax<float>>(train::adamax_options{}.with_lr(lr));
          } else {
            opt = std::make_unique<train::adam<float>>(train::adam_options{}.with_lr(lr));
          }
          train::fit_options o;
          o.epochs = epochs;
          o.batch_size = a.integer("batch");
          o.seed = seed;
          o.progress = !a.flag("quiet");
          o.learning_rate = train::cosine_lr(lr, std::max(epochs, 1), lr / 100);
          const auto start = std::chrono::steady_clock::now();
          train::fit(model, *opt, loss, data.train, o);
          if (method == "bc-stoch" && a.flag("recalibrate")) {
            recalibrate_batch_norm(model, data.train, 50, seed + 2, a.str("bc-test") == "real");
          }
          const double seconds =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          const double acc = train::evaluate(model, data.test, loss).accuracy;
          results[data_name][net][method] = acc;

          // The XNOR form of a BNN (nn::compressed) must compute exactly what the float model computes.
          std::string exact = "", packed_bytes = "", float_bytes = "";
          if (bnn) {
            const auto [first, last] = first_and_last_weight_layers(model);
            nn::sequential<float> deployed = model;
            nn::compressed::compress_bnn(deployed);  // XNOR layers, first and last float, BN + sign folded
            const tensor<float> y_float = outputs_on(model, data.test);
            const tensor<float> y_xnor = outputs_on(deployed, data.test);
            const bool same = y_float.flat() == y_xnor.flat();
            const index_t n = data.test.size();
            index_t agree = 0;
            for (index_t i = 0; i < n; ++i) agree += argmax_row(y_float, i) == argmax_row(y_xnor, i);
            const deployed_bytes db = bytes_of(model, deployed);
            std::size_t model_floats = 0;
            model.visit_parameters([&](nn::parameter<float>& p) {
              model_floats += static_cast<std::size_t>(p.size()) * sizeof(float);
            });
            exact = same ? "yes" : "NO";
            packed_all_exact &= same && agree == n;
            packed_bytes = std::to_string(db.xnor + db.floats);
            float_bytes = std::to_string(model_floats);
            fmt::print(
                "  XNOR inference form (nn::compressed, {} and {} float): outputs identical to the float model on {} test images: "
                "{}; same prediction on {} / {}; "
                "{:.1f} KiB (XNOR weights and scales {:.1f} KiB + float first and last layers, BN and biases) vs "
                "{:.1f} KiB float\n",
                first, last, n, exact, agree, n, (db.xnor + db.floats) / 1024.0, db.xnor / 1024.0, model_floats / 1024.0);
            if (!a.str("out").empty()) {
              if (saved_out) {
                throw config_error(fmt::format(
                    "binary: --out saves one BNN: train one (one --data, one --nets, one of bnn / bnn-shift in --methods)"));
              }
              saved_out = true;
              save_and_reload(model, first, a.str("out"), {mean, stddev}, data.test, loss, acc);
            }
          }
          fmt::print("{:<8} {:<7} {:<12} test accuracy {:.2f}%  ({:.0f} s)\n", data_name, net,
                     header(method), 100 * acc, seconds);
          std::fflush(stdout);
          fmt::print(csv, "{},{},{},{},{:.4f},{:.4f},{:.1f},{},{},{}\n", data_name, net, method,
                     epochs, acc, 1 - acc, seconds, exact, packed_bytes, float_bytes);
          std::fflush(csv);
        }
      }
    }
    std::fclose(csv);

    // The table, as the seed's: test error, and the difference to float in percentage points.
    fmt::print("\nTest error (difference to float in percentage points)\n{:<10} {:<8}", "data set",
               "net");
    for (const auto& m : methods) fmt::print(" {:>17}", header(m));
    fmt::print("\n");
    bool bc_ok = true, bnn_ok = true;
    int bc_compared = 0, bnn_compared = 0;  // a verdict needs a float run beside the method
    for (auto& [data_name, nets] : results) {
      for (auto& [net, row] : nets) {
        fmt::print("{:<10} {:<8}", data_name, net);
        const bool has_float = row.count("float") > 0;
        for (const auto& m : methods) {
          const double err = 100 * (1 - row[m]);
          if (!has_float || m == "float") {
            fmt::print(" {:>17}", fmt::format("{:.2f}%", err));
            continue;
          }
          const double diff = 100 * (row["float"] - row[m]);  // extra error in pp
          fmt::print(" {:>17}", fmt::format("{:.2f}% ({:+.2f})", err, diff));
          if (m.rfind("bc", 0) == 0) {
            ++bc_compared;
            if (diff > a.real("bc-tolerance") + 1e-9) bc_ok = false;
          }
          if (m.rfind("bnn", 0) == 0) {
            ++bnn_compared;
            if (diff > a.real("bnn-tolerance") + 1e-9) bnn_ok = false;
          }
        }
        fmt::print("\n");
      }
    }
    fmt::print("\nwrote {}\n", a.str("csv"));
    const auto verdict = [](int compared, bool ok) {
      return compared == 0 ? "not compared (no float run beside it)" : ok ? "yes" : "NO";
    };
    fmt::print("BinaryConnect within {} pp of float everywhere: {}\n", a.real("bc-tolerance"),
               verdict(bc_compared, bc_ok));
    fmt::print("BNN within {} pp of float everywhere: {}\n", a.real("bnn-tolerance"),
               verdict(bnn_compared, bnn_ok));
    if (!packed_all_exact) {
      fmt::print(stderr, "binary: the XNOR inference form differs from the float model (see above)\n");
      return 2;
    }
  } catch (const slimnet::error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
