// Shared by the recurrent examples: the Bi-LSTM classifier for sequential MNIST.
#pragma once

#include "slimnet/data/dataset.hpp"
#include "slimnet/nn/bidirectional.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/lstm.hpp"
#include "slimnet/nn/sequential.hpp"

namespace slimnet::cli {

/// Bidirectional LSTM (layers x hidden per direction) over 28 steps of 28 features, last step, fc 10.
inline nn::sequential<float> make_bilstm(index_t layers, index_t hidden, rng& gen) {
  nn::recurrent_options o;
  o.num_layers = layers;
  o.output = nn::sequence_output::last_step;
  nn::sequential<float> m;
  m.add("bilstm", nn::bidirectional<float>(nn::lstm<float>(28, hidden, o)));
  m.add("fc", nn::linear<float>(2 * hidden, 10));
  m.reset_parameters(gen);
  return m;
}

/// (N, 1, 28, 28) images -> (N, 28, 28) sequences: step t is row t.
inline void as_sequences(data::dataset<float>& d) { d.inputs.reshape({d.size(), 28, 28}); }

}  // namespace slimnet::cli
