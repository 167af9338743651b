# A pruned Bi-LSTM against its dense float model (issue 15's recurrent rows).
slimnet_benchmark(compressed_recurrent compressed_recurrent.cpp)
# The PyTorch column: the benchmark runs pytorch_dense_models.py from this folder.
target_compile_definitions(compressed_recurrent PRIVATE SLIMNET_BENCH_SOURCE_DIR="${CMAKE_CURRENT_SOURCE_DIR}")
