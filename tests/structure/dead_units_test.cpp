// structure::remove_dead_units removes exactly the units a pruned model computes for nothing
// (unread, or constantly zero before zero-preserving layers), repeatedly, and nothing else.
#include <catch2/catch.hpp>
#include <vector>

#include "slimnet/nn.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/structure.hpp"
#include "support/tensors.hpp"

using namespace slimnet;


TEST_CASE("dead units of an MLP: unread, constantly zero, and those a removal leaves unread", "[structure][dead]") {
  rng gen(11);
  nn::sequential<float> m;
  m.add("fc1", nn::linear<float>(5, 6));
  m.add("relu1", nn::relu<float>());
  m.add("fc2", nn::linear<float>(6, 4));
  m.add("relu2", nn::relu<float>());
  m.add("fc3", nn::linear<float>(4, 2));
  m.reset_parameters(gen);
  auto& fc1 = dynamic_cast<nn::linear<float>&>(m.find("fc1"));
  auto& fc2 = dynamic_cast<nn::linear<float>&>(m.find("fc2"));
  auto W2 = fc2.weight().value().matrix();
  W2.col(1).setZero();                                                  // fc1 unit 1: nobody reads it
  fc1.weight().value().matrix().row(3).setZero();                       // fc1 unit 3: constantly 0
  fc1.bias()->value()[3] = 0;
  dynamic_cast<nn::linear<float>&>(m.find("fc3")).weight().value().matrix().col(2).setZero();  // fc2 unit 2: unread
  for (index_t r : {0, 1, 3}) W2(r, 5) = 0;                             // fc1 unit 5: read by fc2 unit 2 only
  W2(2, 5) = 1.5f;
  fc1.bias()->value()[0] = 0;  // a zero bias alone does not make a unit dead
  const auto x = testing::random_tensor<float>({7, 5}, gen);
  const auto before = testing::poisoned_forward(m, x);

  const auto first = structure::dead_units(m);
  REQUIRE(first.count("fc1"));
  CHECK(first.at("fc1") == std::vector<bool>{true, false, true, false, true, true});  // unit 5 is still read
  CHECK(first.at("fc2") == std::vector<bool>{true, true, false, true});
  CHECK(structure::remove_dead_units(m) == 4);  // fc1: 1, 3, then 5; fc2: 2
  CHECK(m.find("fc1").describe() == "Linear(5, 3)");
  CHECK(m.find("fc2").describe() == "Linear(3, 3)");
  testing::check_close(before, testing::poisoned_forward(m, x), 1e-5);
  CHECK(structure::dead_units(m).empty());
}

TEST_CASE("a constantly zero unit before BatchNorm or Sigmoid is alive", "[structure][dead]") {
  rng gen(12);
  for (const bool sigmoid : {false, true}) {
    nn::sequential<float> m;
    m.add("fc1", nn::linear<float>(3, 4));
    if (sigmoid) {
      m.add("act", nn::sigmoid<float>());
    } else {
      m.add("bn", nn::batch_norm<float>(4, 1, {}));
    }
    m.add("fc2", nn::linear<float>(4, 2));
    m.reset_parameters(gen);
    auto& fc1 = dynamic_cast<nn::linear<float>&>(m.find("fc1"));
    fc1.weight().value().matrix().row(2).setZero();
    fc1.bias()->value()[2] = 0;
    CHECK(structure::dead_units(m).empty());
  }
}

TEST_CASE("dead hidden units of a pruned Bi-LSTM", "[structure][dead][recurrent]") {
  rng gen(13);
  nn::recurrent_options o;
  o.num_layers = 2;
  o.output = nn::sequence_output::last_step;
  nn::sequential<float> m;
  m.add("bilstm", nn::bidirectional<float>(nn::lstm<float>(4, 5, o), 3));
  m.add("fc", nn::linear<float>(10, 3));
  m.reset_parameters(gen);
  auto& bi = dynamic_cast<nn::bidirectional<float>&>(m.find("bilstm"));
  auto& f = bi.forward_as<nn::lstm<float>>();
  auto& b = bi.backward_as<nn::lstm<float>>();
  // Forward layer 0, unit 2: no outgoing connection (own recurrent column and layer 1's input).
  f.weight_hh(0).value().matrix().col(2).setZero();
  f.weight_ih(1).value().matrix().col(2).setZero();
  // Reverse top layer, unit 4: not read by fc nor by its own layer.
  dynamic_cast<nn::linear<float>&>(m.find("fc")).weight().value().matrix().col(5 + 4).setZero();
  b.weight_hh(1).value().matrix().col(4).setZero();
  // Forward top layer, unit 0: read by fc only through a zero column: dead; unit 1 is read by its
  // own layer only (fc column zero, W_hh column not): alive.
  dynamic_cast<nn::linear<float>&>(m.find("fc")).weight().value().matrix().col(0).setZero();
  f.weight_hh(1).value().matrix().col(0).setZero();
  dynamic_cast<nn::linear<float>&>(m.find("fc")).weight().value().matrix().col(1).setZero();
  const auto x = testing::random_tensor<float>({3, 6, 4}, gen);
  const auto before = testing::poisoned_forward(m, x);

  CHECK(structure::remove_dead_units(m) == 3);
  auto& t = dynamic_cast<nn::bidirectional<float>&>(m.find("bilstm"));
  CHECK(t.forward_layer().hidden_size(0) == 4);
  CHECK(t.forward_layer().hidden_size(1) == 4);
  CHECK(t.backward_layer().hidden_size(1) == 4);
  CHECK(dynamic_cast<nn::linear<float>&>(m.find("fc")).in_features() == 8);
  testing::check_close(before, testing::poisoned_forward(m, x), 1e-5);
}

TEST_CASE("DyNS-Ext's rule: a unit without incoming weights is dead even with a bias, on request", "[structure][dead]") {
  rng gen(14);
  nn::sequential<float> m;
  m.add("fc1", nn::linear<float>(3, 4));
  m.add("relu", nn::relu<float>());
  m.add("fc2", nn::linear<float>(4, 2));
  m.reset_parameters(gen);
  auto& fc1 = dynamic_cast<nn::linear<float>&>(m.find("fc1"));
  fc1.weight().value().matrix().row(1).setZero();
  fc1.bias()->value()[1] = 0.5f;  // a constant ReLU(0.5) reaches fc2: removing it is not exact
  CHECK(structure::dead_units(m).empty());
  const auto sel = structure::dead_units(m, {/*ignore_biases*/ true});
  REQUIRE(sel.count("fc1"));
  CHECK(sel.at("fc1") == std::vector<bool>{true, false, true, true});
}
