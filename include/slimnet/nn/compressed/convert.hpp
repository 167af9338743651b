// Converting trained float layers to compressed inference layers: a pruned Linear / Conv2d to a
// sparse layer (or to a dense one when sparse would be slower: the dense-or-sparse choice, made
// here once per layer), a binarized one to an XNOR layer, a quantized one to int8 or a
// codebook. The converted layer uses the float layer's effective weights (its weight transforms -
// mask, quantizer, binarizer - applied as in an evaluation pass) and bias.
//
//   auto fc1 = nn::compressed::to_sparse(model.find("fc1") as linear, {.batch = 1});
//   nn::compressed::compress(model, nn::compressed::format::sparse);   // every Linear / Conv2d / LSTM / GRU
// A pruned LSTM or GRU (alone or in a Bidirectional) becomes a compressed_recurrent layer
// (recurrent.hpp) whose W_ih and W_hh each get their own dense-or-sparse choice: W_ih at the
// T * batch columns of its all-steps product, W_hh at the batch of its per-step product.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "slimnet/kernels/sparse_choice.hpp"
#include "slimnet/nn/compressed/codebook_engine.hpp"
#include "slimnet/nn/compressed/csr16_engine.hpp"
#include "slimnet/nn/compressed/engine.hpp"
#include "slimnet/nn/compressed/int8_engine.hpp"
#include "slimnet/nn/compressed/layers.hpp"
#include "slimnet/nn/compressed/recurrent.hpp"
#include "slimnet/nn/compressed/sparse_codebook_engine.hpp"
#include "slimnet/nn/compressed/sparse_engine.hpp"
#include "slimnet/nn/compressed/xnor_engine.hpp"
#include "slimnet/nn/activation.hpp"
#include "slimnet/nn/bidirectional.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/flatten.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/pooling.hpp"
#include "slimnet/nn/sequential.hpp"

namespace slimnet::nn::compressed {

struct sparse_options {
  /// Batch the layer will run at (a Linear's rows, a Conv2d's images): SELL-16 for
  /// batch 1, column-blocked CSR otherwise, and the break-even density of the choice.
  index_t batch = 1;
  bool force_sparse = false;  ///< skip the dense-or-sparse choice
  bool measure = false;       ///< time dense and sparse on the layer's weights instead of the measured model
  /// A Conv2d's input height and width, for `measure` (compress fills them from
  /// compress_options::input_shape); 0: unknown, the model decides.
  int threads = 1;
  /// The compact forms: at batch 1 a Linear whose SELL-16 form would take more than 12 bytes per
  /// nonzero becomes CSR with 16-bit indices (6 bytes per nonzero + 4 per row); a stride-1 Conv2d
  /// runs the direct sparse convolution. false: SELL-16 / column-blocked CSR and im2col, as before.
  bool compact = true;
  index_t input_h = 0, input_w = 0;
  /// Steps per sequence of a recurrent layer's input (compress fills it from
  /// compress_options::input_shape (N, T, F)): W_ih's product covers steps x batch columns.
  /// 0: unknown, taken as 2 (a product over several columns: column-blocked CSR).
  index_t steps = 0;
  /// Fraction of nonzero inputs a Linear sees at batch 1 (compress fills it from
  /// compress_options::input_density, e.g. nn/compressed/calibrate.hpp on sample inputs): CSC
  /// skipping zero inputs replaces SELL-16 when timed faster on the layer's weights at that density
  /// (kernels::measure_column_form; a known density is what the timing needs). < 0: unknown (SELL-16).
  double input_density = -1;
  /// Per input column, the fraction of inputs in which it is not zero (compress fills it from
  /// compress_options::input_frequency, nn/compressed/calibrate.hpp input_frequencies): with
  /// input_density, the timing also tries SELL-16 over the columns reordered by it
  /// (kernels::reordered_columns). Empty: ordered by weight counts.
  std::vector<double> input_frequency;
  /// At batch > 1 with the input shape known (compress_options::input_shape), each direct sparse
  /// convolution is timed on the spot one image at a time and batch-innermost, epilogue fused
  /// (compressed_conv2d::choose_batch_layout), and keeps the faster layout. false: batch-innermost.
  bool measure_batch_layout = true;
  /// At batch 1 without input statistics (input_density < 0), a sparse Linear's SELL-16 form is
  /// timed over its columns as they are and over its nonempty columns, most nonzeros first, and
  /// against the compact CSR (kernels::measure_column_order: CSR wins where SELL-16 reads x by
  /// gathers, AVX2 or scalar), and keeps the fastest. false: SELL-16 over the columns as they are.
  bool measure_column_order = true;
};

struct xnor_options {
  bool require_exact = true;  ///< weights must be +-alpha per output (binarized); false binarizes any layer
  int threads = 1;
};

struct codebook_options {
  int bits = 0;  ///< index width; 0: the fewest bits that hold the layer's distinct weight values
  int threads = 1;
};

/// W_eff of a parameter as an evaluation pass sees it (transforms applied), as (out x rest).
template <class Scalar>
row_matrix<Scalar> effective_weight(parameter<Scalar>& p) {
  const tensor<Scalar>& w = p.forward_value(forward_context{});
  return w.matrix();
}

template <class Scalar>
std::optional<column_vector<Scalar>> effective_bias(parameter<Scalar>* b) {
  if (b == nullptr) return std::nullopt;
  return column_vector<Scalar>(b->forward_value(forward_context{}).flat());
}

namespace detail {

/// The sparse engine, or the dense one when the choice says dense; `choice` (optional) receives why.
template <class Scalar>
std::unique_ptr<engine<Scalar>> make_sparse_engine(const row_matrix<Scalar>& w, std::optional<column_vector<Scalar>> bias,
                                                   index_t batch, const sparse_options& o, kernels::sparse_choice* choice) {
  index_t nnz = 0;
  for (index_t i = 0; i < w.size(); ++i) nnz += w.data()[i] != Scalar(0);
  kernels::sparse_choice c;
  if (o.measure && std::is_same_v<Scalar, float>) {
    const row_matrix<float> wf = w.template cast<float>();
    c = kernels::measure_sparse_choice(kernels::row_major<const float>(wf.data(), wf.rows(), wf.cols()), batch);
  } else {
    c = kernels::choose_sparse(w.rows(), w.cols(), nnz, batch);
  }
  if (o.force_sparse) c.sparse = true;
  if (choice) *choice = c;
  if (!c.sparse) return std::make_unique<dense_engine<Scalar>>(w, std::move(bias));
  if (batch <= 1 && o.input_density >= 0 && std::is_same_v<Scalar, float> && w.rows() <= 65536) {
    const row_matrix<float> wf = w.template cast<float>();
    const auto cf = kernels::measure_column_form(kernels::row_major<const float>(wf.data(), wf.rows(), wf.cols()), o.input_density, 5,
                                                 o.input_frequency);
    if (choice) choice->column_form = cf.describe();
    if (cf.column) return std::make_unique<sparse_engine<Scalar>>(w, std::move(bias), 1, o.threads, /*column_form=*/true);
    if (cf.reordered) return std::make_unique<sparse_engine<Scalar>>(w, std::move(bias), 1, o.threads, false, cf.order_of_columns);
  } else if (batch <= 1 && o.measure_column_order && std::is_same_v<Scalar, float> && o.threads == 1) {
    const row_matrix<float> wf = w.template cast<float>();
    const auto co = kernels::measure_column_order(kernels::row_major<const float>(wf.data(), wf.rows(), wf.cols()));
    if (choice) choice->column_form = co.describe();
    if (co.csr) return std::make_unique<csr16_engine<Scalar>>(w, std::move(bias));
    if (co.reordered) return std::make_unique<sparse_engine<Scalar>>(w, std::move(bias), 1, o.threads, false, co.order_of_columns);
  }
  auto s = std::make_unique<sparse_engine<Scalar>>(w, bias, batch, o.threads);
  // SELL-16 (rows sorted by length) is the fastest batch-1 form but pads each step to its busiest
  // lane; when that still costs more than 1.5 x nnz x 8 bytes, the compact CSR (6 bytes per
  // nonzero + 4 per row) takes its place.
  if (o.compact && batch <= 1 && o.threads == 1 && w.cols() <= 65536 &&
      static_cast<double>(s->bytes()) > 12.0 * static_cast<double>(std::max<index_t>(nnz, 1))) {
    return std::make_unique<csr16_engine<Scalar>>(w, std::move(bias));
  }
  return s;
}

/// The direct sparse convolution against the dense one (im2col + GEMM), both timed as the layers
/// they would become on a random input of `batch` images of h x w (best of 5 rounds of >= 1 ms):
/// exact for this machine, layer and batch, but it depends on timing, so two runs may choose
/// differently near break-even (both give the same outputs within float rounding).
template <class Scalar>
kernels::sparse_choice measure_conv_choice(const csr16_engine<Scalar>& sparse, const row_matrix<Scalar>& w,
                                           std::optional<column_vector<Scalar>> bias, index_t in_channels, const window2d& win,
                                           index_t batch, index_t h, index_t wd) {
  kernels::sparse_choice c;
  c.density = sparse.density();
  c.measured = true;
  compressed_conv2d<Scalar> direct(sparse.clone(), in_channels, win);
  compressed_conv2d<Scalar> dense(std::make_unique<dense_engine<Scalar>>(w, std::move(bias)), in_channels, win);
  tensor<Scalar> x({batch, in_channels, h, wd}), y;
  rng gen(1);
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<Scalar>(gen.uniform(-1, 1));
  auto best_time = [&](layer<Scalar>& l) { return kernels::best_seconds_per_call([&] { l.forward(x, y, {}); }, 5); };
  const double t_sparse = best_time(direct), t_dense = best_time(dense);
  c.break_even = std::min(1.0, c.density * t_dense / t_sparse);
  c.sparse = t_sparse < t_dense;
  return c;
}

/// A convolution's engine: the direct-convolution CSR (csr16_engine) when sparse pays and a filter
/// has at most 65536 taps, else what make_sparse_engine picks for its im2col product.
template <class Scalar>
std::unique_ptr<engine<Scalar>> make_conv_engine(conv2d<Scalar>& conv, const sparse_options& o, kernels::sparse_choice* choice) {
  const row_matrix<Scalar> w = effective_weight(conv.weight());
  const window2d& win = conv.window();
  if (!o.compact || win.stride_h != 1 || win.stride_w != 1 || w.cols() > 65536 || o.threads != 1) {
    return make_sparse_engine(w, effective_bias(conv.bias()), index_t{64}, o, choice);
  }
  index_t nnz = 0;
  for (index_t i = 0; i < w.size(); ++i) nnz += w.data()[i] != Scalar(0);
  kernels::sparse_choice c = kernels::choose_sparse_conv(w.rows(), w.cols(), nnz, std::max<index_t>(1, o.batch));
  auto sparse = std::make_unique<csr16_engine<Scalar>>(w, effective_bias(conv.bias()), conv.in_channels(), win.kernel_h, win.kernel_w);
  if (o.measure && !o.force_sparse && o.input_h > 0 && o.input_w > 0 && win.fits(o.input_h, o.input_w)) {
    c = measure_conv_choice(*sparse, w, effective_bias(conv.bias()), conv.in_channels(), win, std::max<index_t>(1, o.batch), o.input_h,
                            o.input_w);
  }
  if (o.force_sparse) c.sparse = true;
  if (choice) *choice = c;
  if (!c.sparse) return std::make_unique<dense_engine<Scalar>>(w, effective_bias(conv.bias()));
  return sparse;
}

}  // namespace detail

// --- Linear --------------------------------------------------------------------------------------

/// The sparse form of a pruned Linear (its masked weights), or a dense layer with the mask baked in
/// when sparse would be slower at o.batch; `choice` receives the decision.
template <class Scalar>
compressed_linear<Scalar> to_sparse(linear<Scalar>& l, const sparse_options& o = {}, kernels::sparse_choice* choice = nullptr) {
  return compressed_linear<Scalar>(
      detail::make_sparse_engine(effective_weight(l.weight()), effective_bias(l.bias()), std::max<index_t>(1, o.batch), o, choice));
}

/// The XNOR form of a binarized Linear: y = alpha * (sign(x) . sign(w)) + b.
template <class Scalar>
compressed_linear<Scalar> to_xnor(linear<Scalar>& l, const xnor_options& o = {}) {
  return compressed_linear<Scalar>(
      std::make_unique<xnor_engine<Scalar>>(effective_weight(l.weight()), effective_bias(l.bias()), o.require_exact, o.threads));
}

/// The int8 form of a quantized Linear (activations quantized as they arrive, see int8_engine.hpp).
template <class Scalar>
compressed_linear<Scalar> to_int8(linear<Scalar>& l, const int8_options& o = {}) {
  return compressed_linear<Scalar>(std::make_unique<int8_engine<Scalar>>(effective_weight(l.weight()), effective_bias(l.bias()), o));
}

/// The codebook form of a weight-shared Linear (at most 2^bits distinct weight values).
template <class Scalar>
compressed_linear<Scalar> to_codebook(linear<Scalar>& l, const codebook_options& o = {}) {
  return compressed_linear<Scalar>(
      std::make_unique<codebook_engine<Scalar>>(effective_weight(l.weight()), effective_bias(l.bias()), o.bits, o.threads));
}

// --- Conv2d --------------------------------------------------------------------------------------

/// The sparse form of a pruned Conv2d: the direct sparse convolution (csr16_engine, stride 1), or
/// column-blocked CSR times the im2col matrix (whose N * P columns are the batch) when o.compact is
/// off or the stride is not 1; dense when sparse would be slower.
template <class Scalar>
compressed_conv2d<Scalar> to_sparse(conv2d<Scalar>& c, const sparse_options& o = {}, kernels::sparse_choice* choice = nullptr) {
  return compressed_conv2d<Scalar>(detail::make_conv_engine(c, o, choice), c.in_channels(), c.window());
}

template <class Scalar>
compressed_conv2d<Scalar> to_xnor(conv2d<Scalar>& c, const xnor_options& o = {}) {
  return compressed_conv2d<Scalar>(
      std::make_unique<xnor_engine<Scalar>>(effective_weight(c.weight()), effective_bias(c.bias()), o.require_exact, o.threads),
      c.in_channels(), c.window());
}

template <class Scalar>
compressed_conv2d<Scalar> to_int8(conv2d<Scalar>& c, const int8_options& o = {}) {
  return compressed_conv2d<Scalar>(std::make_unique<int8_engine<Scalar>>(effective_weight(c.weight()), effective_bias(c.bias()), o),
                                   c.in_channels(), c.window());
}

template <class Scalar>
compressed_conv2d<Scalar> to_codebook(conv2d<Scalar>& c, const codebook_options& o = {}) {
  return compressed_conv2d<Scalar>(
      std::make_unique<codebook_engine<Scalar>>(effective_weight(c.weight()), effective_bias(c.bias()), o.bits, o.threads),
      c.in_channels(), c.window());
}

/// A pruned, weight-shared Linear (at most 2^bits distinct nonzero values): its nonzeros as codebook
/// indices in the sparse layouts (sparse_codebook_engine) when sparse pays at so.batch, else the
/// dense codebook (make_codebook_engine decides, measured with so.measure).
template <class Scalar>
compressed_linear<Scalar> to_sparse_codebook(linear<Scalar>& l, const codebook_options& o = {}, const sparse_options& so = {},
                                             kernels::sparse_choice* choice = nullptr) {
  return compressed_linear<Scalar>(make_codebook_engine(effective_weight(l.weight()), effective_bias(l.bias()), std::max<index_t>(1, so.batch),
                                                        o.bits, so.measure, so.force_sparse, o.threads, choice));
}

/// A pruned, weight-shared Conv2d: sparse filters run the direct sparse convolution (csr16_engine,
/// the values stored as floats: the direct kernels read one scalar weight per nonzero), a strided
/// one the sparse + codebook engine on its im2col matrix; dense filters the dense codebook.
template <class Scalar>
compressed_conv2d<Scalar> to_sparse_codebook(conv2d<Scalar>& c, const codebook_options& o = {}, const sparse_options& so = {},
                                             kernels::sparse_choice* choice = nullptr) {
  auto e = detail::make_conv_engine(c, so, choice);
  if (dynamic_cast<dense_engine<Scalar>*>(e.get())) {
    e = std::make_unique<codebook_engine<Scalar>>(effective_weight(c.weight()), effective_bias(c.bias()), o.bits, o.threads);
  } else if (dynamic_cast<sparse_engine<Scalar>*>(e.get()) && o.threads == 1) {
    e = std::make_unique<sparse_codebook_engine<Scalar>>(effective_weight(c.weight()), effective_bias(c.bias()), index_t{64}, o.bits);
  }
  return compressed_conv2d<Scalar>(std::move(e), c.in_channels(), c.window());
}

// --- LSTM / GRU ----------------------------------------------------------------------------------

namespace detail {

/// "ih sparse (7.1% nonzeros, ...), hh sparse (...)" per stacked layer.
inline std::string describe_choices(const std::vector<kernels::sparse_choice>& c) {
  std::string s;
  for (std::size_t i = 0; i + 1 < c.size(); i += 2) {
    if (!s.empty()) s += "; ";
    s += fmt::format("l{} ih {}, hh {}", i / 2, c[i].describe(), c[i + 1].describe());
  }
  return s;
}

/// The compressed form of one LSTM / GRU stack; `choices` (optional) receives W_ih's and W_hh's
/// choice for each stacked layer in turn.
template <class Scalar, class Cell>
std::unique_ptr<compressed_recurrent<Scalar, Cell>> to_sparse_stack(recurrent<Scalar, Cell>& r, const sparse_options& o,
                                                                    std::vector<kernels::sparse_choice>* choices) {
  using result = compressed_recurrent<Scalar, Cell>;
  const index_t batch = std::max<index_t>(1, o.batch);
  const index_t input_batch = std::max<index_t>(2, batch * std::max<index_t>(1, o.steps));
  std::vector<typename result::stacked> layers;
  for (index_t l = 0; l < r.num_layers(); ++l) {
    const row_matrix<Scalar> w_ih = effective_weight(r.weight_ih(l)), w_hh = effective_weight(r.weight_hh(l));
    auto b_ih = effective_bias(r.bias_ih(l)), b_hh = effective_bias(r.bias_hh(l));
    // LSTM: both biases go with the input product; GRU: b_hh stays with W_hh (n = tanh(.. + r * (W_hn h + b_hn))).
    std::optional<column_vector<Scalar>> b_a, b_b;
    if constexpr (std::is_same_v<Cell, lstm_cell>) {
      if (b_ih || b_hh) {
        b_a = column_vector<Scalar>::Zero(w_ih.rows());
        if (b_ih) *b_a += *b_ih;
        if (b_hh) *b_a += *b_hh;
      }
    } else {
      b_a = std::move(b_ih);
      b_b = std::move(b_hh);
    }
    kernels::sparse_choice ci, ch;
    typename result::stacked s;
    s.input = make_sparse_engine(w_ih, std::move(b_a), input_batch, o, &ci);
    s.recurrent = make_sparse_engine(w_hh, std::move(b_b), batch, o, &ch);
    layers.push_back(std::move(s));
    if (choices) {
      choices->push_back(ci);
      choices->push_back(ch);
    }
  }
  auto c = std::make_unique<result>(std::move(layers), r.output(), r.reversed());
  for (index_t l = 0; l < r.num_layers(); ++l)
    if (const tensor<Scalar>* m = r.unit_mask(l)) c->set_unit_mask(l, *m);
  c->set_name(r.name());
  return c;
}

/// A direction of a Bidirectional: an nn::lstm or nn::gru.
template <class Scalar>
std::unique_ptr<compressed_recurrent_layer<Scalar>> to_sparse_direction(recurrent_layer<Scalar>& r, const sparse_options& o,
                                                                        std::vector<kernels::sparse_choice>* choices) {
  if (auto* l = dynamic_cast<lstm<Scalar>*>(&r)) return to_sparse_stack(*l, o, choices);
  if (auto* g = dynamic_cast<gru<Scalar>*>(&r)) return to_sparse_stack(*g, o, choices);
  slimnet::detail::raise<config_error>("slimnet::nn::compressed::to_sparse", "{} is neither an nn::lstm nor an nn::gru", r.describe());
}

}  // namespace detail

/// The compressed form of an LSTM / GRU stack: per stacked layer W_ih (product over o.steps x
/// o.batch columns) and W_hh (per step, o.batch columns) each sparse or dense by its own choice,
/// biases and unit masks carried over; `choices` receives W_ih's and W_hh's choice per layer.
template <class Scalar, class Cell>
compressed_recurrent<Scalar, Cell> to_sparse(recurrent<Scalar, Cell>& r, const sparse_options& o = {},
                                             std::vector<kernels::sparse_choice>* choices = nullptr) {
  return std::move(*detail::to_sparse_stack(r, o, choices));
}

/// Both directions of a Bidirectional, each as to_sparse converts it (forward direction's choices first).
template <class Scalar>
compressed_bidirectional<Scalar> to_sparse(bidirectional<Scalar>& b, const sparse_options& o = {},
                                           std::vector<kernels::sparse_choice>* choices = nullptr) {
  compressed_bidirectional<Scalar> c(detail::to_sparse_direction(b.forward_layer(), o, choices),
                                     detail::to_sparse_direction(b.backward_layer(), o, choices));
  c.set_name(b.name());
  return c;
}

// --- models --------------------------------------------------------------------------------------

enum class format { sparse, xnor, int8, codebook };

struct compress_options {
  sparse_options sparse;
  xnor_options xnor;
  int8_options int8;
  codebook_options codebook;
  /// Names (local or full) of Linear / Conv2d layers to leave as they are, e.g. the first and last
  /// layers of a binarized network.
  std::vector<std::string> keep;
  /// Fold the ReLU and MaxPool2d (no padding) layers that directly follow a compressed Conv2d into
  /// it (compressed_conv2d::fuse), and a ReLU that follows a compressed Linear into it
  /// (compressed_linear::fuse_relu): the layers disappear from the Sequential, the outputs stay the
  /// same, and the direct sparse convolution never writes its unpooled output.
  bool fuse = true;
  /// With fuse (formats other than xnor): also fold a Flatten before and a ReLU after a compressed
  /// Linear into it (compressed_linear::fuse_flatten / fuse_relu); false: only the convolutions'
  /// epilogues, the Flatten and ReLU layers around a Linear stay.
  bool fuse_linear = true;
  /// Shape of the model's input, e.g. {1, 1, 28, 28} (batch ignored): with sparse.measure, each
  /// Conv2d is timed at its own input size. Empty: unknown (convolutions use the model).
  shape_t input_shape;
  /// Fraction of nonzero inputs per Linear (local or full name), for sparse_options::input_density.
  std::map<std::string, double> input_density;
  /// Per Linear, each input column's fraction of nonzero inputs, for sparse_options::input_frequency.
  std::map<std::string, std::vector<double>> input_frequency;
};

namespace detail {

/// kernel and stride of a MaxPool2d without padding; false for other layers.
template <class Scalar>
bool max_pool_window(const layer<Scalar>& l, index_t& kernel, index_t& stride) {
  const auto* pool = dynamic_cast<const max_pool2d<Scalar>*>(&l);
  if (pool == nullptr || pool->window().pad_h != 0) return false;
  kernel = pool->window().kernel_h;
  stride = pool->window().stride_h;
  return kernel > 0 && stride > 0;
}

template <class Scalar>
void compress_sequential(sequential<Scalar>& model, format f, const compress_options& o, const std::string& prefix,
                         std::vector<std::string>& report, shape_t& shape);

/// Converts the outermost Sequentials inside a container that is not one (DeepSense's
/// time_distributed frames and sensor_stack branches), found through visit_layers, in place; their
/// input shapes are not derived here (the choices use the model, the recurrent steps default).
template <class Scalar>
void compress_nested(layer<Scalar>& l, format f, const compress_options& o, std::vector<std::string>& report) {
  std::vector<sequential<Scalar>*> found, outermost;
  l.visit_layers([&](layer<Scalar>& c) {
    if (auto* s = dynamic_cast<sequential<Scalar>*>(&c); s != nullptr && &c != &l) found.push_back(s);
  });
  for (auto* s : found) {  // all decided before any conversion replaces (and frees) nested layers
    bool inside = false;
    for (auto* t : found)
      if (t != s) t->visit_layers([&](layer<Scalar>& c) { inside |= &c == s; });
    if (!inside) outermost.push_back(s);
  }
  for (auto* s : outermost) {
    shape_t unknown;
    compress_sequential(*s, f, o, s->name().empty() ? std::string() : s->name() + ".", report, unknown);
  }
}

/// Converts the layers of `model` (recursing into nested Sequentials and the Sequentials inside
/// other containers); `shape` is the input shape when known (empty otherwise) and becomes the output shape.
template <class Scalar>
void fuse_epilogues(sequential<Scalar>& model, const std::string& prefix, std::vector<std::string>& report, bool linear);

template <class Scalar>
void compress_sequential(sequential<Scalar>& model, format f, const compress_options& o, const std::string& prefix,
                         std::vector<std::string>& report, shape_t& shape) {
  std::map<std::string, shape_t> conv_inputs;  // local name -> input shape, of the converted convolutions
  for (std::size_t i = 0; i < model.size(); ++i) {
    layer<Scalar>& l = model[i];
    const shape_t in = shape;
    if (!shape.empty()) shape = l.output_shape(shape);
    if (dynamic_cast<conv2d<Scalar>*>(&l) != nullptr && in.size() == 4) conv_inputs[model.local_name(i)] = in;
    if (auto* inner = dynamic_cast<sequential<Scalar>*>(&l)) {
      shape_t s = in;
      compress_sequential(*inner, f, o, prefix + model.local_name(i) + ".", report, s);
      continue;
    }
    auto* lin = dynamic_cast<linear<Scalar>*>(&l);
    auto* conv = dynamic_cast<conv2d<Scalar>*>(&l);
    auto* bi = dynamic_cast<bidirectional<Scalar>*>(&l);
    auto* rec = dynamic_cast<recurrent_layer<Scalar>*>(&l);
    if (!lin && !conv && !bi && !rec) {
      compress_nested(l, f, o, report);  // time_distributed, sensor_stack, ...: the Sequentials inside
      continue;
    }
    const std::string name = prefix + model.local_name(i);
    const bool keep = std::find(o.keep.begin(), o.keep.end(), model.local_name(i)) != o.keep.end() ||
                      std::find(o.keep.begin(), o.keep.end(), l.name()) != o.keep.end();
    if (keep) {
      report.push_back(name + ": kept");
      continue;
    }
    if (bi || rec) {
      // Recurrent layers have a sparse form only; the other formats leave them float.
      if (f != format::sparse) {
        report.push_back(name + ": kept (float; recurrent layers convert to format::sparse only)");
        continue;
      }
      sparse_options so = o.sparse;
      if (so.steps == 0 && in.size() == 3) so.steps = in[1];
      std::vector<kernels::sparse_choice> choices;
      std::unique_ptr<layer<Scalar>> c;
      if (bi) {
        c = std::make_unique<compressed_bidirectional<Scalar>>(to_sparse(*bi, so, &choices));
      } else {
        c = to_sparse_direction(*rec, so, &choices);
      }
      report.push_back(name + ": " + c->describe() + " [" + describe_choices(choices) + "]");
      model.replace(i, std::move(c));
      continue;
    }
    std::unique_ptr<layer<Scalar>> c;
    kernels::sparse_choice choice;
    sparse_options so = o.sparse;
    if (conv && in.size() == 4) {
      so.input_h = in[2];
      so.input_w = in[3];
    }
    for (const auto& key : {name, model.local_name(i)})
      if (const auto d = o.input_density.find(key); lin && d != o.input_density.end()) so.input_density = d->second;
    for (const auto& key : {name, model.local_name(i)})
      if (const auto d = o.input_frequency.find(key); lin && d != o.input_frequency.end()) so.input_frequency = d->second;
    switch (f) {
      case format::sparse:
        c = lin ? std::unique_ptr<layer<Scalar>>(std::make_unique<compressed_linear<Scalar>>(to_sparse(*lin, so, &choice)))
                : std::make_unique<compressed_conv2d<Scalar>>(to_sparse(*conv, so, &choice));
        break;
      case format::xnor:
        c = lin ? std::unique_ptr<layer<Scalar>>(std::make_unique<compressed_linear<Scalar>>(to_xnor(*lin, o.xnor)))
                : std::make_unique<compressed_conv2d<Scalar>>(to_xnor(*conv, o.xnor));
        break;
      case format::int8:
        c = lin ? std::unique_ptr<layer<Scalar>>(std::make_unique<compressed_linear<Scalar>>(to_int8(*lin, o.int8)))
                : std::make_unique<compressed_conv2d<Scalar>>(to_int8(*conv, o.int8));
        break;
      case format::codebook:
        c = lin ? std::unique_ptr<layer<Scalar>>(std::make_unique<compressed_linear<Scalar>>(to_sparse_codebook(*lin, o.codebook, so, &choice)))
                : std::make_unique<compressed_conv2d<Scalar>>(to_sparse_codebook(*conv, o.codebook, so, &choice));
        break;
    }
    std::string line = name + ": " + c->describe();
    if (f == format::sparse || f == format::codebook) line += " [" + choice.describe() + "]";
    report.push_back(line);
    model.replace(i, std::move(c));
  }
  if (o.fuse) fuse_epilogues(model, prefix, report, o.fuse_linear && f != format::xnor);
  // The direct convolutions' batch layout, timed with the epilogue each now carries.
  if (f != format::sparse && f != format::codebook) return;
  if (!o.sparse.measure_batch_layout || o.sparse.batch <= 1) return;
  for (std::size_t i = 0; i < model.size(); ++i) {
    auto* cc = dynamic_cast<compressed_conv2d<Scalar>*>(&model[i]);
    const auto in = conv_inputs.find(model.local_name(i));
    if (cc == nullptr || in == conv_inputs.end()) continue;
    const std::string timed = cc->choose_batch_layout(in->second);
    if (!timed.empty()) report.push_back(prefix + model.local_name(i) + ": " + timed);
  }
}

/// Folds [ReLU] [MaxPool2d] [ReLU] after each compressed convolution into it (ReLU and max commute)
/// and, with linear_relu, a ReLU after a compressed Linear into it.
template <class Scalar>
void fuse_epilogues(sequential<Scalar>& model, const std::string& prefix, std::vector<std::string>& report, bool linear) {
  std::vector<bool> drop(model.size(), false);
  bool any = false;
  for (std::size_t i = 0; i < model.size(); ++i) {
    if (auto* cl = dynamic_cast<compressed_linear<Scalar>*>(&model[i]); linear && cl != nullptr) {
      if (i > 0 && !drop[i - 1] && !cl->flatten_fused() && dynamic_cast<const flatten<Scalar>*>(&model[i - 1]) != nullptr) {
        cl->fuse_flatten();
        drop[i - 1] = true;
        report.push_back(prefix + model.local_name(i - 1) + ": fused into " + prefix + model.local_name(i));
        any = true;
      }
      if (!cl->relu_fused() && i + 1 < model.size() && dynamic_cast<const relu<Scalar>*>(&model[i + 1]) != nullptr) {
        cl->fuse_relu();
        drop[i + 1] = true;
        report.push_back(prefix + model.local_name(i + 1) + ": fused into " + prefix + model.local_name(i));
        any = true;
        ++i;
      }
      continue;
    }
    auto* cc = dynamic_cast<compressed_conv2d<Scalar>*>(&model[i]);
    if (cc == nullptr || cc->fused()) continue;
    kernels::conv_epilogue e;
    std::size_t j = i + 1;
    bool pooled = false;
    for (; j < model.size(); ++j) {
      index_t k = 0, s = 0;
      if (dynamic_cast<const relu<Scalar>*>(&model[j]) && !e.relu) {
        e.relu = true;
      } else if (!pooled && max_pool_window(model[j], k, s)) {
        e.pool_kernel = k;
        e.pool_stride = s;
        pooled = true;
      } else {
        break;
      }
    }
    if (j == i + 1) continue;
    cc->fuse(e);
    for (std::size_t k = i + 1; k < j; ++k) {
      drop[k] = true;
      report.push_back(prefix + model.local_name(k) + ": fused into " + prefix + model.local_name(i));
    }
    any = true;
    i = j - 1;
  }
  if (!any) return;
  sequential<Scalar> rebuilt;
  rebuilt.set_name(model.name());
  for (std::size_t i = 0; i < model.size(); ++i)
    if (!drop[i]) rebuilt.add_ptr(model.local_name(i), model[i].clone());
  model = std::move(rebuilt);
}

}  // namespace detail

/// Replaces every Linear and Conv2d in `model` and in the Sequentials nested in it by its compressed
/// form (and, for format::sparse, every LSTM, GRU and Bidirectional: compressed_recurrent /
/// compressed_bidirectional, "bilstm: CompressedBidirectional(...) [l0 ih sparse (...), ...]") and (o.fuse) folds the ReLU / MaxPool2d layers that follow a compressed convolution into it;
/// returns one line per layer: "fc1: SparseLinear(...)", "fc1: kept", "pool1: fused into conv1"
/// (nested layers are named "block.conv1").
template <class Scalar>
std::vector<std::string> compress(sequential<Scalar>& model, format f, const compress_options& o = {}) {
  std::vector<std::string> report;
  shape_t shape = o.input_shape;
  if (!shape.empty()) shape[0] = std::max<index_t>(1, o.sparse.batch);
  detail::compress_sequential(model, f, o, "", report, shape);
  return report;
}

}  // namespace slimnet::nn::compressed
