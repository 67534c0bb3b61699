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
  target_link_libraries(test_cdc_e2e PRIVATE cdcache_splitproxy)
  # The stream contract of netstream.c, its poll and connect (no server).
  add_executable(test_netstream tests/cdc/test_netstream.c)
  # TLS through netstream.c: the test server behind stunnel4.
  add_executable(test_cdc_tls tests/cdc/test_cdc_tls.c tests/cdc/cdc_testutil.c)
  foreach(t test_cdc_unit test_cdc_e2e test_netstream test_cdc_tls)
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
  # One ctest per end-to-end test (the binary fails when a name selects
  # nothing, so this list cannot silently fall out of step); a test that
  # cannot run (no test server, or the fault tests against a real replica
  # set) exits 77 and shows as skipped.
  set(CDCACHE_CDC_E2E_TESTS ops_collection_scope ops_database_scope ops_deployment_scope
    resume_after_dropped_connection reconnect_after_libmongoc_gives_up
    history_lost_flushes_and_restarts token_rejected_flushes invalidate_flushes_and_reopens
    fail_closed_then_recover prompt_stop race_load_overlapping_update key_callback_over_stream
    watch_tool catch_up_after_partition failover_keeps_token poison_error poison_reply_after_write
    watch_blocked_consumer watch_blocked_consumer_stderr stop_kills_the_server_cursor majority_stall_is_visible
    resume_loop_backs_off)
  foreach(t ${CDCACHE_CDC_E2E_TESTS})
    add_test(NAME cdc_e2e_${t} COMMAND test_cdc_e2e
      --server "${CDCACHE_CDC_SERVER}" --watch $<TARGET_FILE:cdcache-watch> --only ${t})
    set_tests_properties(cdc_e2e_${t} PROPERTIES LABELS "cdc" TIMEOUT 180 SKIP_RETURN_CODE 77)
  endforeach()
  # A filter that selects nothing is a failure, not an empty pass.
  # Exit status 2 exactly: a crash is not the expected failure.
  add_test(NAME cdc_e2e_empty_filter_fails COMMAND sh -c
    "\"$1\" --only no_such_test; test $? -eq 2" sh $<TARGET_FILE:test_cdc_e2e>)
  set_tests_properties(cdc_e2e_empty_filter_fails PROPERTIES LABELS "cdc")
  # Exit 77 (skipped) only when stunnel4 or openssl is missing; run.sh
  # installs both.
  add_test(NAME cdc_tls COMMAND test_cdc_tls --server "${CDCACHE_CDC_SERVER}")
  set_tests_properties(cdc_tls PROPERTIES LABELS "cdc" TIMEOUT 300 SKIP_RETURN_CODE 77)
  # The same suite with every reply delivered in pieces (tests/splitproxy).
  add_test(NAME cdc_e2e_split COMMAND test_cdc_e2e
    --server "${CDCACHE_CDC_SERVER}" --watch $<TARGET_FILE:cdcache-watch>)
  set_tests_properties(cdc_e2e_split PROPERTIES LABELS "cdc" TIMEOUT 600 SKIP_RETURN_CODE 77
    ENVIRONMENT "CDCACHE_E2E_SPLIT=1414")
endif()
