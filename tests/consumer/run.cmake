# Installs the built slimnet into a scratch prefix, then configures, builds (at OPTIMISATION: -O3, or
# -O1 in a check build) and runs a consumer.
if(NOT OPTIMISATION)
  set(OPTIMISATION -O3)
endif()
file(REMOVE_RECURSE ${WORK_DIR})
function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGV}")
  endif()
endfunction()
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix)
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/build -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_BUILD_TYPE=Release
    "-DCMAKE_CXX_FLAGS_RELEASE=${OPTIMISATION} -DNDEBUG")
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${WORK_DIR}/build/consumer)
# slimnet::core with zlib and nlohmann-json hidden: the package still configures and a pruning program builds.
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/core -B ${WORK_DIR}/build-core -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix -DCMAKE_BUILD_TYPE=Release
    "-DCMAKE_CXX_FLAGS_RELEASE=${OPTIMISATION} -DNDEBUG" -DCMAKE_DISABLE_FIND_PACKAGE_ZLIB=ON -DCMAKE_DISABLE_FIND_PACKAGE_nlohmann_json=ON)
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build-core)
run(${WORK_DIR}/build-core/core_consumer)
