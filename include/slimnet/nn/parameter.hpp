// Named parameters with value, gradient, and the one weight-transform mechanism (DESIGN.md,
// principle 2) through which every training-time compression method acts on a model.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/nn/state.hpp"

namespace slimnet::nn {

/// A compression method seen from one parameter: W_eff = f(W) in the forward pass, a rule that
/// turns dL/dW_eff into the gradient applied to W, and a hook after each optimizer step.
/// Examples: masking (W*T; grad*T; W*=T after the step), BinaryConnect (sign(W); straight-through;
/// clip to [-1,1]), fixed point (round(W); straight-through), codebooks (centroid[index]).
///
/// How transforms compose. They apply in the order they were added, W_eff = f_n(...f_1(W));
/// backward() runs in reverse (the chain rule) and after_step() in order. A transform that prunes
/// declares its support S (support(): 0/1, shaped like W): its output is 0 outside S (a magnitude
/// mask also keeps W at 0 there; DNS keeps W to splice entries back). parameter::support(), the
/// product of the declared supports, marks the surviving weights. A quantizer added on top of a
/// pruning transform (codebook, fixed point, BinaryConnect) reads parameter::support() when it is
/// attached and then
///   - maps every pruned entry to exactly 0 (0 is not a code it may give one),
///   - fits what it learns (centroids, ranges) on the surviving entries only,
///   - routes no gradient of a pruned entry into a surviving one.
/// The support must not change under a quantizer: prune first, then quantize (Deep Compression's
/// order; prune::freeze ends DNS surgery). prune::restrict_mask refuses to prune a parameter that
/// already carries another transform, and a codebook whose input disagrees with the support it
/// was built on (a mask that grew back or shrank under it) throws config_error in forward().
/// What an after-step hook knows about the step just taken.
struct step_context {
  /// Optimizer steps taken by the current training run, this one included (1, 2, ...): fit counts
  /// per call, DeepIoT per compression run; 0 when the hook is called outside a training step (to
  /// re-apply a mask after pruning, say). A transform whose schedule must outlive one run (DNS's
  /// iteration since attach) counts its own steps.
  std::int64_t step = 0;
};

/// Copies of shared state made during one copy of a model (like Python's deepcopy memo): the first
/// member to be copied copies the state, the others get the same copy. A model copy opens one
/// memo for all its parameters (clone_scope); a parameter copied on its own gets a memo of its own.
class clone_memo {
 public:
  /// The copy of `*original` made in this memo, made now (by T's copy constructor) if there is none.
  template <class T>
  std::shared_ptr<T> copy_of(const std::shared_ptr<T>& original) {
    if (!original) return nullptr;
    auto& slot = copies_[static_cast<const void*>(original.get())];
    if (!slot) slot = std::make_shared<T>(*original);
    return std::static_pointer_cast<T>(slot);
  }

 private:
  std::unordered_map<const void*, std::shared_ptr<void>> copies_;
};

/// Opens the memo that the parameter copies of one model copy share (nested scopes join the
/// outermost one). Layer copies that hold several parameters or layers open one: cloneable::clone
/// and the containers' copy constructors.
class clone_scope {
 public:
  clone_scope() {
    if (current_() == nullptr) {
      owned_ = std::make_unique<clone_memo>();
      current_() = owned_.get();
    }
  }
  ~clone_scope() {
    if (owned_) current_() = nullptr;
  }
  clone_scope(const clone_scope&) = delete;
  clone_scope& operator=(const clone_scope&) = delete;
  clone_memo& memo() { return *current_(); }

 private:
  static clone_memo*& current_() {
    static thread_local clone_memo* current = nullptr;
    return current;
  }
  std::unique_ptr<clone_memo> owned_;
};

template <class Scalar>
class parameter_transform {
 public:
  virtual ~parameter_transform() = default;
  virtual std::string name() const = 0;
  /// Writes W_eff = f(W) into `w_eff` (already shaped like `w`). `training` is false in evaluation
  /// (stochastic transforms become deterministic there); `gen` is the pass's generator.
  virtual void forward(const tensor<Scalar>& w, tensor<Scalar>& w_eff, bool training, rng& gen) = 0;
  /// In place: `grad` holds dL/dW_eff on entry and the gradient for W on exit. Identity by default
  /// (the straight-through estimator).
  virtual void backward(const tensor<Scalar>& /*w*/, tensor<Scalar>& /*grad*/) {}
  /// Called after each optimizer step, e.g. to clip W or re-apply a mask; `step` says which step.
  virtual void after_step(tensor<Scalar>& /*w*/, const step_context& /*step*/) {}
  /// The entries this transform keeps (1) and holds at exactly 0 (0), or null if it prunes none.
  virtual const tensor<Scalar>* support() const { return nullptr; }
  /// The transform of a copied parameter. Every transform states it (there is no default): a
  /// cloned model must not share a mask, centroids or a random generator with the original, or
  /// training the copy would change the original. State that several parameters share on purpose
  /// (DNS: a layer's weight and bias draw their surgery together) is copied through `memo`, once
  /// per model copy, so the copies share it with each other and not with the original.
  virtual std::shared_ptr<parameter_transform> clone(clone_memo& memo) const = 0;
  /// Checkpoints (train/checkpoint.hpp): writes what training changes (masks, centroids, counters,
  /// generators) under keys already scoped to this transform; load_state restores it into a
  /// transform attached the same way (same kind and shapes, e.g. to a model rebuilt from scratch),
  /// so training continues bit for bit. State shared by several parameters (DNS's group) is
  /// restored in place, keeping it shared. No silent default: a transform that does not override
  /// these cannot be checkpointed (config_error naming it), and one without state overrides them
  /// with empty bodies that say so.
  virtual void save_state(state_writer<Scalar>& /*out*/) const { no_state_support("save_state"); }
  virtual void load_state(const state_reader<Scalar>& /*in*/) { no_state_support("load_state"); }

 private:
  [[noreturn]] void no_state_support(const char* what) const {
    slimnet::detail::raise<config_error>("slimnet::nn::parameter_transform", "transform '{}' does not implement {}: it cannot be checkpointed",
                                         name(), what);
  }
};

/// What a forward pass needs besides its input.
struct forward_context {
  bool training = false;  ///< training mode: dropout active, batch statistics in BatchNorm
  rng* gen = nullptr;     ///< generator for dropout and stochastic transforms
  /// Valid time steps of each sequence for recurrent layers on (N, T, F) input; null means all T.
  const std::vector<std::int32_t>* lengths = nullptr;

  /// The pass's generator; evaluation without one gets a fixed-seed generator per thread.
  rng& generator() const {
    if (gen != nullptr) return *gen;
    static thread_local rng fallback(0);
    return fallback;
  }
};

namespace detail {
inline std::uint64_t next_parameter_id() {
  static std::atomic<std::uint64_t> counter{0};
  return ++counter;
}
}  // namespace detail

template <class Scalar>
class parameter {
 public:
  using transform_ptr = std::shared_ptr<parameter_transform<Scalar>>;

  parameter(std::string local_name, shape_t shape, bool trainable = true)
      : local_name_(local_name), name_(std::move(local_name)), value_(shape), grad_(shape), trainable_(trainable) {
    value_.set_zero();
    grad_.set_zero();
  }
  /// A copy is a new parameter: same values, a new identity (optimizer state is not shared).
  parameter(const parameter& other)
      : local_name_(other.local_name_),
        name_(other.name_),
        value_(other.value_),
        grad_(other.grad_),
        trainable_(other.trainable_),
        id_(detail::next_parameter_id()) {
    clone_scope scope;
    for (const auto& t : other.transforms_) transforms_.push_back(t->clone(scope.memo()));
  }
  parameter& operator=(const parameter&) = delete;

  /// Full dotted name, e.g. "conv1.weight".
  const std::string& name() const { return name_; }
  /// Name inside its layer, e.g. "weight".
  const std::string& local_name() const { return local_name_; }
  void set_prefix(const std::string& prefix) { name_ = prefix.empty() ? local_name_ : prefix + "." + local_name_; }

  /// Stable identity for optimizer state (never the data pointer: storage moves on resize).
  std::uint64_t id() const { return id_; }
  bool trainable() const { return trainable_; }

  tensor<Scalar>& value() { return value_; }
  const tensor<Scalar>& value() const { return value_; }
  tensor<Scalar>& grad() { return grad_; }
  const tensor<Scalar>& grad() const { return grad_; }
  const shape_t& shape() const { return value_.shape(); }
  index_t size() const { return value_.size(); }

  /// Replaces the value (and resets the gradient) with a tensor of any shape: used by thinning.
  void assign(tensor<Scalar> v) {
    value_ = std::move(v);
    grad_.resize(value_.shape());
    grad_.set_zero();
  }

  void zero_grad() { grad_.set_zero(); }

  // --- weight transforms -------------------------------------------------------------------
  void add_transform(transform_ptr t) { transforms_.push_back(std::move(t)); }
  void clear_transforms() { transforms_.clear(); }
  const std::vector<transform_ptr>& transforms() const { return transforms_; }

  /// The surviving entries: the product of the transforms' supports (see parameter_transform),
  /// or nullopt when no transform prunes this parameter.
  std::optional<tensor<Scalar>> support() const {
    std::optional<tensor<Scalar>> s;
    for (const auto& t : transforms_) {
      const tensor<Scalar>* m = t->support();
      if (m == nullptr) continue;
      if (!s) {
        s = *m;
      } else {
        s->flat().array() *= m->flat().array();
      }
    }
    return s;
  }

  /// The value the forward pass uses: W itself, or f_n(...f_1(W)) when transforms are attached.
  const tensor<Scalar>& forward_value(const forward_context& ctx) {
    if (transforms_.empty()) return value_;
    stages_.resize(transforms_.size());
    const tensor<Scalar>* in = &value_;
    for (std::size_t i = 0; i < transforms_.size(); ++i) {
      stages_[i].resize(value_.shape());
      transforms_[i]->forward(*in, stages_[i], ctx.training, ctx.generator());
      in = &stages_[i];
    }
    return stages_.back();
  }

  /// The value used by the last forward pass (for the backward pass).
  const tensor<Scalar>& used_value() const { return transforms_.empty() ? value_ : stages_.back(); }

  /// Turns dL/dW_eff (what layers accumulate in grad()) into the gradient for W: chain rule
  /// through the transforms in reverse order. Call once per step, before the optimizer.
  void transform_gradient() {
    for (std::size_t i = transforms_.size(); i-- > 0;) {
      const tensor<Scalar>& input = i == 0 ? value_ : stages_[i - 1];
      transforms_[i]->backward(input, grad_);
    }
  }

  /// Hooks after the optimizer step (clipping, re-masking, surgery); train::step calls it with
  /// the step's context.
  void after_step(const step_context& step = {}) {
    for (auto& t : transforms_) t->after_step(value_, step);
  }

 private:
  std::string local_name_;
  std::string name_;
  tensor<Scalar> value_;
  tensor<Scalar> grad_;
  bool trainable_ = true;
  std::vector<transform_ptr> transforms_;
  std::vector<tensor<Scalar>> stages_;
  std::uint64_t id_ = detail::next_parameter_id();
};

}  // namespace slimnet::nn
