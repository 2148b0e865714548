/*
 * chops — the operator's statements to the servers of one cluster: a client
 * per server or per shard (failing over between its replicas), as the
 * internal user, with "system" as the session database.
 */
#ifndef UPMON_OPERATOR_CHOPS_H
#define UPMON_OPERATOR_CHOPS_H

#include <stdint.h>

#include "upmon/buf.h"
#include "upmon/clickhouse.h"
#include "spec.h"

struct op_ch {
    const struct chc *c;
    const char *domain;
    const char *password; /* upmon_internal's */
    int64_t timeout_ms;
};

/* replica >= 0: that server only; replica < 0: every replica of the shard
 * (the client fails over). NULL + errstr. */
struct upm_ch_client *op_ch_client(const struct op_ch *ch, int shard, int replica, char *errstr,
                                   size_t errstr_size);
/* Run sql on one server (or shard); out may be NULL. 0 / -1 + errstr. */
int op_ch_run(const struct op_ch *ch, int shard, int replica, const char *sql, struct upm_buf *out,
              char *errstr, size_t errstr_size);
/* A base config for upm_schema_* over this cluster (urls empty); free with
 * op_ch_base_free. */
void op_ch_base(const struct op_ch *ch, struct upm_ch_config *base);
void op_ch_base_free(struct upm_ch_config *base);

#endif
