// A model's structure as JSON (no weights), and the model rebuilt from it: what makes a model file
// loadable with no user code. Shapes are recorded as they are, so thinned (DeepIoT) widths and
// stacked recurrent layers of different sizes rebuild as they were.
//
//   {"kind": "Sequential", "name": "", "layers": [
//      {"kind": "Conv2d", "name": "conv1", "in_channels": 1, "out_channels": 20, "kernel": [5, 5],
//       "stride": 1, "padding": 0, "bias": true}, {"kind": "MaxPool2d", "name": "pool1", ...}, ...]}
//
// Every layer kind of nn/ is covered: Sequential (nested), Linear, Conv2d, MaxPool2d, AvgPool2d,
// ReLU, Tanh, Sigmoid, Dropout, Flatten, BatchNorm1d/2d, LSTM, GRU (stacked, reversed, DeepIoT unit
// masks as tensors), Bidirectional, SequenceMean, and DeepSense's TimeDistributed, SensorStack and
// ZeroPad2d, and the BNN layers of quant/ (SignActivation, ShiftBatchNorm). Parameters and buffers are not in the JSON: they are the file's tensors, named as
// the rebuilt model names them. The concrete layer types are told apart here and nowhere else.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/activation.hpp"
#include "slimnet/nn/batch_norm.hpp"
#include "slimnet/nn/bidirectional.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/dropout.hpp"
#include "slimnet/nn/flatten.hpp"
#include "slimnet/nn/gru.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/lstm.hpp"
#include "slimnet/nn/models_deepsense.hpp"
#include "slimnet/nn/pooling.hpp"
#include "slimnet/nn/sequence_pool.hpp"
#include "slimnet/nn/sequential.hpp"
#include "slimnet/quant/binary.hpp"
#include "slimnet/quant/shift.hpp"

namespace slimnet::io {

/// Tensors that belong to the architecture but are not parameters (recurrent unit masks), by name.
template <class Scalar>
using extra_tensors = std::map<std::string, tensor<Scalar>>;

/// Setters of the tensors an architecture names besides parameters, with those names.
template <class Scalar>
using tensor_setters = std::vector<std::pair<std::function<void(tensor<Scalar>)>, std::string>>;

namespace detail {

template <class Scalar, class Cell>
nlohmann::json recurrent_json(nn::recurrent<Scalar, Cell>& r, extra_tensors<Scalar>& extras) {
  std::vector<index_t> hidden;
  nlohmann::json masks = nlohmann::json::array();
  for (index_t l = 0; l < r.num_layers(); ++l) {
    hidden.push_back(r.hidden_size(l));
    const tensor<Scalar>* m = r.unit_mask(l);
    if (m == nullptr) {
      masks.push_back(nullptr);
      continue;
    }
    if (m->rank() != 1) {
      slimnet::detail::raise<config_error>("slimnet::io::architecture_of", "{} '{}' has a per-sequence unit mask of shape {} on layer {}: "
                                           "only masks shared by every sequence can be saved", r.kind(), r.name(), shape_string(m->shape()), l);
    }
    const std::string name = fmt::format("{}{}unit_mask_l{}{}", r.name(), r.name().empty() ? "" : ".", l, r.reversed() ? "_reverse" : "");
    extras[name] = *m;
    masks.push_back(name);
  }
  const auto& o = r.options();
  return {{"kind", r.kind()},
          {"input_size", r.input_size()},
          {"hidden_sizes", hidden},
          {"output", o.output == nn::sequence_output::last_step ? "last_step" : "all_steps"},
          {"reverse", o.reverse},
          {"bias", o.bias},
          {"unit_masks", masks}};
}

template <class Scalar>
nlohmann::json layer_json(nn::layer<Scalar>& l, extra_tensors<Scalar>& extras);

template <class Scalar>
nlohmann::json named(nn::layer<Scalar>& l, const std::string& local, extra_tensors<Scalar>& extras) {
  nlohmann::json j = layer_json(l, extras);
  j["name"] = local;
  return j;
}

/// The local name of a child from its full name and its parent's.
inline std::string local_part(const std::string& full, const std::string& parent) {
  if (parent.empty()) return full;
  return full.size() > parent.size() ? full.substr(parent.size() + 1) : full;
}

template <class Scalar>
nlohmann::json layer_json(nn::layer<Scalar>& l, extra_tensors<Scalar>& extras) {
  using namespace nn;
  const std::string kind = l.kind();
  if (auto* s = dynamic_cast<sequential<Scalar>*>(&l)) {
    nlohmann::json layers = nlohmann::json::array();
    for (std::size_t i = 0; i < s->size(); ++i) layers.push_back(named((*s)[i], s->local_name(i), extras));
    return {{"kind", kind}, {"layers", layers}};
  }
  if (auto* x = dynamic_cast<linear<Scalar>*>(&l)) {
    return {{"kind", kind}, {"in_features", x->in_features()}, {"out_features", x->out_features()}, {"bias", x->bias() != nullptr}};
  }
  if (auto* c = dynamic_cast<conv2d<Scalar>*>(&l)) {
    const window2d& w = c->window();
    if (w.stride_h != w.stride_w || w.pad_h != w.pad_w) {
      slimnet::detail::raise<config_error>("slimnet::io::architecture_of", "{} has unequal strides or paddings", c->describe());
    }
    return {{"kind", kind},        {"in_channels", c->in_channels()}, {"out_channels", c->out_channels()}, {"kernel", {w.kernel_h, w.kernel_w}},
            {"stride", w.stride_h}, {"padding", w.pad_h},               {"bias", c->bias() != nullptr}};
  }
  if (auto* p = dynamic_cast<max_pool2d<Scalar>*>(&l)) {
    return {{"kind", kind}, {"kernel", p->window().kernel_h}, {"stride", p->window().stride_h}, {"padding", p->window().pad_h}};
  }
  if (auto* p = dynamic_cast<avg_pool2d<Scalar>*>(&l)) {
    return {{"kind", kind}, {"kernel", p->window().kernel_h}, {"stride", p->window().stride_h}, {"padding", p->window().pad_h}};
  }
  if (dynamic_cast<relu<Scalar>*>(&l) || dynamic_cast<nn::tanh<Scalar>*>(&l) || dynamic_cast<sigmoid<Scalar>*>(&l) ||
      dynamic_cast<flatten<Scalar>*>(&l) || dynamic_cast<sequence_mean<Scalar>*>(&l)) {
    return {{"kind", kind}};
  }
  if (auto* d = dynamic_cast<dropout<Scalar>*>(&l)) return {{"kind", kind}, {"p", d->p()}};
  if (auto* b = dynamic_cast<batch_norm<Scalar>*>(&l)) {
    return {{"kind", kind}, {"features", b->features()}, {"eps", b->opts().eps}, {"momentum", b->opts().momentum}, {"affine", b->opts().affine}};
  }
  if (auto* r = dynamic_cast<lstm<Scalar>*>(&l)) return recurrent_json(*r, extras);
  if (auto* r = dynamic_cast<gru<Scalar>*>(&l)) return recurrent_json(*r, extras);
  if (auto* b = dynamic_cast<bidirectional<Scalar>*>(&l)) {
    return {{"kind", kind}, {"forward", layer_json<Scalar>(b->forward_layer(), extras)}, {"backward", layer_json<Scalar>(b->backward_layer(), extras)}};
  }
  if (auto* t = dynamic_cast<time_distributed<Scalar>*>(&l)) {
    return {{"kind", kind}, {"step_shape", t->step_shape()}, {"inner", layer_json(t->inner(), extras)}};
  }
  if (auto* s = dynamic_cast<sensor_stack<Scalar>*>(&l)) {
    nlohmann::json branches = nlohmann::json::array();
    for (std::size_t k = 0; k < s->size(); ++k) {
      if (!dynamic_cast<sequential<Scalar>*>(&(*s)[k])) {
        slimnet::detail::raise<config_error>("slimnet::io::architecture_of", "branch {} of SensorStack '{}' is a {}, not a Sequential", k,
                                             l.name(), (*s)[k].kind());
      }
      branches.push_back(named((*s)[k], local_part((*s)[k].name(), l.name()), extras));
    }
    return {{"kind", kind}, {"branches", branches}};
  }
  if (auto* a = dynamic_cast<quant::sign_activation<Scalar>*>(&l)) return {{"kind", kind}, {"mode", quant::to_string(a->mode())}};
  if (auto* b = dynamic_cast<quant::shift_batch_norm<Scalar>*>(&l)) {
    const auto& o = b->settings();
    return {{"kind", kind}, {"features", b->features()}, {"eps", o.eps}, {"momentum", o.momentum}, {"affine", o.affine}};
  }
  if (auto* z = dynamic_cast<zero_pad2d<Scalar>*>(&l)) {
    return {{"kind", kind}, {"padding", {z->left(), z->right(), z->top(), z->bottom()}}};
  }
  slimnet::detail::raise<config_error>("slimnet::io::architecture_of", "layer '{}' of kind {} cannot be saved in a model file (no serializer for {})",
                                       l.name(), kind, kind);
}

// --- building ------------------------------------------------------------------------------------

/// Field access that turns every malformed architecture into an io_error naming the layer.
class arch_reader {
 public:
  arch_reader(const nlohmann::json& j, std::string where) : j_(j), where_(std::move(where)) {}
  [[noreturn]] void fail(const std::string& what) const {
    slimnet::detail::raise<io_error>("slimnet::io::build_architecture", "layer '{}': {}", where_, what);
  }
  const nlohmann::json& at(const char* key) const {
    if (!j_.is_object() || !j_.contains(key)) fail(fmt::format("missing '{}'", key));
    return j_[key];
  }
  index_t count(const char* key, index_t min = 1) const {
    const auto& v = at(key);
    if (!v.is_number_integer() || v.get<std::int64_t>() < min || v.get<std::int64_t>() > (std::int64_t{1} << 31)) {
      fail(fmt::format("'{}' = {} is not an integer >= {}", key, v.dump(), min));
    }
    return v.get<index_t>();
  }
  bool flag(const char* key) const {
    const auto& v = at(key);
    if (!v.is_boolean()) fail(fmt::format("'{}' is not a boolean", key));
    return v.get<bool>();
  }
  double number(const char* key) const {
    const auto& v = at(key);
    if (!v.is_number()) fail(fmt::format("'{}' is not a number", key));
    return v.get<double>();
  }
  std::string text(const char* key) const {
    const auto& v = at(key);
    if (!v.is_string()) fail(fmt::format("'{}' is not a string", key));
    return v.get<std::string>();
  }
  const nlohmann::json& array(const char* key) const {
    const auto& v = at(key);
    if (!v.is_array()) fail(fmt::format("'{}' is not an array", key));
    return v;
  }
  const std::string& where() const { return where_; }

 private:
  const nlohmann::json& j_;
  std::string where_;
};

template <class Scalar>
std::unique_ptr<nn::layer<Scalar>> build_layer(const nlohmann::json& j, const std::string& where,
                                                tensor_setters<Scalar>& masks, int depth);

template <class Scalar, class Cell>
std::unique_ptr<nn::recurrent_layer<Scalar>> build_recurrent(const arch_reader& r, const nlohmann::json& j,
                                                             tensor_setters<Scalar>& masks) {
  std::vector<index_t> hidden;
  for (const auto& h : r.array("hidden_sizes")) {
    if (!h.is_number_integer() || h.get<std::int64_t>() < 1 || h.get<std::int64_t>() > (1 << 24)) r.fail("a hidden size is not a positive integer");
    hidden.push_back(h.get<index_t>());
  }
  if (hidden.empty() || hidden.size() > 64) r.fail(fmt::format("{} stacked layers", hidden.size()));
  nn::recurrent_options o;
  o.num_layers = static_cast<index_t>(hidden.size());
  const std::string out = r.text("output");
  if (out != "all_steps" && out != "last_step") r.fail(fmt::format("output '{}' is neither all_steps nor last_step", out));
  o.output = out == "last_step" ? nn::sequence_output::last_step : nn::sequence_output::all_steps;
  o.reverse = r.flag("reverse");
  o.bias = r.flag("bias");
  auto layer = std::make_unique<nn::recurrent<Scalar, Cell>>(r.count("input_size"), hidden, o);
  if (j.contains("unit_masks")) {
    const auto& m = r.array("unit_masks");
    if (m.size() != hidden.size()) r.fail(fmt::format("{} unit masks for {} layers", m.size(), hidden.size()));
    for (std::size_t l = 0; l < m.size(); ++l) {
      if (m[l].is_null()) continue;
      if (!m[l].is_string()) r.fail("a unit mask is neither null nor a tensor name");
      auto* p = layer.get();
      const auto index = static_cast<index_t>(l);
      masks.emplace_back([p, index](tensor<Scalar> t) { p->set_unit_mask(index, std::move(t)); }, m[l].get<std::string>());
    }
  }
  return layer;
}

template <class Scalar>
std::unique_ptr<nn::layer<Scalar>> build_layer(const nlohmann::json& j, const std::string& where,
                                                tensor_setters<Scalar>& masks, int depth) {
  using namespace nn;
  const arch_reader r(j, where);
  if (depth > 64) r.fail("layers nested more than 64 deep");
  if (!j.is_object()) r.fail("not a JSON object");
  const std::string kind = r.text("kind");
  auto child_name = [&](const nlohmann::json& c) {
    const arch_reader cr(c, where);
    return cr.text("name");
  };
  try {
    if (kind == "Sequential") {
      auto s = std::make_unique<sequential<Scalar>>();
      for (const auto& c : r.array("layers")) {
        const std::string name = child_name(c);
        s->add_ptr(name, build_layer<Scalar>(c, where.empty() ? name : where + "." + name, masks, depth + 1));
      }
      return s;
    }
    if (kind == "Linear") return std::make_unique<linear<Scalar>>(r.count("in_features"), r.count("out_features"), r.flag("bias"));
    if (kind == "Conv2d") {
      const auto& k = r.array("kernel");
      if (k.size() != 2 || !k[0].is_number_integer() || !k[1].is_number_integer()) r.fail("'kernel' is not [kh, kw]");
      typename conv2d<Scalar>::options o;
      o.stride = r.count("stride");
      o.padding = r.count("padding", 0);
      o.bias = r.flag("bias");
      return std::make_unique<conv2d<Scalar>>(r.count("in_channels"), r.count("out_channels"), k[0].get<index_t>(), k[1].get<index_t>(), o);
    }
    if (kind == "MaxPool2d") return std::make_unique<max_pool2d<Scalar>>(r.count("kernel"), r.count("stride"), r.count("padding", 0));
    if (kind == "AvgPool2d") return std::make_unique<avg_pool2d<Scalar>>(r.count("kernel"), r.count("stride"), r.count("padding", 0));
    if (kind == "ReLU") return std::make_unique<relu<Scalar>>();
    if (kind == "Tanh") return std::make_unique<nn::tanh<Scalar>>();
    if (kind == "Sigmoid") return std::make_unique<sigmoid<Scalar>>();
    if (kind == "Flatten") return std::make_unique<flatten<Scalar>>();
    if (kind == "SequenceMean") return std::make_unique<sequence_mean<Scalar>>();
    if (kind == "Dropout") return std::make_unique<dropout<Scalar>>(r.number("p"));
    if (kind == "BatchNorm1d" || kind == "BatchNorm2d") {
      typename batch_norm<Scalar>::options o;
      o.eps = r.number("eps");
      o.momentum = r.number("momentum");
      o.affine = r.flag("affine");
      return std::make_unique<batch_norm<Scalar>>(r.count("features"), kind == "BatchNorm2d" ? 2 : 1, o);
    }
    if (kind == "SignActivation") {
      const std::string mode = r.text("mode");
      if (mode != "deterministic" && mode != "stochastic") r.fail(fmt::format("mode '{}' is neither deterministic nor stochastic", mode));
      return std::make_unique<quant::sign_activation<Scalar>>(mode == "stochastic" ? quant::binarization::stochastic : quant::binarization::deterministic);
    }
    if (kind == "ShiftBatchNorm") {
      typename quant::shift_batch_norm<Scalar>::options o;
      o.eps = r.number("eps");
      o.momentum = r.number("momentum");
      o.affine = r.flag("affine");
      return std::make_unique<quant::shift_batch_norm<Scalar>>(r.count("features"), o);
    }
    if (kind == "LSTM") return build_recurrent<Scalar, lstm_cell>(r, j, masks);
    if (kind == "GRU") return build_recurrent<Scalar, gru_cell>(r, j, masks);
    if (kind == "Bidirectional") {
      auto direction = [&](const char* key) {
        const arch_reader d(r.at(key), where + "/" + key);
        const std::string k = d.text("kind");
        if (k == "LSTM") return build_recurrent<Scalar, lstm_cell>(d, r.at(key), masks);
        if (k == "GRU") return build_recurrent<Scalar, gru_cell>(d, r.at(key), masks);
        d.fail(fmt::format("a Bidirectional wraps LSTM or GRU, not {}", k));
      };
      auto f = direction("forward");
      auto b = direction("backward");
      return std::make_unique<bidirectional<Scalar>>(std::move(f), std::move(b));
    }
    if (kind == "TimeDistributed") {
      shape_t step;
      for (const auto& d : r.array("step_shape")) {
        if (!d.is_number_integer() || d.get<std::int64_t>() < 1 || d.get<std::int64_t>() > (1 << 24)) r.fail("'step_shape' holds a non-positive dimension");
        step.push_back(d.get<index_t>());
      }
      return std::make_unique<time_distributed<Scalar>>(build_layer<Scalar>(r.at("inner"), where, masks, depth + 1), step);
    }
    if (kind == "SensorStack") {
      auto s = std::make_unique<sensor_stack<Scalar>>();
      for (const auto& c : r.array("branches")) {
        const std::string name = child_name(c);
        auto b = build_layer<Scalar>(c, where.empty() ? name : where + "." + name, masks, depth + 1);
        auto* seq = dynamic_cast<sequential<Scalar>*>(b.get());
        if (seq == nullptr) r.fail(fmt::format("branch '{}' is not a Sequential", name));
        s->add(name, std::move(*seq));
      }
      return s;
    }
    if (kind == "ZeroPad2d") {
      const auto& p = r.array("padding");
      if (p.size() != 4) r.fail("'padding' is not [left, right, top, bottom]");
      for (const auto& v : p)
        if (!v.is_number_integer() || v.get<std::int64_t>() < 0) r.fail("'padding' holds a negative or non-integer value");
      return std::make_unique<zero_pad2d<Scalar>>(p[0].get<index_t>(), p[1].get<index_t>(), p[2].get<index_t>(), p[3].get<index_t>());
    }
  } catch (const config_error& e) {
    r.fail(fmt::format("{} does not construct: {}", kind, e.what()));
  } catch (const shape_error& e) {
    r.fail(fmt::format("{} does not construct: {}", kind, e.what()));
  }
  r.fail(fmt::format("unknown layer kind '{}'", kind));
}

}  // namespace detail

/// The architecture of `model` as JSON; unit masks of recurrent layers go to `extras` (and are
/// named in the JSON). config_error naming the layer for a kind that has no serializer.
template <class Scalar>
nlohmann::json architecture_of(nn::layer<Scalar>& model, extra_tensors<Scalar>& extras) {
  nlohmann::json j = detail::layer_json(model, extras);
  j["name"] = model.name();
  return j;
}

/// A model rebuilt from architecture_of's JSON, its parameters freshly initialised and named as in
/// the saved model; `set_mask(name, setter)` is called for each unit mask tensor the JSON names.
/// io_error naming the layer for anything malformed (unknown kind, missing or invalid field).
template <class Scalar>
std::unique_ptr<nn::layer<Scalar>> build_architecture(const nlohmann::json& j,
                                                       tensor_setters<Scalar>* masks = nullptr) {
  tensor_setters<Scalar> local;
  const detail::arch_reader r(j, "<root>");
  const std::string name = j.is_object() && j.contains("name") ? r.text("name") : std::string();
  auto model = detail::build_layer<Scalar>(j, name, masks ? *masks : local, 0);
  model->set_name(name);
  return model;
}

}  // namespace slimnet::io
