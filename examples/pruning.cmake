# Pruning examples: iterative magnitude pruning (Han et al.) and AGP, Dynamic Network Surgery, and a
# per-layer sensitivity analysis. The smoke runs use a few hundred images and one or two epochs.
slimnet_example(prune_magnitude 02_prune_magnitude.cpp)
slimnet_example_smoke(prune_magnitude_lenet300 prune_magnitude --model lenet300 --data mnist --epochs 1 --rounds 2
                      --retrain-epochs 1 --final-epochs 1 --limit 512 --quiet
                      EXPECT "compression 1[23]\\.[0-9]x")  # Han et al.'s per-layer rates: 12.9x
slimnet_example_smoke(prune_magnitude_lenet5_global prune_magnitude --model lenet5 --data mnist --epochs 1 --rounds 1
                      --retrain-epochs 1 --global 0.9 --limit 256 --quiet --control)
slimnet_example_smoke(prune_magnitude_vgg prune_magnitude --model vgg --data fashion --epochs 1 --rounds 1
                      --retrain-epochs 1 --limit 256 --quiet --baseline smoke-vgg-fashion.safetensors)
# The VGG baseline written above teaches a LeNet-5 (--teacher).
slimnet_example_smoke(prune_magnitude_teacher prune_magnitude --model lenet5 --data fashion --epochs 1 --rounds 1
                      --retrain-epochs 1 --limit 256 --quiet --distill 0.9 --teacher smoke-vgg-fashion.safetensors
                      --teacher-model vgg)
if(SLIMNET_BUILD_TESTS)
  set_tests_properties(example_prune_magnitude_vgg PROPERTIES FIXTURES_SETUP smoke_vgg_teacher)
  set_tests_properties(example_prune_magnitude_teacher PROPERTIES FIXTURES_REQUIRED smoke_vgg_teacher)
endif()
slimnet_example_smoke(prune_magnitude_agp_fashion prune_magnitude --model lenet300 --data fashion --epochs 1 --rounds 1
                      --retrain-epochs 2 --schedule agp --limit 512 --quiet)

slimnet_example(dns 03_dns.cpp)
slimnet_example_smoke(dns_lenet5 dns --model lenet5 --data mnist --epochs 1 --dns-epochs 2 --surgery-epochs 1 --limit 256 --quiet
                      --out smoke-lenet5-dns.safetensors)
if(SLIMNET_BUILD_TESTS)
  set_tests_properties(example_dns_lenet5 PROPERTIES FIXTURES_SETUP smoke_dns_lenet5)  # deployed in deployment.cmake
endif()
slimnet_example_smoke(dns_lenet300 dns --model lenet300 --data mnist --epochs 1 --dns-epochs 2 --surgery-epochs 1 --limit 512 --quiet
                      EXPECT "DNS [1-9][0-9]+\\.[0-9]x fewer weights")  # at least 10x

slimnet_example(sensitivity 04_sensitivity.cpp)
slimnet_example_smoke(sensitivity_lenet5 sensitivity --model lenet5 --data mnist --epochs 1 --limit 256 --quiet)

slimnet_example(structured_pruning 14_structured_pruning.cpp)
slimnet_example_smoke(structured_pruning_lenet5 structured_pruning --model lenet5 --data mnist --epochs 1 --fractions 0.5
                      --retrain-epochs 1 --limit 256 --quiet EXPECT "fraction 0.50: conv1 10/20  conv2 25/50  fc1 250/500")
