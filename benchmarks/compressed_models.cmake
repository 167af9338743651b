# Whole compressed models against their float models (issue 15).
slimnet_benchmark(compressed_models compressed_models.cpp)
