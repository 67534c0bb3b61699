# cdcache-watch and the CDC test suites (included by the top-level
# CMakeLists after the library targets exist).

add_executable(cdcache-watch cdc/watch.c)
target_compile_definitions(cdcache-watch PRIVATE _GNU_SOURCE)
target_compile_options(cdcache-watch PRIVATE ${CDCACHE_WARNINGS})
target_link_libraries(cdcache-watch PRIVATE cdcache_static
  PkgConfig::MONGOC PkgConfig::BSON Threads::Threads m)
install(TARGETS cdcache-watch RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

if(BUILD_TESTING)
  # Unit tests: _id rendering, templates, event mapping (no server).
  add_executable(test_cdc_unit tests/cdc/test_cdc_unit.c)
  # End to end through libmongoc against the wire-protocol test server (or
  # a real replica set when CDCACHE_TEST_MONGODB_URI is set).
  add_executable(test_cdc_e2e tests/cdc/test_cdc_e2e.c tests/cdc/cdc_testutil.c)
  # The stream contract of netstream.c, its poll and connect (no server).
  add_executable(test_netstream tests/cdc/test_netstream.c)
  foreach(t test_cdc_unit test_cdc_e2e test_netstream)
    target_compile_definitions(${t} PRIVATE _GNU_SOURCE)
    target_compile_options(${t} PRIVATE ${CDCACHE_WARNINGS})
    target_include_directories(${t} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/core
      ${CMAKE_CURRENT_SOURCE_DIR}/cdc ${CMAKE_CURRENT_SOURCE_DIR}/tests/cdc)
    target_link_libraries(${t} PRIVATE cdcache_static
      PkgConfig::MONGOC PkgConfig::BSON PkgConfig::CUNIT Threads::Threads m)
  endforeach()
  add_test(NAME cdc_unit COMMAND test_cdc_unit)
  set_tests_properties(cdc_unit PROPERTIES LABELS "cdc" TIMEOUT 120)
  add_test(NAME cdc_netstream COMMAND test_netstream)
  set_tests_properties(cdc_netstream PROPERTIES LABELS "cdc" TIMEOUT 120)

  if(TARGET cdcache-mongo-test-server)
    add_dependencies(test_cdc_e2e cdcache-mongo-test-server cdcache-watch)
    set(CDCACHE_CDC_SERVER $<TARGET_FILE:cdcache-mongo-test-server>)
  else()
    set(CDCACHE_CDC_SERVER "")
  endif()
  add_test(NAME cdc_e2e COMMAND test_cdc_e2e
    --server "${CDCACHE_CDC_SERVER}" --watch $<TARGET_FILE:cdcache-watch>)
  set_tests_properties(cdc_e2e PROPERTIES LABELS "cdc" TIMEOUT 600)
endif()
