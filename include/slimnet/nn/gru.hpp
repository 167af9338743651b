// GRU layer (Cho et al. 2014, PyTorch's formulation and parameter layout) with backpropagation
// through time over batches of sequences with per-sequence lengths.
//   r = sigma(W_ir x + b_ir + W_hr h + b_hr),   z = sigma(W_iz x + b_iz + W_hz h + b_hz)
//   n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),   h_t = m * ((1 - z) * n + z * h_{t-1})
// Gate rows are stacked in PyTorch's order r, z, n; m is the DeepIoT unit mask (1 without one).
// Output and state are the same vector, so the masked state is what the next step sees
// (DeepIoT's DropoutWrapper masks both).
#pragma once

#include "slimnet/nn/recurrent.hpp"

namespace slimnet::nn {

struct gru_cell {
  static constexpr const char* kind = "GRU";
  static constexpr const char* name = "gru";
  static constexpr index_t gates = 3;

  template <class Scalar>
  static void forward(const detail::rnn::step_plan& plan, const detail::rnn::cell_weights<Scalar>& w,
                      kernels::matrix_ref<const Scalar> in, detail::rnn::layer_cache<Scalar>& c) {
    using detail::rnn::block;
    const index_t n = plan.batch, h = w.hidden, g = gates * h, cols = plan.columns(), sld = (plan.steps + 1) * n;
    c.gates.resize({g, cols});
    c.state.resize({h, sld});
    c.state.set_zero();
    c.cell.resize({h, cols});  // W_hn h_{t-1} + b_hn, needed by dr
    c.scratch.resize({g, n});
    detail::rnn::project_inputs(w, g, in, plan.run * n, cols, c.gates.data(), false);
    const bool masked = c.mask.size() > 0;
    Scalar* HH = c.scratch.data();
    for (index_t t = 0; t < plan.run; ++t) {
      const index_t b = plan.active[static_cast<std::size_t>(t)];
      Scalar* G = c.gates.data() + t * n;
      kernels::gemm<Scalar>(kernels::row_major(w.w_hh, g, h),
                            kernels::matrix_ref<const Scalar>{c.state.data() + t * n, h, b, sld, 1},
                            kernels::matrix_ref<Scalar>{HH, g, b, n, 1});
      for (index_t j = 0; j < h; j += detail::rnn::unit_chunk) {
        const index_t u = std::min(detail::rnn::unit_chunk, h - j);
        if (w.b_hh != nullptr) {
          for (index_t k = 0; k < gates; ++k)
            for (index_t r = k * h + j; r < k * h + j + u; ++r) block(HH + r * n, 1, b, n) += w.b_hh[r];
        }
        auto gr = block(G + j * cols, u, b, cols);
        auto gz = block(G + (h + j) * cols, u, b, cols);
        auto gn = block(G + (2 * h + j) * cols, u, b, cols);
        gr = detail::rnn::sigmoid(gr + block(static_cast<const Scalar*>(HH) + j * n, u, b, n));
        gz = detail::rnn::sigmoid(gz + block(static_cast<const Scalar*>(HH) + (h + j) * n, u, b, n));
        auto hn = block(c.cell.data() + j * cols + t * n, u, b, cols);
        hn = block(static_cast<const Scalar*>(HH) + (2 * h + j) * n, u, b, n);
        gn = (gn + gr * hn).tanh();
        const auto h_prev = block(static_cast<const Scalar*>(c.state.data()) + j * sld + t * n, u, b, sld);
        auto h_new = block(c.state.data() + j * sld + (t + 1) * n, u, b, sld);
        if (masked) {
          h_new = ((Scalar(1) - gz) * gn + gz * h_prev) * block(static_cast<const Scalar*>(c.mask.data()) + j * n, u, b, n);
        } else {
          h_new = (Scalar(1) - gz) * gn + gz * h_prev;
        }
      }
    }
  }

  // Per step, with dh = dL/dh_t (from the output and from step t+1) times the mask:
  //   dn~ = dh (1-z)(1-n^2),  dz~ = dh (h_{t-1} - n) z(1-z),  dr~ = dn~ (W_hn h + b_hn) r(1-r),
  //   input path dGI = [dr~; dz~; dn~],  recurrent path dGH = [dr~; dz~; dn~ r],
  //   dh_{t-1} = W_hh^T dGH + dh z.
  template <class Scalar>
  static void backward(const detail::rnn::step_plan& plan, detail::rnn::cell_weights<Scalar>& w,
                       kernels::matrix_ref<const Scalar> in, detail::rnn::layer_cache<Scalar>& c, const Scalar* d_out,
                       kernels::matrix_ref<Scalar> d_in) {
    using detail::rnn::block;
    const index_t n = plan.batch, h = w.hidden, g = gates * h, cols = plan.columns(), sld = (plan.steps + 1) * n;
    c.d_gates.resize({g, cols});
    c.d_hidden.resize({g, cols});
    c.d_state.resize({h, n});
    c.d_state.set_zero();
    c.w_hh_t.resize({h, g});
    c.w_hh_t.matrix() = Eigen::Map<const row_matrix<Scalar>>(w.w_hh, g, h).transpose();
    const bool masked = c.mask.size() > 0;
    for (index_t t = plan.run; t-- > 0;) {
      const index_t b = plan.active[static_cast<std::size_t>(t)];
      const index_t b_next = t + 1 < plan.run ? plan.active[static_cast<std::size_t>(t + 1)] : 0;
      if (b > b_next) block(c.d_state.data() + b_next, h, b - b_next, n).setZero();
      const Scalar* G = c.gates.data() + t * n;
      Scalar* DI = c.d_gates.data() + t * n;
      Scalar* DH = c.d_hidden.data() + t * n;
      for (index_t j = 0; j < h; j += detail::rnn::unit_chunk) {
        const index_t u = std::min(detail::rnn::unit_chunk, h - j);
        auto dh = block(c.d_state.data() + j * n, u, b, n);
        dh += block(d_out + j * cols + t * n, u, b, cols);
        if (masked) dh *= block(static_cast<const Scalar*>(c.mask.data()) + j * n, u, b, n);
        const auto r = block(G + j * cols, u, b, cols);
        const auto z = block(G + (h + j) * cols, u, b, cols);
        const auto nn = block(G + (2 * h + j) * cols, u, b, cols);
        const auto hn = block(static_cast<const Scalar*>(c.cell.data()) + j * cols + t * n, u, b, cols);
        const auto h_prev = block(static_cast<const Scalar*>(c.state.data()) + j * sld + t * n, u, b, sld);
        auto di_r = block(DI + j * cols, u, b, cols);
        auto di_z = block(DI + (h + j) * cols, u, b, cols);
        auto di_n = block(DI + (2 * h + j) * cols, u, b, cols);
        di_n = dh * (Scalar(1) - z) * (Scalar(1) - nn.square());
        di_z = dh * (h_prev - nn) * z * (Scalar(1) - z);
        di_r = di_n * hn * r * (Scalar(1) - r);
        block(DH + j * cols, u, b, cols) = di_r;
        block(DH + (h + j) * cols, u, b, cols) = di_z;
        block(DH + (2 * h + j) * cols, u, b, cols) = di_n * r;
        dh *= z;
      }
      if (b < n) {
        block(DI + b, g, n - b, cols).setZero();
        block(DH + b, g, n - b, cols).setZero();
      }
      kernels::gemm<Scalar>(kernels::row_major<const Scalar>(c.w_hh_t.data(), h, g),
                            kernels::matrix_ref<const Scalar>{DH, g, b, cols, 1},
                            kernels::matrix_ref<Scalar>{c.d_state.data(), h, b, n, 1}, Scalar(1), Scalar(1));
    }
    detail::rnn::finish_backward(w, g, in, c.state.data(), sld, c.d_gates.data(), c.d_hidden.data(), plan.run * n, cols, d_in);
  }
};

/// GRU over (N, T, F) input: nn::gru<float>(512, 120, {num_layers, output, reverse, bias}).
template <class Scalar>
using gru = recurrent<Scalar, gru_cell>;

}  // namespace slimnet::nn
