/*
 * chops — ClickHouse statements to a cluster's servers; see chops.h.
 */
#include "chops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/alloc.h"
#include "render.h"

void op_ch_base(const struct op_ch *ch, struct upm_ch_config *base)
{
    memset(base, 0, sizeof(*base));
    base->user = upm_strdup(CHC_INTERNAL_USER);
    base->password = upm_strdup(ch->password);
    base->database = upm_strdup(ch->c->spec.database);
    base->cluster = upm_strdup(ch->c->spec.cluster_name);
    base->connect_timeout_ms = 3000;
    base->query_timeout_ms = ch->timeout_ms;
    base->retries = 2;
    base->backoff_initial_ms = 200;
    base->backoff_max_ms = 2000;
    /* A drain chunk comes back whole (drain_chunk_rows bounds it). */
    base->max_response_bytes = 512LL << 20;
}

void op_ch_base_free(struct upm_ch_config *base)
{
    upm_strlist_free(&base->urls);
    free(base->user);
    free(base->password);
    free(base->database);
    free(base->cluster);
    memset(base, 0, sizeof(*base));
}

struct upm_ch_client *op_ch_client(const struct op_ch *ch, int shard, int replica, char *errstr,
                                   size_t errstr_size)
{
    struct upm_ch_config cfg;
    struct upm_ch_client *cl;
    char url[400];

    op_ch_base(ch, &cfg);
    free(cfg.database);
    cfg.database = upm_strdup("system");
    for (int r = replica < 0 ? 0 : replica; r < (replica < 0 ? ch->c->spec.replicas : replica + 1);
         r++) {
        chc_pod_url(ch->c, shard, r, ch->domain, url, sizeof(url));
        upm_strlist_push(&cfg.urls, url, strlen(url));
    }
    cl = upm_ch_client_create(&cfg, NULL, errstr, errstr_size);
    op_ch_base_free(&cfg);
    return cl;
}

int op_ch_run(const struct op_ch *ch, int shard, int replica, const char *sql, struct upm_buf *out,
              char *errstr, size_t errstr_size)
{
    struct upm_ch_client *cl = op_ch_client(ch, shard, replica, errstr, errstr_size);
    struct upm_ch_error err;
    struct upm_buf scratch;
    int rc;

    if (!cl)
        return -1;
    upm_buf_init(&scratch, 0);
    rc = upm_ch_query(cl, sql, out ? out : &scratch, &err);
    if (rc != 0)
        snprintf(errstr, errstr_size, "shard %d replica %d: %s", shard, replica, err.message);
    upm_buf_free(&scratch);
    upm_ch_client_destroy(cl);
    return rc;
}
