# Recurrent examples (issue 6): a Bi-LSTM on sequential MNIST, DeepSense on HHAR-style windows
# (synthetic unless the real HHAR files are given; activity and UserID tasks), DyNS-Ext on the
# Bi-LSTM. The smoke runs use a few hundred sequences, small layers and one epoch.
slimnet_example(bilstm_mnist 08_bilstm_mnist.cpp)
slimnet_example_smoke(bilstm_mnist bilstm_mnist --layers 1 --hidden 32 --epochs 1 --limit 256 --quiet)
slimnet_example(deepsense_hhar 09_deepsense_hhar.cpp)
slimnet_example_smoke(deepsense_synthetic deepsense_hhar --seconds 8 --epochs 1 --limit 128 --quiet)
slimnet_example_smoke(deepsense_synthetic_csv deepsense_hhar --seconds 6 --epochs 1 --limit 64 --quiet --csv-dir hhar-csv)
slimnet_example_smoke(deepsense_userid deepsense_hhar --task userid --seconds 8 --epochs 1 --quiet EXPECT "UserID .*test accuracy")
slimnet_example(dyns_ext_bilstm 10_dyns_ext_bilstm.cpp)
slimnet_example_smoke(dyns_ext_bilstm dyns_ext_bilstm --layers 1 --hidden 32 --epochs 1 --dns-epochs 2 --surgery-epochs 1
                      --finetune-epochs 1 --limit 256 --quiet)
