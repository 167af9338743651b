# A pruned Bi-LSTM against its dense float model (issue 15's recurrent rows).
slimnet_benchmark(compressed_recurrent compressed_recurrent.cpp)
