// Weight memory of a model as the whole-model benchmarks report it: a float model's weight tensors
// at 4 bytes per entry (nonzeros counted), a compressed layer's engines at the bytes they hold, and
// the sparse engines' bytes and nonzeros apart (for bytes per nonzero; sparse + codebook included).
#pragma once

#include "slimnet/nn/compressed/conv1_sign.hpp"
#include "slimnet/nn/compressed/recurrent.hpp"
#include "slimnet/nn/compressed/sparse_codebook_engine.hpp"
#include "slimnet/nn/conv2d.hpp"
#include "slimnet/nn/linear.hpp"
#include "slimnet/nn/recurrent.hpp"

namespace slimnet::bench {

struct weight_stats {
  double bytes = 0, sparse_bytes = 0, sparse_nnz = 0, nnz = 0, weights = 0;

  void add(const nn::compressed::engine<float>& e) {
    namespace nc = nn::compressed;
    bytes += static_cast<double>(e.bytes());
    if (auto* se = dynamic_cast<const nc::sparse_engine<float>*>(&e)) {
      sparse_bytes += static_cast<double>(se->bytes());
      sparse_nnz += static_cast<double>(se->nnz());
    } else if (auto* ce = dynamic_cast<const nc::csr16_engine<float>*>(&e)) {
      sparse_bytes += static_cast<double>(ce->bytes());
      sparse_nnz += static_cast<double>(ce->nnz());
    } else if (auto* cb = dynamic_cast<const nc::sparse_codebook_engine<float>*>(&e)) {
      sparse_bytes += static_cast<double>(cb->bytes());
      sparse_nnz += static_cast<double>(cb->nnz());
    }
  }
  void add(const nn::parameter<float>& p) {
    bytes += 4.0 * static_cast<double>(p.size());
    for (index_t i = 0; i < p.size(); ++i) nnz += p.value()[i] != 0.0f;
    weights += static_cast<double>(p.size());
  }
  template <class Cell>
  void add_recurrent(const nn::compressed::compressed_recurrent<float, Cell>& r) {
    for (index_t k = 0; k < r.num_layers(); ++k) {
      add(r.input_weights(k));
      add(r.recurrent_weights(k));
    }
  }
};

/// Weight statistics of every Linear, Conv2d, LSTM and GRU of `m` (float or compressed, nested
/// containers included); biases and BatchNorm parameters are not weights here.
inline weight_stats stats_of(nn::layer<float>& m) {
  namespace nc = nn::compressed;
  weight_stats s;
  m.visit_layers([&](nn::layer<float>& l) {
    if (auto* cl = dynamic_cast<nc::compressed_linear<float>*>(&l)) {
      s.add(cl->weights());
    } else if (auto* cc = dynamic_cast<nc::compressed_conv2d<float>*>(&l)) {
      s.add(cc->weights());
    } else if (auto* cr = dynamic_cast<nc::compressed_lstm<float>*>(&l)) {
      s.add_recurrent(*cr);
    } else if (auto* cg = dynamic_cast<nc::compressed_gru<float>*>(&l)) {
      s.add_recurrent(*cg);
    } else if (auto* c1 = dynamic_cast<nc::conv1_sign_layer<float>*>(&l)) {
      s.bytes += 4.0 * static_cast<double>(c1->weights().size());  // a BNN's direct first layer: float weights
    } else if (dynamic_cast<nn::linear<float>*>(&l) || dynamic_cast<nn::conv2d<float>*>(&l) ||
               dynamic_cast<nn::recurrent_layer<float>*>(&l)) {
      l.visit_parameters([&](nn::parameter<float>& p) {
        if (p.value().rank() >= 2 && p.local_name().rfind("weight", 0) == 0) s.add(p);
      });
    }
  });
  return s;
}

}  // namespace slimnet::bench
