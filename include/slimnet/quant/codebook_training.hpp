// Fine-tuning shared weights (Han et al. 2016): the indices stay fixed and each centroid moves by
// the gradients of all the weights that share it, through the parameter-transform mechanism.
//
// With W_eff[r] = sum_t c_t[idx_t[r]] (row r of the codebook's layout, one stage per t), the
// gradient of centroid j of stage t is  g_t[j] = sum_{r : idx_t[r] = j} dL/dW_eff[r].
// backward() hands W the gradient  dL/dW[r] = sum_t g_t[idx_t[r]],  the change of W_eff that a
// step on the centroids produces, so an optimizer step on W is the step on the centroids expressed
// in weight space. after_step() then refits the centroids to the stepped W with the indices fixed
// (least squares) and writes the reconstruction back, so W is always exactly what the codebook
// represents:
//   - k-means and PQ (one stage): the weights sharing a centroid received identical gradients, so
//     any element-wise optimizer (SGD with momentum and weight decay, Adam) kept them equal; the
//     refit (their mean) reads the centroid back exactly. With plain SGD this is Han's update
//     c_j <- c_j - lr * g[j].
//   - RQ (several stages): the stages share each weight, so the refit is a block coordinate
//     descent over the stages (each centroid the mean of its rows' target given the other stages),
//     started from the previous codebook and run until the centroids stop moving.
//
// A pruned weight (a codebook with a support, built on a parameter that carries a mask; the rule
// is nn/parameter.hpp's): the sums above run over surviving weights only, g_t[j] =
// sum_{r : idx_t[r] = j, r survives} dL/dW_eff[r] (Han et al. 2016, sec. 3.1, for the weights that
// remain after pruning), the gradient of a pruned weight is 0, the refit averages surviving
// weights only, and the reconstruction written back is exactly 0 at every pruned weight. So the
// mask keeps pruned weights at 0 after every step and no centroid is pulled towards them.
#pragma once

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/nn/parameter.hpp"
#include "slimnet/quant/codebook.hpp"
#include "slimnet/quant/support.hpp"

namespace slimnet::quant {

/// The codebook as a parameter transform: W_eff = reconstruction, per-centroid gradients, refit
/// after each step. Meant as the parameter's only transform or the one after its pruning mask:
/// forward reads the centroids, not its input (which it only checks for weights grown back).
template <class Scalar>
class codebook_transform : public nn::parameter_transform<Scalar> {
 public:
  /// `max_sweeps` bounds the refit's coordinate-descent sweeps for residual codebooks.
  explicit codebook_transform(codebook<Scalar> cb, int max_sweeps = 20)
      : book_(std::move(cb)), max_sweeps_(max_sweeps) {
    book_.validate("slimnet::quant::codebook_transform");
    if (max_sweeps < 1)
      slimnet::detail::raise<config_error>("slimnet::quant::codebook_transform",
                                           "max_sweeps = {} must be >= 1", max_sweeps);
  }

  std::string name() const override { return fmt::format("codebook({})", book_.describe()); }
  const codebook<Scalar>& book() const { return book_; }
  /// A copied model gets its own centroids (fine-tuning the copy must not move the original's).
  std::shared_ptr<nn::parameter_transform<Scalar>> clone(nn::clone_memo&) const override {
    return std::make_shared<codebook_transform>(*this);
  }
  /// State: the centroids (fine-tuning moves them), the indices and support (fixed, but a model
  /// rebuilt by re-running k-means could assign them differently: restored, not trusted) and the
  /// sweep count. The layout (stages, blocks, clusters) must be the saved one (config_error).
  void save_state(nn::state_writer<Scalar>& out) const override {
    out.put_text("layout", layout_text());
    for (std::size_t i = 0; i < book_.centroids.size(); ++i) {
      const auto& c = book_.centroids[i];
      tensor<Scalar> t({c.rows(), c.cols()});
      Eigen::Map<row_matrix<Scalar>>(t.data(), c.rows(), c.cols()) = c;
      out.put_tensor(fmt::format("centroids/{}", i), t);
      out.put_integers(fmt::format("indices/{}", i), std::vector<std::int64_t>(book_.indices[i].begin(), book_.indices[i].end()));
    }
    out.put_integers("support", std::vector<std::int64_t>(book_.support.begin(), book_.support.end()));
    out.put_integer("last_sweeps", last_sweeps_);
  }
  void load_state(const nn::state_reader<Scalar>& in) override {
    constexpr const char* fn = "slimnet::quant::codebook_transform::load_state";
    in.expect_text("layout", layout_text());
    codebook<Scalar> book = book_;
    for (std::size_t i = 0; i < book.centroids.size(); ++i) {
      tensor<Scalar> t({book.centroids[i].rows(), book.centroids[i].cols()});
      in.read_tensor(fmt::format("centroids/{}", i), t);
      book.centroids[i] = Eigen::Map<const row_matrix<Scalar>>(t.data(), t.shape()[0], t.shape()[1]);
      const auto& idx = in.get_integers(fmt::format("indices/{}", i), book.indices[i].size());
      for (std::size_t r = 0; r < idx.size(); ++r) {
        if (idx[r] < 0 || idx[r] >= book.clusters) {
          slimnet::detail::raise<io_error>(fn, "{}: '{}indices/{}' holds {} at {} (clusters: {})", in.source(), in.prefix(), i, idx[r], r,
                                           book.clusters);
        }
        book.indices[i][r] = static_cast<std::int32_t>(idx[r]);
      }
    }
    const auto& support = in.get_integers("support", book.support.size());
    for (std::size_t r = 0; r < support.size(); ++r) {
      if (support[r] != 0 && support[r] != 1) {
        slimnet::detail::raise<io_error>(fn, "{}: '{}support' holds {} at {}", in.source(), in.prefix(), support[r], r);
      }
      book.support[r] = static_cast<std::uint8_t>(support[r]);
    }
    const int sweeps = static_cast<int>(in.get_integer("last_sweeps", 0, max_sweeps_));
    book_ = std::move(book);
    last_sweeps_ = sweeps;
  }

  /// Coordinate-descent sweeps used by the last refit (1 for k-means and PQ).
  int last_sweeps() const { return last_sweeps_; }

  void forward(const tensor<Scalar>& w, tensor<Scalar>& w_eff, bool, rng&) override {
    check(w, "forward");
    Eigen::Map<row_matrix<Scalar>>(w_eff.data(), book_.rows, book_.cols) = book_.reconstruct();
    // The input is W (or W * T below a mask), which after_step set to the reconstruction. A
    // pruned weight that is nonzero, or a weight the codebook represents by a nonzero centroid
    // that arrives as 0, means the mask below changed after the codebook was built (DNS surgery
    // still running, pruning after quantizing): the centroids would be shared with weights the
    // mask no longer keeps, so this is refused rather than silently reviving or hiding them.
    for (index_t i = 0; i < w.size(); ++i) {
      const bool kept = book_.support.empty() || book_.support[static_cast<std::size_t>(i)] != 0;
      if ((!kept && w.data()[i] != Scalar(0)) ||
          (kept && w.data()[i] == Scalar(0) && w_eff.data()[i] != Scalar(0))) {
        slimnet::detail::raise<config_error>(
            "slimnet::quant::codebook_transform::forward",
            "weight {} arrives as {} but the codebook {} (the mask changed after quantizing: "
            "prune first, and prune::freeze DNS surgery before quantizing)",
            i, static_cast<double>(w.data()[i]),
            kept ? "represents it by a nonzero centroid" : "was built with it pruned");
      }
    }
  }

  void backward(const tensor<Scalar>& w, tensor<Scalar>& grad) override {
    check(w, "backward");
    const index_t lr = book_.layout_rows(), lc = book_.layout_cols();
    Eigen::Map<row_matrix<Scalar>> g(grad.data(), lr, lc);
    for (std::size_t i = 0; i < book_.support.size(); ++i) {
      if (book_.support[i] == 0) grad.data()[i] = Scalar(0);  // a pruned weight shares nothing
    }
    detail::dmatrix out = detail::dmatrix::Zero(lr, lc);
    detail::dmatrix sums;
    for (int t = 0; t < book_.stages; ++t) {
      for (index_t b = 0; b < book_.blocks(); ++b) {
        const auto& idx = book_.indices_of(t, b);
        const index_t off = book_.block_offsets[static_cast<std::size_t>(b)],
                      width = book_.block_width(b);
        sums.setZero(book_.clusters, width);
        for (index_t r = 0; r < lr; ++r)
          sums.row(idx[static_cast<std::size_t>(r)]) +=
              g.row(r).segment(off, width).template cast<double>();
        for (index_t r = 0; r < lr; ++r)
          out.row(r).segment(off, width) += sums.row(idx[static_cast<std::size_t>(r)]);
      }
    }
    g = out.cast<Scalar>();
    for (std::size_t i = 0; i < book_.support.size(); ++i) {
      if (book_.support[i] == 0) grad.data()[i] = Scalar(0);
    }
  }

  void after_step(tensor<Scalar>& w, const nn::step_context&) override {
    check(w, "after_step");
    refit(w);
    Eigen::Map<row_matrix<Scalar>>(w.data(), book_.rows, book_.cols) = book_.reconstruct();
  }

 private:
  void check(const tensor<Scalar>& w, const char* what) const {
    if (w.size() != book_.rows * book_.cols) {
      slimnet::detail::raise<shape_error>(
          fmt::format("slimnet::quant::codebook_transform::{}", what).c_str(),
          "parameter of shape {} does not fit a codebook of {} x {} weights",
          shape_string(w.shape()), book_.rows, book_.cols);
    }
  }

  // Least-squares refit of the centroids to w with the indices fixed. Each stage's update is the
  // exact minimiser given the other stages (cluster means of the target w - other stages), so the
  // squared error never increases; one stage converges in one sweep. With a support the error and
  // the means run over surviving weights only (per coordinate for PQ / RQ rows).
  void refit(const tensor<Scalar>& w) {
    const index_t lr = book_.layout_rows(), lc = book_.layout_cols();
    detail::dmatrix observed = detail::dmatrix::Ones(lr, lc);
    for (std::size_t i = 0; i < book_.support.size(); ++i) observed.data()[i] = book_.support[i];
    const detail::dmatrix target =
        Eigen::Map<const row_matrix<Scalar>>(w.data(), lr, lc).template cast<double>();
    std::vector<detail::dmatrix> recon(static_cast<std::size_t>(book_.stages),
                                       detail::dmatrix::Zero(lr, lc));
    detail::dmatrix total = detail::dmatrix::Zero(lr, lc);
    for (int t = 0; t < book_.stages; ++t) {
      stage_reconstruction(t, recon[static_cast<std::size_t>(t)]);
      total += recon[static_cast<std::size_t>(t)];
    }
    const double scale = std::max(target.cwiseAbs().maxCoeff(), 1e-30);
    last_sweeps_ = 0;
    for (int sweep = 0; sweep < max_sweeps_; ++sweep) {
      ++last_sweeps_;
      double moved = 0;
      for (int t = 0; t < book_.stages; ++t) {
        auto& mine = recon[static_cast<std::size_t>(t)];
        total -= mine;
        for (index_t b = 0; b < book_.blocks(); ++b) {
          auto& c = book_.centroids_of(t, b);
          const auto& idx = book_.indices_of(t, b);
          const index_t off = book_.block_offsets[static_cast<std::size_t>(b)],
                        width = book_.block_width(b);
          const detail::dmatrix old = c.template cast<double>();
          detail::dmatrix delta = detail::dmatrix::Zero(book_.clusters, width);
          detail::dmatrix count = detail::dmatrix::Zero(book_.clusters, width);
          for (index_t r = 0; r < lr; ++r) {
            const auto j = idx[static_cast<std::size_t>(r)];
            const auto o = observed.row(r).segment(off, width);
            delta.row(j) += (target.row(r).segment(off, width) -
                             total.row(r).segment(off, width) - old.row(j))
                                .cwiseProduct(o);
            count.row(j) += o;
          }
          for (index_t j = 0; j < book_.clusters; ++j) {
            // A centroid (coordinate) no surviving weight uses has no gradient and stays put.
            if (!(count.row(j).array() > 0).any()) continue;
            const Eigen::RowVectorXd updated =
                (count.row(j).array() > 0)
                    .select(old.row(j).array() + delta.row(j).array() / count.row(j).array(),
                            old.row(j).array())
                    .matrix();
            c.row(j) = updated.cast<Scalar>();
            moved = std::max(moved,
                             (c.row(j).template cast<double>() - old.row(j)).cwiseAbs().maxCoeff());
          }
        }
        stage_reconstruction(t, mine);
        total += mine;
      }
      if (book_.stages == 1 || moved <= 1e-7 * scale) break;
    }
  }

  std::string layout_text() const {
    return fmt::format("{} rows={} cols={} clusters={} stages={} blocks={}", book_.describe(), book_.rows, book_.cols, book_.clusters,
                       book_.stages, book_.blocks());
  }

  void stage_reconstruction(int t, detail::dmatrix& out) const {
    out.setZero(book_.layout_rows(), book_.layout_cols());
    for (index_t b = 0; b < book_.blocks(); ++b) {
      const detail::dmatrix c = book_.centroids_of(t, b).template cast<double>();
      const auto& idx = book_.indices_of(t, b);
      const index_t off = book_.block_offsets[static_cast<std::size_t>(b)],
                    width = book_.block_width(b);
      for (index_t r = 0; r < book_.layout_rows(); ++r)
        out.row(r).segment(off, width) = c.row(idx[static_cast<std::size_t>(r)]);
    }
  }

  codebook<Scalar> book_;
  int max_sweeps_;
  int last_sweeps_ = 0;
};

/// Ties `p` to `cb`: sets its value to the reconstruction and attaches a codebook_transform, so
/// training fine-tunes the centroids with the indices fixed. Returns the transform (its book()
/// holds the fine-tuned codebook). A pruned `p` needs a codebook built on its surviving weights
/// (cb.support == support_of(p)); anything else is a config_error, since clustering the pruned
/// zeros would make 0 an ordinary centroid that fine-tuning moves.
template <class Scalar>
std::shared_ptr<codebook_transform<Scalar>> share_weights(nn::parameter<Scalar>& p,
                                                          codebook<Scalar> cb) {
  constexpr const char* fn = "slimnet::quant::share_weights";
  const auto view = p.value().matrix();
  if (view.rows() != cb.rows || view.cols() != cb.cols) {
    slimnet::detail::raise<shape_error>(fn, "codebook of {} x {} weights does not fit {} of shape {}",
                                        cb.rows, cb.cols, p.name(), shape_string(p.shape()));
  }
  const auto alive = support_of(p);
  if (!alive.empty() && cb.support != alive) {
    index_t kept = 0;
    for (auto v : alive) kept += v;
    slimnet::detail::raise<config_error>(
        fn,
        "'{}' is pruned ({} of {} weights survive) but the codebook was built on {}: build it with "
        "support_of(p), e.g. quant::kmeans(p.value(), k, options, quant::support_of(p))",
        p.name(), kept, alive.size(),
        cb.support.empty() ? std::string("every weight") : std::string("another support"));
  }
  apply(cb, p.value());
  auto t = std::make_shared<codebook_transform<Scalar>>(std::move(cb));
  p.add_transform(t);
  return t;
}

}  // namespace slimnet::quant
