// Every layer's backward refuses x, y and dy that are not what its forward pass made, with a
// shape_error naming the layer and both shapes: a wrong dy used to be indexed with the forward
// pass's sizes (linear::backward wrote past its buffer).
#include <catch2/catch.hpp>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "slimnet/nn.hpp"

using namespace slimnet;
using Catch::Contains;

namespace {

template <class Scalar>
tensor<Scalar> filled(const shape_t& shape, double start = 0.1) {
  tensor<Scalar> t(shape);
  for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<Scalar>(std::sin(start + 0.37 * static_cast<double>(i)));
  return t;
}

// The shape with its first dimension (batch) one larger, and with its last one one larger.
shape_t bigger_batch(shape_t s) {
  s.front() += 1;
  return s;
}
shape_t bigger_last(shape_t s, index_t by = 1) {
  s.back() += by;
  return s;
}

// Runs forward on x, then checks that backward refuses: dy with a larger batch, dy with a larger
// last axis, dy of the wrong rank, a y that is not forward's, and an x that the layer cannot take;
// finally that the right shapes pass and give a dx of x's shape.
template <class Scalar>
void check_layer(nn::layer<Scalar>& l, const shape_t& x_shape, const std::string& expect_in_message, bool training = false) {
  INFO(l.describe());
  const tensor<Scalar> x = filled<Scalar>(x_shape);
  tensor<Scalar> y;
  rng gen(5);
  nn::forward_context ctx;
  ctx.training = training;
  ctx.gen = &gen;
  l.forward(x, y, ctx);
  tensor<Scalar> dx;
  for (const shape_t& wrong : {bigger_batch(y.shape()), bigger_last(y.shape()), shape_t{y.size()}}) {
    const tensor<Scalar> dy = filled<Scalar>(wrong, 0.7);
    CHECK_THROWS_AS(l.backward(x, y, dy, &dx), shape_error);
    CHECK_THROWS_WITH(l.backward(x, y, dy, nullptr), Contains("slimnet::nn::layer::backward") && Contains(expect_in_message) &&
                                                         Contains(shape_string(wrong)) && Contains(shape_string(y.shape())));
  }
  const tensor<Scalar> dy = filled<Scalar>(y.shape(), 0.7);
  const tensor<Scalar> y_wrong = filled<Scalar>(bigger_batch(y.shape()));
  CHECK_THROWS_WITH(l.backward(x, y_wrong, dy, &dx), Contains("y has shape " + shape_string(y_wrong.shape())));
  // Two more columns: enough to change the output of every layer here (a 2x2 pooling maps 6
  // and 7 columns to the same 3).
  const tensor<Scalar> x_wrong = filled<Scalar>(bigger_last(x_shape, 2));
  CHECK_THROWS_AS(l.backward(x_wrong, y, dy, &dx), shape_error);
  dx = tensor<Scalar>(x_shape, std::numeric_limits<Scalar>::quiet_NaN());
  l.backward(x, y, dy, &dx);
  CHECK(dx.shape() == x_shape);
}

}  // namespace

TEMPLATE_TEST_CASE("every layer's backward checks x, y and dy against its forward pass", "[nn][errors]", float, double) {
  using S = TestType;
  SECTION("linear") {
    nn::linear<S> l(5, 3);
    l.set_name("fc1");
    check_layer<S>(l, {4, 5}, "Linear(5, 3) 'fc1'");
  }
  SECTION("conv2d") {
    nn::conv2d<S> l(2, 3, 3);
    check_layer<S>(l, {2, 2, 6, 5}, "Conv2d");
  }
  SECTION("batch_norm") {
    auto l = nn::batch_norm2d<S>(3);
    check_layer<S>(l, {4, 3, 2, 2}, "BatchNorm", true);
    auto l1 = nn::batch_norm1d<S>(3);
    check_layer<S>(l1, {4, 3}, "BatchNorm", true);
  }
  SECTION("pooling") {
    nn::max_pool2d<S> mp(2);
    check_layer<S>(mp, {2, 3, 4, 6}, "MaxPool2d");
    nn::max_pool2d<S> mp3(3, 2, 1);
    check_layer<S>(mp3, {2, 1, 5, 5}, "MaxPool2d");
    // Same output shape, other input width: max pooling's argmax refers to the forward input.
    tensor<S> x = filled<S>({2, 3, 4, 6}), y, dx;
    mp.forward(x, y, {});
    const tensor<S> x7 = filled<S>({2, 3, 4, 7}), dy = filled<S>(y.shape());
    CHECK(mp.output_shape(x7.shape()) == y.shape());
    CHECK_THROWS_WITH(mp.backward(x7, y, dy, &dx), Contains("slimnet::nn::max_pool2d::backward") && Contains("(2, 3, 4, 7)") &&
                                                      Contains("(2, 3, 4, 6)"));
    nn::avg_pool2d<S> ap(2);
    check_layer<S>(ap, {2, 3, 4, 6}, "AvgPool2d");
  }
  SECTION("activations, dropout, flatten") {
    nn::relu<S> relu;
    check_layer<S>(relu, {3, 4}, "ReLU");
    nn::tanh<S> th;
    check_layer<S>(th, {3, 2, 2}, "Tanh");
    nn::sigmoid<S> sg;
    check_layer<S>(sg, {3, 4}, "Sigmoid");
    nn::dropout<S> dr(0.5);
    check_layer<S>(dr, {3, 4}, "Dropout", true);
    nn::flatten<S> fl;
    check_layer<S>(fl, {3, 2, 2}, "Flatten");
  }
  SECTION("recurrent layers") {
    nn::lstm<S> lstm(3, 4);
    check_layer<S>(lstm, {2, 5, 3}, "LSTM");
    nn::recurrent_options last;
    last.output = nn::sequence_output::last_step;
    last.num_layers = 2;
    nn::gru<S> gru(3, 4, last);
    check_layer<S>(gru, {2, 5, 3}, "GRU");
    nn::bidirectional<S> bi(nn::lstm<S>(3, 2));
    check_layer<S>(bi, {2, 4, 3}, "Bidirectional");
    nn::sequence_mean<S> mean;
    check_layer<S>(mean, {2, 4, 3}, "SequenceMean");
  }
  SECTION("containers and DeepSense's layers") {
    nn::sequential<S> seq;
    seq.add("fc1", nn::linear<S>(6, 4));
    seq.add("act", nn::relu<S>());
    seq.add("fc2", nn::linear<S>(4, 2));
    check_layer<S>(seq, {3, 6}, "Sequential");
    nn::time_distributed<S> td(nn::linear<S>(6, 2), shape_t{6});
    check_layer<S>(td, {2, 3, 6}, "TimeDistributed");
    nn::sensor_stack<S> stack;
    stack.add("acc", nn::conv2d<S>(1, 2, 1));
    stack.add("gyro", nn::conv2d<S>(1, 2, 1));
    check_layer<S>(stack, {2, 1, 3, 4}, "SensorStack");
    nn::zero_pad2d<S> pad(1, 0, 2, 1);
    check_layer<S>(pad, {2, 1, 3, 4}, "ZeroPad2d");
  }
}

TEST_CASE("a wrong dy deep inside a sequential model is caught at the model", "[nn][errors]") {
  nn::sequential<float> seq;
  seq.add("fc1", nn::linear<float>(6, 4));
  seq.add("fc2", nn::linear<float>(4, 2));
  seq.set_name("net");
  tensor<float> x = filled<float>({3, 6}), y;
  seq.forward(x, y, {});
  const tensor<float> dy = filled<float>({2, 2});  // a batch of 2 against forward's 3
  CHECK_THROWS_WITH(seq.backward(x, y, dy, nullptr), Contains("Sequential 'net'") && Contains("dy has shape (2, 2)") &&
                                                         Contains("expected y's shape (3, 2)"));
  // The parameters' gradients are untouched by the refused call.
  seq.visit_parameters([](nn::parameter<float>& p) { CHECK(p.grad().flat().isZero()); });
}
