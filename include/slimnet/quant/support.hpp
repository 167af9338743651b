// The surviving weights of a pruned parameter as quantizers see them: the composition rule of
// nn/parameter.hpp (a quantizer attached after a pruning mask maps pruned entries to exactly 0
// and learns from the survivors only), in the two forms the quantizers use.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "slimnet/core/tensor.hpp"
#include "slimnet/nn/parameter.hpp"

namespace slimnet::quant {

/// The surviving weights of `p` as a codebook support (row-major 0/1 over its out x rest view,
/// which is the tensor's own order): the product of its transforms' supports, empty when nothing
/// prunes it. Pass it to kmeans / product_quantize / residual_quantize so that a pruned
/// parameter's zeros are not clustered.
template <class Scalar>
std::vector<std::uint8_t> support_of(const nn::parameter<Scalar>& p) {
  const auto s = p.support();
  if (!s) return {};
  std::vector<std::uint8_t> out(static_cast<std::size_t>(s->size()));
  for (index_t i = 0; i < s->size(); ++i)
    out[static_cast<std::size_t>(i)] = (*s)[i] != Scalar(0) ? 1 : 0;
  return out;
}

namespace detail {
/// t *= support (nothing without one): pruned entries become exactly 0.
template <class Scalar>
void zero_pruned(tensor<Scalar>& t, const std::optional<tensor<Scalar>>& support) {
  if (support) t.flat().array() *= support->flat().array();
}
}  // namespace detail

}  // namespace slimnet::quant
