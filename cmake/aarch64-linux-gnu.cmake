# Cross build for 64-bit ARM Linux with Debian's cross compiler, run under qemu-user:
#   apt-get install g++-aarch64-linux-gnu qemu-user
#   dpkg --add-architecture arm64 && apt-get update && apt-get install libfmt-dev:arm64 zlib1g-dev:arm64
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake -DSLIMNET_NATIVE=OFF \
#         -DSLIMNET_BUILD_EXAMPLES=OFF -DSLIMNET_BUILD_BENCHMARKS=OFF
#   cmake --build build-arm64 --target kernels_tests
#   qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu build-arm64/tests/kernels_tests
# Header-only dependencies (Eigen, Catch2's header, nlohmann-json) come from the host's /usr/include
# and /usr/share; libraries (fmt, zlib) from Debian's arm64 multiarch packages in
# /usr/lib/aarch64-linux-gnu. -march=native means nothing for another CPU: keep SLIMNET_NATIVE=OFF.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Target libraries and their CMake packages: the cross sysroot and the arm64 multiarch paths first;
# the host's architecture-independent headers and package files stay visible.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /usr/lib/aarch64-linux-gnu)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# Debian's libCatch2WithMain.a is built for the host: a Catch2 package that compiles the main for the
# target (the header is shared).
set(Catch2_DIR "${CMAKE_CURRENT_LIST_DIR}/aarch64-catch2" CACHE PATH "Catch2 for the cross build")

# Programs built here run through qemu (ctest too), on a CPU with the dot product (SDOT kernels).
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -cpu max -L /usr/aarch64-linux-gnu)
