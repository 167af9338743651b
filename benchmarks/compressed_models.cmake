# Whole compressed models against their float models (issue 15).
slimnet_benchmark(compressed_models compressed_models.cpp)
# The PyTorch column: the benchmark runs pytorch_dense_models.py from this folder.
target_compile_definitions(compressed_models PRIVATE SLIMNET_BENCH_SOURCE_DIR="${CMAKE_CURRENT_SOURCE_DIR}")
