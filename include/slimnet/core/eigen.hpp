// Eigen's core (and the x86 intrinsic headers it pulls in), included here by every slimnet header
// that uses Eigen, so that GCC 12 builds warning-free. GCC 12's unmasked AVX-512 intrinsics pass
// _mm512_undefined_pd(), a variable initialised with itself, as the masked-off source; inlined into
// Eigen's out-of-line pexp_double (exp of double packets), -Wuninitialized reports it at the
// intrinsic header's own line (GCC bug 105593, fixed in GCC 13). GCC judges such a warning by the
// pragma state where that line was parsed, which is here, where <immintrin.h> is first included:
// silencing the two warnings for these includes alone keeps them in force for slimnet's and the
// user's code. (kernels/intrinsics.hpp does the same around the kernels' own intrinsics.)
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#define SLIMNET_GCC_BUG_105593 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#include <Eigen/Core>

#if defined(SLIMNET_GCC_BUG_105593)
#pragma GCC diagnostic pop
#undef SLIMNET_GCC_BUG_105593
#endif
