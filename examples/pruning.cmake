# Pruning examples: iterative magnitude pruning (Han et al.) and AGP, Dynamic Network Surgery, and a
# per-layer sensitivity analysis. The smoke runs use a few hundred images and one or two epochs.
slimnet_example(prune_magnitude 02_prune_magnitude.cpp)
slimnet_example_smoke(prune_magnitude_lenet300 prune_magnitude --model lenet300 --data mnist --epochs 1 --rounds 2
                      --retrain-epochs 1 --final-epochs 1 --limit 512 --quiet)
slimnet_example_smoke(prune_magnitude_lenet5_global prune_magnitude --model lenet5 --data mnist --epochs 1 --rounds 1
                      --retrain-epochs 1 --global 0.9 --limit 256 --quiet --control)
slimnet_example_smoke(prune_magnitude_vgg prune_magnitude --model vgg --data fashion --epochs 1 --rounds 1
                      --retrain-epochs 1 --limit 256 --quiet)
slimnet_example_smoke(prune_magnitude_agp_fashion prune_magnitude --model lenet300 --data fashion --epochs 1 --rounds 1
                      --retrain-epochs 2 --schedule agp --limit 512 --quiet)

slimnet_example(dns 03_dns.cpp)
slimnet_example_smoke(dns_lenet5 dns --model lenet5 --data mnist --epochs 1 --dns-epochs 2 --surgery-epochs 1 --limit 256 --quiet)
slimnet_example_smoke(dns_lenet300 dns --model lenet300 --data mnist --epochs 1 --dns-epochs 2 --surgery-epochs 1 --limit 512 --quiet)

slimnet_example(sensitivity 04_sensitivity.cpp)
slimnet_example_smoke(sensitivity_lenet5 sensitivity --model lenet5 --data mnist --epochs 1 --limit 256 --quiet)
