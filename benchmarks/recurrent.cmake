# Recurrent benchmarks (issue 6): LSTM/GRU throughput against PyTorch 1.13, side by side.
slimnet_benchmark(lstm_throughput lstm_throughput.cpp)
target_compile_definitions(lstm_throughput PRIVATE SLIMNET_BENCHMARK_DIR="${CMAKE_CURRENT_SOURCE_DIR}")
