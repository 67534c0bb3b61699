# The CDC consumer's library sources (included by the top-level CMakeLists).
set(CDCACHE_CDC_SOURCES
  cdc/idrender.c
  cdc/keyrule.c
  cdc/event.c
  cdc/stats.c
  cdc/netstream.c
  cdc/bound.c
  cdc/stream.c
  cdc/logroute.c
)
