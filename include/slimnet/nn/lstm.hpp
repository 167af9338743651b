// LSTM layer (Hochreiter & Schmidhuber 1997, PyTorch's formulation and parameter layout) with
// backpropagation through time over batches of sequences with per-sequence lengths.
//   [i; f; g; o] = [sigma; sigma; tanh; sigma](W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
//   c_t = f * c_{t-1} + i * g,    h_t = m * o * tanh(c_t)
// Gate rows are stacked in PyTorch's order i, f, g, o; m is the DeepIoT unit mask (1 without one);
// the cell state is not masked (DeepIoT Eq. 2 masks h only).
#pragma once

#include "slimnet/nn/recurrent.hpp"

namespace slimnet::nn {

struct lstm_cell {
  static constexpr const char* kind = "LSTM";
  static constexpr const char* name = "lstm";
  static constexpr index_t gates = 4;

  template <class Scalar>
  static void forward(const detail::rnn::step_plan& plan, const detail::rnn::cell_weights<Scalar>& w,
                      kernels::matrix_ref<const Scalar> in, detail::rnn::layer_cache<Scalar>& c) {
    using detail::rnn::block;
    const index_t n = plan.batch, h = w.hidden, g = gates * h, cols = plan.columns(), sld = (plan.steps + 1) * n;
    c.gates.resize({g, cols});
    c.state.resize({h, sld});
    c.state.set_zero();
    c.cell.resize({h, sld});
    c.cell.set_zero();
    c.tanh_cell.resize({h, cols});
    detail::rnn::project_inputs(w, g, in, plan.run * n, cols, c.gates.data(), true);
    const bool masked = c.mask.size() > 0;
    for (index_t t = 0; t < plan.run; ++t) {
      const index_t b = plan.active[static_cast<std::size_t>(t)];
      Scalar* G = c.gates.data() + t * n;
      kernels::gemm<Scalar>(kernels::row_major(w.w_hh, g, h),
                            kernels::matrix_ref<const Scalar>{c.state.data() + t * n, h, b, sld, 1},
                            kernels::matrix_ref<Scalar>{G, g, b, cols, 1}, Scalar(1), Scalar(1));
      for (index_t j = 0; j < h; j += detail::rnn::unit_chunk) {
        const index_t u = std::min(detail::rnn::unit_chunk, h - j);
        auto gi = block(G + j * cols, u, b, cols);
        auto gf = block(G + (h + j) * cols, u, b, cols);
        auto gg = block(G + (2 * h + j) * cols, u, b, cols);
        auto go = block(G + (3 * h + j) * cols, u, b, cols);
        gi = detail::rnn::sigmoid(gi);
        gf = detail::rnn::sigmoid(gf);
        gg = gg.tanh();
        go = detail::rnn::sigmoid(go);
        auto c_new = block(c.cell.data() + j * sld + (t + 1) * n, u, b, sld);
        c_new = gf * block(static_cast<const Scalar*>(c.cell.data()) + j * sld + t * n, u, b, sld) + gi * gg;
        auto tc = block(c.tanh_cell.data() + j * cols + t * n, u, b, cols);
        tc = c_new.tanh();
        auto h_new = block(c.state.data() + j * sld + (t + 1) * n, u, b, sld);
        if (masked) {
          h_new = go * tc * block(static_cast<const Scalar*>(c.mask.data()) + j * n, u, b, n);
        } else {
          h_new = go * tc;
        }
      }
    }
  }

  // Per step, with dh = dL/dh_t (from the output and from step t+1) times the mask:
  //   do = dh tanh(c),  dc += dh o (1 - tanh^2 c),  di = dc g,  dg = dc i,  df = dc c_{t-1},
  //   dc_{t-1} = dc f,  pre-activations through sigma' = s(1-s) and tanh' = 1 - y^2,
  //   dh_{t-1} = W_hh^T dG_t.
  template <class Scalar>
  static void backward(const detail::rnn::step_plan& plan, detail::rnn::cell_weights<Scalar>& w,
                       kernels::matrix_ref<const Scalar> in, detail::rnn::layer_cache<Scalar>& c, const Scalar* d_out,
                       kernels::matrix_ref<Scalar> d_in) {
    using detail::rnn::block;
    const index_t n = plan.batch, h = w.hidden, g = gates * h, cols = plan.columns(), sld = (plan.steps + 1) * n;
    c.d_gates.resize({g, cols});
    c.d_state.resize({h, n});
    c.d_state.set_zero();
    c.d_cell.resize({h, n});
    c.d_cell.set_zero();
    c.w_hh_t.resize({h, g});
    c.w_hh_t.matrix() = Eigen::Map<const row_matrix<Scalar>>(w.w_hh, g, h).transpose();
    const bool masked = c.mask.size() > 0;
    Scalar* dG = c.d_gates.data();
    for (index_t t = plan.run; t-- > 0;) {
      const index_t b = plan.active[static_cast<std::size_t>(t)];
      const index_t b_next = t + 1 < plan.run ? plan.active[static_cast<std::size_t>(t + 1)] : 0;
      if (b > b_next) {  // sequences whose last step is t: nothing flows back from step t+1
        block(c.d_state.data() + b_next, h, b - b_next, n).setZero();
        block(c.d_cell.data() + b_next, h, b - b_next, n).setZero();
      }
      const Scalar* G = c.gates.data() + t * n;
      Scalar* D = dG + t * n;
      for (index_t j = 0; j < h; j += detail::rnn::unit_chunk) {
        const index_t u = std::min(detail::rnn::unit_chunk, h - j);
        auto dh = block(c.d_state.data() + j * n, u, b, n);
        dh += block(d_out + j * cols + t * n, u, b, cols);
        if (masked) dh *= block(static_cast<const Scalar*>(c.mask.data()) + j * n, u, b, n);
        auto dc = block(c.d_cell.data() + j * n, u, b, n);
        const auto gi = block(G + j * cols, u, b, cols);
        const auto gf = block(G + (h + j) * cols, u, b, cols);
        const auto gg = block(G + (2 * h + j) * cols, u, b, cols);
        const auto go = block(G + (3 * h + j) * cols, u, b, cols);
        const auto tc = block(static_cast<const Scalar*>(c.tanh_cell.data()) + j * cols + t * n, u, b, cols);
        const auto c_prev = block(static_cast<const Scalar*>(c.cell.data()) + j * sld + t * n, u, b, sld);
        block(D + (3 * h + j) * cols, u, b, cols) = dh * tc * go * (Scalar(1) - go);
        dc += dh * go * (Scalar(1) - tc.square());
        block(D + j * cols, u, b, cols) = dc * gg * gi * (Scalar(1) - gi);
        block(D + (2 * h + j) * cols, u, b, cols) = dc * gi * (Scalar(1) - gg.square());
        block(D + (h + j) * cols, u, b, cols) = dc * c_prev * gf * (Scalar(1) - gf);
        dc *= gf;
      }
      if (b < n) block(D + b, g, n - b, cols).setZero();
      kernels::gemm<Scalar>(kernels::row_major<const Scalar>(c.w_hh_t.data(), h, g),
                            kernels::matrix_ref<const Scalar>{D, g, b, cols, 1},
                            kernels::matrix_ref<Scalar>{c.d_state.data(), h, b, n, 1});
    }
    detail::rnn::finish_backward(w, g, in, c.state.data(), sld, dG, dG, plan.run * n, cols, d_in);
  }
};

/// LSTM over (N, T, F) input: nn::lstm<float>(28, 128, {num_layers, output, reverse, bias}).
template <class Scalar>
using lstm = recurrent<Scalar, lstm_cell>;

}  // namespace slimnet::nn
