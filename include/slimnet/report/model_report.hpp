// Per-layer compression report as in Han et al. (2015), Table 4: Layer | Weights | FLOP | Act% |
// Weights% | FLOP%, with totals, the compression rate and accuracy before / after; measured by
// running the model on a data set. Printed with fmt, written as CSV.
//
// Definitions (per example, averaged over the data set):
// - Weights: entries of the layer's weight (plus its bias with count_biases); Weights% = nonzero
//   entries of the weight the forward pass uses (W * T, after every transform) / Weights.
// - FLOP (dense): 2 * weights * output positions: 2 * in * out for Linear and
//   2 * out_c * in_c * kh * kw * out_h * out_w for Conv2d (a multiply and an add per weight use).
// - Act%: fraction of the layer's input activations that are nonzero (padding not counted).
// - FLOP% = effective / dense FLOP, where the effective count takes only products of a nonzero
//   weight and a nonzero input activation: Linear  2 * sum_j nnz(W[:, j]) * [x_j != 0];
//   Conv2d  2 * sum over kernel taps r = (c, ki, kj) of nnz(W[:, r]) * #{output positions whose
//   input pixel under tap r is inside the image and nonzero}.
// - Total: sums of Weights, nonzero, FLOP and effective FLOP; total Act% is the mean input density
//   weighted by dense FLOP (the share of dense multiply-adds whose activation is nonzero).
// Han et al.'s own Act% column appears to hold each layer's output density after its
// nonlinearity (100% for the logits layer, and their FLOP% of row k is Weights% x Act% of row k-1);
// that is our Act% of the next row. Only Linear and Conv2d layers are reported.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/data/dataset.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/sequential.hpp"
#include "slimnet/train/fit.hpp"

// Functions of this header that are not templates by nature are written `template <class = void>`
// (called as before: the parameter is never named) so that a translation unit that includes the
// header without calling them does not compile them (a non-template inline body, with the fmt,
// file and parsing code it instantiates, is compiled in every unit that includes it).

namespace slimnet::report {

struct layer_row {
  std::string name;           ///< "conv1", "fc1", or "Total"
  std::string kind;           ///< "Conv2d", "Linear"
  index_t weights = 0;        ///< entries counted
  index_t nonzero = 0;        ///< nonzero entries of the effective weight
  double flop = 0;            ///< dense FLOP per example
  double effective_flop = 0;  ///< FLOP per example with only nonzero weight x nonzero activation
  double input_density = 0;   ///< Act%: nonzero fraction of the input activations, in [0, 1]

  double weight_density() const {
    return weights == 0 ? 0.0 : static_cast<double>(nonzero) / static_cast<double>(weights);
  }
  double flop_density() const { return flop == 0 ? 0.0 : effective_flop / flop; }
};

struct model_report {
  std::vector<layer_row> layers;
  layer_row total;
  index_t examples = 0;  ///< examples the activations were measured on
  double accuracy = std::numeric_limits<double>::quiet_NaN();  ///< measured on those examples
  double baseline_accuracy =
      std::numeric_limits<double>::quiet_NaN();  ///< before compression; set by the caller

  /// Weights / nonzero weights (Han et al.'s "compression rate" of a pruned model).
  double compression_rate() const {
    return total.nonzero == 0
               ? std::numeric_limits<double>::infinity()
               : static_cast<double>(total.weights) / static_cast<double>(total.nonzero);
  }
};

struct analyze_options {
  bool count_biases =
      false;  ///< count biases in Weights (Han et al.'s and DNS's tables count weights only)
  index_t batch_size = 256;

  void validate() const {
    if (batch_size <= 0) {
      slimnet::detail::raise<config_error>("slimnet::report::analyze",
                                           "batch_size = {} must be positive", batch_size);
    }
  }
};

namespace detail {

template <class Scalar>
struct leaf {
  nn::layer<Scalar>* layer;
  const tensor<Scalar>* input;
};

/// The leaves of (nested) sequential containers with the input each saw in the last forward pass.
template <class Scalar>
void collect_leaves(nn::layer<Scalar>& l, const tensor<Scalar>& input,
                    std::vector<leaf<Scalar>>& out) {
  if (auto* seq = dynamic_cast<nn::sequential<Scalar>*>(&l)) {
    for (std::size_t i = 0; i < seq->size(); ++i)
      collect_leaves((*seq)[i], i == 0 ? input : seq->activation(i - 1), out);
  } else {
    out.push_back({&l, &input});
  }
}

template <class Scalar>
index_t nonzero_count(const tensor<Scalar>& t) {
  index_t n = 0;
  for (index_t i = 0; i < t.size(); ++i) n += t[i] != Scalar(0);
  return n;
}

/// nnz of each column of a (rows x cols) row-major weight.
template <class Scalar>
std::vector<index_t> column_nonzeros(const tensor<Scalar>& w) {
  const index_t rows = w.dim(0), cols = w.size() / std::max<index_t>(rows, 1);
  std::vector<index_t> c(static_cast<std::size_t>(cols), 0);
  for (index_t i = 0; i < rows; ++i) {
    for (index_t j = 0; j < cols; ++j)
      c[static_cast<std::size_t>(j)] += w[i * cols + j] != Scalar(0);
  }
  return c;
}

/// Effective FLOP of a Linear layer over the batch: 2 * sum_n sum_j nnz(W[:, j]) [x_nj != 0].
template <class Scalar>
double linear_effective_flop(const tensor<Scalar>& w, const tensor<Scalar>& x) {
  const auto c = column_nonzeros(w);
  const index_t n = x.dim(0), in = x.size() / std::max<index_t>(n, 1);
  double total = 0;
  for (index_t s = 0; s < n; ++s) {
    const Scalar* row = x.data() + s * in;
    for (index_t j = 0; j < in; ++j) {
      if (row[j] != Scalar(0)) total += static_cast<double>(c[static_cast<std::size_t>(j)]);
    }
  }
  return 2 * total;
}

/// Effective FLOP of a Conv2d layer over the batch (see the file comment).
template <class Scalar>
double conv_effective_flop(const tensor<Scalar>& w, const nn::window2d& win,
                           const tensor<Scalar>& x) {
  const auto c = column_nonzeros(w);  // r = (ci * kh + ki) * kw + kj
  const index_t n = x.dim(0), ch = x.dim(1), h = x.dim(2), wd = x.dim(3);
  const index_t oh_n = win.out_h(h), ow_n = win.out_w(wd);
  double total = 0;
  for (index_t s = 0; s < n; ++s) {
    for (index_t ci = 0; ci < ch; ++ci) {
      const Scalar* plane = x.data() + (s * ch + ci) * h * wd;
      for (index_t ki = 0; ki < win.kernel_h; ++ki) {
        for (index_t kj = 0; kj < win.kernel_w; ++kj) {
          const index_t taps =
              c[static_cast<std::size_t>((ci * win.kernel_h + ki) * win.kernel_w + kj)];
          if (taps == 0) continue;
          index_t live = 0;
          for (index_t oh = 0; oh < oh_n; ++oh) {
            const index_t ih = oh * win.stride_h - win.pad_h + ki;
            if (ih < 0 || ih >= h) continue;
            for (index_t ow = 0; ow < ow_n; ++ow) {
              const index_t iw = ow * win.stride_w - win.pad_w + kj;
              live += iw >= 0 && iw < wd && plane[ih * wd + iw] != Scalar(0);
            }
          }
          total += static_cast<double>(taps) * static_cast<double>(live);
        }
      }
    }
  }
  return 2 * total;
}

struct accumulator {
  double input_nonzero = 0, input_total = 0, effective_flop = 0;
};

}  // namespace detail

/// Runs `model` (in evaluation mode) over `data` and fills the per-layer table. `model` is a
/// layer or a (nested) sequential; its Linear and Conv2d leaves are reported in order.
/// baseline_accuracy is left NaN for the caller to set.
template <class Scalar>
model_report analyze(nn::layer<Scalar>& model, const data::dataset<Scalar>& data,
                     const analyze_options& options = {}) {
  constexpr const char* fn = "slimnet::report::analyze";
  options.validate();
  if (data.size() == 0)
    slimnet::detail::raise<config_error>(fn, "the data set is empty: Act% and FLOP% need examples");
  data.validate(fn);
  rng unused(0);
  data::batcher<Scalar> batches(data, options.batch_size, false, unused);
  data::batch<Scalar> b;
  tensor<Scalar> out;
  nn::forward_context ctx{false, &unused};
  std::vector<detail::accumulator> acc;
  model_report r;
  index_t correct = 0;
  while (batches.next(b)) {
    model.forward(b.inputs, out, ctx);
    if (!b.labels.empty()) correct += train::count_correct(out, b.labels);
    std::vector<detail::leaf<Scalar>> leaves;
    detail::collect_leaves(model, b.inputs, leaves);
    std::size_t k = 0;
    for (const auto& lf : leaves) {
      const tensor<Scalar>& x = *lf.input;
      const tensor<Scalar>* w = nullptr;
      double effective = 0, dense = 0;
      index_t weights = 0, nonzero = 0;
      if (auto* lin = dynamic_cast<nn::linear<Scalar>*>(lf.layer)) {
        w = &lin->weight().used_value();
        effective = detail::linear_effective_flop(*w, x);
        dense = 2.0 * static_cast<double>(w->size());
        weights = w->size();
        nonzero = detail::nonzero_count(*w);
        if (options.count_biases && lin->bias()) {
          weights += lin->bias()->size();
          nonzero += detail::nonzero_count(lin->bias()->used_value());
        }
      } else if (auto* conv = dynamic_cast<nn::conv2d<Scalar>*>(lf.layer)) {
        w = &conv->weight().used_value();
        effective = detail::conv_effective_flop(*w, conv->window(), x);
        const shape_t y = conv->output_shape(x.shape());
        dense = 2.0 * static_cast<double>(w->size()) * static_cast<double>(y[2] * y[3]);
        weights = w->size();
        nonzero = detail::nonzero_count(*w);
        if (options.count_biases && conv->bias()) {
          weights += conv->bias()->size();
          nonzero += detail::nonzero_count(conv->bias()->used_value());
        }
      } else {
        continue;
      }
      if (k == acc.size()) {
        acc.emplace_back();
        layer_row row;
        row.name = lf.layer->name();
        row.kind = lf.layer->kind();
        r.layers.push_back(row);
      }
      layer_row& row = r.layers[k];
      row.weights = weights;  // the weights cannot change during evaluation: last batch's count
      row.nonzero = nonzero;
      row.flop = dense;
      acc[k].input_nonzero += static_cast<double>(detail::nonzero_count(x));
      acc[k].input_total += static_cast<double>(x.size());
      acc[k].effective_flop += effective;
      ++k;
    }
    r.examples += b.size();
  }
  if (!data.labels.empty())
    r.accuracy = static_cast<double>(correct) / static_cast<double>(r.examples);
  r.total.name = "Total";
  double weighted_density = 0;
  for (std::size_t k = 0; k < r.layers.size(); ++k) {
    layer_row& row = r.layers[k];
    row.input_density = acc[k].input_total == 0 ? 0.0 : acc[k].input_nonzero / acc[k].input_total;
    row.effective_flop = acc[k].effective_flop / static_cast<double>(r.examples);
    r.total.weights += row.weights;
    r.total.nonzero += row.nonzero;
    r.total.flop += row.flop;
    r.total.effective_flop += row.effective_flop;
    weighted_density += row.input_density * row.flop;
  }
  r.total.input_density = r.total.flop == 0 ? 0.0 : weighted_density / r.total.flop;
  return r;
}

/// An extra column for format(): a header and a value per layer name (and "Total"), e.g. the
/// seed paper's Weights% to print next to the measured one. Missing names print "-".
struct reference_column {
  std::string header;
  std::map<std::string, std::string> values;
};

namespace detail {
/// 235200 -> "235.2K", 3200000 -> "3.2M", 500 -> "500".
inline std::string human(double x) {
  const double a = std::abs(x);
  if (a >= 1e9) return fmt::format("{:.1f}B", x / 1e9);
  if (a >= 1e6) return fmt::format("{:.1f}M", x / 1e6);
  if (a >= 1e3) return fmt::format("{:.1f}K", x / 1e3);
  return fmt::format("{:.0f}", x);
}
inline std::string percent(double fraction) {
  if (std::isnan(fraction)) return "-";
  return fraction < 0.1 ? fmt::format("{:.2f}%", 100 * fraction)
                        : fmt::format("{:.1f}%", 100 * fraction);
}
}  // namespace detail

/// The table as text, e.g.
///   Layer     Weights     FLOP    Act%  Weights%   FLOP%
///   fc1        235.2K   470.4K   19.1%     8.0%    1.9%
///   ...
///   Total      266.2K   532.4K   ...
///   compression 12.5x: 266.2K -> 21.3K weights; accuracy 98.40% -> 98.35% (-0.05 pp) on 2000
///   examples
template <class = void>
std::string format(const model_report& r, const std::vector<reference_column>& extra = {}) {
  std::string s = fmt::format("{:<10} {:>9} {:>9} {:>7} {:>9} {:>7}", "Layer", "Weights", "FLOP",
                              "Act%", "Weights%", "FLOP%");
  for (const auto& c : extra)
    s += fmt::format(" {:>{}}", c.header, std::max<std::size_t>(9, c.header.size()));
  s += "\n";
  const auto line = [&](const layer_row& row) {
    std::string l =
        fmt::format("{:<10} {:>9} {:>9} {:>7} {:>9} {:>7}", row.name,
                    detail::human(static_cast<double>(row.weights)), detail::human(row.flop),
                    detail::percent(row.input_density), detail::percent(row.weight_density()),
                    detail::percent(row.flop_density()));
    for (const auto& c : extra) {
      const auto it = c.values.find(row.name);
      l += fmt::format(" {:>{}}", it == c.values.end() ? std::string("-") : it->second,
                       std::max<std::size_t>(9, c.header.size()));
    }
    return l + "\n";
  };
  for (const auto& row : r.layers) s += line(row);
  s += line(r.total);
  s += fmt::format("compression {:.1f}x: {} -> {} weights ({} nonzero)", r.compression_rate(),
                   detail::human(static_cast<double>(r.total.weights)),
                   detail::human(static_cast<double>(r.total.nonzero)), r.total.nonzero);
  if (!std::isnan(r.accuracy)) {
    s += "; accuracy ";
    if (!std::isnan(r.baseline_accuracy))
      s += fmt::format("{:.2f}% -> ", 100 * r.baseline_accuracy);
    s += fmt::format("{:.2f}%", 100 * r.accuracy);
    if (!std::isnan(r.baseline_accuracy))
      s += fmt::format(" ({:+.2f} pp)", 100 * (r.accuracy - r.baseline_accuracy));
    s += fmt::format(" on {} examples", r.examples);
  }
  return s + "\n";
}

/// Prints format(r, extra) to `out` (stdout by default).
template <class = void>
void print(const model_report& r, const std::vector<reference_column>& extra = {},
                  std::FILE* out = stdout) {
  fmt::print(out, "{}", format(r, extra));
}

/// One line per layer plus the total: exact counts and fractions in [0, 1].
template <class = void>
std::string to_csv(const model_report& r) {
  std::string s =
      "layer,kind,weights,nonzero,flop,effective_flop,act,weights_fraction,flop_fraction\n";
  const auto line = [&](const layer_row& row) {
    s += fmt::format("{},{},{},{},{:.0f},{:.1f},{:.6f},{:.6f},{:.6f}\n", row.name, row.kind,
                     row.weights, row.nonzero, row.flop, row.effective_flop, row.input_density,
                     row.weight_density(), row.flop_density());
  };
  for (const auto& row : r.layers) line(row);
  line(r.total);
  return s;
}

template <class = void>
void write_text(const std::filesystem::path& path, const std::string& text,
                       const char* function) {
  std::ofstream f(path, std::ios::binary);
  if (!f) slimnet::detail::raise<io_error>(function, "cannot open '{}' for writing", path.string());
  f << text;
  if (!f) slimnet::detail::raise<io_error>(function, "writing '{}' failed", path.string());
}

template <class = void>
void write_csv(const model_report& r, const std::filesystem::path& path) {
  write_text(path, to_csv(r), "slimnet::report::write_csv");
}

}  // namespace slimnet::report
