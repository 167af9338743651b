// slimnet's optional compiled mode (CMake option SLIMNET_COMPILED, as fmt and spdlog offer one):
// the float instantiations a typical program uses (the layers, models, optimizers, losses, fit /
// evaluate, the MNIST reader, safetensors and model files, the checkpoint file format; and, listed in
// compiled_factorize.hpp, Eigen's SVDs and symmetric eigensolver for float and double) are compiled
// once into the static library slimnet::compiled (src/compiled.cpp, src/compiled_factorize.cpp)
// instead of in every translation unit.
//
// Why this saves time: a header-only program compiles every layer's forward and backward pass, the
// GEMM kernels under them and the JSON reader and writer of the checkpoint files in each of its
// translation units (the README's LeNet-5 program: 45-52 s of CPU at -O2, 14 s of it parsing the
// headers). An explicit instantiation declaration (`extern template`) tells the compiler that the
// instantiation exists elsewhere: for a class, its vtable and its virtual functions (forward,
// backward, ...) are then not compiled here at all, for a function its body is not (GCC may still
// compile small inline members to inline them). Included by <slimnet/slimnet.hpp> when
// SLIMNET_COMPILED is defined (the CMake option sets it on slimnet::slimnet); src/compiled.cpp
// includes this list again with SLIMNET_COMPILED_EXTERN empty, which turns every declaration into
// the explicit instantiation definition. Header-only (the default) never includes this file.
//
// Every entry must name a specialization the headers can instantiate in full (an explicit
// instantiation definition of a class compiles all its members).
#pragma once

#include "slimnet/compiled_factorize.hpp"
#include "slimnet/data.hpp"
#include "slimnet/io.hpp"
#include "slimnet/nn.hpp"
#include "slimnet/train.hpp"

#ifndef SLIMNET_COMPILED_EXTERN
#define SLIMNET_COMPILED_EXTERN extern
#endif

namespace slimnet {
namespace nn {
SLIMNET_COMPILED_EXTERN template class parameter<float>;
SLIMNET_COMPILED_EXTERN template class layer<float>;
SLIMNET_COMPILED_EXTERN template class sequential<float>;
SLIMNET_COMPILED_EXTERN template class linear<float>;
SLIMNET_COMPILED_EXTERN template class conv2d<float>;
SLIMNET_COMPILED_EXTERN template class max_pool2d<float>;
SLIMNET_COMPILED_EXTERN template class avg_pool2d<float>;
SLIMNET_COMPILED_EXTERN template class flatten<float>;
SLIMNET_COMPILED_EXTERN template class dropout<float>;
SLIMNET_COMPILED_EXTERN template class batch_norm<float>;
SLIMNET_COMPILED_EXTERN template class activation<float, activation_policy::relu>;
SLIMNET_COMPILED_EXTERN template class activation<float, activation_policy::tanh>;
SLIMNET_COMPILED_EXTERN template class activation<float, activation_policy::sigmoid>;
SLIMNET_COMPILED_EXTERN template class recurrent_layer<float>;
SLIMNET_COMPILED_EXTERN template class recurrent<float, lstm_cell>;
SLIMNET_COMPILED_EXTERN template class recurrent<float, gru_cell>;
SLIMNET_COMPILED_EXTERN template class bidirectional<float>;
SLIMNET_COMPILED_EXTERN template class sequence_mean<float>;
namespace models {
SLIMNET_COMPILED_EXTERN template sequential<float> lenet_300_100<float>(rng&);
SLIMNET_COMPILED_EXTERN template sequential<float> lenet5<float>(rng&);
SLIMNET_COMPILED_EXTERN template sequential<float> vgg_small<float>(rng&, index_t);
}  // namespace models
}  // namespace nn

namespace train {
SLIMNET_COMPILED_EXTERN template class optimizer<float>;
SLIMNET_COMPILED_EXTERN template class sgd<float>;
SLIMNET_COMPILED_EXTERN template class adam<float>;
SLIMNET_COMPILED_EXTERN template class adamax<float>;
SLIMNET_COMPILED_EXTERN template class rmsprop<float>;
SLIMNET_COMPILED_EXTERN template class loss_function<float>;
SLIMNET_COMPILED_EXTERN template class cross_entropy<float>;
SLIMNET_COMPILED_EXTERN template class mse<float>;
SLIMNET_COMPILED_EXTERN template history fit<float>(nn::layer<float>&, optimizer<float>&, const loss_function<float>&,
                                                    const data::dataset<float>&, const fit_options&,
                                                    const std::vector<callback<float>*>&, const data::dataset<float>*);
SLIMNET_COMPILED_EXTERN template metrics evaluate<float>(nn::layer<float>&, const data::dataset<float>&,
                                                         const loss_function<float>&, index_t);
// The checkpoint file format (write_checkpoint_file, read_checkpoint_file; float and double) is
// listed in train/checkpoint.hpp itself, ahead of the registration that takes its addresses, so
// that every unit of a compiled-mode program that includes that header, not only those that
// include this list, leaves it to the library.
}  // namespace train

namespace data {
SLIMNET_COMPILED_EXTERN template split<float> load_mnist_dir<float>(const std::filesystem::path&);
}  // namespace data

namespace io {
SLIMNET_COMPILED_EXTERN template void save_parameters<float>(const nn::layer<float>&, const std::filesystem::path&,
                                                             const std::map<std::string, std::string>&, dtype);
SLIMNET_COMPILED_EXTERN template std::map<std::string, std::string> load_parameters<float>(nn::layer<float>&, const std::filesystem::path&,
                                                                                           const load_options&);
SLIMNET_COMPILED_EXTERN template std::map<std::string, std::string> load_parameters<float>(nn::layer<float>&, const std::filesystem::path&, bool);
SLIMNET_COMPILED_EXTERN template tensor_file<float> read_safetensors<float>(const std::filesystem::path&);
// The model file (io/model_file.hpp; save_model and describe_model_file are templates only so that
// header-only programs that do not call them do not compile them).
SLIMNET_COMPILED_EXTERN template void save_model<>(const nn::layer<float>&, const std::filesystem::path&, const save_model_options&);
SLIMNET_COMPILED_EXTERN template loaded_model<float> read_model<float>(const std::filesystem::path&, const load_model_options&);
SLIMNET_COMPILED_EXTERN template model_file_summary describe_model_file<>(const std::filesystem::path&);
}  // namespace io
}  // namespace slimnet
