// Catch2's main() for cross builds (what Debian's host-only libCatch2WithMain.a holds).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
