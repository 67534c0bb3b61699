/*
 * Routing libmongoc's process-wide log to the subscriptions that ask.
 *
 * libmongoc has one log handler per process (mongoc_log_set_handler) and
 * no way to read the one installed.  Several subscriptions, and the host
 * itself, may each want libmongoc's messages, so cdcache installs one
 * router while at least one subscription routes (a count under route_mu),
 * and the router dispatches by thread: a subscription's client is a
 * single-threaded mongoc_client_t that only its CDC thread drives, so a
 * message emitted on that thread is that client's, and goes to that
 * subscription's log.  Every other message (the host's own clients, and
 * subscriptions that do not route) goes to the handler the host had,
 * which the host names in the config of the first routing subscription
 * (mongoc_log_prev; libmongoc's default handler when it names none).
 * When the last routing subscription stops, that handler is put back.
 *
 * Ordering: the chain target is written under route_mu before the router
 * is installed and read by the router only while installed;
 * mongoc_log_set_handler and every handler call run under libmongoc's own
 * log mutex, so installing publishes it and uninstalling waits out any
 * call in progress.  After cdcache__logroute_off() returns, no call with
 * the stopped subscription is running or can start: its thread has been
 * joined, so nothing is emitted on it.
 */
#include "cdc_internal.h"

static pthread_mutex_t route_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned route_count;              /* route_mu: subscriptions routing */
static cdcache_mongoc_log_fn chain_fn;    /* route_mu (see above) */
static void *chain_data;                  /* route_mu (see above) */
static _Thread_local cdcache_cdc_t *here; /* this thread's subscription */

static int level_of(mongoc_log_level_t level)
{
  switch (level) {
  case MONGOC_LOG_LEVEL_ERROR:
  case MONGOC_LOG_LEVEL_CRITICAL:
    return CDCACHE_LOG_ERROR;
  case MONGOC_LOG_LEVEL_WARNING:
    return CDCACHE_LOG_WARNING;
  case MONGOC_LOG_LEVEL_MESSAGE:
  case MONGOC_LOG_LEVEL_INFO:
    return CDCACHE_LOG_INFO;
  default:
    return CDCACHE_LOG_DEBUG;
  }
}

static void router(mongoc_log_level_t level, const char *domain, const char *message,
                   void *user_data)
{
  (void)user_data;
  cdcache_cdc_t *sub = here;
  if (sub != NULL && sub->route_mongoc_log) {
    cdcache__cdc_log(sub, level_of(level), "libmongoc[%s]: %s", domain ? domain : "",
                     message ? message : "");
    return;
  }
  if (chain_fn != NULL)
    ((mongoc_log_func_t)chain_fn)(level, domain, message, chain_data);
  else
    mongoc_log_default_handler(level, domain, message, NULL);
}

void cdcache__logroute_thread(cdcache_cdc_t *sub)
{
  here = sub;
}

void cdcache__logroute_on(cdcache_cdc_t *sub)
{
  (void)pthread_mutex_lock(&route_mu);
  bool differs = false;
  if (route_count++ == 0) {
    chain_fn = sub->mongoc_log_prev;
    chain_data = sub->mongoc_log_prev_ctx;
    mongoc_log_set_handler(router, NULL);
  } else {
    differs = sub->mongoc_log_prev != chain_fn || sub->mongoc_log_prev_ctx != chain_data;
  }
  (void)pthread_mutex_unlock(&route_mu);
  if (differs)
    cdcache__cdc_log(sub, CDCACHE_LOG_WARNING,
                     "cdc: mongoc_log_prev differs from the one an earlier routing subscription "
                     "named; libmongoc's other messages keep going to the earlier one, which is "
                     "put back when the last routing subscription stops");
}

void cdcache__logroute_off(cdcache_cdc_t *sub)
{
  (void)sub;
  (void)pthread_mutex_lock(&route_mu);
  if (route_count > 0 && --route_count == 0) {
    if (chain_fn != NULL)
      mongoc_log_set_handler((mongoc_log_func_t)chain_fn, chain_data);
    else
      mongoc_log_set_handler(mongoc_log_default_handler, NULL);
    chain_fn = NULL;
    chain_data = NULL;
  }
  (void)pthread_mutex_unlock(&route_mu);
}
