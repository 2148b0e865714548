/*
 * topology — follow a ClickHouseCluster's write topology; see topology.h.
 */
#include "topology.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/alloc.h"
#include "upmon/buf.h"
#include "upmon/clock.h"
#include "upmon/log.h"

#define MOD "ingest"

int ing_topology_from_object(const cJSON *obj, struct upm_strlist *out, char *errstr,
                             size_t errstr_size)
{
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(obj, "status"), "writeShards");
    const cJSON *shard;
    size_t i = 0;

    if (!ws || cJSON_IsNull(ws))
        return 0;
    if (!cJSON_IsArray(ws) || cJSON_GetArraySize(ws) > 1024) {
        snprintf(errstr, errstr_size, "status.writeShards: not a list of at most 1024 shards");
        return -1;
    }
    if (cJSON_GetArraySize(ws) == 0)
        return 0;
    cJSON_ArrayForEach(shard, ws)
    {
        struct upm_buf b;
        const cJSON *url;
        size_t k = 0;

        if (!cJSON_IsArray(shard) || cJSON_GetArraySize(shard) < 1 ||
            cJSON_GetArraySize(shard) > 16) {
            snprintf(errstr, errstr_size, "status.writeShards[%zu]: not a list of 1..16 URLs", i);
            upm_strlist_free(out);
            return -1;
        }
        upm_buf_init(&b, 0);
        cJSON_ArrayForEach(url, shard)
        {
            const char *u = cJSON_IsString(url) ? url->valuestring : NULL;

            if (!u || (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) ||
                strchr(u, '|') || strlen(u) > 1024) {
                snprintf(errstr, errstr_size, "status.writeShards[%zu][%zu]: not an http(s) URL", i,
                         k);
                upm_buf_free(&b);
                upm_strlist_free(out);
                return -1;
            }
            upm_buf_printf(&b, "%s%s", k ? "|" : "", u);
            k++;
        }
        upm_strlist_push(out, b.data, b.len);
        upm_buf_free(&b);
        i++;
    }
    return 1;
}

struct ing_topology {
    struct upm_k8s_config k8s_cfg;
    char path[384];
    char name[256];
    pthread_t thread;
    pthread_mutex_t mu;
    struct upm_strlist shards; /* guarded by mu */
    uint64_t generation;       /* guarded by mu; 0 = none yet */
    int stop;
};

static bool same(const struct upm_strlist *a, const struct upm_strlist *b)
{
    if (a->count != b->count)
        return false;
    for (size_t i = 0; i < a->count; i++)
        if (strcmp(a->items[i], b->items[i]) != 0)
            return false;
    return true;
}

static int on_event(void *opaque, const char *type, const cJSON *obj)
{
    struct ing_topology *t = opaque;
    const cJSON *name =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "name");
    struct upm_strlist shards = {0};
    char err[256];
    int rc;

    if (!cJSON_IsString(name) || strcmp(name->valuestring, t->name) != 0 ||
        strcmp(type, "DELETED") == 0)
        return t->stop;
    rc = ing_topology_from_object(obj, &shards, err, sizeof(err));
    if (rc < 0)
        upm_log_error(MOD, "ignoring a malformed write topology | resource=%s error=\"%s\"",
                      t->name, err);
    if (rc == 1) {
        pthread_mutex_lock(&t->mu);
        if (!same(&shards, &t->shards)) {
            upm_strlist_free(&t->shards);
            t->shards = shards;
            memset(&shards, 0, sizeof(shards));
            t->generation++;
            upm_log_info(MOD, "write topology changed | resource=%s shards=%zu generation=%llu",
                         t->name, t->shards.count, (unsigned long long)t->generation);
        }
        pthread_mutex_unlock(&t->mu);
    }
    upm_strlist_free(&shards);
    return t->stop;
}

static void *watch_main(void *arg)
{
    struct ing_topology *t = arg;
    char err[512];

    while (!t->stop) {
        struct upm_k8s_error kerr;
        struct upm_k8s_client *c = upm_k8s_client_create(&t->k8s_cfg, NULL, err, sizeof(err));

        if (!c) {
            upm_log_error(MOD, "topology watch: client failed | error=\"%s\"", err);
            upm_clock_sleep_ms(5000, &t->stop);
            continue;
        }
        if (upm_k8s_list_watch(c, t->path, on_event, t, &t->stop, &kerr) != 0) {
            upm_log_error(MOD, "topology watch failed | error=\"%s\"", kerr.message);
            upm_clock_sleep_ms(5000, &t->stop);
        }
        upm_k8s_client_destroy(c);
    }
    return NULL;
}

struct ing_topology *ing_topology_start(const struct upm_k8s_config *k8s_cfg, const char *ns,
                                        const char *name, char *errstr, size_t errstr_size)
{
    struct ing_topology *t;
    struct upm_k8s_client *probe;
    pthread_attr_t attr;

    if (!ns || !*ns || strlen(ns) > 63 || !name || !*name || strlen(name) > 200 ||
        strpbrk(ns, "/?#%") || strpbrk(name, "/?#%")) {
        snprintf(errstr, errstr_size,
                 "ingest.topology_resource / topology_namespace: a resource name and namespace "
                 "are needed (namespace \"%s\")",
                 ns ? ns : "");
        return NULL;
    }
    /* Fail at start on unusable credentials rather than in the thread. */
    probe = upm_k8s_client_create(k8s_cfg, NULL, errstr, errstr_size);
    if (!probe)
        return NULL;
    upm_k8s_client_destroy(probe);
    t = upm_calloc(1, sizeof(*t));
    t->k8s_cfg = *k8s_cfg;
    snprintf(t->path, sizeof(t->path), "/apis/upmon.io/v1alpha1/namespaces/%s/clickhouseclusters",
             ns);
    snprintf(t->name, sizeof(t->name), "%s", name);
    pthread_mutex_init(&t->mu, NULL);
    pthread_attr_init(&attr);
    /* Detached: a watch may sit in a long request when the process ends. */
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t->thread, &attr, watch_main, t) != 0) {
        pthread_attr_destroy(&attr);
        snprintf(errstr, errstr_size, "cannot start the topology watch thread");
        free(t);
        return NULL;
    }
    pthread_attr_destroy(&attr);
    return t;
}

bool ing_topology_take(struct ing_topology *t, uint64_t *seen, struct upm_strlist *out)
{
    bool changed = false;

    pthread_mutex_lock(&t->mu);
    if (t->generation != 0 && t->generation != *seen) {
        for (size_t i = 0; i < t->shards.count; i++)
            upm_strlist_push(out, t->shards.items[i], strlen(t->shards.items[i]));
        *seen = t->generation;
        changed = true;
    }
    pthread_mutex_unlock(&t->mu);
    return changed;
}

bool ing_topology_wait(struct ing_topology *t, int64_t timeout_ms, const volatile int *stop)
{
    int64_t end = upm_clock_mono_ns() + timeout_ms * 1000000LL;

    for (;;) {
        bool have;

        pthread_mutex_lock(&t->mu);
        have = t->generation != 0;
        pthread_mutex_unlock(&t->mu);
        if (have)
            return true;
        if ((stop && *stop) || upm_clock_mono_ns() >= end)
            return false;
        upm_clock_sleep_ms(100, NULL);
    }
}

void ing_topology_stop(struct ing_topology *t)
{
    if (t)
        t->stop = 1; /* the detached thread keeps t; the process is ending */
}
