// DeepIoT's Table 1 row (Yao et al., SenSys 2017): model size, inference time at batch 1 and
// energy per inference of the original network against the compressed one, for the examples
// that compress a network (example 9's DeepSense; example 11 prints the same row inline).
#pragma once

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "slimnet/data.hpp"
#include "slimnet/nn/layer.hpp"
#include "slimnet/report.hpp"

namespace slimnet::cli {

/// Median time in milliseconds of one forward pass over `batch` examples of `data` (repeated when
/// the set is smaller), after 5 warm-up passes. Sequence data pass their lengths, so a recurrent
/// model stops at each window's valid steps as in evaluation.
inline double forward_ms(nn::layer<float>& model, const data::dataset<float>& data, index_t batch, int reps) {
  if (batch <= 0 || reps <= 0 || data.size() == 0) {
    throw config_error(
        fmt::format("slimnet::cli::forward_ms: batch {} and reps {} must be positive on a non-empty set ({} examples)", batch,
                    reps, data.size()));
  }
  std::vector<index_t> idx(static_cast<std::size_t>(batch));
  for (index_t i = 0; i < batch; ++i) idx[static_cast<std::size_t>(i)] = i % data.size();
  const data::dataset<float> x = data.subset(idx);
  tensor<float> y;
  nn::forward_context ctx;
  if (!x.lengths.empty()) ctx.lengths = &x.lengths;
  for (int i = 0; i < 5; ++i) model.forward(x.inputs, y, ctx);
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    model.forward(x.inputs, y, ctx);
    t.push_back(1e3 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + reps / 2, t.end());
  return t[static_cast<std::size_t>(reps / 2)];
}

/// Prints the inference times at batch 1 and 64 and the Table 1 row (original / compressed /
/// reduction): size of the fp32 parameters (biases and BatchNorm included), the batch-1 time and
/// the energy of one example by report::estimate_energy's 45 nm model (the paper measured an
/// Intel Edison with a power meter, so only the reductions compare). `paper` is the paper's row
/// ("" prints none).
inline void print_table1(nn::layer<float>& original, nn::layer<float>& compressed, const data::dataset<float>& data,
                         const std::string& paper = "") {
  fmt::print("\ninference, one thread, median forward time:\n{:<7} {:>12} {:>12} {:>8}\n", "batch", "original ms",
             "compressed ms", "speed-up");
  double ms_b1[2] = {0, 0};
  for (const index_t b : {index_t{1}, index_t{64}}) {
    const int reps = b == 1 ? 500 : 50;
    const double t0 = forward_ms(original, data, b, reps), t1 = forward_ms(compressed, data, b, reps);
    fmt::print("{:<7} {:>12.4f} {:>12.4f} {:>7.1f}x\n", b, t0, t1, t0 / t1);
    if (b == 1) ms_b1[0] = t0, ms_b1[1] = t1;
  }
  shape_t one = data.inputs.shape();
  one[0] = 1;
  const auto e0 = report::estimate_energy(original, one), e1 = report::estimate_energy(compressed, one);
  const double mb0 = 4e-6 * static_cast<double>(original.parameter_count()),
               mb1 = 4e-6 * static_cast<double>(compressed.parameter_count());
  const auto cut = [](double before, double after) { return 100 * (1 - after / before); };
  fmt::print("\nTable 1 (original / compressed / reduction):\n{:<16} {:>26} {:>28} {:>28}\n", "", "size (MB)",
             "time (ms, batch 1)", "energy (mJ, 45 nm model)");
  fmt::print("{:<16} {:>26} {:>28} {:>28}\n", "measured", fmt::format("{:.3f} / {:.4f} / {:.1f}%", mb0, mb1, cut(mb0, mb1)),
             fmt::format("{:.4f} / {:.4f} / {:.1f}%", ms_b1[0], ms_b1[1], cut(ms_b1[0], ms_b1[1])),
             fmt::format("{:.4f} / {:.5f} / {:.1f}%", e0.total_mj(), e1.total_mj(), cut(e0.total_mj(), e1.total_mj())));
  if (!paper.empty()) fmt::print("{}\n", paper);
  fmt::print("energy model: original   {}\n              compressed {}\n", report::summary(e0), report::summary(e1));
}

}  // namespace slimnet::cli
