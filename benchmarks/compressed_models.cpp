// Whole compressed models against their dense float models (issue 15): LeNet-5 and LeNet-300-100
// magnitude-pruned to the demo's densities, DNS-pruned LeNet-5, the int8 form of the dense LeNet-5,
// the compressed "dense" form of the unpruned LeNet-5, the magnitude LeNet-5 with its surviving
// weights clustered into 5-bit (convolutions) / 4-bit (fully connected) codebooks run through
// format::codebook, and a BNN LeNet-5 style net (32-64-512, example 07) whose binarized layers run
// on the XNOR engine (first and last layers float). One thread; the float and compressed
// models are timed side by side in one run, interleaved round by round, and the median of the
// rounds is reported (CPU time of the thread: other programs on the shared machine only add time).
//
//   compressed_models [--rounds 21] [--csv compressed_models.csv] [--profile] [--dir out] [--only NAME]
//                     [--measure (time dense vs sparse per layer when converting)] [--verbose (conversion report)]
//                     [--sweep (direct sparse vs dense convolution over densities)] [--batch 1|64 (only this batch)]
//                     [--pytorch true|false] [--python /usr/bin/python3]
//                     [--bnn-first dense-form|float (the BNN's first layer: compressed dense form, pool fused, or float)]
//                     [--bnn-fold true|false (fold the BNN's BatchNorm + sign pairs into per-channel thresholds)]
//                     [--zero-skip auto|force|off (batch-1 column form: as measured, on every sparse Linear, or not tried)]
//                     [--bnn-direct true|false (the BNN's first conv, pool and threshold as one direct pass, conv1_sign.hpp)]
//                     [--rss true|false (peak RSS columns: each row's float and compressed model in a fresh child process)]
//                     [--accuracy true|false (test accuracy of each row's float and compressed model)]
//                     [--vgg build-fashion/runs/vggf-a.pruned.safetensors (adds the VGG-style net on Fashion-MNIST)]
//   compressed_models --files out/a.slim.safetensors,out/b.slim.safetensors [--rounds 5] [--against original.safetensors]
//                     (model files: each one's bytes next to its speed-up over its decoded float model,
//                     or over the model file given by --against, e.g. the network a DeepIoT file was thinned from;
//                     "vs PyT" columns: PyTorch running that float side's dense network when it is a LeNet-5 or
//                     LeNet-300-100 (the --against original, or an unthinned file), per compressed model)
//                     [--data mnist|fashion (the test set of files whose metadata names none, e.g. the VGG
//                     vggf-a.safetensors or the BNN; default mnist)]
//
// Accuracy (--accuracy true): each row with a trained model (its file found) gets the top-1
// accuracy of its float model and of its compressed model on the WHOLE test set (the MNIST
// subset's 2,000 digits; Fashion-MNIST's 10,000 for the VGG row), in batches of 64 through the
// same forward calls, outside the timed rounds, inputs standardised as the file records (the BNN).
// The compressed model computes the same products with the same weights in another order, so the
// two agree up to float rounding (a rare flipped argmax at most); int8 also rounds activations.
// The dense-form and int8 rows use the demo's dense LeNet-5 (lenet5-mnist.safetensors) when there.
// The VGG row (--vgg FILE): nn::models::vgg_small with FILE's parameters (its metadata must say
// model vgg, data fashion), compress(format::sparse) as the LeNet rows (its BatchNorm layers stay
// float), timed on Fashion-MNIST test images; no PyTorch column (pytorch_dense_models.py has no VGG).
//
// Conversion: compress(format::sparse) with the row's batch and input shape, so at batch 64 each
// direct sparse convolution times its two batch layouts (one image at a time through the batch-1
// phase-plane kernel, or all images interleaved batch-innermost) with its fused pooling and keeps
// the faster (compressed_conv2d::choose_batch_layout; --verbose prints both times), and the Flatten
// and ReLU layers around each compressed Linear are folded into it (compress_options::fuse_linear).
//
// Inputs: real MNIST test digits (the examples' MNIST subset under $SLIMNET_DATA_DIR/mnist-subset,
// scale 1/255, 75% of the pixels exactly 0), cycled call by call (64 single digits at batch 1,
// 4 batches of 64 at batch 64) so no single image is timed; the float and compressed models see the
// same sequence. The subset's files are sorted by class (the first 200 test digits are all 0s), so
// the inputs are a stride over the WHOLE test set, not its first images: input k of n is image
// floor(k N / n) of the N (every digit about n / 10 times; the header prints the label histograms).
// Without the files: uniform random pixels (no zeros), with a warning.
// Activation sparsity (EIE): at batch 1 each sparse model is also converted with each Linear's
// fraction of nonzero inputs, overall and per input column, measured on 256 training digits (the
// same stride, over the whole training set)
// (compress_options::input_density, input_frequency); the measured choice ("zero-skip choice:"
// lines) gives a layer the column form when CSC skipping zero inputs times under 0.9 x SELL-16, or
// SELL-16 over its nonempty columns ordered by input frequency (rarely-nonzero inputs share the
// column blocks spmv_sell skips when all zero) when that does, and then a "+zero-skip" row follows. The float model
// computes every product (a dense model could skip zero inputs too), so that row's gain over the
// row above is activation sparsity alone.
// The BNN row runs its first layer as one direct pass (conv1_sign.hpp, --bnn-direct true); the
// "-dense-conv1" row after it is the same BNN with that layer in its compressed dense form (im2col +
// GEMM, pool fused, then the threshold layer), timed in the same rounds.
//
// The "vs PyTorch" column: PyTorch 1.13 running the DENSE float model of the row (one thread, same
// timing rule), measured by pytorch_dense_models.py, run before the C++ rounds with
// OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its environment only (this machine sets
// OPENBLAS_CORETYPE=Haswell, holding OpenBLAS to AVX2); the script prints the BLAS kernel chosen.
//
// With --dir holding lenet5-mnist-magnitude.safetensors / lenet5-mnist-dns.safetensors /
// lenet300-mnist-magnitude.safetensors (written by scripts/demo.sh) those real pruned models are
// used; otherwise random weights are magnitude-pruned per layer to the densities below (Han et al.
// 2015 for magnitude, the demo's DNS run for DNS), with a warning. A trained pruned fc1 differs from
// a randomly pruned one where it matters at batch 1: the always-zero border pixels get no gradient,
// so weight decay and pruning leave their columns empty (299 of 784 in the demo's file).
// The BNN row uses lenet5-mnist-bnn.safetensors (example 07's --out) when it is there, random
// +-1 weights and BatchNorm statistics otherwise: its float model is the same network with the
// binarized weights as floats (conv, BatchNorm and sign layers as trained), timed as float layers.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <sstream>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/cli.hpp"
#include "common/kernel_paths.hpp"
#include "common/peak_rss.hpp"
#include "common/pytorch.hpp"
#include "common/timing.hpp"
#include "common/weight_stats.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/io.hpp"
#include "slimnet/nn/batch_norm.hpp"
#include "slimnet/nn/compressed/binary_model.hpp"
#include "slimnet/nn/compressed/calibrate.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/nn/models.hpp"
#include "slimnet/quant/binary.hpp"

using namespace slimnet;
using namespace slimnet::bench;
namespace nc = slimnet::nn::compressed;

namespace {

enum class form { sparse, int8, codebook, xnor };

struct model_case {
  std::string name;      // "lenet5-dns"
  std::string model;     // "lenet5", "lenet300" or "bnn-lenet5"
  std::map<std::string, double> density;  // per layer; missing: dense
  std::string file;      // a real pruned model (parameters) or, for the BNN, a model file, used when it exists
  form kind = form::sparse;
  std::map<std::string, int> codebook_bits;  // form::codebook: bits per layer (2^bits - 1 centroids + exact zero)
  std::string data = "mnist";  // the test set of the accuracy columns and the timing inputs: "mnist" (subset) or "fashion"
};

/// Example 07's BNN LeNet-5 style net: conv 5x5 (c1) - maxpool 2 - BN - sign - conv 5x5 (c2) -
/// maxpool 2 - BN - sign - fc f - BN - sign - fc 10 - BN, with random +-1 weights and BatchNorm
/// statistics (a stand-in when its trained file is not there: the work per call is the same).
nn::sequential<float> bnn_lenet5(rng& gen, index_t c1 = 32, index_t c2 = 64, index_t f = 512) {
  nn::sequential<float> m;
  m.add("conv1", nn::conv2d<float>(1, c1, 5));
  m.add("pool1", nn::max_pool2d<float>(2));
  m.add("bn1", nn::batch_norm<float>(c1, 2, {}));
  m.add("act1", quant::sign_activation<float>());
  m.add("conv2", nn::conv2d<float>(c1, c2, 5));
  m.add("pool2", nn::max_pool2d<float>(2));
  m.add("bn2", nn::batch_norm<float>(c2, 2, {}));
  m.add("act2", quant::sign_activation<float>());
  m.add("flatten", nn::flatten<float>());
  m.add("fc1", nn::linear<float>(c2 * 16, f));
  m.add("bn3", nn::batch_norm<float>(f, 1, {}));
  m.add("act3", quant::sign_activation<float>());
  m.add("fc2", nn::linear<float>(f, 10));
  m.add("bn4", nn::batch_norm<float>(10, 1, {}));
  m.reset_parameters(gen);
  m.visit_parameters([&](nn::parameter<float>& p) {
    const std::string& n = p.name();
    auto& v = p.value();
    if (n.find(".weight") != std::string::npos && n.rfind("bn", 0) != 0) {
      for (index_t i = 0; i < v.size(); ++i) v[i] = v[i] < 0 ? -1.0f : 1.0f;
    } else if (n.rfind("bn", 0) == 0) {
      const bool variance = n.find("running_var") != std::string::npos;
      for (index_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(variance ? gen.uniform(0.25, 2) : gen.uniform(-1, 1));
    }
  });
  return m;
}

/// Clusters each listed layer's nonzero weights into 2^bits - 1 centroids (1-d k-means, linear
/// initialisation over [min, max] as Han et al. 2016, 30 Lloyd steps); zeros stay exactly zero, so
/// the layer holds at most 2^bits distinct values (format::codebook then stores bits per weight).
void codebook_quantize(nn::sequential<float>& m, const std::map<std::string, int>& bits) {
  for (const auto& [layer, b] : bits) {
    m.find(layer).visit_parameters([&](nn::parameter<float>& p) {
      if (p.name() != layer + ".weight") return;
      auto& v = p.value();
      std::vector<double> x;
      for (index_t i = 0; i < v.size(); ++i)
        if (v[i] != 0.0f) x.push_back(v[i]);
      if (x.empty()) return;
      const std::size_t k = std::min<std::size_t>((std::size_t{1} << b) - 1, x.size());
      const auto [lo, hi] = std::minmax_element(x.begin(), x.end());
      std::vector<double> c(k);
      for (std::size_t j = 0; j < k; ++j) c[j] = *lo + (*hi - *lo) * (k == 1 ? 0.5 : static_cast<double>(j) / static_cast<double>(k - 1));
      std::vector<std::size_t> a(x.size());
      for (int step = 0; step < 30; ++step) {
        std::vector<double> sum(k, 0.0), count(k, 0.0);
        for (std::size_t i = 0; i < x.size(); ++i) {
          std::size_t best = 0;
          for (std::size_t j = 1; j < k; ++j)
            if (std::abs(x[i] - c[j]) < std::abs(x[i] - c[best])) best = j;
          a[i] = best;
          sum[best] += x[i];
          count[best] += 1;
        }
        for (std::size_t j = 0; j < k; ++j)
          if (count[j] > 0) c[j] = sum[j] / count[j];
      }
      std::size_t next = 0;
      for (index_t i = 0; i < v.size(); ++i)
        if (v[i] != 0.0f) {
          const float q = static_cast<float>(c[a[next++]]);
          v[i] = q == 0.0f ? std::numeric_limits<float>::min() : q;  // a centroid of exactly 0 would merge with the pruned zeros
        }
    });
  }
}

/// Zeros all but the largest-magnitude `density` of each listed layer's weights.
void magnitude_prune(nn::sequential<float>& m, const std::map<std::string, double>& density) {
  for (const auto& [layer, d] : density) {
    nn::parameter<float>* w = nullptr;
    m.find(layer).visit_parameters([&](nn::parameter<float>& p) {
      if (p.name() == layer + ".weight") w = &p;
    });
    auto& v = w->value();
    std::vector<float> mags(static_cast<std::size_t>(v.size()));
    for (index_t i = 0; i < v.size(); ++i) mags[static_cast<std::size_t>(i)] = std::abs(v[i]);
    const auto keep = static_cast<std::size_t>(std::llround(d * static_cast<double>(mags.size())));
    if (keep >= mags.size()) continue;
    std::nth_element(mags.begin(), mags.begin() + static_cast<std::ptrdiff_t>(mags.size() - keep - 1), mags.end());
    const float threshold = mags[mags.size() - keep - 1];  // keep strictly larger magnitudes
    for (index_t i = 0; i < v.size(); ++i)
      if (std::abs(v[i]) <= threshold) v[i] = 0;
  }
}



tensor<float> random_input(const std::string& model, index_t batch, rng& gen) {
  tensor<float> x({batch, 1, 28, 28});
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(gen.uniform(0, 1));
  (void)model;
  return x;
}

/// The MNIST subset's images (N, 1, 28, 28) in [0, 1], or nothing (with a warning) when its files
/// are missing.
struct mnist_images {
  tensor<float> train, test;
  std::vector<std::int32_t> train_labels, test_labels;
  bool real = false;
};

mnist_images load_mnist_images(const std::string& name = "mnist") {
  mnist_images m;
  try {
    auto split = cli::load_dataset(name);
    m.train = std::move(split.train.inputs);
    m.test = std::move(split.test.inputs);
    m.train_labels = std::move(split.train.labels);
    m.test_labels = std::move(split.test.labels);
    m.real = m.train.size() > 0 && m.test.size() > 0 && m.test.dim(0) >= 256;
  } catch (const std::exception& e) {
    fmt::print("WARNING: {} not found ({}): timing on random inputs (no zero pixels), activation sparsity and accuracy not measured\n",
               name == "mnist" ? "MNIST" : name, e.what());
  }
  return m;
}

/// Top-1 accuracy of `m` on every image of `images` (N, C, H, W) against `labels`, in batches of
/// `batch` through the same forward call the timing uses (the last batch holds the N mod batch
/// left), inputs standardised as the model was trained when `input` says so.
double test_accuracy(nn::sequential<float>& m, const tensor<float>& images, const std::vector<std::int32_t>& labels,
                     const std::optional<io::input_standardisation>& input, index_t batch = 64) {
  const index_t n = images.dim(0), per = images.size() / n;
  if (static_cast<index_t>(labels.size()) != n)
    throw config_error(fmt::format("compressed_models: {} test images but {} labels", n, labels.size()));
  index_t correct = 0;
  tensor<float> y;
  for (index_t start = 0; start < n; start += batch) {
    const index_t b = std::min(batch, n - start);
    tensor<float> x({b, images.dim(1), images.dim(2), images.dim(3)});
    std::copy_n(images.data() + start * per, b * per, x.data());
    if (input)
      for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((x[i] - input->mean) / input->std);
    m.forward(x, y, {});
    const index_t classes = y.size() / b;
    for (index_t i = 0; i < b; ++i) {
      const float* row = y.data() + i * classes;
      const auto best = static_cast<std::int32_t>(std::max_element(row, row + classes) - row);
      correct += best == labels[static_cast<std::size_t>(start + i)] ? 1 : 0;
    }
  }
  return static_cast<double>(correct) / static_cast<double>(n);
}

/// "97.55%" or "n/a" (NaN: random weights, no test set, or --accuracy false).
std::string percent_or_na(double a) { return std::isnan(a) ? std::string("n/a") : fmt::format("{:.2f}%", 100 * a); }

/// Which of `available` images the n = batch * count inputs take: a stride over the whole set,
/// input k is image floor(k * available / n) (the MNIST subset is sorted by class, so its first n
/// images would be one or two digits). Empty when there are fewer than n images.
std::vector<index_t> strided_indices(index_t available, index_t batch, index_t count) {
  const index_t n = batch * count;
  std::vector<index_t> idx;
  if (available < n) return idx;
  for (index_t k = 0; k < n; ++k) idx.push_back(k * available / n);
  return idx;
}

/// `count` inputs of `batch` images of `images`, spread over the whole set (strided_indices; random
/// pixels when there are not enough images).
std::vector<tensor<float>> image_batches(const tensor<float>& images, index_t batch, index_t count, rng& gen) {
  const std::vector<index_t> idx = strided_indices(images.size() == 0 ? 0 : images.dim(0), batch, count);
  std::vector<tensor<float>> out;
  for (index_t b = 0; b < count; ++b) {
    if (idx.empty()) {
      out.push_back(random_input("", batch, gen));
      continue;
    }
    tensor<float> x({batch, 1, 28, 28});
    for (index_t i = 0; i < batch; ++i)
      std::copy_n(images.data() + idx[static_cast<std::size_t>(b * batch + i)] * 784, 784, x.data() + i * 784);
    out.push_back(std::move(x));
  }
  return out;
}

/// "0:7 1:7 ... 9:6": how many of the inputs strided_indices picks show each digit.
std::string label_histogram(const std::vector<std::int32_t>& labels, index_t batch, index_t count) {
  std::map<std::int32_t, int> h;
  for (index_t i : strided_indices(static_cast<index_t>(labels.size()), batch, count)) ++h[labels[static_cast<std::size_t>(i)]];
  std::string s;
  for (const auto& [label, n] : h) s += fmt::format("{}{}:{}", s.empty() ? "" : " ", label, n);
  return s.empty() ? "none (no labels)" : s;
}

/// Per-layer median times of a Sequential's forward at the input x (each layer on its own input).
std::vector<std::pair<std::string, double>> profile_layers(nn::sequential<float>& m, const tensor<float>& x, int rounds) {
  tensor<float> y;
  m.forward(x, y, {});
  std::vector<std::function<void()>> fs;
  std::vector<tensor<float>> outs(m.size());
  std::vector<std::string> names;
  for (std::size_t i = 0; i < m.size(); ++i) {
    const tensor<float>* in = i == 0 ? &x : &m.activation(i - 1);
    fs.push_back([&m, i, in, &outs] { m[i].forward(*in, outs[i], {}); });
    names.push_back(m.local_name(i) + " " + m[i].kind());
  }
  const auto t = median_side_by_side(fs, rounds, 1e-3);
  std::vector<std::pair<std::string, double>> r;
  for (std::size_t i = 0; i < names.size(); ++i) r.emplace_back(names[i], t[i]);
  return r;
}

/// Direct sparse convolution against the dense compressed form (im2col + GEMM) for LeNet-5's two
/// convolutions at batch 1 and 64 over densities: where the dense-or-sparse choice should switch.
void conv_sweep(int rounds) {
  struct geometry {
    const char* name;
    index_t in, out, h;
  };
  fmt::print("\ndirect sparse convolution / dense im2col convolution (time ratio < 1: sparse faster)\n{:<6} {:>5}", "conv", "batch");
  const double densities[] = {0.03, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0};
  for (double d : densities) fmt::print(" {:>6.0f}%", 100 * d);
  fmt::print("\n");
  for (const geometry g : {geometry{"conv1", 1, 20, 28}, geometry{"conv2", 20, 50, 12}}) {
    for (index_t batch : {index_t{1}, index_t{64}}) {
      fmt::print("{:<6} {:>5}", g.name, batch);
      for (double d : densities) {
        nn::conv2d<float> conv(g.in, g.out, 5);
        rng gen(3);
        conv.reset_parameters(gen);
        auto& w = conv.weight().value();
        for (index_t i = 0; i < w.size(); ++i)
          if (!(gen.uniform() < d)) w[i] = 0;
        nc::sparse_options so;
        so.force_sparse = true;
        auto sparse = nc::to_sparse(conv, so);
        nc::compressed_conv2d<float> dense(std::make_unique<nc::dense_engine<float>>(w.matrix(), conv.bias()->value().flat()), g.in,
                                           conv.window());
        sparse.fuse({false, 2, 2});
        dense.fuse({false, 2, 2});
        tensor<float> x({batch, g.in, g.h, g.h}), y1, y2;
        for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(gen.uniform(-1, 1));
        const auto t = median_side_by_side({[&] { sparse.forward(x, y1, {}); }, [&] { dense.forward(x, y2, {}); }}, rounds, 1e-3);
        fmt::print(" {:>7.2f}", t[0] / t[1]);
      }
      fmt::print("\n");
    }
  }
}

/// --files a,b: each model file (io::save_model, e.g. the demo's *.slim.safetensors) against its own
/// float model (the file decoded), side by side at batch 1 and 64: files with sign-bit layers (BNNs)
/// deployed through compress_bnn, the others through compress(format::sparse) planned for the batch
/// (each layer on the kernel its sparsity calls for). Prints each file's bytes next to its speed-ups.
/// With `against` (a model file) the float side is that model instead: a DeepIoT-thinned file
/// against the original dense network it was thinned from (max|diff| is then not printed: the two
/// are different networks).
struct decoded_file {
  nn::sequential<float> model;
  bool sign_bits = false;  ///< holds sign-bit layers (a BNN)
  std::string data;  ///< the data set its metadata names ("" when it names none)
  std::optional<io::input_standardisation> input;
};

decoded_file decode_file(const std::string& file) {
  io::load_model_options lo;
  lo.decode = true;
  const auto loaded = io::read_model<float>(file, lo);
  const auto* seq = dynamic_cast<const nn::sequential<float>*>(loaded.model.get());
  if (seq == nullptr) throw config_error(fmt::format("compressed_models: {} does not hold a Sequential", file));
  decoded_file out{*seq, false, "", std::nullopt};
  for (const auto& [tensor_name, encoding] : loaded.encodings) out.sign_bits |= encoding == "sign_bits";
  if (const auto it = loaded.metadata.find("data"); it != loaded.metadata.end()) out.data = it->second;
  out.input = loaded.input;
  return out;
}

/// The name pytorch_dense_models.py gives the dense network of `m`'s architecture ("lenet5" or
/// "lenet300": the same parameter shapes in the same order as cli::make_model's), or "" when neither
/// (a DeepIoT-thinned file has other shapes: its dense peer is the --against original).
std::string pytorch_name_of(nn::sequential<float>& m) {
  auto shapes = [](nn::sequential<float>& s) {
    std::vector<shape_t> out;
    s.visit_parameters([&](nn::parameter<float>& p) { out.push_back(p.value().shape()); });
    return out;
  };
  const auto mine = shapes(m);
  for (const char* name : {"lenet5", "lenet300"}) {
    rng gen(1);
    nn::sequential<float> reference = cli::make_model(name, gen, "compressed_models");
    if (shapes(reference) == mine) return name;
  }
  return "";
}

void file_rows(const std::string& list, int rounds, const std::string& against, const cli::args& args) {
  // Test sets by name, loaded when a file first needs one (its metadata's "data": mnist or fashion).
  std::map<std::string, mnist_images> test_sets;
  auto test_set = [&](const std::string& name) -> const mnist_images& {
    if (test_sets.count(name) == 0) test_sets[name] = load_mnist_images(name);
    return test_sets[name];
  };
  std::optional<decoded_file> original_file;
  std::optional<nn::sequential<float>> original;
  std::uint64_t original_dense_bytes = 0;  // the --against network's float32 weight bytes
  if (!against.empty()) {
    original_file = decode_file(against);
    original = original_file->model;
    original_dense_bytes = io::describe_model_file(against).dense_f32_bytes;
    fmt::print("float side of every row: {} (decoded)\n", against);
  }
  // The "vs PyTorch dense" columns: PyTorch running the dense network of the float side's
  // architecture (the --against original, or each file's own shape when it is an unthinned
  // LeNet-5 / LeNet-300-100), against the compressed slimnet model of the row.
  std::vector<std::string> files;
  {
    std::stringstream in(list);
    std::string file;
    while (std::getline(in, file, ','))
      if (!file.empty()) files.push_back(file);
  }
  std::map<std::string, std::string> torch_name;  // file -> PyTorch model name ("" none)
  std::vector<std::string> torch_models;
  for (const auto& file : files) {
    nn::sequential<float> float_side = original ? *original : decode_file(file).model;
    torch_name[file] = pytorch_name_of(float_side);
    if (!torch_name[file].empty() && std::find(torch_models.begin(), torch_models.end(), torch_name[file]) == torch_models.end())
      torch_models.push_back(torch_name[file]);
  }
  std::map<std::pair<std::string, index_t>, double> pytorch;
#if defined(SLIMNET_BENCH_SOURCE_DIR)
  if (args.flag("pytorch") && !torch_models.empty())
    pytorch = pytorch_dense_latencies(SLIMNET_BENCH_SOURCE_DIR, args.str("python"), rounds, torch_models, {1, 64});
#else
  (void)args;
#endif
  if (args.flag("accuracy"))
    fmt::print("accuracy columns: top-1 on the whole test set the file's metadata names, else --data {} (MNIST subset 2,000 / Fashion-MNIST "
               "10,000), batches of 64: the float side, and the compressed model converted for batch 64 (\"b1-plan/b64-plan\" when the "
               "batch-1 conversion differs)\n",
               args.str("data"));
  fmt::print("{:<46} {:>9} {:>12} {:>8} {:>11} {:>11} {:>10} {:>9} {:>11} {:>11} {:>11} {:>11} {:>8} {:>8}\n", "model file", "bytes",
             "dense f32 B", "smaller", "batch 1", "batch 64", "max|diff|", "PyTorch", "PyT b1 us", "vs PyT b1", "PyT b64 us", "vs PyT b64",
             "fl. acc", "co. acc");
  for (const auto& file : files) {
    const io::model_file_summary summary = io::describe_model_file(file);
    const decoded_file decoded = decode_file(file);
    const nn::sequential<float>* seq = &decoded.model;
    const bool bnn = decoded.sign_bits;
    double speedup[2] = {NAN, NAN}, compressed_s[2] = {NAN, NAN}, diff = 0, compressed_accuracy[2] = {NAN, NAN}, float_accuracy = NAN;
    // A file that names no data set (io::save_model keeps only the caller's metadata) is taken
    // to be for --data: a VGG file for Fashion-MNIST evaluated on MNIST digits would score ~10%.
    const std::string data_name = decoded.data.empty() ? args.str("data") : decoded.data;
    const mnist_images* data = args.flag("accuracy") ? &test_set(data_name) : nullptr;
    if (data != nullptr && !data->real) data = nullptr;
    if (data != nullptr) {
      // The float side: the decoded file, or the --against network (in its own input space).
      nn::sequential<float> float_side(original ? *original : *seq);
      float_accuracy = test_accuracy(float_side, data->test, data->test_labels, original ? original_file->input : decoded.input);
    }
    for (int b = 0; b < 2; ++b) {
      const index_t batch = b == 0 ? 1 : 64;
      nn::sequential<float> float_model(original ? *original : *seq), compressed(*seq);
      if (bnn) {
        nc::compress_bnn(compressed);
      } else {
        nc::compress_options o;
        o.sparse.batch = batch;
        o.input_shape = {batch, 1, 28, 28};
        nc::compress(compressed, nc::format::sparse, o);
      }
      if (data != nullptr) compressed_accuracy[b] = test_accuracy(compressed, data->test, data->test_labels, decoded.input);
      rng xg(7);
      const tensor<float> x = random_input("", batch, xg);
      tensor<float> yf, yc;
      float_model.forward(x, yf, {});
      compressed.forward(x, yc, {});
      if (original) {
        diff = NAN;
      } else {
        for (index_t i = 0; i < yf.size(); ++i) diff = std::max(diff, static_cast<double>(std::abs(yf[i] - yc[i])));
      }
      const auto t = median_side_by_side({[&] { float_model.forward(x, yf, {}); }, [&] { compressed.forward(x, yc, {}); }}, rounds);
      speedup[b] = t[0] / t[1];
      compressed_s[b] = t[1];
    }
    double pt_s[2] = {NAN, NAN};
    for (int b = 0; b < 2; ++b) {
      const auto it = pytorch.find({torch_name[file], b == 0 ? 1 : 64});
      if (it != pytorch.end()) pt_s[b] = it->second;
    }
    const std::uint64_t dense_bytes = original ? original_dense_bytes : summary.dense_f32_bytes;
    const std::string co_acc = compressed_accuracy[0] == compressed_accuracy[1] || std::isnan(compressed_accuracy[0])
                                   ? percent_or_na(compressed_accuracy[1])
                                   : percent_or_na(compressed_accuracy[0]) + "/" + percent_or_na(compressed_accuracy[1]);
    fmt::print("{:<46} {:>9} {:>12} {:>7.1f}x {:>10.2f}x {:>10.2f}x {:>10.2e} {:>9} {:>11.1f} {:>10.2f}x {:>11.1f} {:>10.2f}x {:>8} {:>8}\n", file,
               summary.file_bytes, dense_bytes, static_cast<double>(dense_bytes) / static_cast<double>(summary.file_bytes), speedup[0],
               speedup[1], diff, torch_name[file].empty() ? "-" : torch_name[file], 1e6 * pt_s[0], pt_s[0] / compressed_s[0], 1e6 * pt_s[1],
               pt_s[1] / compressed_s[1], percent_or_na(float_accuracy), co_acc);
  }
}

/// The rows of the benchmark.
std::vector<model_case> all_cases() {
  return {
      {"lenet5-dense-form", "lenet5", {}, "lenet5-mnist.safetensors", form::sparse, {}},
      {"lenet5-magnitude", "lenet5", {{"conv1", 0.66}, {"conv2", 0.12}, {"fc1", 0.08}, {"fc2", 0.19}}, "lenet5-mnist-magnitude.safetensors", form::sparse, {}},
      {"lenet5-dns", "lenet5", {{"conv1", 0.14}, {"conv2", 0.03}, {"fc1", 0.005}, {"fc2", 0.04}}, "lenet5-mnist-dns.safetensors", form::sparse, {}},
      {"lenet300-magnitude", "lenet300", {{"fc1", 0.08}, {"fc2", 0.09}, {"fc3", 0.26}}, "lenet300-mnist-magnitude.safetensors", form::sparse, {}},
      {"lenet5-int8", "lenet5", {}, "lenet5-mnist.safetensors", form::int8, {}},
      {"lenet5-magnitude-codebook", "lenet5", {{"conv1", 0.66}, {"conv2", 0.12}, {"fc1", 0.08}, {"fc2", 0.19}}, "lenet5-mnist-magnitude.safetensors",
       form::codebook, {{"conv1", 5}, {"conv2", 5}, {"fc1", 4}, {"fc2", 4}}},
      {"lenet5-bnn", "bnn-lenet5", {}, "lenet5-mnist-bnn.safetensors", form::xnor, {}},
  };
}

/// The rows of this run: all_cases(), then with --vgg FILE the VGG-style net (nn::models::vgg_small,
/// make_model("vgg")) on Fashion-MNIST with that file's parameters (e.g. the magnitude-pruned
/// vggf-a.pruned.safetensors), converted with compress(format::sparse) as the LeNet rows are.
std::vector<model_case> cases_of(const cli::args& args) {
  std::vector<model_case> cases = all_cases();
  if (!args.str("vgg").empty()) {
    // Relative to the working directory, not --dir (dir / an absolute path is that path); asked
    // for by name, so a missing file is an error rather than a row of random weights.
    const std::filesystem::path file = std::filesystem::absolute(args.str("vgg"));
    if (!std::filesystem::exists(file)) throw config_error(fmt::format("compressed_models: --vgg {}: no such file", args.str("vgg")));
    model_case vgg{"vgg-fashion", "vgg", {}, file.string(), form::sparse, {}};
    vgg.data = "fashion";
    cases.push_back(vgg);
  }
  return cases;
}

/// How a row's float model came to be: trained (its file loaded) or random, and the input
/// standardisation it was trained with (the file's metadata or model architecture), if any.
struct model_origin {
  bool trained = false;
  std::optional<io::input_standardisation> input;
};

/// The float model of a row: its trained file from `dir` when there, random weights (pruned to
/// the row's densities, with a warning when a file was expected) otherwise; `source` says which.
nn::sequential<float> float_model_of(const model_case& c, const std::filesystem::path& dir, std::string& source,
                                     model_origin* origin = nullptr) {
  model_origin o;
  rng gen(42);
  nn::sequential<float> float_model = c.model == "bnn-lenet5" ? bnn_lenet5(gen) : cli::make_model(c.model, gen, "compressed_models");
  source = c.kind == form::xnor ? "random +-1 weights" : "random, magnitude-pruned per layer";
  if (!c.file.empty() && std::filesystem::exists(dir / c.file)) {
    if (c.kind == form::xnor) {
      // A model file (io::save_model): decoded to float layers, the same network timed as floats.
      io::load_model_options lo;
      lo.decode = true;
      auto loaded = io::read_model<float>(dir / c.file, lo);
      auto* seq = dynamic_cast<nn::sequential<float>*>(loaded.model.get());
      if (seq == nullptr) throw config_error(fmt::format("compressed_models: {} does not hold a Sequential", (dir / c.file).string()));
      float_model = nn::sequential<float>(*seq);
      o.input = loaded.input;
    } else {
      // A parameter file written by an example: its metadata must name this model and data set
      // (a VGG file for CIFAR, or a LeNet-5 trained on Fashion-MNIST, would give a wrong accuracy),
      // and may record the input standardisation it was trained with.
      const auto meta = io::read_safetensors<float>(dir / c.file).metadata;
      cli::require_model_and_data(meta, "model", (dir / c.file).string(), c.model, c.data, "compressed_models");
      io::load_parameters(float_model, dir / c.file);
      const auto mean = meta.find("input_mean");
      const auto stddev = meta.find("input_std");
      if (mean != meta.end() && stddev != meta.end()) o.input = io::input_standardisation{std::stod(mean->second), std::stod(stddev->second)};
    }
    source = (dir / c.file).string();
    o.trained = true;
  } else {
    if (!c.file.empty())
      fmt::print("WARNING: {} not found: {} uses random weights{} (not a trained model)\n", (dir / c.file).string(), c.name, [&] {
        std::string d;
        for (const auto& [layer, v] : c.density) d += fmt::format("{}{}={}", d.empty() ? " magnitude-pruned to " : ",", layer, v);
        return d;
      }());
    magnitude_prune(float_model, c.density);
  }
  if (c.kind == form::codebook) {
    codebook_quantize(float_model, c.codebook_bits);
    std::string bits;
    for (const auto& [layer, b] : c.codebook_bits) bits += fmt::format("{}{}={}", bits.empty() ? "" : ",", layer, b);
    source += ", codebook bits " + bits;
  }
  if (c.density.empty() && !o.trained && c.kind != form::xnor) source = "random, dense";
  if (origin != nullptr) *origin = o;
  return float_model;
}

/// The --rss-child mode: in this fresh process, the row `name`'s float model built (its file
/// loaded), with `which` == "compressed" converted as the benchmark converts it for `batch`, then
/// 16 forward passes on random inputs of that batch; prints the peak RSS. "idle" builds nothing.
int rss_child(const cli::args& args, const std::filesystem::path& dir) {
  std::stringstream in(args.str("rss-child"));
  std::string name, batch_text, which;
  std::getline(in, name, ',');
  std::getline(in, batch_text, ',');
  std::getline(in, which, ',');
  if (which == "idle") {
    print_peak_rss();
    return 0;
  }
  const index_t batch = std::stol(batch_text);
  for (const auto& c : cases_of(args)) {
    if (c.name != name) continue;
    std::string source;
    nn::sequential<float> model = float_model_of(c, dir, source);
    if (which == "compressed") {
      if (c.kind == form::xnor) {
        nc::bnn_options bo;
        bo.dense_first = args.str("bnn-first") == "dense-form";
        bo.fold = args.flag("bnn-fold");
        bo.direct_first = args.flag("bnn-direct");
        nc::compress_bnn(model, bo);
      } else {
        nc::compress_options o;
        o.sparse.batch = batch;
        o.sparse.measure = args.flag("measure");
        o.input_shape = {batch, 1, 28, 28};
        nc::compress(model, c.kind == form::int8 ? nc::format::int8 : c.kind == form::codebook ? nc::format::codebook : nc::format::sparse, o);
      }
    }
    rng xg(7);
    const tensor<float> x = random_input("", batch, xg);
    tensor<float> y;
    for (int r = 0; r < 16; ++r) model.forward(x, y, {});
    print_peak_rss();
    return 0;
  }
  fmt::print("compressed_models --rss-child: no row named {}\n", name);
  return 1;
}

}  // namespace

int run(int argc, char** argv) {
  cli::args args(argc, argv, {{"rounds", "21"}, {"csv", "compressed_models.csv"}, {"profile", "false"}, {"dir", "out"}, {"only", ""}, {"measure", "false"}, {"verbose", "false"}, {"sweep", "false"}, {"batch", "0"}, {"pytorch", "true"}, {"python", "/usr/bin/python3"}, {"bnn-first", "dense-form"}, {"bnn-fold", "true"}, {"bnn-direct", "true"}, {"zero-skip", "auto"}, {"files", ""}, {"against", ""}, {"rss", "true"}, {"rss-child", ""}, {"accuracy", "true"}, {"vgg", ""}, {"data", "mnist"}},
                 "compressed_models: whole compressed models against their float models, one thread");
  const int rounds = static_cast<int>(args.integer("rounds"));
  if (!args.str("files").empty()) {
    fmt::print("compressed_models --files: one thread, {} rounds, median per call (thread CPU time), load average {}\n", rounds,
               load_average());
    fmt::print("{}\n", kernels::describe_cpu());
    file_rows(args.str("files"), rounds, args.str("against"), args);
    fmt::print("kernel paths that ran (calls): {}\n", kernel_paths_ran());
    return 0;
  }
  const std::filesystem::path dir = args.str("dir");
  if (!args.str("rss-child").empty()) return rss_child(args, dir);
  const mnist_images mnist = load_mnist_images();
  const std::vector<model_case> cases = cases_of(args);
  // Fashion-MNIST (60,000 / 10,000) only when a row needs it (--vgg).
  mnist_images fashion;
  if (std::any_of(cases.begin(), cases.end(), [](const model_case& c) { return c.data == "fashion"; })) fashion = load_mnist_images("fashion");
  fmt::print("compressed_models: one thread, {} rounds, median per call (thread CPU time), load average {}\n{}\n", rounds,
             load_average(), kernels::describe_cpu());
  if (mnist.real)
    fmt::print("inputs: a stride over the whole MNIST test set (input k of n is image floor(k N / n), N = {}; the files are sorted by "
               "class); labels of the batch-1 inputs (n = 64) {}; of the batch-64 inputs (n = 256) {}; input statistics: the same "
               "stride over the {} training digits (n = 256) {}\n",
               mnist.test.dim(0), label_histogram(mnist.test_labels, 1, 64), label_histogram(mnist.test_labels, 64, 4),
               mnist.train.dim(0), label_histogram(mnist.train_labels, 256, 1));
  if (fashion.real)
    fmt::print("VGG row inputs: the same stride over the {} Fashion-MNIST test images; labels of the batch-1 inputs {}; of the batch-64 "
               "inputs {}\n",
               fashion.test.dim(0), label_histogram(fashion.test_labels, 1, 64), label_histogram(fashion.test_labels, 64, 4));
  // Peak RSS columns: each row's float and compressed model run in a fresh child process (--rss-child).
  const std::string child_flags =
      fmt::format("--dir '{}' --bnn-first {} --bnn-fold {} --bnn-direct {} --measure {}{}", dir.string(), args.str("bnn-first"),
                  args.str("bnn-fold"), args.str("bnn-direct"), args.str("measure"),
                  args.str("vgg").empty() ? std::string() : fmt::format(" --vgg '{}'", args.str("vgg")));
  std::optional<long> idle_kib;
  if (args.flag("rss")) {
    idle_kib = child_peak_rss_kib("--rss-child idle,1,idle " + child_flags);
    fmt::print("peak RSS columns: a fresh process loads the row's model, converts it (compressed) and runs 16 forward passes; an idle one "
               "(nothing loaded) peaks at {:.1f} MiB, included in every figure\n",
               idle_kib ? *idle_kib / 1024.0 : NAN);
  }
  std::map<std::pair<std::string, index_t>, double> pytorch;
  std::vector<std::string> torch_models;
  for (const auto& c : cases)
    if ((args.str("only").empty() || c.name.find(args.str("only")) != std::string::npos) && c.model != "vgg" &&
        std::find(torch_models.begin(), torch_models.end(), c.model) == torch_models.end())
      torch_models.push_back(c.model);  // pytorch_dense_models.py has no VGG: that row's PyTorch columns stay n/a
#if defined(SLIMNET_BENCH_SOURCE_DIR)
  if (args.flag("pytorch") && !torch_models.empty())
    pytorch = pytorch_dense_latencies(SLIMNET_BENCH_SOURCE_DIR, args.str("python"), rounds, torch_models, {1, 64});
#endif
  if (args.flag("accuracy"))
    fmt::print("accuracy columns: top-1 on the whole test set (MNIST subset: 2,000 digits; Fashion-MNIST: 10,000), batches of 64, float "
               "model and the compressed model of the row (converted for that row's batch); n/a for random weights\n");
  fmt::print("{:<26} {:>5} {:>8} {:>11} {:>11} {:>8} {:>11} {:>8} {:>11} {:>11} {:>8} {:>10} {:>9} {:>9} {:>7} {:>7}  {}\n", "model", "batch",
             "weights%", "float us", "compr. us", "speedup", "PyTorch us", "vs PyT.", "float B", "compr. B", "B/nnz", "max|diff|", "fl. RSS",
             "co. RSS", "fl. acc", "co. acc", "weights from");
  std::ofstream csv(args.str("csv"));
  csv << "model,batch,weights_kept,float_seconds,compressed_seconds,speedup,pytorch_dense_seconds,speedup_vs_pytorch_dense,"
         "float_weight_bytes,compressed_weight_bytes,sparse_bytes_per_nonzero,max_abs_diff,peak_rss_float_kib,peak_rss_compressed_kib,"
         "float_accuracy,compressed_accuracy,source\n";
  for (const auto& c : cases) {
    if (!args.str("only").empty() && c.name.find(args.str("only")) == std::string::npos) continue;
    std::string source;
    model_origin origin;
    nn::sequential<float> float_model = float_model_of(c, dir, source, &origin);
    const weight_stats fs = stats_of(float_model);
    const mnist_images& data = c.data == "fashion" ? fashion : mnist;
    // Accuracy on the whole test set, outside the timed rounds: the float model once per row, each
    // compressed model (converted for its batch) below.
    const bool accuracy = args.flag("accuracy") && origin.trained && data.real;
    const double float_accuracy = accuracy ? test_accuracy(float_model, data.test, data.test_labels, origin.input) : NAN;
    for (index_t batch : {index_t{1}, index_t{64}}) {
      if (args.integer("batch") > 0 && batch != args.integer("batch")) continue;
      nn::sequential<float> compressed = float_model;
      nc::compress_options o;
      o.sparse.batch = batch;
      o.sparse.measure = args.flag("measure");
      o.input_shape = {batch, 1, 28, 28};
      nc::format f = nc::format::sparse;
      if (c.kind == form::int8) f = nc::format::int8;
      if (c.kind == form::codebook) f = nc::format::codebook;
      std::vector<std::string> report;
      // With the direct first layer, the same BNN with its first layer in the dense form instead is
      // timed in the same run: the "-dense-conv1" row (what the direct pass gains, side by side).
      std::optional<nn::sequential<float>> alternative;
      std::string alternative_name;
      if (c.kind == form::xnor) {
        // XNOR layers; the first (real-valued input) and last layers float, the first in its compressed
        // dense form with its max-pool fused, or (--bnn-direct) one direct pass with the pool and the
        // threshold after it; BatchNorm + sign pairs folded (binary_model.hpp).
        nc::bnn_options bo;
        bo.dense_first = args.str("bnn-first") == "dense-form";
        bo.fold = args.flag("bnn-fold");
        bo.direct_first = args.flag("bnn-direct");
        report = nc::compress_bnn(compressed, bo);
        if (bo.direct_first && bo.dense_first && bo.fold) {
          alternative = float_model;
          bo.direct_first = false;
          nc::compress_bnn(*alternative, bo);
          alternative_name = c.name + "-dense-conv1";
        }
      } else {
        report = nc::compress(compressed, f, o);
      }
      if (args.flag("verbose"))
        for (const auto& line : report) fmt::print("  {}\n", line);
      rng xg(7);
      // Real digits strided over the whole test set, cycled call by call (each model has its own
      // cursor over the same sequence).
      const std::vector<tensor<float>> xs = image_batches(data.test, batch, batch == 1 ? 64 : 4, xg);
      const tensor<float>& x = xs.front();
      const std::string input_note =
          data.real ? fmt::format("; {} test images strided over the test set, cycled ({} inputs)", c.data == "fashion" ? "Fashion-MNIST" : "MNIST",
                                  xs.size())
                    : "; random inputs";
      // The same conversion with measured activation sparsity (batch 1, sparse Linears): the "+zero-skip" row.
      std::optional<nn::sequential<float>> skipping;
      if (batch == 1 && c.kind == form::sparse && !c.density.empty() && args.str("zero-skip") != "off") {
        rng cg(11);
        const tensor<float> calib = image_batches(data.train, 256, 1, cg).front();
        nc::compress_options oz = o;
        oz.input_density = nc::input_densities(float_model, calib);
        oz.input_frequency = nc::input_frequencies(float_model, calib);
        skipping = float_model;
        const auto zr = nc::compress(*skipping, f, oz);
        bool any = false;
        for (const auto& line : zr) any |= line.find("CSC skipping") != std::string::npos || line.find("reordered,") != std::string::npos;
        for (const auto& line : zr)
          if (line.find("column form") != std::string::npos || line.find("row form") != std::string::npos) fmt::print("  zero-skip choice: {}\n", line);
        if (args.str("zero-skip") == "force") {
          // Every sparse Linear in the column form whatever the timing says: what the form gives.
          for (std::size_t i = 0; i < skipping->size(); ++i) {
            auto* cl = dynamic_cast<nc::compressed_linear<float>*>(&(*skipping)[i]);
            if (cl == nullptr || cl->weights().kind_prefix() != "Sparse") continue;
            const row_matrix<float> w = cl->weights().effective_weights();
            auto& lin = dynamic_cast<nn::linear<float>&>(float_model.find(skipping->local_name(i)));
            auto column = std::make_unique<nc::compressed_linear<float>>(
                std::make_unique<nc::sparse_engine<float>>(w, nc::effective_bias(lin.bias()), 1, 1, /*column_form=*/true));
            column->fuse_relu(cl->relu_fused());  // the Flatten / ReLU compress folded into the layer it replaces
            column->fuse_flatten(cl->flatten_fused());
            skipping->replace(i, std::move(column));
            any = true;
          }
        }
        if (!any) skipping.reset();
      }
      std::vector<nn::sequential<float>*> models = {&float_model, &compressed};
      if (skipping) {
        alternative = std::move(skipping);
        alternative_name = c.name + "+zero-skip";
      }
      if (alternative) models.push_back(&*alternative);
      std::vector<tensor<float>> ys(models.size());
      std::vector<std::size_t> cursor(models.size(), 0);
      std::vector<double> diffs(models.size(), 0.0);
      for (const auto& xi : xs) {
        for (std::size_t m = 0; m < models.size(); ++m) models[m]->forward(xi, ys[m], {});
        for (std::size_t m = 1; m < models.size(); ++m)
          for (index_t i = 0; i < ys[0].size(); ++i) diffs[m] = std::max(diffs[m], static_cast<double>(std::abs(ys[0][i] - ys[m][i])));
      }
      std::vector<std::function<void()>> calls;
      for (std::size_t m = 0; m < models.size(); ++m)
        calls.push_back([&, m] { models[m]->forward(xs[cursor[m]++ % xs.size()], ys[m], {}); });
      const auto t = median_side_by_side(calls, rounds);
      const auto pt = pytorch.find({c.model, batch});
      const double pt_s = pt == pytorch.end() ? NAN : pt->second;
      double rss_float = NAN, rss_compressed = NAN;  // MiB; the alternative rows are not measured
      if (args.flag("rss")) {
        const std::string row = fmt::format("--rss-child {},{},", c.name, batch);
        if (const auto k = child_peak_rss_kib(row + "float " + child_flags)) rss_float = *k / 1024.0;
        if (const auto k = child_peak_rss_kib(row + "compressed " + child_flags)) rss_compressed = *k / 1024.0;
      }
      for (std::size_t m = 1; m < models.size(); ++m) {
        const double compressed_accuracy = accuracy ? test_accuracy(*models[m], data.test, data.test_labels, origin.input) : NAN;
        const weight_stats ms = stats_of(*models[m]);
        const double rss_c = m == 1 ? rss_compressed : NAN;
        const double bpn = ms.sparse_nnz > 0 ? ms.sparse_bytes / ms.sparse_nnz : NAN;
        const std::string name = m == 1 ? c.name : alternative_name;
        fmt::print(
            "{:<26} {:>5} {:>7.2f}% {:>11.1f} {:>11.1f} {:>7.2f}x {:>11.1f} {:>7.2f}x {:>11.0f} {:>11.0f} {:>8.2f} {:>10.2e} {:>8.1f}M {:>8.1f}M "
            "{:>7} {:>7}  {}{}\n",
            name, batch, 100 * fs.nnz / fs.weights, 1e6 * t[0], 1e6 * t[m], t[0] / t[m], 1e6 * pt_s, pt_s / t[m], fs.bytes, ms.bytes, bpn,
            diffs[m], rss_float, rss_c, percent_or_na(float_accuracy), percent_or_na(compressed_accuracy), source, input_note);
        csv << fmt::format("{},{},{:.5f},{:.4e},{:.4e},{:.3f},{:.4e},{:.3f},{:.0f},{:.0f},{:.3f},{:.3e},{:.0f},{:.0f},{:.4f},{:.4f},{}{}\n", name,
                           batch, fs.nnz / fs.weights, t[0], t[m], t[0] / t[m], pt_s, pt_s / t[m], fs.bytes, ms.bytes, bpn, diffs[m],
                           rss_float * 1024, rss_c * 1024, float_accuracy, compressed_accuracy, source, input_note);
      }
      if (args.flag("profile")) {
        for (auto* m : {&float_model, &compressed}) {
          const auto p = profile_layers(*m, x, std::max(5, rounds / 3));
          std::string line = fmt::format("  {} layers:", m == &float_model ? "float" : "compressed");
          for (const auto& [n, s] : p) line += fmt::format("  {} {:.1f}", n, 1e6 * s);
          fmt::print("{} (us)\n", line);
        }
      }
    }
  }
  if (args.flag("sweep")) conv_sweep(std::max(3, rounds / 3));
  fmt::print("kernel paths that ran (calls): {}\nCSV: {}\n", kernel_paths_ran(), args.str("csv"));
  return 0;
}

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // a bad file or option: say which, do not abort
    fmt::print(stderr, "compressed_models: {}\n", e.what());
    return 1;
  }
}
