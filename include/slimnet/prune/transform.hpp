// Masks on model parameters through the one weight-transform mechanism (nn::parameter_transform):
// the forward pass sees W * T; remove() bakes W * T into W and drops the mask.
//
// Why both the gradient and the weight are masked (mask_transform): the optimizer adds momentum
// or Adam moments to the gradient, so a pruned entry with grad*T = 0 can still move
// (w -= lr * m, with m built before pruning). Masking the gradient before the step keeps new
// gradient out of the buffers; masking W after the step sets what slipped through back to exactly
// 0.
//
// Composition with quantizers (the rule is written once, in nn/parameter.hpp): a masking transform
// declares its mask as the parameter's support, so a quantizer attached after it sees only the
// surviving weights. Pruning comes first: restrict_mask refuses a parameter that already carries a
// non-masking transform (a codebook built on all weights would keep clustering the new zeros), and
// freeze() turns running DNS surgery into a fixed magnitude mask before quantizing.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/parameter.hpp"
#include "slimnet/prune/mask.hpp"

namespace slimnet::prune {

/// A transform W_eff = W * T with a 0/1 mask T shaped like W. Subclasses decide the backward rule
/// and what happens after the optimizer step; remove() bakes any of them.
template <class Scalar>
class masking_transform : public nn::parameter_transform<Scalar> {
 public:
  const tensor<Scalar>& mask() const { return mask_; }
  /// Number of kept entries (ones in T).
  index_t kept() const { return count_nonzero(mask_); }
  /// T: the entries W_eff keeps (the composition rule of nn/parameter.hpp).
  const tensor<Scalar>* support() const override { return &mask_; }

  void forward(const tensor<Scalar>& w, tensor<Scalar>& w_eff, bool /*training*/,
               rng& /*gen*/) override {
    check_size(w, "slimnet::prune::masking_transform::forward");
    w_eff.flat() = w.flat().cwiseProduct(mask_.flat());
  }

 protected:
  explicit masking_transform(tensor<Scalar> mask) : mask_(std::move(mask)) {}
  void check_size(const tensor<Scalar>& w, const char* function) const {
    if (w.shape() != mask_.shape()) {
      slimnet::detail::raise<shape_error>(
          function, "the weight has shape {} but its mask {} (was the parameter resized?)",
          shape_string(w.shape()), shape_string(mask_.shape()));
    }
  }
  /// The mask saved under "mask": shaped like this one (config_error) and 0/1 (io_error).
  tensor<Scalar> read_mask(const nn::state_reader<Scalar>& in) const {
    tensor<Scalar> mask = mask_;
    in.read_tensor("mask", mask);
    for (index_t i = 0; i < mask.size(); ++i) {
      if (mask[i] != Scalar(0) && mask[i] != Scalar(1)) {
        slimnet::detail::raise<io_error>("slimnet::prune::masking_transform::load_state", "{}: '{}mask' holds {} at index {} (not 0 or 1)",
                                         in.source(), in.prefix(), static_cast<double>(mask[i]), i);
      }
    }
    return mask;
  }
  tensor<Scalar> mask_;
};

/// Magnitude-pruning mask: forward W*T, backward grad*T, after the optimizer step W *= T.
/// The mask only shrinks: restrict() ANDs a new mask into it.
template <class Scalar>
class mask_transform final : public masking_transform<Scalar> {
 public:
  explicit mask_transform(tensor<Scalar> mask) : masking_transform<Scalar>(std::move(mask)) {}

  std::string name() const override { return "mask"; }
  std::shared_ptr<nn::parameter_transform<Scalar>> clone(nn::clone_memo&) const override {
    return std::make_shared<mask_transform>(*this);
  }
  void backward(const tensor<Scalar>& /*w*/, tensor<Scalar>& grad) override {
    this->check_size(grad, "slimnet::prune::mask_transform::backward");
    grad.flat().array() *= this->mask_.flat().array();
  }
  void after_step(tensor<Scalar>& w, const nn::step_context&) override {
    this->check_size(w, "slimnet::prune::mask_transform::after_step");
    w.flat().array() *= this->mask_.flat().array();
  }

  /// T <- T AND new_mask (masks only shrink). new_mask must be shaped like T and hold 0/1.
  void restrict(const tensor<Scalar>& new_mask,
                const char* function = "slimnet::prune::mask_transform::restrict") {
    const auto alive = detail::alive_from_mask(this->mask_, new_mask, function, "the new mask");
    for (index_t k = 0; k < this->mask_.size(); ++k) {
      if (!alive[static_cast<std::size_t>(k)]) this->mask_[k] = Scalar(0);
    }
  }

  /// State: the mask and reference_std.
  void save_state(nn::state_writer<Scalar>& out) const override {
    out.put_tensor("mask", this->mask_);
    out.put_integer("reference_std_present", reference_std ? 1 : 0);
    if (reference_std) out.put_real("reference_std", *reference_std);
  }
  void load_state(const nn::state_reader<Scalar>& in) override {
    tensor<Scalar> mask = this->read_mask(in);
    std::optional<double> reference;
    if (in.get_integer("reference_std_present", 0, 1) == 1) reference = in.get_real("reference_std");
    this->mask_ = std::move(mask);
    reference_std = reference;
  }

  /// Han et al.'s quality threshold is q * std of the layer's weights: the std of the weights
  /// when this parameter was first pruned by quality (kept so that iterating keeps one scale).
  std::optional<double> reference_std;
};

/// The first masking transform (magnitude mask or DNS) of `p`, or null.
template <class Scalar>
masking_transform<Scalar>* find_mask(const nn::parameter<Scalar>& p) {
  for (const auto& t : p.transforms()) {
    if (auto* m = dynamic_cast<masking_transform<Scalar>*>(t.get())) return m;
  }
  return nullptr;
}

/// True when `p` carries a pruning mask (magnitude or DNS).
template <class Scalar>
bool is_pruned(const nn::parameter<Scalar>& p) {
  return find_mask(p) != nullptr;
}

/// The product of p's masks (all ones when it has none), shaped like p.
template <class Scalar>
tensor<Scalar> mask_of(const nn::parameter<Scalar>& p) {
  tensor<Scalar> m(p.shape(), Scalar(1));
  for (const auto& t : p.transforms()) {
    if (auto* mt = dynamic_cast<masking_transform<Scalar>*>(t.get()))
      m.flat().array() *= mt->mask().flat().array();
  }
  return m;
}

/// W * T: the weights the pruned model uses (ignoring non-masking transforms such as quantizers).
template <class Scalar>
tensor<Scalar> masked_weight(const nn::parameter<Scalar>& p) {
  tensor<Scalar> w = p.value();
  w.flat().array() *= mask_of(p).flat().array();
  return w;
}

/// Restricts p's magnitude mask to `new_mask` (T <- T AND new_mask), attaching a mask_transform
/// with T = new_mask if p has none, and zeroes the pruned weights at once (W *= T).
/// Throws config_error if p is under DNS surgery (another masking transform: freeze() or remove()
/// it first) or carries a quantizer or any other non-masking transform (prune before quantizing:
/// the quantizer was fitted to weights that would now be pruned).
template <class Scalar>
mask_transform<Scalar>& restrict_mask(nn::parameter<Scalar>& p, const tensor<Scalar>& new_mask,
                                      const char* function = "slimnet::prune::restrict_mask") {
  mask_transform<Scalar>* mt = nullptr;
  for (const auto& t : p.transforms()) {
    if (auto* m = dynamic_cast<mask_transform<Scalar>*>(t.get())) {
      mt = m;
    } else if (dynamic_cast<masking_transform<Scalar>*>(t.get()) != nullptr) {
      slimnet::detail::raise<config_error>(
          function, "parameter '{}' carries a '{}' mask; call prune::freeze or prune::remove on it first",
          p.name(), t->name());
    } else {
      slimnet::detail::raise<config_error>(
          function,
          "parameter '{}' already carries '{}': prune before quantizing (remove the transform, "
          "prune, then attach it again so that it sees only the surviving weights)",
          p.name(), t->name());
    }
  }
  if (mt == nullptr) {
    auto fresh = std::make_shared<mask_transform<Scalar>>(tensor<Scalar>(p.shape(), Scalar(1)));
    mt = fresh.get();
    p.add_transform(std::move(fresh));
  }
  mt->restrict(new_mask, function);
  mt->after_step(p.value(), {});
  return *mt;
}

/// Bakes the pruning into the weights (W <- W * T for every masking transform) and removes the
/// masks; other transforms stay. Afterwards training no longer holds pruned weights at 0.
/// Throws config_error if `p` has no mask (as PyTorch's prune.remove).
template <class Scalar>
void remove(nn::parameter<Scalar>& p) {
  if (!is_pruned(p))
    slimnet::detail::raise<config_error>("slimnet::prune::remove",
                                         "parameter '{}' has no pruning mask", p.name());
  p.value() = masked_weight(p);
  std::vector<typename nn::parameter<Scalar>::transform_ptr> keep;
  for (const auto& t : p.transforms()) {
    if (dynamic_cast<masking_transform<Scalar>*>(t.get()) == nullptr) keep.push_back(t);
  }
  p.clear_transforms();
  for (auto& t : keep) p.add_transform(std::move(t));
}

/// Replaces p's masking transforms (DNS surgery, or several masks) by one magnitude mask T = their
/// product and zeroes the pruned weights (W *= T): from then on the mask only shrinks, so a
/// quantizer can be fitted to the surviving weights. Other transforms keep their order after the
/// mask. Throws config_error if `p` has no mask.
template <class Scalar>
mask_transform<Scalar>& freeze(nn::parameter<Scalar>& p) {
  if (!is_pruned(p))
    slimnet::detail::raise<config_error>("slimnet::prune::freeze",
                                         "parameter '{}' has no pruning mask", p.name());
  auto frozen = std::make_shared<mask_transform<Scalar>>(mask_of(p));
  std::vector<typename nn::parameter<Scalar>::transform_ptr> keep;
  for (const auto& t : p.transforms()) {
    if (dynamic_cast<masking_transform<Scalar>*>(t.get()) == nullptr) keep.push_back(t);
  }
  p.clear_transforms();
  p.add_transform(frozen);
  for (auto& t : keep) p.add_transform(std::move(t));
  frozen->after_step(p.value(), {});
  return *frozen;
}

/// remove() on the parameter named `name` of `layer` (PyTorch's prune.remove(module, "weight")).
template <class Scalar>
void remove(nn::layer<Scalar>& layer, const std::string& name);

/// remove() on every pruned parameter of `model`; returns how many were baked.
template <class Scalar>
index_t remove_all(nn::layer<Scalar>& model) {
  index_t n = 0;
  model.visit_parameters([&](nn::parameter<Scalar>& p) {
    if (is_pruned(p)) {
      remove(p);
      ++n;
    }
  });
  return n;
}

// --- finding parameters -----------------------------------------------------------------------

/// The parameters magnitude pruning usually targets: every "weight" of rank >= 2 (Linear, Conv2d
/// and friends) and every "weight_*" matrix (LSTM/GRU weight_ih_l0, weight_hh_l0, ...), in
/// visiting order. Biases and 1-d parameters (BatchNorm) are left out.
template <class Scalar>
std::vector<nn::parameter<Scalar>*> prunable_parameters(nn::layer<Scalar>& model) {
  std::vector<nn::parameter<Scalar>*> out;
  model.visit_parameters([&](nn::parameter<Scalar>& p) {
    const std::string& n = p.local_name();
    const bool weight = n == "weight" || n.rfind("weight_", 0) == 0;
    if (weight && p.value().rank() >= 2 && p.trainable()) out.push_back(&p);
  });
  return out;
}

/// The parameter with this full dotted name ("conv1.weight"); throws config_error listing the
/// names there are if it does not exist.
template <class Scalar>
nn::parameter<Scalar>& find_parameter(nn::layer<Scalar>& model, const std::string& name) {
  nn::parameter<Scalar>* found = nullptr;
  std::vector<std::string> names;
  model.visit_parameters([&](nn::parameter<Scalar>& p) {
    names.push_back(p.name());
    if (found == nullptr && p.name() == name) found = &p;
  });
  if (found == nullptr) {
    slimnet::detail::raise<config_error>("slimnet::prune::find_parameter",
                                         "no parameter named '{}' (the model has {})", name,
                                         fmt::join(names, ", "));
  }
  return *found;
}

/// The parameter of `layer` itself named `local_name` ("weight"), as PyTorch's (module, name).
template <class Scalar>
nn::parameter<Scalar>& find_parameter(nn::layer<Scalar>& layer, const std::string& local_name,
                                      const char* function) {
  nn::parameter<Scalar>* found = nullptr;
  layer.visit_parameters([&](nn::parameter<Scalar>& p) {
    if (found == nullptr && p.local_name() == local_name) found = &p;
  });
  if (found == nullptr) {
    slimnet::detail::raise<config_error>(function, "layer '{}' ({}) has no parameter '{}'",
                                         layer.name(), layer.kind(), local_name);
  }
  return *found;
}

template <class Scalar>
void remove(nn::layer<Scalar>& layer, const std::string& name) {
  remove(find_parameter(layer, name, "slimnet::prune::remove"));
}

}  // namespace slimnet::prune
