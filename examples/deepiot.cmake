# DeepIoT (Yao et al. 2017): compressor-critic structure pruning and thinning. The smoke runs use a
# few hundred images, a short τ schedule and a few hundred iterations.
slimnet_example(deepiot 11_deepiot.cpp)
slimnet_example_smoke(deepiot_lenet5 deepiot --model lenet5 --data mnist --epochs 1 --limit 512 --heldout 128 --iterations 120
                      --check-every 40 --tau-every 20 --tau-step 0.1 --tau-final 0.6 --finetune-epochs 1 --quiet
                      EXPECT "hard mask: test accuracy [0-9.]+% \\(gated\\) = ")
slimnet_example_smoke(deepiot_lenet300 deepiot --model lenet300 --data mnist --epochs 1 --limit 512 --heldout 128
                      --iterations 120 --check-every 40 --tau-every 20 --tau-step 0.1 --tau-final 0.6 --finetune-epochs 1 --quiet
                      EXPECT "hard mask: test accuracy [0-9.]+% \\(gated\\) = ")
