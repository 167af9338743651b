# Deployment: a trained, compressed model written as one model file, reloaded with no model code,
# checked and timed (example 13). The smoke run deploys the DNS smoke run's LeNet-5.
slimnet_example(deploy 13_deploy.cpp)
slimnet_example_smoke(deploy_lenet5_dns deploy --model lenet5 --data mnist --in smoke-lenet5-dns.safetensors
                      --out smoke-lenet5-dns.slim.safetensors --limit 256 --rounds 3 --quiet)
if(SLIMNET_BUILD_TESTS)
  set_tests_properties(example_deploy_lenet5_dns PROPERTIES FIXTURES_REQUIRED smoke_dns_lenet5
                       PASS_REGULAR_EXPRESSION "reloaded model file [0-9.]+% \\(equal\\)")
endif()
