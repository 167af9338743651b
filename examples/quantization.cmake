# Quantization examples (slimnet::quant): fixed point, codebooks, binary networks.
slimnet_example(fixed_point 05_fixed_point.cpp)
slimnet_example_smoke(fixed_point_mnist fixed_point --models lenet300,lenet5 --data mnist --epochs 1 --limit 256 --fl 8,14 --quantize weights,activations,gradients --quiet)
slimnet_example(codebooks 06_codebooks.cpp)
slimnet_example_smoke(codebooks_mnist codebooks --model lenet300 --data mnist --epochs 1 --limit 512 --methods kmeans --csv smoke-codebooks.csv --png smoke-codebooks.png --quiet)
slimnet_example(binary 07_binary.cpp)
slimnet_example_smoke(binary_mnist binary --data mnist --nets mlp,lenet5 --epochs 1 --limit 256 --hidden 64 --channels 8,16,64 --csv smoke-binary.csv --quiet)
