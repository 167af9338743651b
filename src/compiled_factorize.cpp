// slimnet::compiled: the explicit instantiation definitions of the Eigen decompositions listed in
// include/slimnet/compiled_factorize.hpp (a file of their own so that they compile beside
// src/compiled.cpp; see that header for why).
#define SLIMNET_COMPILED_FACTORIZE_EXTERN
#include "slimnet/compiled_factorize.hpp"
