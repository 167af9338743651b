// slimnet::compiled, the library of the optional compiled mode (CMake option SLIMNET_COMPILED):
// the explicit instantiation definitions of the list in include/slimnet/compiled.hpp, compiled
// once here instead of in every translation unit of a program (see that header for why).
#define SLIMNET_COMPILED_EXTERN
#include "slimnet/compiled.hpp"
