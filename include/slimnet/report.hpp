// slimnet::report: per-layer compression tables (weights, FLOP, Act%, Weights%, FLOP%),
// sensitivity tables, printed with fmt and written as CSV, and the energy model of an inference.
#pragma once

#include "slimnet/report/energy.hpp"
#include "slimnet/report/model_report.hpp"
#include "slimnet/report/sensitivity.hpp"
