// In-memory datasets, seeded shuffling and batching.
#pragma once

#include <cstdint>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <utility>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"

namespace slimnet::data {

/// N examples: inputs (N, ...), class labels in [0, num_classes) and/or regression targets (N, ...).
template <class Scalar>
struct dataset {
  tensor<Scalar> inputs;
  std::vector<std::int32_t> labels;  // empty for pure regression
  tensor<Scalar> targets;            // empty unless the task has tensor targets
  std::vector<std::int32_t> lengths; // valid time steps per sequence (N, T, F) inputs; empty = all
  index_t num_classes = 0;

  index_t size() const { return inputs.rank() == 0 ? 0 : inputs.dim(0); }
  shape_t example_shape() const { return shape_t(inputs.shape().begin() + 1, inputs.shape().end()); }

  /// Throws if labels/targets do not match the number of inputs or labels are out of range.
  void validate(const char* function = "slimnet::data::dataset::validate") const {
    if (!labels.empty() && static_cast<index_t>(labels.size()) != size()) {
      slimnet::detail::raise<shape_error>(function, "{} labels for {} inputs", labels.size(), size());
    }
    if (!lengths.empty() && static_cast<index_t>(lengths.size()) != size()) {
      slimnet::detail::raise<shape_error>(function, "{} sequence lengths for {} inputs", lengths.size(), size());
    }
    for (std::size_t i = 0; i < lengths.size(); ++i) {
      if (lengths[i] < 0 || inputs.rank() < 2 || lengths[i] > inputs.dim(1)) {
        slimnet::detail::raise<config_error>(function, "sequence {} has length {}, outside [0, {}]", i, lengths[i],
                                             inputs.rank() < 2 ? 0 : inputs.dim(1));
      }
    }
    if (!targets.empty() && targets.dim(0) != size()) {
      slimnet::detail::raise<shape_error>(function, "{} targets for {} inputs", targets.dim(0), size());
    }
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (labels[i] < 0 || labels[i] >= num_classes) {
        slimnet::detail::raise<config_error>(function, "label {} of example {} is outside [0, {})", labels[i], i, num_classes);
      }
    }
  }

  /// The examples at `indices`, in that order.
  dataset subset(const std::vector<index_t>& indices) const {
    dataset out;
    out.num_classes = num_classes;
    gather_rows(inputs, indices, out.inputs);
    if (!targets.empty()) gather_rows(targets, indices, out.targets);
    if (!labels.empty()) {
      out.labels.reserve(indices.size());
      for (index_t i : indices) out.labels.push_back(labels.at(static_cast<std::size_t>(i)));
    }
    for (index_t i : lengths.empty() ? std::vector<index_t>{} : indices) out.lengths.push_back(lengths.at(static_cast<std::size_t>(i)));
    return out;
  }

  /// Copies rows `indices` of `from` into `to` (resized to (indices.size(), ...)).
  static void gather_rows(const tensor<Scalar>& from, const std::vector<index_t>& indices, tensor<Scalar>& to) {
    gather_rows(from, indices.data(), static_cast<index_t>(indices.size()), to);
  }
  static void gather_rows(const tensor<Scalar>& from, const index_t* indices, index_t count, tensor<Scalar>& to) {
    shape_t s = from.shape();
    s[0] = count;
    to.resize(s);
    const index_t row = from.dim(0) == 0 ? 0 : from.size() / from.dim(0);
    for (index_t k = 0; k < count; ++k) {
      const index_t i = indices[k];
      if (i < 0 || i >= from.dim(0)) {
        slimnet::detail::raise<shape_error>("slimnet::data::dataset::subset", "index {} outside [0, {})", i, from.dim(0));
      }
      std::memcpy(to.data() + k * row, from.data() + i * row, static_cast<std::size_t>(row) * sizeof(Scalar));
    }
  }
};

/// Mean and (population) standard deviation of all input values.
template <class Scalar>
std::pair<double, double> input_mean_std(const dataset<Scalar>& d) {
  if (d.inputs.size() == 0) slimnet::detail::raise<config_error>("slimnet::data::input_mean_std", "the dataset is empty");
  const auto x = d.inputs.flat().template cast<double>();
  const double mean = x.mean();
  return {mean, std::sqrt((x.array() - mean).square().mean())};
}

/// inputs = (inputs - mean) / stddev; use the training set's statistics for every split.
template <class Scalar>
void standardize(dataset<Scalar>& d, double mean, double stddev) {
  if (!(stddev > 0) || !std::isfinite(mean)) {
    slimnet::detail::raise<config_error>("slimnet::data::standardize", "needs a finite mean and stddev > 0, got {} and {}", mean,
                                         stddev);
  }
  d.inputs.flat() = (d.inputs.flat().array() - static_cast<Scalar>(mean)) / static_cast<Scalar>(stddev);
}

/// One mini-batch; buffers are reused from batch to batch.
template <class Scalar>
struct batch {
  tensor<Scalar> inputs;
  std::vector<std::int32_t> labels;
  tensor<Scalar> targets;
  std::vector<std::int32_t> lengths;
  index_t size() const { return inputs.rank() == 0 ? 0 : inputs.dim(0); }
};

/// Walks a dataset in mini-batches; with shuffling, each pass draws a new permutation from `gen`.
/// The last batch may be smaller (drop_last = false, as PyTorch's DataLoader default).
template <class Scalar>
class batcher {
 public:
  batcher(const dataset<Scalar>& data, index_t batch_size, bool shuffle, rng& gen, bool drop_last = false)
      : data_(data), batch_size_(batch_size), shuffle_(shuffle), drop_last_(drop_last), gen_(gen) {
    if (batch_size <= 0) slimnet::detail::raise<config_error>("slimnet::data::batcher", "batch_size = {} must be positive", batch_size);
    order_.resize(static_cast<std::size_t>(data.size()));
    reset();
  }

  /// Starts a new pass (a new permutation when shuffling).
  void reset() {
    std::iota(order_.begin(), order_.end(), index_t{0});
    if (shuffle_) slimnet::shuffle(order_.begin(), order_.end(), gen_);
    position_ = 0;
  }

  index_t batches() const {
    const index_t n = data_.size();
    return drop_last_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
  }

  /// Fills `b` with the next batch; false at the end of the pass.
  bool next(batch<Scalar>& b) {
    const index_t n = data_.size();
    const index_t count = std::min(batch_size_, n - position_);
    if (count <= 0 || (drop_last_ && count < batch_size_)) return false;
    const index_t* idx = order_.data() + position_;
    dataset<Scalar>::gather_rows(data_.inputs, idx, count, b.inputs);
    if (!data_.targets.empty()) dataset<Scalar>::gather_rows(data_.targets, idx, count, b.targets);
    b.labels.resize(data_.labels.empty() ? 0 : static_cast<std::size_t>(count));
    for (std::size_t k = 0; k < b.labels.size(); ++k) b.labels[k] = data_.labels[static_cast<std::size_t>(idx[k])];
    b.lengths.resize(data_.lengths.empty() ? 0 : static_cast<std::size_t>(count));
    for (std::size_t k = 0; k < b.lengths.size(); ++k) b.lengths[k] = data_.lengths[static_cast<std::size_t>(idx[k])];
    position_ += count;
    return true;
  }

 private:
  const dataset<Scalar>& data_;
  index_t batch_size_;
  bool shuffle_;
  bool drop_last_;
  rng& gen_;
  std::vector<index_t> order_;
  index_t position_ = 0;
};

/// Indices split per class: for each class, round(test_fraction * count) examples go to the test
/// side, drawn by a seeded shuffle; the per-class counts are then adjusted by largest remainder so
/// that the test side has exactly round(test_fraction * N) examples.
inline std::pair<std::vector<index_t>, std::vector<index_t>> stratified_split(const std::vector<std::int32_t>& labels,
                                                                          index_t num_classes, double test_fraction,
                                                                          std::uint64_t seed) {
  if (!(test_fraction >= 0.0 && test_fraction <= 1.0)) {
    slimnet::detail::raise<config_error>("slimnet::data::stratified_split", "test_fraction = {} is outside [0, 1]", test_fraction);
  }
  std::vector<std::vector<index_t>> by_class(static_cast<std::size_t>(num_classes));
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || labels[i] >= num_classes) {
      slimnet::detail::raise<config_error>("slimnet::data::stratified_split", "label {} of example {} is outside [0, {})",
                                  labels[i], i, num_classes);
    }
    by_class[static_cast<std::size_t>(labels[i])].push_back(static_cast<index_t>(i));
  }
  const auto total_test = static_cast<index_t>(std::llround(test_fraction * static_cast<double>(labels.size())));
  std::vector<index_t> take(by_class.size());
  std::vector<std::pair<double, std::size_t>> remainders;
  index_t assigned = 0;
  for (std::size_t c = 0; c < by_class.size(); ++c) {
    const double exact = test_fraction * static_cast<double>(by_class[c].size());
    take[c] = static_cast<index_t>(std::floor(exact));
    assigned += take[c];
    remainders.emplace_back(exact - std::floor(exact), c);
  }
  std::stable_sort(remainders.begin(), remainders.end(), [](auto& a, auto& b) { return a.first > b.first; });
  for (std::size_t k = 0; assigned < total_test && k < remainders.size(); ++k, ++assigned) ++take[remainders[k].second];
  rng gen(seed);
  std::vector<index_t> train, test;
  for (std::size_t c = 0; c < by_class.size(); ++c) {
    auto& members = by_class[c];
    slimnet::shuffle(members.begin(), members.end(), gen);
    test.insert(test.end(), members.begin(), members.begin() + take[c]);
    train.insert(train.end(), members.begin() + take[c], members.end());
  }
  std::sort(train.begin(), train.end());
  std::sort(test.begin(), test.end());
  return {train, test};
}

}  // namespace slimnet::data
