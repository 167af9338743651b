// The removable units of a model, as structure::thin names them: one group per layer that produces
// units (a Linear's output features, a Conv2d's output channels, each stacked layer and direction
// of an LSTM / GRU), with the weights each unit owns. Criteria that rank units (structured
// magnitude pruning, prune/structured.hpp) read them here and hand their choice to thin.
//
// Coupled producers form one group: the last producers of a SensorStack's sensors (DeepSense's
// [acc_conv3; gyro_conv3], whose outputs are stacked channel by channel) keep one channel set, so
// their group has one key per sensor and unit j owns the rows j of all of them.
//
//   for (auto& g : structure::unit_groups(model)) ... g.keys, g.units, g.weights
#pragma once

#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/bidirectional.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/gru.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/lstm.hpp"
#include "slimnet/nn/models_deepsense.hpp"
#include "slimnet/nn/sequential.hpp"

namespace slimnet::structure {

/// Incoming weights of a group's units in one layer: unit j owns the rows g * (rows / gates) + j,
/// g < gates, each with its trailing dimensions (a Conv2d's whole filter; an LSTM's i, f, g, o
/// rows of W_ih and, in another block, of W_hh).
template <class Scalar>
struct unit_weights {
  nn::parameter<Scalar>* weight = nullptr;
  index_t gates = 1;

  index_t row_length() const { return weight->value().size() / weight->value().dim(0); }
  /// Start of unit j's g-th row in weight->value().data().
  index_t row_offset(index_t j, index_t g, index_t units) const { return (g * units + j) * row_length(); }
};

/// Units that thinning removes together (see the header comment).
template <class Scalar>
struct unit_group {
  std::vector<std::string> keys;  ///< structure::thin selection keys, all with the same units
  index_t units = 0;
  std::vector<unit_weights<Scalar>> weights;
};

namespace detail {

template <class Scalar>
class unit_group_finder {
 public:
  std::vector<unit_group<Scalar>> run(nn::sequential<Scalar>& model) {
    std::vector<unit_group<Scalar>> out;
    walk(model, "", out);
    return out;
  }

 private:
  void walk(nn::layer<Scalar>& l, const std::string& path, std::vector<unit_group<Scalar>>& out) {
    if (auto* seq = dynamic_cast<nn::sequential<Scalar>*>(&l)) {
      for (std::size_t i = 0; i < seq->size(); ++i) walk((*seq)[i], (path.empty() ? "" : path + ".") + seq->local_name(i), out);
    } else if (auto* td = dynamic_cast<nn::time_distributed<Scalar>*>(&l)) {
      walk(td->inner(), path, out);
    } else if (auto* ss = dynamic_cast<nn::sensor_stack<Scalar>*>(&l)) {
      sensors(*ss, path, out);
    } else if (auto* lin = dynamic_cast<nn::linear<Scalar>*>(&l)) {
      out.push_back({{path}, lin->out_features(), {{&lin->weight(), 1}}});
    } else if (auto* conv = dynamic_cast<nn::conv2d<Scalar>*>(&l)) {
      out.push_back({{path}, conv->out_channels(), {{&conv->weight(), 1}}});
    } else if (auto* bi = dynamic_cast<nn::bidirectional<Scalar>*>(&l)) {
      direction(bi->forward_layer(), path, "", out);
      direction(bi->backward_layer(), path, "_reverse", out);
    } else if (auto* rec = dynamic_cast<nn::recurrent_layer<Scalar>*>(&l)) {
      direction(*rec, path, "", out);
    }
  }

  /// Each sensor's groups, its last one merged with the other sensors' last ones.
  void sensors(nn::sensor_stack<Scalar>& ss, const std::string& path, std::vector<unit_group<Scalar>>& out) {
    unit_group<Scalar> last;
    for (std::size_t k = 0; k < ss.size(); ++k) {
      std::vector<unit_group<Scalar>> branch;
      const std::string branch_path = path + "." + ss.branch_name(k);
      walk(ss[k], branch_path, branch);
      if (branch.empty()) {
        if (k > 0 && !last.keys.empty())
          slimnet::detail::raise<config_error>(fn, "sensor '{}' produces no units, the others do", branch_path);
        continue;
      }
      for (std::size_t g = 0; g + 1 < branch.size(); ++g) out.push_back(std::move(branch[g]));
      unit_group<Scalar>& end = branch.back();
      if (k > 0 && (last.keys.empty() || end.units != last.units)) {
        slimnet::detail::raise<config_error>(fn, "sensor '{}' ends with {} units, the first sensor with {}", branch_path,
                                             end.units, last.units);
      }
      last.units = end.units;
      last.keys.insert(last.keys.end(), end.keys.begin(), end.keys.end());
      last.weights.insert(last.weights.end(), end.weights.begin(), end.weights.end());
    }
    if (!last.keys.empty()) out.push_back(std::move(last));
  }

  template <class Cell>
  void stack(nn::recurrent<Scalar, Cell>& r, const std::string& path, const std::string& suffix,
             std::vector<unit_group<Scalar>>& out) {
    for (index_t k = 0; k < r.num_layers(); ++k) {
      out.push_back({{fmt::format("{}.l{}{}", path, k, suffix)},
                     r.hidden_size(k),
                     {{&r.weight_ih(k), Cell::gates}, {&r.weight_hh(k), Cell::gates}}});
    }
  }
  void direction(nn::recurrent_layer<Scalar>& d, const std::string& path, const std::string& suffix,
                 std::vector<unit_group<Scalar>>& out) {
    if (auto* l = dynamic_cast<nn::lstm<Scalar>*>(&d)) return stack(*l, path, suffix, out);
    if (auto* g = dynamic_cast<nn::gru<Scalar>*>(&d)) return stack(*g, path, suffix, out);
    slimnet::detail::raise<config_error>(fn, "recurrent layer '{}' is a {}, not an LSTM or GRU", path, d.kind());
  }

  static constexpr const char* fn = "slimnet::structure::unit_groups";
};

}  // namespace detail

/// The unit groups of `model` in forward order, keyed as structure::thin's selections ("fc1",
/// "frames.conv4", "lstm.l1_reverse"); a SensorStack's sensors' last producers form one group.
/// Throws config_error for sensors that end with different unit counts and recurrent layers other
/// than LSTM / GRU.
template <class Scalar>
std::vector<unit_group<Scalar>> unit_groups(nn::sequential<Scalar>& model) {
  return detail::unit_group_finder<Scalar>().run(model);
}

}  // namespace slimnet::structure
