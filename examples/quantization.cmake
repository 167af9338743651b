# Quantization examples (slimnet::quant): fixed point, codebooks, binary networks.
slimnet_example(fixed_point 05_fixed_point.cpp)
slimnet_example_smoke(fixed_point_mnist fixed_point --models lenet300,lenet5 --data mnist --epochs 1 --limit 256 --fl 8,14 --quantize weights,activations,gradients --quiet)
slimnet_example(codebooks 06_codebooks.cpp)
slimnet_example_smoke(codebooks_mnist codebooks --model lenet300 --data mnist --epochs 1 --limit 512 --methods kmeans --csv smoke-codebooks.csv --png smoke-codebooks.png --quiet
                      EXPECT "4-bit k-means \\(16 clusters per layer, 8\\.0x\\)")
slimnet_example(binary 07_binary.cpp)
slimnet_example_smoke(binary_mnist binary --data mnist --nets mlp,lenet5 --epochs 1 --limit 256 --hidden 64 --channels 8,16,64 --csv smoke-binary.csv --quiet
                      EXPECT "identical to the float model on [0-9]+ test images: yes" REJECT "test images: NO")
slimnet_example(deep_compression 12_deep_compression.cpp)
slimnet_example_smoke(deep_compression_mnist deep_compression --model lenet300 --data mnist --epochs 1 --limit 512 --rounds 1 --retrain-epochs 1 --finetune-epochs 1 --quiet
                      EXPECT "mask kept: yes")
