/*
 * A small xenstore client over the store ring (public/io/xs_wire.h): the
 * ring page and port come from HVM_PARAM_STORE_PFN / HVM_PARAM_STORE_EVTCHN.
 *
 * Every wait is bounded by xs_timeout_ms: a request whose reply does not come
 * in time returns -ETIMEDOUT, and the client refuses further requests (-EIO:
 * the stream is out of step).  Replies are awaited with SCHEDOP_poll on the
 * store port when evtchn_init() ran and interrupts are on (the upcall then
 * clears the port), else by yielding.  Errors are -errno, mapped from the
 * XS_ERROR payload's name.  Watch events on the ring are skipped (no watches
 * are set): wait for a node by reading it again (xs_read_wait, xs_sleep_ms).
 */
#ifndef GUEST_XENSTORE_H
#define GUEST_XENSTORE_H

#include "lib.h"
#include <xen/io/xs_wire.h>

/* How long one request may wait for ring space or its reply (default 20 s). */
extern uint64_t xs_timeout_ms;
extern volatile uint64_t xs_events;   /* store-port events seen */

/* Finds the ring and port; 0 or -errno. */
long xs_init(void);

/* A request (in transaction tx, 0 for none); the reply payload (NUL-terminated
 * when it fits) in reply.  Returns the payload length, or -errno. */
long xs_request_tx(uint32_t tx, uint32_t type, const char *const *parts, unsigned int nparts,
                   char *reply, size_t size);
long xs_request(uint32_t type, const char *const *parts, unsigned int nparts,
                char *reply, size_t size);

long xs_read(const char *path, char *buf, size_t size);
long xs_write(const char *path, const char *value);
long xs_write_tx(uint32_t tx, const char *path, const char *value);
/* perms: "n0", "r5", ... (owner first), see docs/misc/xenstore.txt. */
long xs_set_perms(const char *path, const char *const *perms, unsigned int n);
long xs_rm(const char *path);
/* The caller's /local/domain/<id>. */
long xs_domain_path(char *buf, size_t size);

/* XS_TRANSACTION_START: the id in *tx.  XS_TRANSACTION_END commits (or aborts
 * with commit 0); -EAGAIN means another writer came first: start again. */
long xs_transaction_start(uint32_t *tx);
long xs_transaction_end(uint32_t tx, int commit);

/* Sleeps ms milliseconds (SCHEDOP_poll with no ports and a timeout). */
void xs_sleep_ms(uint64_t ms);
/* Reads a node; until it exists, reads again every few ms for up to
 * timeout_ms (-ETIMEDOUT after).  Returns the length or -errno. */
long xs_read_wait(const char *path, char *buf, size_t size, uint64_t timeout_ms);
/* The same for a decimal node. */
long xs_read_u64_wait(const char *path, uint64_t *value, uint64_t timeout_ms);
/* A decimal node's value, or -errno (-EINVAL when it is not a number). */
long xs_read_u64(const char *path, uint64_t *value);

#endif
