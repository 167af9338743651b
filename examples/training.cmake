slimnet_example(train_lenet 01_train_lenet.cpp)
slimnet_example_smoke(train_lenet_mnist train_lenet --model lenet5 --data mnist --epochs 1 --limit 512 --quiet
                      EXPECT "test accuracy ([6-9][0-9]|100)\\.[0-9]+%")  # chance is 10%; one epoch on 512 images reaches ~78%
slimnet_example_smoke(train_lenet_fashion train_lenet --model lenet300 --data fashion --epochs 1 --limit 512 --quiet
                      EXPECT "test accuracy ([4-9][0-9]|100)\\.[0-9]+%")  # ~52%
