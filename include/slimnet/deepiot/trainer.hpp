// DeepIoT's compressor-critic training (Yao et al. 2017, Alg. 1; brief items 13-22) on a gated
// model, and the hard masks of the fine-tuning phase (Eq. 11).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <tuple>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/data/dataset.hpp"
#include "slimnet/deepiot/compressor.hpp"
#include "slimnet/deepiot/gated.hpp"
#include "slimnet/deepiot/reinforce.hpp"
#include "slimnet/deepiot/thin.hpp"
#include "slimnet/train/batch_norm_statistics.hpp"
#include "slimnet/train/checkpoint_state.hpp"
#include "slimnet/train/fit.hpp"
#include "slimnet/train/loss.hpp"
#include "slimnet/train/optimizer.hpp"
#include "slimnet/train/step.hpp"

namespace slimnet::deepiot {

/// Options of a DeepIoT run (deepiot::compress): the critic's and the compressor's optimizers, the
/// initial keep probabilities, the threshold schedule and the stop rule. Named after the method, as
/// prune::dns_options, so it is not confused with nn::compressed::compress_options (how a trained
/// model is converted for inference).
struct deepiot_options {
  index_t batch_size = 64;
  // Critic (the task network W): Adam(1e-4, 0.5, 0.9), L2 5e-4 * 1/2 |v|^2 on every parameter.
  double critic_lr = 1e-4;
  double critic_beta1 = 0.5;
  double critic_beta2 = 0.9;
  double weight_decay = 5e-4;
  // Compressor φ: TF RMSProp(1e-3, 0.9, 1e-10).
  typename tf_rmsprop<double>::options compressor_optimizer{};
  compressor_options compressor{};
  double baseline_decay = 0.9;
  double gamma = 0.5;  ///< soft-deletion factor
  threshold_schedule tau{};
  stop_rule stop{};
  double conv_keep = 0.8;  ///< initial keep probability of conv units
  double fc_keep = 0.5;    ///< ... of fully connected units
  double rnn_keep = 0.5;   ///< ... of LSTM / GRU hidden units (the authors' RNN_KEEP_PROB)
  double eps = 1e-6;       ///< clamp of p̂ inside the log-likelihood
  std::uint64_t seed = 1;
  index_t eval_batch = 256;
  /// Before each stop-rule check, BatchNorm running statistics are re-estimated over this many
  /// batches of eval_batch training examples with the check's deterministic mask
  /// (train::recalibrate_batch_norm); 0 keeps the statistics gathered under the random masks.
  /// Those are wrong for the thinned network: a unit dropped with probability 1 - p̂ in training
  /// is 0 or scaled by p at the check, so every BatchNorm after a gate sees a shifted input
  /// distribution (a VGG-style net fell to ~11% held-out accuracy without this).
  index_t batch_norm_batches = 20;
  /// When set, a checkpoint (train/checkpoint.hpp: the task network W and its Adam state, the
  /// compressor φ and its RMSProp state, the baseline, the stored p, the generators and both batch
  /// streams' positions) replaces this file every `checkpoint_every` iterations and after the last.
  std::filesystem::path checkpoint_path;
  std::int64_t checkpoint_every = 100;
  /// When set, compress continues the run saved in this checkpoint bit for bit (one thread; the
  /// gated model built as before; seed, batch_size and the training-set size must be the run's).
  std::filesystem::path resume_from;

  void validate() const {
    constexpr const char* fn = "slimnet::deepiot::compress";
    if (checkpoint_every < 1) slimnet::detail::raise<config_error>(fn, "checkpoint_every = {} must be >= 1", checkpoint_every);
    if (batch_norm_batches < 0)
      slimnet::detail::raise<config_error>(fn, "batch_norm_batches = {} must be >= 0", batch_norm_batches);
    if (batch_size < 2 || eval_batch <= 0 || !(critic_lr >= 0) || !(critic_beta1 >= 0 && critic_beta1 < 1) ||
        !(critic_beta2 >= 0 && critic_beta2 < 1) || !(weight_decay >= 0) || !(baseline_decay >= 0 && baseline_decay < 1) ||
        !(eps > 0 && eps < 0.5)) {
      slimnet::detail::raise<config_error>(fn, "invalid options: batch_size={} critic_lr={} beta1={} beta2={} weight_decay={} "
                                           "baseline_decay={} eps={}", batch_size, critic_lr, critic_beta1, critic_beta2,
                                           weight_decay, baseline_decay, eps);
    }
    detail::check_gamma(fn, gamma);
    if (!(conv_keep >= 0 && conv_keep <= 1 && fc_keep >= 0 && fc_keep <= 1 && rnn_keep >= 0 && rnn_keep <= 1)) {
      slimnet::detail::raise<config_error>(fn, "initial keep probabilities conv={} fc={} rnn={} are outside [0, 1]", conv_keep, fc_keep,
                                           rnn_keep);
    }
    compressor_optimizer.validate();
    compressor.validate();
    tau.validate();
    stop.validate();
  }
};

/// The former name of deepiot_options.
using compress_options [[deprecated("use deepiot::deepiot_options (nn::compressed::compress_options is another thing)")]] = deepiot_options;

/// What the stop rule saw at a check.
struct compress_check {
  std::int64_t iteration = 0;  ///< iterations done
  double tau = 0;
  double fraction = 1;         ///< remaining weights of the Linear/Conv2d/recurrent layers, thinned
  double accuracy = 0;         ///< held-out, units below τ removed, kept ones scaled by p
  double critic_loss = 0;      ///< mean training cross-entropy since the last check
  double baseline = 0;         ///< EMA of the compressor batch's loss
  std::vector<index_t> kept;   ///< kept units per droppable layer
};

template <class Scalar>
struct compress_result {
  std::int64_t iterations = 0;
  double tau = 0;
  bool stopped = false;  ///< the stop rule fired (else the iteration cap)
  std::vector<column_vector<Scalar>> probabilities;  ///< last compressor output p per layer
  compress_check last;
};

namespace detail {
/// Per-example softmax cross-entropy of logits (N, classes).
template <class Scalar>
std::vector<double> per_example_cross_entropy(const tensor<Scalar>& out, const std::vector<std::int32_t>& labels) {
  const auto z = out.matrix();
  std::vector<double> l(static_cast<std::size_t>(z.rows()));
  for (index_t i = 0; i < z.rows(); ++i) {
    const double m = static_cast<double>(z.row(i).maxCoeff());
    double s = 0;
    for (index_t c = 0; c < z.cols(); ++c) s += std::exp(static_cast<double>(z(i, c)) - m);
    l[static_cast<std::size_t>(i)] = std::log(s) + m - static_cast<double>(z(i, labels[static_cast<std::size_t>(i)]));
  }
  return l;
}

/// Copy of a layer without its unit gates, through nested Sequentials, TimeDistributed and
/// SensorStack (null for a gate itself).
template <class Scalar>
std::unique_ptr<nn::layer<Scalar>> without_gates_layer(const nn::layer<Scalar>& l);

/// Copy of a Sequential without its unit gates (also those nested in its containers).
template <class Scalar>
nn::sequential<Scalar> without_gates(const nn::sequential<Scalar>& m) {
  nn::sequential<Scalar> out;
  for (std::size_t i = 0; i < m.size(); ++i) {
    if (auto c = without_gates_layer(m[i])) out.add_ptr(m.local_name(i), std::move(c));
  }
  return out;
}

template <class Scalar>
std::unique_ptr<nn::layer<Scalar>> without_gates_layer(const nn::layer<Scalar>& l) {
  if (dynamic_cast<const unit_gate<Scalar>*>(&l)) return nullptr;
  if (auto* seq = dynamic_cast<const nn::sequential<Scalar>*>(&l)) return std::make_unique<nn::sequential<Scalar>>(without_gates(*seq));
  if (auto* td = dynamic_cast<const nn::time_distributed<Scalar>*>(&l)) {
    auto inner = without_gates_layer(td->inner());
    if (!inner) slimnet::detail::raise<config_error>("slimnet::deepiot::without_gates", "TimeDistributed '{}' holds only a gate", td->name());
    return std::make_unique<nn::time_distributed<Scalar>>(std::move(inner), td->step_shape());
  }
  if (auto* ss = dynamic_cast<const nn::sensor_stack<Scalar>*>(&l)) {
    auto out = std::make_unique<nn::sensor_stack<Scalar>>();
    for (std::size_t b = 0; b < ss->size(); ++b) {
      auto branch = without_gates_layer((*ss)[b]);
      if (!branch) slimnet::detail::raise<config_error>("slimnet::deepiot::without_gates", "sensor '{}' is only a gate", ss->branch_name(b));
      out->add_ptr(ss->branch_name(b), std::move(branch));
    }
    return out;
  }
  return l.clone();
}
}  // namespace detail

/// Kept units (p >= τ, at least one per layer) of every droppable layer, by its thinning keys
/// (droppable_layer::keys: the name, or every sensor's producer of a coupled group).
template <class Scalar>
unit_selection selection(const gated_model<Scalar>& g, const std::vector<column_vector<Scalar>>& p, double tau) {
  if (p.size() != g.layers.size()) {
    slimnet::detail::raise<shape_error>("slimnet::deepiot::selection", "{} probability vectors for {} layers", p.size(), g.layers.size());
  }
  unit_selection keep;
  for (std::size_t k = 0; k < p.size(); ++k) {
    auto kk = kept_units(p[k], tau);
    for (const auto& key : g.layers[k].keys) keep[key] = kk;  // a coupled group: every sensor's producer
  }
  return keep;
}

/// Remaining fraction of Linear/Conv2d/recurrent weights (no biases) after thinning to `keep`.
template <class Scalar>
double remaining_fraction(const gated_model<Scalar>& g, const unit_selection& keep) {
  auto plain = detail::without_gates(g.net);
  auto thinned = thin(plain, keep);
  return static_cast<double>(weight_count(thinned)) / static_cast<double>(weight_count(plain));
}

/// Puts every gate in hard mode (Eq. 11): ẑ_j = 1[p_j >= τ] (at least one unit per layer), with
/// the kept units scaled by p_j when `fold_probabilities` (keeps the expected activation the
/// network was trained with under non-inverted dropout). Returns the selection.
template <class Scalar>
unit_selection harden(gated_model<Scalar>& g, const std::vector<column_vector<Scalar>>& p, double tau, bool fold_probabilities) {
  auto keep = selection(g, p, tau);
  for (std::size_t k = 0; k < g.layers.size(); ++k) {
    const auto& z = keep[g.layers[k].keys.front()];
    column_vector<Scalar> s(p[k].size());
    for (index_t j = 0; j < s.size(); ++j) s[j] = z[static_cast<std::size_t>(j)] ? (fold_probabilities ? p[k][j] : Scalar(1)) : Scalar(0);
    g.gate(k).set_hard(s);
  }
  return keep;
}

/// Compressor-critic training. Per iteration t (τ = schedule(t), p̂ = soft_delete(p, τ, γ)):
///  (a) critic: a batch with per-example masks z ~ Bernoulli(p̂) of the stored p; one Adam step on
///      W for the mean cross-entropy (+ weight decay);
///  (b) compressor: a new batch; p from the compressor on the live W, new masks from its p̂;
///      per-example losses L_i (no gradient to W); A_i = (L_i - EMA mean) / max(1, EMA std);
///      one RMSProp step on φ for mean_i A_i log μ(z_i) (the gradient passes through γ);
///  (c) the stored p is recomputed with the updated φ.
/// Every stop.check_every iterations the kept units (p >= τ) give the remaining weight fraction
/// and the held-out accuracy (pruned units 0, kept ones scaled by p; BatchNorm statistics
/// re-estimated under that mask, see batch_norm_batches); `on_check` sees them, and
/// training ends when stop.satisfied(...). The gates are left in stochastic mode with p̂ (the last
/// iteration is always checked, so BatchNorm statistics are left those of its hard mask).
template <class Scalar>
compress_result<Scalar> compress(gated_model<Scalar>& g, const data::dataset<Scalar>& train_data,
                                 const data::dataset<Scalar>& heldout, const deepiot_options& opt,
                                 const std::function<void(const compress_check&)>& on_check = {}) {
  constexpr const char* fn = "slimnet::deepiot::compress";
  opt.validate();
  train_data.validate(fn);
  heldout.validate(fn);
  if (train_data.size() < opt.batch_size) {
    slimnet::detail::raise<config_error>(fn, "{} training examples for batches of {}", train_data.size(), opt.batch_size);
  }
  if (g.layers.empty()) slimnet::detail::raise<config_error>(fn, "the model has no gates");
  const std::size_t nl = g.layers.size();
  rng gen(opt.seed);
  rng init_gen = gen.split(), shuffle_a = gen.split(), shuffle_b = gen.split();
  compressor<Scalar> comp(g.compressor_layers(), opt.compressor, init_gen);
  train::adam<Scalar> critic({opt.critic_lr, opt.critic_beta1, opt.critic_beta2, 1e-8, opt.weight_decay});
  tf_rmsprop<Scalar> rms({opt.compressor_optimizer.lr, opt.compressor_optimizer.decay, opt.compressor_optimizer.eps});
  loss_baseline baseline(opt.baseline_decay);
  const train::cross_entropy<Scalar> ce;
  train::training_step<Scalar> critic_step(g.net, critic, ce, {true, fn});

  std::vector<column_vector<Scalar>> p(nl);
  for (std::size_t k = 0; k < nl; ++k) {
    const double keep0 = g.layers[k].recurrent ? opt.rnn_keep : g.layers[k].conv ? opt.conv_keep : opt.fc_keep;
    p[k] = column_vector<Scalar>::Constant(g.layers[k].units, static_cast<Scalar>(keep0));
  }
  // Where a batch stream is, for checkpoints: its order is the permutation drawn at its last
  // reset, so the shuffling generator's state before that reset and the batches taken since
  // rebuild it exactly (replayed on resume).
  struct stream_position {
    rng::state_type at_reset;
    std::int64_t taken = 0;
  };
  stream_position pos_a{shuffle_a.state()}, pos_b{shuffle_b.state()};
  data::batcher<Scalar> batches_a(train_data, opt.batch_size, true, shuffle_a, true);
  data::batcher<Scalar> batches_b(train_data, opt.batch_size, true, shuffle_b, true);
  auto next = [](data::batcher<Scalar>& b, rng& shuffle, stream_position& pos, data::batch<Scalar>& out) {
    if (!b.next(out)) {
      pos.at_reset = shuffle.state();
      pos.taken = 0;
      b.reset();
      b.next(out);
    }
    ++pos.taken;
  };
  data::batch<Scalar> ba, bb;
  tensor<Scalar> out;
  nn::forward_context ctx{true, &gen};
  std::vector<tensor<Scalar>> z(nl);
  std::vector<column_vector<Scalar>> p_hat(nl), factor(nl), dp(nl);
  compress_result<Scalar> result;
  double loss_sum = 0;
  std::int64_t loss_count = 0;

  const auto run_identity = [&](auto&& check) {
    check("seed", static_cast<std::int64_t>(opt.seed));
    check("batch_size", static_cast<std::int64_t>(opt.batch_size));
    check("examples", static_cast<std::int64_t>(train_data.size()));
    check("layers", static_cast<std::int64_t>(nl));
  };
  std::int64_t first = 0;
  if (!opt.resume_from.empty()) {
    rng gen_saved, reset_a, reset_b;
    std::int64_t steps = 0;
    // φ, its optimizer, the baseline and p are local: a failed load throws out of compress, and
    // load_checkpoint leaves the task network and the critic's state as they were.
    train::load_checkpoint<Scalar>(opt.resume_from, g.net, &critic, [&](const nn::state_reader<Scalar>& in) {
      run_identity([&](const char* key, std::int64_t value) {
        const std::int64_t saved = in.get_integer(key);
        if (saved != value) {
          slimnet::detail::raise<config_error>(fn, "cannot resume from '{}': it was saved by a run with {} = {}, not {}",
                                               opt.resume_from.string(), key, saved, value);
        }
      });
      first = in.get_integer("iteration", 0, opt.stop.max_iterations);
      steps = in.get_integer("critic_steps", 0);
      in.read_generator("gen", gen_saved);
      in.read_generator("shuffle_a", reset_a);
      in.read_generator("shuffle_b", reset_b);
      const index_t per_pass = train_data.size() / opt.batch_size;
      pos_a.taken = in.get_integer("taken_a", 1, per_pass);
      pos_b.taken = in.get_integer("taken_b", 1, per_pass);
      comp.load_state(in.scope("compressor"));
      rms.load_state(comp, in.scope("rms"));
      baseline.load_state(in.scope("baseline"));
      for (std::size_t k = 0; k < nl; ++k) {
        tensor<Scalar> t({g.layers[k].units});
        in.read_tensor(fmt::format("p/{}", k), t);
        p[k] = t.flat();
      }
      loss_sum = in.get_real("loss_sum");
      loss_count = in.get_integer("loss_count", 0);
      result.iterations = first;
      result.tau = in.get_real("tau");
    });
    gen = gen_saved;
    critic_step.set_steps(steps);
    for (auto [b, shuffle, pos, saved] : {std::tuple{&batches_a, &shuffle_a, &pos_a, &reset_a}, std::tuple{&batches_b, &shuffle_b, &pos_b, &reset_b}}) {
      pos->at_reset = saved->state();
      shuffle->set_state(pos->at_reset);
      b->reset();  // the same permutation as before the stop
      data::batch<Scalar> skipped;
      for (std::int64_t i = 0; i < pos->taken; ++i) b->next(skipped);
    }
  }
  const auto save = [&](std::int64_t next_iteration) {
    train::save_checkpoint<Scalar>(opt.checkpoint_path, g.net, &critic, [&](nn::state_writer<Scalar>& out) {
      run_identity([&](const char* key, std::int64_t value) { out.put_integer(key, value); });
      out.put_integer("iteration", next_iteration);
      out.put_integer("critic_steps", critic_step.steps());
      out.put_generator("gen", gen);
      rng at_reset;
      at_reset.set_state(pos_a.at_reset);
      out.put_generator("shuffle_a", at_reset);
      at_reset.set_state(pos_b.at_reset);
      out.put_generator("shuffle_b", at_reset);
      out.put_integer("taken_a", pos_a.taken);
      out.put_integer("taken_b", pos_b.taken);
      auto c = out.scope("compressor");
      comp.save_state(c);
      auto r = out.scope("rms");
      rms.save_state(r);
      auto bl = out.scope("baseline");
      baseline.save_state(bl);
      for (std::size_t k = 0; k < nl; ++k) {
        tensor<Scalar> t({p[k].size()});
        t.flat() = p[k];
        out.put_tensor(fmt::format("p/{}", k), t);
      }
      out.put_real("loss_sum", loss_sum);
      out.put_integer("loss_count", loss_count);
      out.put_real("tau", result.tau);
    });
  };

  for (std::int64_t it = first; it < opt.stop.max_iterations; ++it) {
    const double tau = opt.tau(it);
    // (a) critic step
    next(batches_a, shuffle_a, pos_a, ba);
    for (std::size_t k = 0; k < nl; ++k) {
      g.gate(k).set_mask(sample_masks(soft_delete(p[k], tau, opt.gamma), ba.size(), gen));
    }
    loss_sum += critic_step.run(ba, gen, [&] { return fmt::format("at iteration {} (critic step)", it); });
    ++loss_count;

    // (b) compressor step
    next(batches_b, shuffle_b, pos_b, bb);
    auto [w, b] = g.live_weights();
    auto p_now = comp.forward(w, b);
    std::vector<double> logp(static_cast<std::size_t>(bb.size()), 0.0);
    for (std::size_t k = 0; k < nl; ++k) {
      p_hat[k] = soft_delete(p_now[k], tau, opt.gamma, &factor[k]);
      z[k] = sample_masks(p_hat[k], bb.size(), gen);
      g.gate(k).set_mask(z[k]);
    }
    ctx.lengths = bb.lengths.empty() ? nullptr : &bb.lengths;  // padded sequences (DeepSense)
    g.net.forward(bb.inputs, out, ctx);
    const auto losses = detail::per_example_cross_entropy(out, bb.labels);
    baseline.update(losses);
    const auto advantage = baseline.advantages(losses);
    for (std::size_t k = 0; k < nl; ++k) dp[k] = reinforce_gradient(p_hat[k], z[k], advantage, opt.eps).cwiseProduct(factor[k]);
    comp.zero_grad();
    comp.backward(dp);
    rms.step(comp);

    // (c) recompute p
    auto [w2, b2] = g.live_weights();
    p = comp.forward(w2, b2);
    for (std::size_t k = 0; k < nl; ++k) {
      // The compressor's dropout probabilities: a NaN here would silently keep or drop whole units.
      if (!p[k].allFinite()) slimnet::detail::raise<error>(fn, "the compressor's probabilities of layer {} became non-finite at iteration {}", k, it);
    }
    result.iterations = it + 1;
    result.tau = tau;

    if (opt.stop.due(it) || it + 1 == opt.stop.max_iterations) {
      compress_check c;
      c.iteration = it + 1;
      c.tau = tau;
      const auto keep = selection(g, p, tau);
      c.fraction = remaining_fraction(g, keep);
      for (std::size_t k = 0; k < nl; ++k) {
        const auto& kk = keep.at(g.layers[k].keys.front());
        c.kept.push_back(static_cast<index_t>(std::count(kk.begin(), kk.end(), true)));
        column_vector<Scalar> s(p[k].size());
        for (index_t j = 0; j < s.size(); ++j) s[j] = kk[static_cast<std::size_t>(j)] ? p[k][j] : Scalar(0);
        if (opt.batch_norm_batches > 0) {
          g.gate(k).set_hard(s);  // the same factors in the training passes of the re-estimation
        } else {
          g.gate(k).set_probabilities(s);
        }
      }
      if (opt.batch_norm_batches > 0) {
        // Its own generator, a function of the seed and the iteration: the training streams and a
        // resumed run see the same draws with or without BatchNorm layers.
        rng bn_gen(opt.seed ^ (0x9e3779b97f4a7c15ULL * static_cast<std::uint64_t>(it + 1)));
        train::recalibrate_batch_norm(g.net, train_data, opt.batch_norm_batches, opt.eval_batch, bn_gen);
      }
      c.accuracy = train::evaluate(g.net, heldout, ce, opt.eval_batch).accuracy;
      if (opt.batch_norm_batches > 0) {
        for (std::size_t k = 0; k < nl; ++k) g.gate(k).set_probabilities(g.gate(k).scale());  // back to stochastic mode
      }
      c.critic_loss = loss_sum / static_cast<double>(std::max<std::int64_t>(loss_count, 1));
      c.baseline = baseline.mean();
      loss_sum = 0, loss_count = 0;
      result.last = c;
      if (on_check) on_check(c);
      if (opt.stop.due(it) && opt.stop.satisfied(c.fraction, c.accuracy)) result.stopped = true;
    }
    if (!opt.checkpoint_path.empty() && ((it + 1) % opt.checkpoint_every == 0 || it + 1 == opt.stop.max_iterations || result.stopped)) {
      save(it + 1);
    }
    if (result.stopped) break;
  }
  for (std::size_t k = 0; k < nl; ++k) g.gate(k).set_probabilities(soft_delete(p[k], result.tau, opt.gamma));
  result.probabilities = p;
  return result;
}

}  // namespace slimnet::deepiot
