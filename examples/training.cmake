slimnet_example(train_lenet 01_train_lenet.cpp)
slimnet_example_smoke(train_lenet_mnist train_lenet --model lenet5 --data mnist --epochs 1 --limit 512 --quiet)
slimnet_example_smoke(train_lenet_fashion train_lenet --model lenet300 --data fashion --epochs 1 --limit 512 --quiet)
