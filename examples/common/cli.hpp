// Shared by the example and benchmark programs: a tiny --flag value parser and the data sets'
// default locations.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "slimnet/core/error.hpp"
#include "slimnet/data.hpp"
#include "slimnet/io.hpp"
#include "slimnet/nn/models.hpp"
#include "slimnet/train.hpp"

#ifndef SLIMNET_DEFAULT_DATA_DIR
#define SLIMNET_DEFAULT_DATA_DIR ".cache/data"
#endif

namespace slimnet::cli {

/// Parses "--name value" and "--flag" arguments; unknown names are an error listing the known ones.
class args {
 public:
  args(int argc, char** argv, std::map<std::string, std::string> defaults, std::string usage)
      : values_(std::move(defaults)), usage_(std::move(usage)) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        fmt::print("{}\n\noptions (default):\n", usage_);
        for (const auto& [k, v] : values_) fmt::print("  --{} ({})\n", k, v);
        std::exit(0);
      }
      if (a.rfind("--", 0) != 0) fail(fmt::format("unexpected argument '{}'", a));
      a = a.substr(2);
      auto it = values_.find(a);
      if (it == values_.end()) fail(fmt::format("unknown option --{}", a));
      if (it->second == "false" || it->second == "true") {  // a flag: "--x" or "--x true|false"
        const bool explicit_value = i + 1 < argc && (std::string(argv[i + 1]) == "true" || std::string(argv[i + 1]) == "false");
        it->second = explicit_value ? argv[++i] : "true";
      } else {
        if (i + 1 >= argc) fail(fmt::format("--{} needs a value", a));
        it->second = argv[++i];
      }
    }
  }
  std::string str(const std::string& k) const { return values_.at(k); }
  long integer(const std::string& k) const { return std::stol(values_.at(k)); }
  double real(const std::string& k) const { return std::stod(values_.at(k)); }
  bool flag(const std::string& k) const { return values_.at(k) == "true"; }

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    fmt::print(stderr, "error: {}\n{}\n(--help lists the options)\n", msg, usage_);
    std::exit(2);
  }
  std::map<std::string, std::string> values_;
  std::string usage_;
};

/// Folder of converted data sets: $SLIMNET_DATA_DIR, else the build's default.
inline std::filesystem::path data_dir() {
  const char* env = std::getenv("SLIMNET_DATA_DIR");
  return env && *env ? std::filesystem::path(env) : std::filesystem::path(SLIMNET_DEFAULT_DATA_DIR);
}

/// "mnist" = the 10,000-digit MNIST subset (8,000 / 2,000), "fashion" = Fashion-MNIST (60,000 / 10,000),
/// or any folder holding the four MNIST-style IDX files.
inline data::split<float> load_dataset(const std::string& name) {
  if (name == "mnist") return data::load_mnist_dir<float>(data_dir() / "mnist-subset");
  if (name == "fashion") {
    const char* env = std::getenv("SLIMNET_FASHION_DIR");
    return data::load_mnist_dir<float>(env && *env ? env : "/usr/share/datasets/fashion-mnist");
  }
  return data::load_mnist_dir<float>(name);
}

/// Keeps n examples drawn at random with a fixed seed (n <= 0 keeps all): for quick smoke runs.
/// Random, not the first n: the MNIST subset's files are sorted by class.
inline void limit(data::dataset<float>& d, long n, std::uint64_t seed = 7) {
  if (n <= 0 || n >= d.size()) return;
  std::vector<index_t> idx(static_cast<std::size_t>(d.size()));
  for (index_t i = 0; i < d.size(); ++i) idx[static_cast<std::size_t>(i)] = i;
  rng gen(seed);
  slimnet::shuffle(idx.begin(), idx.end(), gen);
  idx.resize(static_cast<std::size_t>(n));
  std::sort(idx.begin(), idx.end());
  d = d.subset(idx);
}

/// "lenet5" (LeNet-5), "lenet300" (LeNet-300-100) or "vgg" (nn::models::vgg_small: a VGG-style
/// network at a quarter of VGG's widths), initialised from `gen`.
inline nn::sequential<float> make_model(const std::string& name, rng& gen, const char* program) {
  if (name == "lenet5") return nn::models::lenet5<float>(gen);
  if (name == "lenet300") return nn::models::lenet_300_100<float>(gen);
  if (name == "vgg") return nn::models::vgg_small<float>(gen);
  throw config_error(fmt::format("{}: unknown model '{}' (lenet5, lenet300 or vgg)", program, name));
}

/// Metadata an example writes next to a trained baseline: which model, which data set, and the
/// input standardisation it was trained with (mean and stddev of the training set, if any).
inline std::map<std::string, std::string> baseline_metadata(const std::string& model_name, const std::string& data_name,
                                                            double mean = 0, double stddev = 0) {
  std::map<std::string, std::string> m{{"model", model_name}, {"data", data_name}};
  if (stddev > 0) {
    m["input_mean"] = fmt::format("{:.9g}", mean);
    m["input_std"] = fmt::format("{:.9g}", stddev);
  }
  return m;
}

/// A saved network's metadata must name `model_name` and `data_name` where it records them, so
/// that a file for another model or data set is an error rather than a silently wrong accuracy.
/// `role` ("baseline", "teacher") names the file in the message.
inline void require_model_and_data(const std::map<std::string, std::string>& meta, const char* role,
                                   const std::string& path, const std::string& model_name,
                                   const std::string& data_name, const char* program) {
  for (const auto& [key, wanted] : {std::pair{"model", model_name}, std::pair{"data", data_name}}) {
    const auto it = meta.find(key);
    if (it != meta.end() && it->second != wanted) {
      throw config_error(fmt::format("{}: {} '{}' was saved for {} '{}', not '{}'", program, role, path, key,
                                     it->second, wanted));
    }
  }
}

/// Loads a baseline written by an example into `model` and puts `data` in the input space the
/// model was trained in: a model trained on standardised inputs (train_lenet's default) records the
/// training set's mean and stddev, and the same standardisation is applied here. A file recorded
/// for another model or data set is an error rather than a silently wrong accuracy. Returns the
/// file's metadata (to be passed on when the compressed model is saved).
inline std::map<std::string, std::string> load_baseline(nn::layer<float>& model, const std::string& path, const std::string& model_name,
                          const std::string& data_name, data::split<float>& data, const char* program) {
  const auto meta = io::read_safetensors<float>(path).metadata;  // checked before the shapes are
  require_model_and_data(meta, "baseline", path, model_name, data_name, program);
  io::load_parameters(model, path);
  const auto mean = meta.find("input_mean");
  const auto stddev = meta.find("input_std");
  if (mean != meta.end() && stddev != meta.end()) {
    const double m = std::stod(mean->second), s = std::stod(stddev->second);
    data::standardize(data.train, m, s);
    data::standardize(data.test, m, s);
    fmt::print("inputs standardised as the baseline was trained: mean {:.4f}, stddev {:.4f}\n", m, s);
  }
  return meta;
}

/// Loads a trained network to serve as a distillation teacher for a student whose baseline has the
/// metadata `student`: both must have been trained on `data_name` in the same input space (the same
/// standardisation, or none), since the teacher sees the student's inputs unchanged.
inline void load_teacher(nn::layer<float>& teacher, const std::string& path, const std::string& teacher_model,
                         const std::string& data_name, const std::map<std::string, std::string>& student,
                         const char* program) {
  const auto meta = io::read_safetensors<float>(path).metadata;
  const auto value = [](const std::map<std::string, std::string>& m, const char* key) {
    const auto it = m.find(key);
    return it == m.end() ? std::string("(none)") : it->second;
  };
  require_model_and_data(meta, "teacher", path, teacher_model, data_name, program);
  for (const char* key : {"input_mean", "input_std"}) {
    if (value(meta, key) != value(student, key)) {
      throw config_error(fmt::format("{}: teacher '{}' has {} {}, the student's baseline {}: they must see the "
                                     "same inputs",
                                     program, path, key, value(meta, key), value(student, key)));
    }
  }
  io::load_parameters(teacher, path);
}

/// How an example trains its dense baseline when none is given: SGD with momentum, cosine
/// learning rate from `lr`, fixed seed (example 1's recipe without input standardisation).
struct baseline_recipe {
  int epochs = 20;
  double lr = 0.05, momentum = 0.9, weight_decay = 5e-4;
  index_t batch = 64;
  std::uint64_t seed = 1;
  bool progress = true;
};

/// The compression examples' step 1: load the baseline from `path` if that file exists (see
/// load_baseline), else train one with `recipe` and write it to `path` (unless empty).
/// Returns the baseline's metadata, to be passed on when the compressed model is saved. `extra`
/// is added to the metadata of a baseline trained here (e.g. how many training images it left out).
inline std::map<std::string, std::string> load_or_train_baseline(nn::layer<float>& model, const std::string& path,
                                                                 const std::string& model_name, const std::string& data_name,
                                                                 data::split<float>& data, const baseline_recipe& recipe,
                                                                 const char* program,
                                                                 const std::map<std::string, std::string>& extra = {}) {
  if (!path.empty() && std::filesystem::exists(path)) {
    auto meta = load_baseline(model, path, model_name, data_name, data, program);
    fmt::print("baseline loaded from {}\n", path);
    return meta;
  }
  train::sgd<float> opt(
      train::sgd_options{}.with_lr(recipe.lr).with_momentum(recipe.momentum).with_weight_decay(recipe.weight_decay));
  train::fit_options o;
  o.epochs = recipe.epochs;
  o.batch_size = recipe.batch;
  o.seed = recipe.seed;
  o.progress = recipe.progress;
  o.learning_rate = train::cosine_lr(recipe.lr, recipe.epochs);
  train::fit(model, opt, train::cross_entropy<float>(), data.train, o);
  auto meta = baseline_metadata(model_name, data_name);
  meta.insert(extra.begin(), extra.end());
  if (!path.empty()) {
    io::save_parameters(model, path, meta);
    fmt::print("baseline saved to {}\n", path);
  }
  return meta;
}

/// "fc1=0.92,fc2=0.91" -> {fc1: 0.92, fc2: 0.91}; `what` names the option in errors.
/// --heldout N of examples 2, 3, 11 and 15: removes from `train` the N images that example 11's stop
/// rule and example 15's search hold out (data::stratified_split of the training set, fraction
/// N / size, `seed`), so a baseline trained without them and every method compared on it retrain on
/// the same images (issue #14: one baseline per network). Returns the held-out images (empty when
/// N <= 0) and sets `tag` to the split's metadata text ("none" when N <= 0).
inline data::dataset<float> split_heldout(data::dataset<float>& train, long n, std::uint64_t seed, const char* program,
                                          std::string& tag) {
  tag = n > 0 ? fmt::format("{} images, stratified, seed {}", n, seed) : std::string("none");
  if (n <= 0) return {};
  if (n >= train.size()) {
    throw config_error(fmt::format("{}: --heldout {} leaves no training images (the training set has {})", program, n, train.size()));
  }
  const double frac = static_cast<double>(n) / static_cast<double>(train.size());
  const auto [tr, ho] = data::stratified_split(train.labels, train.num_classes, frac, seed);
  data::dataset<float> heldout = train.subset(ho);
  train = train.subset(tr);
  return heldout;
}

inline std::map<std::string, double> parse_layer_values(const std::string& text, const char* program, const char* what) {
  std::map<std::string, double> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto eq = item.find('=');
    std::size_t used = 0;
    double v = 0;
    try {
      if (eq != std::string::npos) v = std::stod(item.substr(eq + 1), &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (eq == std::string::npos || used == 0) {
      throw config_error(fmt::format("{}: '{}' in --{} is not layer=value", program, item, what));
    }
    out[item.substr(0, eq)] = v;
  }
  return out;
}

}  // namespace slimnet::cli
