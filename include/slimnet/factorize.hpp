// slimnet::factorize: layers replaced by cheaper factored forms without retraining. SparseSep
// (Bhattacharya & Lane 2016): fully connected layers as a dense basis times sparse codes learned by
// dictionary learning, convolutions separated into vertical and horizontal passes, per-layer sizes
// chosen under an accuracy budget.
#pragma once

#include "slimnet/factorize/sparse_coding.hpp"
#include "slimnet/factorize/sparse_coded_linear.hpp"
#include "slimnet/factorize/separable_conv.hpp"
#include "slimnet/factorize/sparsesep.hpp"
