// The training loop: fit / evaluate with callbacks, metrics and an optional progress line.
// Each step is train::training_step (train/step.hpp); callbacks.after_backward runs inside it
// (gradients for W ready, optimizer not stepped yet), callbacks.after_step after it.
// Compression schedules (pruning, DNS surgery, ...) plug in as callbacks and transforms.
// With fit_options::checkpoint_path, fit writes a checkpoint (train/checkpoint.hpp) at epoch ends;
// fit_options::resume_from continues such a run exactly where it stopped: with one thread and the
// same options, a run stopped and resumed ends with the same bits as one never stopped.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/data/dataset.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/train/checkpoint_state.hpp"
#include "slimnet/train/loss.hpp"
#include "slimnet/train/optimizer.hpp"
#include "slimnet/train/schedule.hpp"
#include "slimnet/train/step.hpp"

namespace slimnet::train {

struct metrics {
  double loss = std::numeric_limits<double>::quiet_NaN();
  double accuracy = std::numeric_limits<double>::quiet_NaN();  ///< fraction in [0, 1]; NaN without labels
  index_t samples = 0;
};

struct epoch_record {
  int epoch = 0;  ///< counted from 0
  double learning_rate = 0;
  metrics train;
  metrics validation;  ///< NaN fields when there is no validation set
  double seconds = 0;
  double samples_per_second = 0;
};

struct history {
  std::vector<epoch_record> epochs;
};

/// Number of rows whose argmax equals the label.
template <class Scalar>
index_t count_correct(const tensor<Scalar>& output, const std::vector<std::int32_t>& labels) {
  index_t correct = 0;
  const auto z = output.matrix();
  for (index_t i = 0; i < z.rows(); ++i) {
    index_t best = 0;
    z.row(i).maxCoeff(&best);
    correct += best == labels[static_cast<std::size_t>(i)];
  }
  return correct;
}

/// Mean loss and accuracy of `model` in evaluation mode. Throws slimnet::error naming the batch
/// (counted from 0, in data order) whose loss is not finite.
template <class Scalar>
metrics evaluate(nn::layer<Scalar>& model, const data::dataset<Scalar>& data, const loss_function<Scalar>& loss,
                 index_t batch_size = 256) {
  data.validate("slimnet::train::evaluate");
  rng unused(0);
  data::batcher<Scalar> batches(data, batch_size, false, unused);
  data::batch<Scalar> b;
  tensor<Scalar> out, grad;
  nn::forward_context ctx{false, &unused};
  double loss_sum = 0;
  index_t correct = 0;
  metrics m;
  index_t batch_index = 0;
  while (batches.next(b)) {
    ctx.lengths = b.lengths.empty() ? nullptr : &b.lengths;
    model.forward(b.inputs, out, ctx);
    const double batch_loss = loss.compute(out, b, grad);
    // A NaN or Inf here would turn the mean into NaN (or hide in a finite accuracy): say where.
    if (!std::isfinite(batch_loss)) {
      slimnet::detail::raise<error>("slimnet::train::evaluate", "loss is {} on batch {} (examples {} to {} of {})", batch_loss,
                                    batch_index, m.samples, m.samples + b.size() - 1, data.size());
    }
    ++batch_index;
    loss_sum += batch_loss * static_cast<double>(b.size());
    if (!b.labels.empty()) correct += count_correct(out, b.labels);
    m.samples += b.size();
  }
  if (m.samples > 0) {
    m.loss = loss_sum / static_cast<double>(m.samples);
    if (!data.labels.empty()) m.accuracy = static_cast<double>(correct) / static_cast<double>(m.samples);
  }
  return m;
}

template <class Scalar>
struct train_state;

/// Hooks into fit(). Every method has an empty default.
template <class Scalar>
class callback {
 public:
  virtual ~callback() = default;
  virtual void on_train_begin(train_state<Scalar>&) {}
  virtual void on_epoch_begin(train_state<Scalar>&) {}
  /// Gradients for W are ready (after weight transforms), the optimizer has not stepped yet.
  virtual void after_backward(train_state<Scalar>&) {}
  /// The optimizer stepped and the parameters' after_step hooks ran.
  virtual void after_step(train_state<Scalar>&) {}
  /// state.epoch_metrics holds the epoch's train (and validation) metrics; set state.stop to end.
  virtual void on_epoch_end(train_state<Scalar>&) {}
  virtual void on_train_end(train_state<Scalar>&) {}
};

template <class Scalar>
struct train_state {
  nn::layer<Scalar>& model;
  optimizer<Scalar>& opt;
  rng& gen;
  int epoch = 0;              ///< current epoch, from 0
  int epochs = 0;             ///< planned epochs
  index_t step = 0;             ///< optimizer steps taken so far in this fit()
  index_t batch_in_epoch = 0;   ///< index_t of the current batch within its epoch
  index_t batches_per_epoch = 0;
  double batch_loss = 0;
  index_t batch_correct = 0;
  index_t batch_size = 0;
  metrics running;            ///< running train metrics of the current epoch
  epoch_record epoch_metrics; ///< filled at the end of each epoch
  double samples_per_second = 0;
  bool stop = false;
};

struct fit_options {
  int epochs = 10;
  index_t batch_size = 64;
  std::uint64_t seed = 1;  ///< shuffling, dropout and stochastic transforms
  bool shuffle = true;
  bool progress = true;    ///< progress line on stderr
  lr_schedule learning_rate;  ///< when set, called at every epoch start to set the optimizer's rate
  /// Stop with an error naming the step and the parameter as soon as a gradient or a weight is NaN
  /// or Inf (one pass over the parameters after backward and one after the step: O(parameters),
  /// small against a batch's O(parameters x batch) forward and backward).
  bool check_finite = true;
  /// When set, a checkpoint (model, transforms, optimizer, generators, counters; written
  /// atomically) replaces this file every `checkpoint_every` epochs and after the last epoch.
  std::filesystem::path checkpoint_path;
  int checkpoint_every = 1;
  /// When set, fit continues the run saved in this checkpoint: from its next epoch, with its
  /// shuffling order, generators and learning-rate schedule position, into a model and optimizer
  /// built as the saved ones were. seed, batch_size, shuffle and the training-set size must be the
  /// run's (config_error otherwise); `epochs` is the total, as in the run. The returned history
  /// holds the epochs run by this call (numbered from the resumed epoch). Callbacks' own state is
  /// not saved: a callback that keeps any (a pruning schedule) must derive it from train_state.
  std::filesystem::path resume_from;

  void validate() const {
    if (epochs < 0 || batch_size <= 0 || checkpoint_every < 1) {
      slimnet::detail::raise<config_error>("slimnet::train::fit", "invalid options: epochs={} batch_size={} checkpoint_every={}", epochs,
                                           batch_size, checkpoint_every);
    }
  }
};

/// Prints "epoch 3/20  step 120/938  loss 0.1234  acc 96.51%  4,321 samples/s  ETA 0:12" on stderr,
/// rewriting the line a few times per second and ending it at each epoch with validation metrics.
template <class Scalar>
class progress_printer : public callback<Scalar> {
 public:
  void on_epoch_begin(train_state<Scalar>&) override { last_print_ = clock::now() - std::chrono::seconds(1); }
  void after_step(train_state<Scalar>& s) override {
    const auto now = clock::now();
    if (now - last_print_ < std::chrono::milliseconds(250) && s.batch_in_epoch + 1 < s.batches_per_epoch) return;
    last_print_ = now;
    const double remaining = static_cast<double>(s.batches_per_epoch - s.batch_in_epoch - 1) * static_cast<double>(s.batch_size) /
                             std::max(s.samples_per_second, 1e-9);
    fmt::print(stderr, "\repoch {}/{}  step {}/{}  loss {:.4f}  acc {:.2f}%  {:.0f} samples/s  ETA {}   ", s.epoch + 1,
               s.epochs, s.batch_in_epoch + 1, s.batches_per_epoch, s.running.loss, 100.0 * s.running.accuracy,
               s.samples_per_second, format_duration(remaining));
    std::fflush(stderr);
  }
  void on_epoch_end(train_state<Scalar>& s) override {
    const auto& r = s.epoch_metrics;
    fmt::print(stderr, "\repoch {}/{}  loss {:.4f}  acc {:.2f}%", r.epoch + 1, s.epochs, r.train.loss, 100.0 * r.train.accuracy);
    if (!std::isnan(r.validation.loss)) {
      fmt::print(stderr, "  val_loss {:.4f}  val_acc {:.2f}%", r.validation.loss, 100.0 * r.validation.accuracy);
    }
    fmt::print(stderr, "  lr {:.3g}  {:.0f} samples/s  {:.1f}s                 \n", r.learning_rate, r.samples_per_second, r.seconds);
  }

 private:
  using clock = std::chrono::steady_clock;
  static std::string format_duration(double seconds) {
    const auto s = static_cast<long>(std::max(0.0, seconds) + 0.5);
    return s >= 3600 ? fmt::format("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60) : fmt::format("{}:{:02}", s / 60, s % 60);
  }
  clock::time_point last_print_;
};

/// Trains `model` on `train_data`; evaluates on `validation` (if given) after every epoch.
template <class Scalar>
history fit(nn::layer<Scalar>& model, optimizer<Scalar>& opt, const loss_function<Scalar>& loss,
            const data::dataset<Scalar>& train_data, const fit_options& options,
            const std::vector<callback<Scalar>*>& callbacks = {}, const data::dataset<Scalar>* validation = nullptr) {
  options.validate();
  train_data.validate("slimnet::train::fit");
  if (train_data.size() == 0) slimnet::detail::raise<config_error>("slimnet::train::fit", "the training set is empty");
  rng gen(options.seed);
  rng shuffle_gen = gen.split();
  data::batcher<Scalar> batches(train_data, options.batch_size, options.shuffle, shuffle_gen);
  progress_printer<Scalar> printer;
  std::vector<callback<Scalar>*> all = callbacks;
  if (options.progress) all.push_back(&printer);

  history h;
  train_state<Scalar> s{model, opt, gen, 0, 0, 0, 0, 0, 0, 0, 0, {}, {}, 0, false};
  s.epochs = options.epochs;
  s.batches_per_epoch = batches.batches();
  data::batch<Scalar> b;
  training_step<Scalar> step(model, opt, loss, {options.check_finite, "slimnet::train::fit"});
  // The run's own state besides model and optimizer. At an epoch boundary the batcher holds
  // nothing but its generator: the next reset() draws the next permutation from it.
  const auto run_identity = [&](auto&& check) {
    check("seed", static_cast<std::int64_t>(options.seed));
    check("batch_size", static_cast<std::int64_t>(options.batch_size));
    check("shuffle", options.shuffle ? 1 : 0);
    check("examples", static_cast<std::int64_t>(train_data.size()));
  };
  int first_epoch = 0;
  if (!options.resume_from.empty()) {
    rng gen_saved, shuffle_saved;
    std::int64_t steps = 0;
    load_checkpoint<Scalar>(options.resume_from, model, &opt, [&](const nn::state_reader<Scalar>& in) {
      run_identity([&](const char* key, std::int64_t value) {
        const std::int64_t saved = in.get_integer(key);
        if (saved != value) {
          slimnet::detail::raise<config_error>("slimnet::train::fit", "cannot resume from '{}': it was saved by a run with {} = {}, not {}",
                                               options.resume_from.string(), key, saved, value);
        }
      });
      first_epoch = static_cast<int>(in.get_integer("epoch", 0, options.epochs));
      steps = in.get_integer("step", 0);
      in.read_generator("gen", gen_saved);
      in.read_generator("shuffle_gen", shuffle_saved);
    });
    gen = gen_saved;
    shuffle_gen = shuffle_saved;
    s.step = static_cast<index_t>(steps);
    step.set_steps(steps);
  }
  const auto save = [&](int next_epoch) {
    save_checkpoint<Scalar>(options.checkpoint_path, model, &opt, [&](nn::state_writer<Scalar>& out) {
      run_identity([&](const char* key, std::int64_t value) { out.put_integer(key, value); });
      out.put_integer("epoch", next_epoch);
      out.put_integer("step", static_cast<std::int64_t>(s.step));
      out.put_generator("gen", gen);
      out.put_generator("shuffle_gen", shuffle_gen);
    });
  };
  for (auto* c : all) c->on_train_begin(s);  // after a resume: callbacks see the restored model
  using clock = std::chrono::steady_clock;
  for (int epoch = first_epoch; epoch < options.epochs && !s.stop; ++epoch) {
    s.epoch = epoch;
    if (options.learning_rate) opt.set_learning_rate(options.learning_rate(epoch));
    for (auto* c : all) c->on_epoch_begin(s);
    batches.reset();
    const auto start = clock::now();
    double loss_sum = 0;
    index_t correct = 0, seen = 0;
    s.batch_in_epoch = 0;
    while (batches.next(b)) {
      const auto where = [&] { return fmt::format("at epoch {} step {} (learning rate {})", epoch + 1, s.step, opt.learning_rate()); };
      s.batch_loss = step.run(b, gen, where, [&] {
        for (auto* c : all) c->after_backward(s);
      });
      const tensor<Scalar>& out = step.output();
      s.batch_size = b.size();
      s.batch_correct = b.labels.empty() ? 0 : count_correct(out, b.labels);
      loss_sum += s.batch_loss * static_cast<double>(b.size());
      correct += s.batch_correct;
      seen += b.size();
      s.running.loss = loss_sum / static_cast<double>(seen);
      s.running.accuracy = b.labels.empty() ? std::numeric_limits<double>::quiet_NaN()
                                            : static_cast<double>(correct) / static_cast<double>(seen);
      s.running.samples = seen;
      s.samples_per_second = static_cast<double>(seen) / std::chrono::duration<double>(clock::now() - start).count();
      ++s.step;
      for (auto* c : all) c->after_step(s);
      ++s.batch_in_epoch;
    }
    epoch_record r;
    r.epoch = epoch;
    r.learning_rate = opt.learning_rate();
    r.train = s.running;
    r.seconds = std::chrono::duration<double>(clock::now() - start).count();
    r.samples_per_second = static_cast<double>(seen) / r.seconds;
    if (validation != nullptr) r.validation = evaluate(model, *validation, loss);
    s.epoch_metrics = r;
    for (auto* c : all) c->on_epoch_end(s);
    h.epochs.push_back(s.epoch_metrics);
    const int done = epoch + 1;
    if (!options.checkpoint_path.empty() && (done % options.checkpoint_every == 0 || done == options.epochs || s.stop)) save(done);
  }
  for (auto* c : all) c->on_train_end(s);
  return h;
}

}  // namespace slimnet::train
