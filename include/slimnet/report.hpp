// slimnet::report: per-layer compression tables (weights, FLOP, Act%, Weights%, FLOP%) and
// sensitivity tables, printed with fmt and written as CSV.
#pragma once

#include "slimnet/report/model_report.hpp"
#include "slimnet/report/sensitivity.hpp"
