// Energy of one inference, estimated from what the network computes and where its data lives, on
// the seed's 45 nm per-operation table (Horowitz, ISSCC 2014, as used by Han et al. 2016 for
// Deep Compression and EIE). DeepIoT's Table 1 reports energy measured with a power meter on an
// Intel Edison; we have no meter, so this model stands in for it (issue #14), and what it can
// show is the reduction from the original to the compressed network, not the Edison's joules.
//
// The model (every assumption, in one place):
// - Arithmetic: each multiply-accumulate of a weight is one MULT and one ADD at the chosen
//   precision (fp32 by default: 3.7 + 0.9 pJ). A bias is one ADD per output element; inference
//   BatchNorm one MULT + one ADD per element (scale and shift); ReLU / max-pool comparisons one ADD
//   each (kernel - 1 per pooled output); an elementwise gate product of an LSTM / GRU one MULT; a
//   sigmoid or tanh one MULT + one ADD (a piecewise-linear or table evaluation, as fixed-function
//   hardware does it). Layers that only move data (Flatten, Dropout at inference, padding) cost
//   no arithmetic.
// - Memory: every weight (and bias, BatchNorm parameter) is read once per inference from the
//   smallest memory level that holds ALL of the model's weights (the model stays resident between
//   inferences): <= 8 KiB, <= 32 KiB, <= 1 MiB SRAM, else DRAM. Each layer reads its input and
//   writes its output once, from the smallest level holding both (perfect reuse of a window
//   within the layer: the optimistic bound for activations; weights dominate every network here).
//   A recurrent layer reads x_t and h_{t-1} and writes h_t (and c_t) at every step.
// - Access costs are the seed's per 64-bit access (8 KiB 10 pJ, 32 KiB 20 pJ, 1 MiB 100 pJ,
//   DRAM 1.3 nJ: the low end of its 1.3-2.6 nJ, equal to the other table's 640 pJ per 32 bits);
//   traffic in bytes is charged bytes / 8 accesses.
// - Sparse weights (energy_options::sparse_weights): only nonzero weights are multiplied, and each
//   is stored as value + index_bytes (Deep Compression's relative index), read from the level the
//   compressed size fits. Zero activations are not skipped (EIE does; a CPU kernel mostly does not).
// Counts are for one example (batch 1) of the input shape given, sequences at their full length.
#pragma once

#include <fmt/format.h>

#include <array>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/nn/activation.hpp"
#include "slimnet/nn/batch_norm.hpp"
#include "slimnet/nn/bidirectional.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/dropout.hpp"
#include "slimnet/nn/flatten.hpp"
#include "slimnet/nn/gru.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/lstm.hpp"
#include "slimnet/nn/models_deepsense.hpp"
#include "slimnet/nn/pooling.hpp"
#include "slimnet/nn/sequence_pool.hpp"
#include "slimnet/nn/sequential.hpp"

// Functions of this header that are not templates by nature are written `template <class = void>`
// (called as before: the parameter is never named) so that a translation unit that includes the
// header without calling them does not compile them (a non-template inline body, with the fmt,
// file and parsing code it instantiates, is compiled in every unit that includes it).

namespace slimnet::report {

/// Arithmetic precision of an operation (the seed's table rows).
enum class arithmetic { fp32, fp16, int32, int8 };
/// Where data is read from.
enum class memory_level { sram_8k, sram_32k, sram_1m, dram };

inline const char* to_string(memory_level m) {
  switch (m) {
    case memory_level::sram_8k:
      return "SRAM 8 KiB";
    case memory_level::sram_32k:
      return "SRAM 32 KiB";
    case memory_level::sram_1m:
      return "SRAM 1 MiB";
    default:
      return "DRAM";
  }
}

/// Energy per operation in pJ, 45 nm (the seed's tables; Horowitz 2014).
struct energy_table {
  std::array<double, 4> mult{3.7, 1.1, 3.1, 0.2};  ///< fp32, fp16, int32, int8
  std::array<double, 4> add{0.9, 0.4, 0.1, 0.03};
  std::array<double, 4> access64{10, 20, 100, 1300};                 ///< per 64-bit access by memory_level
  std::array<double, 3> capacity{8 * 1024, 32 * 1024, 1024 * 1024};  ///< bytes of the SRAM levels
};

struct energy_options {
  energy_table table{};
  arithmetic precision = arithmetic::fp32;  ///< of the weights' multiply-accumulates and their bytes
  bool sparse_weights = false;              ///< count only nonzero weights (see the header comment)
  index_t index_bytes = 2;                  ///< per stored nonzero when sparse_weights
};

/// One layer's (or the whole model's) counts per example and the energy they cost.
struct layer_energy {
  std::string name, kind;
  double macs = 0;              ///< weight multiply-accumulates
  double mults = 0, adds = 0;   ///< all arithmetic, MACs included
  double weight_bytes = 0;      ///< parameters read
  double activation_bytes = 0;  ///< inputs read + outputs written
  memory_level activation_level = memory_level::sram_8k;
  double compute_pj = 0, weight_memory_pj = 0, activation_memory_pj = 0;
  double total_pj() const { return compute_pj + weight_memory_pj + activation_memory_pj; }
};

struct energy_report {
  std::vector<layer_energy> layers;
  layer_energy total;
  memory_level weight_level = memory_level::sram_8k;  ///< where all the weights fit
  double total_mj() const { return total.total_pj() * 1e-9; }
};

namespace detail::energy {

inline memory_level level_for(double bytes, const energy_table& t) {
  for (int k = 0; k < 3; ++k)
    if (bytes <= t.capacity[static_cast<std::size_t>(k)]) return static_cast<memory_level>(k);
  return memory_level::dram;
}

inline double bytes_of(arithmetic a) {
  switch (a) {
    case arithmetic::fp32:
    case arithmetic::int32:
      return 4;
    case arithmetic::fp16:
      return 2;
    default:
      return 1;
  }
}

template <class Scalar>
class counter {
 public:
  explicit counter(const energy_options& o) : opt_(o) {}

  std::vector<layer_energy> rows;

  /// Counts `l` on an input of shape `in`; returns its output shape.
  shape_t visit(nn::layer<Scalar>& l, const shape_t& in) {
    if (auto* seq = dynamic_cast<nn::sequential<Scalar>*>(&l)) {
      shape_t s = in;
      for (std::size_t i = 0; i < seq->size(); ++i) s = visit((*seq)[i], s);
      return s;
    }
    if (auto* td = dynamic_cast<nn::time_distributed<Scalar>*>(&l)) {
      // The inner network runs once per step: (N*T, step_shape...).
      shape_t step{in[0] * in[1]};
      step.insert(step.end(), td->step_shape().begin(), td->step_shape().end());
      visit(td->inner(), step);
      return l.output_shape(in);
    }
    if (auto* stack = dynamic_cast<nn::sensor_stack<Scalar>*>(&l)) {
      const shape_t out = l.output_shape(in);  // validates the split
      shape_t part = in;
      part[3] /= static_cast<index_t>(stack->size());
      for (std::size_t k = 0; k < stack->size(); ++k) visit((*stack)[k], part);
      return out;
    }
    if (auto* bi = dynamic_cast<nn::bidirectional<Scalar>*>(&l)) {
      visit(bi->forward_layer(), in);
      visit(bi->backward_layer(), in);
      return l.output_shape(in);
    }
    const shape_t out = l.output_shape(in);
    layer_energy r;
    r.name = l.name();
    r.kind = l.kind();
    const double n_in = static_cast<double>(shape_size(in)), n_out = static_cast<double>(shape_size(out));
    r.activation_bytes = 4.0 * (n_in + n_out);
    if (auto* lin = dynamic_cast<nn::linear<Scalar>*>(&l)) {
      const double uses = n_in / static_cast<double>(lin->in_features());  // positions (sequence steps)
      weights(r, lin->weight().used_value(), uses);
      if (lin->bias()) bias(r, lin->bias()->used_value(), uses);
    } else if (auto* conv = dynamic_cast<nn::conv2d<Scalar>*>(&l)) {
      const double uses = n_out / static_cast<double>(conv->out_channels());  // output positions
      weights(r, conv->weight().used_value(), uses);
      if (conv->bias()) bias(r, conv->bias()->used_value(), uses);
    } else if (auto* rec = dynamic_cast<nn::recurrent_layer<Scalar>*>(&l)) {
      recurrent(r, *rec, in);
    } else if (auto* bn = dynamic_cast<nn::batch_norm<Scalar>*>(&l)) {
      r.mults += n_in;
      r.adds += n_in;
      r.weight_bytes += 2.0 * 4.0 * static_cast<double>(bn->features());  // folded scale, shift
    } else if (dynamic_cast<nn::max_pool2d<Scalar>*>(&l) || dynamic_cast<nn::avg_pool2d<Scalar>*>(&l)) {
      r.adds += n_in - n_out;  // kernel - 1 comparisons or additions per output (non-overlapping)
      if (dynamic_cast<nn::avg_pool2d<Scalar>*>(&l)) r.mults += n_out;
    } else if (dynamic_cast<nn::sequence_mean<Scalar>*>(&l)) {
      r.adds += n_in;
      r.mults += n_out;
    } else if (dynamic_cast<nn::flatten<Scalar>*>(&l) || dynamic_cast<nn::dropout<Scalar>*>(&l) ||
               dynamic_cast<nn::zero_pad2d<Scalar>*>(&l)) {
      r.activation_bytes = 0;  // data movement only: the next layer reads the same values
    } else {
      bool has_parameters = false;
      l.visit_parameters([&](nn::parameter<Scalar>&) { has_parameters = true; });
      // Anything else must be elementwise: a parameter-free layer that changes the shape (an
      // nn::compressed inference layer holds its weights outside parameters) would be miscounted.
      if (has_parameters || out != in) {
        slimnet::detail::raise<config_error>("slimnet::report::estimate_energy",
                                             "layer '{}' ({}) {} the energy model does not know how to count", l.name(),
                                             l.describe(), has_parameters ? "has parameters" : "changes the shape in a way");
      }
      r.adds += n_out;  // an elementwise activation or gate: one operation per output
    }
    rows.push_back(r);
    return out;
  }

 private:
  const energy_options& opt_;

  double stored_bytes(double nonzero, double entries) const {
    const double b = bytes_of(opt_.precision);
    return opt_.sparse_weights ? nonzero * (b + static_cast<double>(opt_.index_bytes)) : entries * b;
  }

  void weights(layer_energy& r, const tensor<Scalar>& w, double uses) {
    double nonzero = 0;
    for (index_t i = 0; i < w.size(); ++i) nonzero += w[i] != Scalar(0) ? 1 : 0;
    const double used = opt_.sparse_weights ? nonzero : static_cast<double>(w.size());
    r.macs += used * uses;
    r.weight_bytes += stored_bytes(nonzero, static_cast<double>(w.size()));
  }
  void bias(layer_energy& r, const tensor<Scalar>& b, double uses) {
    r.adds += static_cast<double>(b.size()) * uses;
    r.weight_bytes += 4.0 * static_cast<double>(b.size());
  }

  // LSTM (4 gates) / GRU (3 gates), every stacked layer, every step of the padded length T:
  // gates * h * (in + h) MACs per step, the gates' nonlinearities and the state update.
  void recurrent(layer_energy& r, nn::recurrent_layer<Scalar>& rec, const shape_t& in) {
    if (in.size() != 3) {
      slimnet::detail::raise<shape_error>("slimnet::report::estimate_energy",
                                          "recurrent layer '{}' needs (N, T, F) input, got {}", rec.name(), shape_string(in));
    }
    const bool lstm = dynamic_cast<nn::lstm<Scalar>*>(&rec) != nullptr;
    const double gates = lstm ? 4 : 3;
    const double steps = static_cast<double>(in[0] * in[1]);
    double x = static_cast<double>(rec.input_size());
    std::vector<const tensor<Scalar>*> mats;
    rec.visit_parameters([&](nn::parameter<Scalar>& p) {
      // weight_ih / weight_hh matrices (rank 2) are multiplied once per step; biases added.
      if (p.used_value().rank() == 2)
        weights(r, p.used_value(), steps);
      else
        bias(r, p.used_value(), steps);
    });
    for (index_t k = 0; k < rec.num_layers(); ++k) {
      const double h = static_cast<double>(rec.hidden_size(k));
      // LSTM: sigma(i, f, o), tanh(g), tanh(c); c = f*c + i*g; h = o*tanh(c).
      // GRU:  sigma(r, z), tanh(n); n's r * (W_hn h + b); h = (1-z)*n + z*h.
      // Plus the sum of the input and recurrent products of every gate (gates * h adds).
      const double nonlinear = lstm ? 5 * h : 3 * h, products = 3 * h, sums = (lstm ? h : 2 * h) + gates * h;
      r.mults += steps * (nonlinear + products);
      r.adds += steps * (nonlinear + sums);
      r.activation_bytes += 4.0 * steps * (x + h + (lstm ? 2 : 1) * h);
      x = h;
    }
  }
};

}  // namespace detail::energy

/// Counts one inference of `model` on an input of `input_shape` (batch first; pass batch 1) and
/// prices it with the table. Throws config_error for a layer with parameters it cannot count.
template <class Scalar>
energy_report estimate_energy(nn::layer<Scalar>& model, const shape_t& input_shape, const energy_options& options = {}) {
  constexpr const char* fn = "slimnet::report::estimate_energy";
  if (input_shape.empty() || input_shape[0] != 1 || shape_size(input_shape) <= 0) {
    slimnet::detail::raise<shape_error>(fn, "input shape {} must be one example (batch 1) of positive size",
                                        shape_string(input_shape));
  }
  if (options.index_bytes < 0) slimnet::detail::raise<config_error>(fn, "index_bytes = {} must be >= 0", options.index_bytes);
  detail::energy::counter<Scalar> c(options);
  c.visit(model, input_shape);
  energy_report rep;
  rep.total.name = "Total";
  for (auto& r : c.rows) {
    rep.total.weight_bytes += r.weight_bytes;
  }
  const auto& t = options.table;
  rep.weight_level = detail::energy::level_for(rep.total.weight_bytes, t);
  const auto p = static_cast<std::size_t>(options.precision);
  const auto fp32 = static_cast<std::size_t>(arithmetic::fp32);
  for (auto& r : c.rows) {
    // MACs at the weights' precision; every other operation in fp32.
    r.compute_pj = r.macs * (t.mult[p] + t.add[p]) + r.mults * t.mult[fp32] + r.adds * t.add[fp32];
    r.mults += r.macs;
    r.adds += r.macs;
    r.weight_memory_pj = r.weight_bytes / 8.0 * t.access64[static_cast<std::size_t>(rep.weight_level)];
    r.activation_level = detail::energy::level_for(r.activation_bytes, t);
    r.activation_memory_pj = r.activation_bytes / 8.0 * t.access64[static_cast<std::size_t>(r.activation_level)];
    rep.layers.push_back(r);
    rep.total.macs += r.macs;
    rep.total.mults += r.mults;
    rep.total.adds += r.adds;
    rep.total.activation_bytes += r.activation_bytes;
    rep.total.compute_pj += r.compute_pj;
    rep.total.weight_memory_pj += r.weight_memory_pj;
    rep.total.activation_memory_pj += r.activation_memory_pj;
  }
  return rep;
}

/// One line: "1.72 MB weights (DRAM), 2.29 M MACs: 0.291 mJ (compute 10.5 uJ, weights 280 uJ, ...)".
template <class = void>
std::string summary(const energy_report& r) {
  return fmt::format(
      "{:.3f} MB of weights in {}, {:.3g} M MACs: {:.4g} mJ per inference (arithmetic {:.4g} uJ, "
      "weight reads {:.4g} uJ, activations {:.4g} uJ)",
      r.total.weight_bytes / 1e6, to_string(r.weight_level), r.total.macs / 1e6, r.total_mj(), r.total.compute_pj * 1e-6,
      r.total.weight_memory_pj * 1e-6, r.total.activation_memory_pj * 1e-6);
}

}  // namespace slimnet::report
