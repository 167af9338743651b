// k-means (Lloyd, initialisations, empty clusters), product and residual quantization, storage
// accounting, and fine-tuning shared weights through the codebook transform.
#include "slimnet/quant/codebook.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <set>
#include <unsupported/Eigen/CXX11/Tensor>

#include "slimnet/nn.hpp"
#include "slimnet/quant/codebook_training.hpp"
#include "slimnet/train.hpp"

using namespace slimnet;
using quant::kmeans_init;
using quant::kmeans_options;

namespace {

template <class Scalar>
row_matrix<Scalar> random_matrix(index_t rows, index_t cols, std::uint64_t seed,
                                 double stddev = 1.0) {
  rng gen(seed);
  row_matrix<Scalar> m(rows, cols);
  for (index_t i = 0; i < m.size(); ++i) m.data()[i] = static_cast<Scalar>(gen.normal(0, stddev));
  return m;
}

/// Gaussian blobs around `centres` rows: points with a known cluster structure.
row_matrix<double> blobs(const row_matrix<double>& centres, index_t per_blob, double spread,
                         std::uint64_t seed) {
  rng gen(seed);
  row_matrix<double> x(centres.rows() * per_blob, centres.cols());
  for (index_t i = 0; i < x.rows(); ++i)
    for (index_t j = 0; j < x.cols(); ++j)
      x(i, j) = centres(i / per_blob, j) + gen.normal(0, spread);
  return x;
}

template <class Scalar>
double squared_error(const row_matrix<Scalar>& a, const row_matrix<Scalar>& b) {
  return (a.template cast<double>() - b.template cast<double>()).squaredNorm();
}

}  // namespace

TEMPLATE_TEST_CASE("Lloyd's iterations never increase the inertia", "[quant][kmeans]", float,
                   double) {
  for (kmeans_init init :
       {kmeans_init::kmeans_plus_plus, kmeans_init::linear, kmeans_init::forgy}) {
    for (index_t dim : {1, 3, 16}) {
      INFO("init " << quant::to_string(init) << " dim " << dim);
      const auto x = random_matrix<TestType>(600, dim, 17 + dim);
      kmeans_options o;
      o.init = init;
      o.seed = 5;
      const auto r = quant::kmeans_rows(x, 12, o);
      REQUIRE(r.inertia_history.size() >= 3);
      for (std::size_t i = 1; i < r.inertia_history.size(); ++i)
        CHECK(r.inertia_history[i] <= r.inertia_history[i - 1]);
      CHECK(r.inertia_history.back() < r.inertia_history.front());  // it did something
      CHECK(r.converged);
      CHECK(r.empty_clusters == 0);
      // The reported inertia is that of the returned centroids and assignment.
      double inertia = 0;
      for (index_t i = 0; i < x.rows(); ++i)
        inertia += (x.row(i).template cast<double>() -
                    r.centroids.row(r.assignment[i]).template cast<double>())
                       .squaredNorm();
      CHECK(r.inertia == Approx(inertia).epsilon(1e-12));
      // At convergence every point sits with its nearest centroid and every centroid is its mean.
      for (index_t i = 0; i < x.rows(); ++i) {
        index_t best = 0;
        (r.centroids.rowwise() - x.row(i)).rowwise().squaredNorm().minCoeff(&best);
        const double mine = (r.centroids.row(r.assignment[i]) - x.row(i)).squaredNorm();
        const double other = (r.centroids.row(best) - x.row(i)).squaredNorm();
        CHECK(mine <= other * (1 + 1e-5) + 1e-12);
      }
    }
  }
}

TEST_CASE("k-means finds well-separated clusters from every initialisation", "[quant][kmeans]") {
  row_matrix<double> centres(4, 2);
  centres << -10, 0, 0, 10, 10, 0, 0, -10;
  const auto x = blobs(centres, 50, 0.5, 3);
  for (kmeans_init init : {kmeans_init::kmeans_plus_plus, kmeans_init::forgy}) {
    kmeans_options o;
    o.init = init;
    const auto r = quant::kmeans_rows(x, 4, o);
    for (index_t b = 0; b < 4; ++b) {
      std::set<int> labels(r.assignment.begin() + b * 50, r.assignment.begin() + (b + 1) * 50);
      CHECK(labels.size() == 1);  // each blob is one cluster
    }
    CHECK(r.inertia < 200 * 2 * 0.5 * 0.5 * 1.3);  // about n d sigma^2
  }
}

TEST_CASE("k-means initialisations: seeded, linear spacing, k-means++ picks distinct points",
          "[quant][kmeans]") {
  rng gen0(1);
  row_matrix<double> x(5, 2);
  x << -1, 4, 3, 0, 0.5, 2, 2, 2, -1, 1;
  // Linear: evenly spaced from the minimum to the maximum, per coordinate.
  const auto lin = quant::detail::initial_centroids(x, 3, kmeans_init::linear, gen0);
  CHECK(lin == (row_matrix<double>(3, 2) << -1, 0, 1, 2, 3, 4).finished());
  // k-means++ and Forgy draw distinct points of the data.
  for (kmeans_init init : {kmeans_init::kmeans_plus_plus, kmeans_init::forgy}) {
    for (std::uint64_t seed = 1; seed < 20; ++seed) {
      rng g(seed);
      const auto c = quant::detail::initial_centroids(x, 5, init, g);
      std::set<std::pair<double, double>> picked;
      for (index_t j = 0; j < 5; ++j) {
        picked.insert({c(j, 0), c(j, 1)});
        bool in_data = false;
        for (index_t i = 0; i < 5; ++i) in_data = in_data || (x.row(i) == c.row(j));
        CHECK(in_data);
      }
      CHECK(picked.size() == 5);
    }
  }
  auto a = quant::kmeans_rows(random_matrix<double>(300, 4, 1), 9, {});
  auto b = quant::kmeans_rows(random_matrix<double>(300, 4, 1), 9, {});
  CHECK(a.centroids == b.centroids);
  CHECK(a.assignment == b.assignment);
  kmeans_options other;
  other.seed = 2;
  auto c = quant::kmeans_rows(random_matrix<double>(300, 4, 1), 9, other);
  CHECK(c.centroids != a.centroids);

  // k = number of distinct values: k-means++ never draws a point that is already a centre, so every
  // distinct value becomes a centroid and the weights are reproduced exactly.
  Eigen::Matrix<float, 6, 5, Eigen::RowMajor> w;
  const float values[] = {-0.75f, -0.1f, 0.0f, 0.013f, 0.4f, 1.5f, 3.25f};
  rng gen(8);
  for (index_t i = 0; i < w.size(); ++i) w.data()[i] = values[gen.below(7)];
  w(0, 0) = -0.75f, w(0, 1) = -0.1f, w(0, 2) = 0.0f, w(0, 3) = 0.013f, w(0, 4) = 0.4f,
       w(1, 0) = 1.5f, w(1, 1) = 3.25f;
  for (std::uint64_t seed = 1; seed <= 10; ++seed) {
    kmeans_options s;
    s.seed = seed;
    const auto cb = quant::kmeans(w, 7, s);
    CHECK(cb.reconstruct() == row_matrix<float>(w));
  }
  Eigen::Matrix<double, 6, 5, Eigen::RowMajor> wd = w.cast<double>();
  wd(2, 2) = 1.0 / 3.0;  // one more distinct value, with a long significand
  CHECK(quant::kmeans(wd, 8).reconstruct() == row_matrix<double>(wd));
}

TEST_CASE("empty clusters are re-seeded with the farthest points", "[quant][kmeans]") {
  Eigen::VectorXd x(9);
  x << 0, 0, 0, 0.1, 0.2, 9.8, 9.9, 10, 10;
  kmeans_options o;
  o.init = kmeans_init::linear;  // centres 0, 5, 10 -> the middle one is empty after the first
                                 // assignment
  const auto r = quant::kmeans_rows(x, 3, o);
  CHECK(r.empty_clusters == 0);
  std::vector<double> c(r.centroids.data(), r.centroids.data() + 3);
  std::sort(c.begin(), c.end());
  // The empty centre takes the farthest point; Lloyd then settles with three non-empty clusters and
  // an inertia below the two-cluster solution's.
  double two_clusters = 0;
  for (int i = 0; i < 5; ++i) two_clusters += std::pow(x[i] - 0.06, 2);
  for (int i = 5; i < 9; ++i) two_clusters += std::pow(x[i] - 9.925, 2);
  CHECK(r.inertia < two_clusters);
  for (std::size_t i = 1; i < r.inertia_history.size(); ++i)
    CHECK(r.inertia_history[i] <= r.inertia_history[i - 1]);

  // Fewer distinct points than clusters: the extra clusters stay empty, nothing breaks.
  Eigen::VectorXd dup(6);
  dup << 1, 1, 1, 2, 2, 2;
  const auto d = quant::kmeans_rows(dup, 4, {});
  CHECK(d.empty_clusters == 2);
  CHECK(d.inertia == 0.0);
}

TEST_CASE("k-means errors name the function and the values", "[quant][kmeans]") {
  Eigen::MatrixXd x = Eigen::MatrixXd::Random(10, 2);
  CHECK_THROWS_WITH(quant::kmeans_rows(x, 11, {}),
                    Catch::StartsWith("slimnet::quant::kmeans_rows") && Catch::Contains("11"));
  CHECK_THROWS_AS(quant::kmeans_rows(x, 0, {}), config_error);
  kmeans_options bad;
  bad.max_iterations = 0;
  CHECK_THROWS_AS(quant::kmeans_rows(x, 2, bad), config_error);
  x(3, 1) = std::nan("");
  CHECK_THROWS_WITH(quant::kmeans_rows(x, 2, {}), Catch::Contains("NaN"));
  Eigen::MatrixXf w = Eigen::MatrixXf::Random(4, 6);
  CHECK_THROWS_WITH(
      quant::product_quantize(w, 7, 2),
      Catch::StartsWith("slimnet::quant::product_quantize") && Catch::Contains("blocks = 7"));
  CHECK_THROWS_AS(quant::product_quantize(w, 2, 5), config_error);  // 5 clusters of 4 rows
  CHECK_THROWS_AS(quant::residual_quantize(w, 0, 2), config_error);
  CHECK_THROWS_AS(quant::kmeans(w, 25), config_error);
}

TEMPLATE_TEST_CASE("product quantization with one block is k-means on the rows", "[quant][pq]",
                   float, double) {
  const auto w = random_matrix<TestType>(40, 12, 21);
  kmeans_options o;
  o.seed = 4;
  const auto pq = quant::product_quantize(w, 1, 8, o);
  const auto km = quant::kmeans_rows(w, 8, o);
  REQUIRE(pq.blocks() == 1);
  CHECK(pq.centroids_of(0, 0) == km.centroids);
  CHECK(pq.indices_of(0, 0) == km.assignment);
  CHECK(squared_error(pq.reconstruct(), w) == Approx(km.inertia).epsilon(1e-6));
}

TEMPLATE_TEST_CASE("product quantization: ragged blocks, each block its own k-means", "[quant][pq]",
                   float, double) {
  const auto w = random_matrix<TestType>(30, 11, 5);
  const auto pq = quant::product_quantize(w, 4, 6);
  CHECK(pq.block_offsets == std::vector<index_t>{0, 3, 6, 9, 11});
  double total = 0;
  for (index_t b = 0; b < 4; ++b) {
    kmeans_options o;
    o.seed = quant::detail::sub_seed(1, static_cast<std::uint64_t>(b));
    const row_matrix<TestType> part = w.middleCols(pq.block_offsets[b], pq.block_width(b));
    const auto km = quant::kmeans_rows(part, 6, o);
    CHECK(pq.centroids_of(0, b) == km.centroids);
    total += km.inertia;
  }
  CHECK(squared_error(pq.reconstruct(), w) == Approx(total).epsilon(1e-6));
  // More blocks (shorter sub-vectors) fit better at equal k.
  CHECK(squared_error(quant::product_quantize(w, 11, 6).reconstruct(), w) <
        squared_error(pq.reconstruct(), w));
}

TEMPLATE_TEST_CASE("residual quantization error falls with every stage", "[quant][rq]", float,
                   double) {
  const auto w = random_matrix<TestType>(64, 20, 9);
  const auto rq = quant::residual_quantize(w, 5, 8);
  CHECK(rq.stages == 5);
  double previous = w.template cast<double>().squaredNorm();
  for (int t = 1; t <= 5; ++t) {
    const double e = squared_error(rq.reconstruct(t), w);
    INFO("stage " << t);
    CHECK(e < previous);
    previous = e;
  }
  CHECK(rq.reconstruct() == rq.reconstruct(5));
  // Stage 1 is plain k-means on the rows.
  const auto km = quant::kmeans_rows(w, 8, {});
  CHECK(rq.centroids_of(0, 0) == km.centroids);
  CHECK_THROWS_AS(rq.reconstruct(6), config_error);
}

TEST_CASE("storage counts indices and codebooks as Gong et al.", "[quant][storage]") {
  CHECK(quant::index_bits(1) == 0);
  CHECK(quant::index_bits(2) == 1);
  CHECK(quant::index_bits(16) == 4);
  CHECK(quant::index_bits(17) == 5);
  CHECK(quant::index_bits(256) == 8);
  // LeNet-5 fc1 (500 x 800), k-means with 16 clusters: 400000 * 4 + 16 * 32 bits.
  const auto km = quant::kmeans_storage(400000, 16);
  CHECK(km.original_bits == 12800000u);
  CHECK(km.index_bits == 1600000u);
  CHECK(km.codebook_bits == 512u);
  CHECK(km.compression_rate() == Approx(12800000.0 / 1600512.0));
  // PQ, s = 200 blocks of 4 columns, k = 16: m s log2 k + 32 k n.
  const auto pq = quant::product_storage(500, 800, 200, 16);
  CHECK(pq.index_bits == 500u * 200u * 4u);
  CHECK(pq.codebook_bits == 16u * 800u * 32u);
  CHECK(pq.compression_rate() == Approx(12800000.0 / 809600.0));
  // RQ, t = 2 stages, k = 64: m t log2 k + 32 t k n.
  const auto rq = quant::residual_storage(500, 800, 2, 64);
  CHECK(rq.index_bits == 500u * 2u * 6u);
  CHECK(rq.codebook_bits == 2u * 64u * 800u * 32u);
  // The codebooks report the same numbers.
  const auto w = random_matrix<float>(20, 12, 2);
  CHECK(quant::kmeans(w, 16).storage().total_bits() == quant::kmeans_storage(240, 16).total_bits());
  CHECK(quant::product_quantize(w, 3, 4).storage().total_bits() ==
        quant::product_storage(20, 12, 3, 4).total_bits());
  CHECK(quant::residual_quantize(w, 2, 4).storage().total_bits() ==
        quant::residual_storage(20, 12, 2, 4).total_bits());
  // Layers add up; uncompressed layers count at full size.
  auto total = km + quant::codebook_storage::uncompressed(500);
  CHECK(total.original_bits == 12800000u + 16000u);
  CHECK(total.total_bits() == 1600512u + 16000u);
  // 8-bit centroids shrink the codebook part only.
  CHECK(quant::kmeans_storage(400000, 16, 8).codebook_bits == 128u);
}

TEST_CASE("codebooks work on Eigen tensors and slimnet tensors through the out x rest view",
          "[quant][kmeans]") {
  Eigen::Tensor<float, 4, Eigen::RowMajor> t(6, 2, 3, 3);
  rng gen(3);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(gen.normal());
  const auto pq = quant::product_quantize(t, 2, 4);
  CHECK(pq.rows == 6);
  CHECK(pq.cols == 18);
  tensor<float> st({6, 2, 3, 3});
  std::copy(t.data(), t.data() + t.size(), st.data());
  const auto pq2 = quant::product_quantize(st, 2, 4);
  CHECK(pq2.reconstruct() == pq.reconstruct());
  quant::apply(pq, st);
  CHECK(st.matrix() == pq.reconstruct());
  Eigen::MatrixXf wrong(5, 18);
  CHECK_THROWS_AS(quant::apply(pq, wrong), shape_error);
}

TEMPLATE_TEST_CASE("fine-tuning: each centroid moves by the sum of its weights' gradients",
                   "[quant][finetune]", float, double) {
  nn::parameter<TestType> p("weight", {6, 4});
  const auto w0 = random_matrix<TestType>(6, 4, 12);
  std::copy(w0.data(), w0.data() + w0.size(), p.value().data());
  auto cb = quant::kmeans(p.value(), 3);
  const auto t = quant::share_weights(p, cb);
  CHECK(p.value().matrix() == cb.reconstruct());

  // Gradient for W: per weight, the sum of the gradients of all weights sharing its centroid.
  rng gen(1);
  nn::forward_context ctx{true, &gen};
  CHECK(p.forward_value(ctx).matrix() == cb.reconstruct());
  row_matrix<TestType> g = random_matrix<TestType>(6, 4, 99);
  std::copy(g.data(), g.data() + g.size(), p.grad().data());
  p.transform_gradient();
  const auto& idx = cb.indices_of(0, 0);
  std::vector<double> sums(3, 0.0);
  for (index_t i = 0; i < 24; ++i) sums[idx[i]] += static_cast<double>(g.data()[i]);
  for (index_t i = 0; i < 24; ++i)
    CHECK(static_cast<double>(p.grad()[i]) == Approx(sums[idx[i]]).epsilon(1e-6));

  // An SGD step with momentum and weight decay keeps shared weights equal; after_step reads the
  // centroids back: c_j - lr * (g_j + wd c_j) for the first step.
  nn::linear<TestType> holder(4, 6, false);
  train::sgd<TestType> opt(train::sgd_options{}.with_lr(0.1).with_momentum(0.9).with_weight_decay(0.01));
  holder.weight().value() = p.value();
  holder.weight().grad() = p.grad();
  holder.weight().add_transform(t);
  opt.step(holder);
  holder.weight().after_step();
  const auto& tuned = t->book();
  for (index_t j = 0; j < 3; ++j) {
    const double c = static_cast<double>(cb.centroids_of(0, 0)(j, 0));
    CHECK(static_cast<double>(tuned.centroids_of(0, 0)(j, 0)) ==
          Approx(c - 0.1 * (sums[j] + 0.01 * c)).epsilon(1e-6));
  }
  CHECK(tuned.indices_of(0, 0) == idx);  // indices fixed
  CHECK(holder.weight().value().matrix() == tuned.reconstruct());
}

TEMPLATE_TEST_CASE("fine-tuning product and residual codebooks keeps W on the codebook",
                   "[quant][finetune]", float, double) {
  const auto w0 = random_matrix<TestType>(12, 10, 4);
  for (int method = 0; method < 2; ++method) {
    INFO((method == 0 ? "PQ" : "RQ"));
    nn::linear<TestType> l(10, 12, false);
    std::copy(w0.data(), w0.data() + w0.size(), l.weight().value().data());
    const auto cb = method == 0 ? quant::product_quantize(l.weight().value(), 3, 4)
                                : quant::residual_quantize(l.weight().value(), 3, 4);
    const auto t = quant::share_weights(l.weight(), cb);
    // Per-centroid gradients: for block/stage (t, b), g[j] = sum of the rows' gradient segments.
    row_matrix<TestType> g = random_matrix<TestType>(12, 10, 7);
    std::copy(g.data(), g.data() + g.size(), l.weight().grad().data());
    l.weight().transform_gradient();
    row_matrix<double> expected = row_matrix<double>::Zero(12, 10);
    for (int s = 0; s < cb.stages; ++s) {
      for (index_t b = 0; b < cb.blocks(); ++b) {
        const auto& idx = cb.indices_of(s, b);
        row_matrix<double> sums = row_matrix<double>::Zero(4, cb.block_width(b));
        for (index_t r = 0; r < 12; ++r)
          sums.row(idx[r]) +=
              g.row(r).segment(cb.block_offsets[b], cb.block_width(b)).template cast<double>();
        for (index_t r = 0; r < 12; ++r)
          expected.row(r).segment(cb.block_offsets[b], cb.block_width(b)) += sums.row(idx[r]);
      }
    }
    CHECK((l.weight().grad().matrix().template cast<double>() - expected).cwiseAbs().maxCoeff() <
          1e-5);
    // Plain SGD: W moves by -lr * grad, which the centroids can represent exactly; the refit
    // recovers it (RQ through coordinate descent) and W equals the codebook's reconstruction.
    train::sgd<TestType> opt(train::sgd_options{}.with_lr(0.01));
    const row_matrix<double> stepped =
        l.weight().value().matrix().template cast<double>() - 0.01 * expected;
    opt.step(l);
    l.weight().after_step();
    CHECK(l.weight().value().matrix() == t->book().reconstruct());
    CHECK((l.weight().value().matrix().template cast<double>() - stepped).cwiseAbs().maxCoeff() <
          1e-5);
    if (method == 1) CHECK(t->last_sweeps() > 1);
  }
}

TEST_CASE("fine-tuning a shared-weight layer lowers the loss", "[quant][finetune]") {
  // A linear regression whose k-means codebook is then fine-tuned: loss after < loss before.
  rng gen(6);
  nn::linear<double> l(8, 4);
  data::dataset<double> d;
  d.inputs.resize({128, 8});
  d.targets.resize({128, 4});
  row_matrix<double> truth = random_matrix<double>(4, 8, 30);
  for (index_t i = 0; i < d.inputs.size(); ++i) d.inputs[i] = gen.normal();
  d.targets.matrix() = d.inputs.matrix() * truth.transpose();
  l.weight().value().matrix() = truth;
  quant::share_weights(l.weight(), quant::kmeans(l.weight().value(), 4));
  const train::mse<double> loss;
  const double before = train::evaluate(l, d, loss).loss;
  train::sgd<double> opt(train::sgd_options{}.with_lr(0.002).with_momentum(0.9));
  train::fit_options o;
  o.epochs = 5;
  o.batch_size = 32;
  o.progress = false;
  train::fit(l, opt, loss, d, o);
  const double after = train::evaluate(l, d, loss).loss;
  CHECK(after < before);
  std::set<double> distinct(l.weight().value().data(),
                            l.weight().value().data() + l.weight().size());
  CHECK(distinct.size() <= 4);  // still 4 shared values
}
