// Warnings that GCC 12 raises inside its own x86 intrinsic headers. Its unmasked AVX-512 intrinsics
// (_mm512_max_ps, _mm512_unpacklo_ps, _mm512_reduce_max_ps, ...) pass _mm512_undefined_ps(), a
// variable initialised with itself, as the masked-off source; once inlined into a kernel,
// -Wuninitialized / -Wmaybe-uninitialized report it at every use (GCC bug 105593, fixed in GCC 13).
// The kernel headers bracket their code with these macros so a build stays warning-free; they do
// nothing on other compilers and on GCC 13 and later, where the warnings keep their full value.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#define SLIMNET_INTRINSICS_BEGIN                                  \
  _Pragma("GCC diagnostic push")                                  \
  _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")           \
  _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define SLIMNET_INTRINSICS_END _Pragma("GCC diagnostic pop")
#else
#define SLIMNET_INTRINSICS_BEGIN
#define SLIMNET_INTRINSICS_END
#endif
