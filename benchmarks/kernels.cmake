# Kernel benchmarks (issue 5): sparse against dense, XNOR/popcount and int8 GEMM against fp32 GEMM.
# OpenBLAS (the dense peer) and OpenMP (for the threads table) are optional: without them the programs
# still build and say which column is missing.
find_package(OpenMP COMPONENTS CXX)
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(SLIMNET_OPENBLAS QUIET IMPORTED_TARGET openblas)
endif()

function(slimnet_kernel_benchmark name source)
  slimnet_benchmark(${name} ${source})
  if(TARGET PkgConfig::SLIMNET_OPENBLAS)
    target_link_libraries(${name} PRIVATE PkgConfig::SLIMNET_OPENBLAS)
    target_compile_definitions(${name} PRIVATE SLIMNET_BENCH_OPENBLAS=1)
  endif()
  if(OpenMP_CXX_FOUND)
    target_link_libraries(${name} PRIVATE OpenMP::OpenMP_CXX)
  endif()
endfunction()

foreach(program sparse_vs_dense binary_vs_dense int8_vs_dense codebook_vs_dense gemm_vs_openblas)
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${program}.cpp)
    slimnet_kernel_benchmark(${program} ${program}.cpp)
  endif()
endforeach()
