# SparseSep (Bhattacharya & Lane 2016): sparse-coded FC layers and separable convolutions of a
# trained network, no retraining. The smoke run trains a one-epoch LeNet-5 on a few hundred images.
slimnet_example(sparsesep 15_sparsesep.cpp)
slimnet_example_smoke(sparsesep_lenet5 sparsesep --model lenet5 --data mnist --epochs 1 --limit 512 --heldout 128
                      --budgets 0.05 --iterations 2 --quiet EXPECT "total +[0-9]+ +[0-9]+ +[0-9.]+%")
