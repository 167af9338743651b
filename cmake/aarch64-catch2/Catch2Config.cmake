# Catch2 2.13 for a cross build (cmake/aarch64-linux-gnu.cmake points Catch2_DIR here). Debian's
# catch2 package ships its header and a libCatch2WithMain.a compiled for the host; the header is all
# a target needs, and the main is compiled here for the target, as the package's own library is.
if(NOT TARGET Catch2::Catch2)
  add_library(Catch2::Catch2 INTERFACE IMPORTED)
  find_path(SLIMNET_CATCH2_INCLUDE_DIR catch2/catch.hpp PATHS /usr/include /usr/local/include NO_CMAKE_FIND_ROOT_PATH REQUIRED)
  set_target_properties(Catch2::Catch2 PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${SLIMNET_CATCH2_INCLUDE_DIR}")
  add_library(slimnet_cross_catch2_main STATIC ${CMAKE_CURRENT_LIST_DIR}/catch2_main.cpp)
  target_link_libraries(slimnet_cross_catch2_main PUBLIC Catch2::Catch2)
  target_compile_features(slimnet_cross_catch2_main PUBLIC cxx_std_17)
  add_library(Catch2::Catch2WithMain ALIAS slimnet_cross_catch2_main)
endif()
set(Catch2_FOUND TRUE)
