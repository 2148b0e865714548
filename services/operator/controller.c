/*
 * controller — watches and the reconcile loop; see controller.h.
 */
#include "controller.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "upmon/alloc.h"
#include "upmon/buf.h"
#include "upmon/clock.h"
#include "upmon/log.h"
#include "chops.h"
#include "drain.h"
#include "plan.h"
#include "render.h"
#include "spec.h"

#define OP_F(field) offsetof(struct op_config, field)
const struct upm_config_key op_config_keys[] = {
    {"namespace", UPM_CFG_STRING, OP_F(ns), "", 1, 0, NULL,
     "Namespace whose ClickHouseCluster resources are reconciled; \"\" = $POD_NAMESPACE.", 0},
    {"resync", UPM_CFG_DURATION_MS, OP_F(resync_ms), "30s", 1000, 3600000, NULL,
     "Full reconcile of every resource at least this often (besides watch events).", 0},
    {"ready_timeout", UPM_CFG_DURATION_MS, OP_F(ready_timeout_ms), "10m", 1000, 86400000, NULL,
     "A shard not Ready after this is reported Degraded (and still waited for).", 0},
    {"publish_timeout", UPM_CFG_DURATION_MS, OP_F(publish_timeout_ms), "5m", 1000, 86400000, NULL,
     "Servers not showing a published topology after this are reported Degraded.", 0},
    {"drain_grace", UPM_CFG_DURATION_MS, OP_F(drain_grace_ms), "20s", 0, 3600000, NULL,
     "After a shard leaves the write topology, wait this long before moving its rows (ingest "
     "finishes groups recorded under the old topology), and again once it is empty.",
     0},
    {"drain_chunk_rows", UPM_CFG_INT, OP_F(drain_chunk_rows), "100000", 1000, 100000000, NULL,
     "Rows per block the drain moves (bounds the operator's memory).", 0},
    {"cluster_domain", UPM_CFG_STRING, OP_F(cluster_domain), "cluster.local", 1, 0, NULL,
     "The cluster's DNS domain (pod names are <pod>.<service>.<ns>.svc.<domain>).", 0},
    {"clickhouse_timeout", UPM_CFG_DURATION_MS, OP_F(ch_timeout_ms), "60s", 1000, 3600000, NULL,
     "Timeout of one statement the operator sends to a ClickHouse server.", 0},
};
const size_t op_config_nkeys = sizeof(op_config_keys) / sizeof(op_config_keys[0]);

struct watch_thread {
    struct op_controller *ctl;
    char path[256];
    pthread_t thread;
    bool running;
};

/* Per-resource memory of the leader (lost on failover: then redone once). */
struct memo {
    char uid[64];
    char schema_key[64];  /* state for which the schema was last verified */
    int64_t retention_at; /* mono ns of the last retention run */
    char last_event[160]; /* reason|message of the last Event, to not repeat it */
    int64_t wait_since;   /* mono ns since the current wait began */
    char wait_key[64];
};

struct op_controller {
    struct op_config cfg;
    struct upm_k8s_config k8s_cfg;
    char ns[128];
    char identity[128];
    struct upm_schema_set *schema;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool dirty;
    int stop; /* leader work stops (read through a volatile pointer) */
    int quit; /* watches stop (process exit) */
    bool started;
    bool watching;
    bool (*fence_ok)(void *);
    void *fence_opaque;
    pthread_t loop;
    struct watch_thread watches[2];
    struct memo memos[16];
    /* metrics */
    struct upm_prom_metric *m_reconciles, *m_errors, *m_desired, *m_ready, *m_transition,
        *m_drain_rows, *m_drain_step, *m_retention, *m_phase, *m_drain_active;
};

static void kick(struct op_controller *ctl)
{
    pthread_mutex_lock(&ctl->mu);
    ctl->dirty = true;
    pthread_cond_broadcast(&ctl->cond);
    pthread_mutex_unlock(&ctl->mu);
}

static int on_watch_event(void *opaque, const char *type, const cJSON *obj)
{
    struct watch_thread *w = opaque;

    (void)type;
    (void)obj;
    kick(w->ctl);
    return w->ctl->quit;
}

static void *watch_main(void *arg)
{
    struct watch_thread *w = arg;
    struct op_controller *ctl = w->ctl;
    char err[512];

    while (!ctl->quit) {
        struct upm_k8s_error kerr;
        struct upm_k8s_client *client =
            upm_k8s_client_create(&ctl->k8s_cfg, NULL, err, sizeof(err));

        if (!client) {
            upm_log_error("operator", "watch client failed | error=\"%s\"", err);
            upm_clock_sleep_ms(5000, &ctl->quit);
            continue;
        }
        /* list_watch relists on 410 and backs off on errors by itself. */
        if (upm_k8s_list_watch(client, w->path, on_watch_event, w, &ctl->quit, &kerr) != 0) {
            upm_log_error("operator", "watch failed | path=%s error=\"%s\"", w->path, kerr.message);
            upm_clock_sleep_ms(5000, &ctl->quit);
        }
        upm_k8s_client_destroy(client);
    }
    return NULL;
}

static struct memo *memo_for(struct op_controller *ctl, const char *uid)
{
    struct memo *free_slot = NULL;

    for (size_t i = 0; i < sizeof(ctl->memos) / sizeof(ctl->memos[0]); i++) {
        if (strcmp(ctl->memos[i].uid, uid) == 0)
            return &ctl->memos[i];
        if (!free_slot && ctl->memos[i].uid[0] == '\0')
            free_slot = &ctl->memos[i];
    }
    if (!free_slot)
        free_slot = &ctl->memos[0];
    memset(free_slot, 0, sizeof(*free_slot));
    snprintf(free_slot->uid, sizeof(free_slot->uid), "%s", uid);
    return free_slot;
}

/* ---- API helpers ---------------------------------------------------------------- */

struct run {
    struct op_controller *ctl;
    struct upm_k8s_client *k8s;
    struct chc *c;
    cJSON *obj; /* the resource as read */
    struct memo *memo;
    char password[80];     /* upmon_internal */
    char **user_passwords; /* per spec user */
    const char *image;     /* what the StatefulSets run */
    bool canary;           /* shard 1's last pod tries spec.image first */
};

static void now_rfc3339(char *out, size_t size)
{
    op_time_format(upm_clock_real_ns() / 1000000000LL, out, size);
}

static void emit_event(struct run *rn, bool warning, const char *reason, const char *message)
{
    char key[160], ts[32], path[256];
    cJSON *ev, *meta, *inv, *src;
    struct upm_k8s_error kerr;

    snprintf(key, sizeof(key), "%s|%.140s", reason, message);
    if (strcmp(key, rn->memo->last_event) == 0)
        return;
    snprintf(rn->memo->last_event, sizeof(rn->memo->last_event), "%s", key);
    if (warning)
        upm_log_warn("operator", "event | cluster=%s/%s reason=%s message=\"%s\"", rn->c->ns,
                     rn->c->name, reason, message);
    else
        upm_log_info("operator", "event | cluster=%s/%s reason=%s message=\"%s\"", rn->c->ns,
                     rn->c->name, reason, message);
    now_rfc3339(ts, sizeof(ts));
    ev = cJSON_CreateObject();
    meta = cJSON_AddObjectToObject(ev, "metadata");
    {
        char gen[128];

        snprintf(gen, sizeof(gen), "%s.", rn->c->name);
        cJSON_AddStringToObject(meta, "generateName", gen);
    }
    cJSON_AddStringToObject(meta, "namespace", rn->c->ns);
    inv = cJSON_AddObjectToObject(ev, "involvedObject");
    cJSON_AddStringToObject(inv, "apiVersion", "upmon.io/v1alpha1");
    cJSON_AddStringToObject(inv, "kind", "ClickHouseCluster");
    cJSON_AddStringToObject(inv, "name", rn->c->name);
    cJSON_AddStringToObject(inv, "namespace", rn->c->ns);
    cJSON_AddStringToObject(inv, "uid", rn->c->uid);
    cJSON_AddStringToObject(ev, "reason", reason);
    cJSON_AddStringToObject(ev, "message", message);
    cJSON_AddStringToObject(ev, "type", warning ? "Warning" : "Normal");
    cJSON_AddStringToObject(ev, "firstTimestamp", ts);
    cJSON_AddStringToObject(ev, "lastTimestamp", ts);
    cJSON_AddNumberToObject(ev, "count", 1);
    src = cJSON_AddObjectToObject(ev, "source");
    cJSON_AddStringToObject(src, "component", "upmon-operator");
    cJSON_AddStringToObject(ev, "reportingComponent", "upmon.io/operator");
    cJSON_AddStringToObject(ev, "reportingInstance", rn->ctl->identity);
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/events", rn->c->ns);
    if (upm_k8s_request(rn->k8s, "POST", path, ev, 0, NULL, &kerr) != 0)
        upm_log_warn("operator", "event not recorded | error=\"%s\"", kerr.message);
    cJSON_Delete(ev);
}

/* Create obj at collection path; when it exists, merge-patch it (a no-op
 * patch changes nothing on the server). */
static int apply(struct run *rn, const char *collection, const char *name, const cJSON *obj,
                 bool patch_existing, char *errstr, size_t size)
{
    struct upm_k8s_error kerr;
    char path[384];

    snprintf(path, sizeof(path), "%s/%s", collection, name);
    if (upm_k8s_request(rn->k8s, "GET", path, NULL, 0, NULL, &kerr) != 0) {
        if (kerr.kind != UPM_K8S_ERR_NOT_FOUND) {
            snprintf(errstr, size, "%s", kerr.message);
            return -1;
        }
        if (upm_k8s_request(rn->k8s, "POST", collection, obj, 0, NULL, &kerr) != 0 &&
            kerr.kind != UPM_K8S_ERR_CONFLICT) {
            snprintf(errstr, size, "%s", kerr.message);
            return -1;
        }
        return 1;
    }
    if (patch_existing && upm_k8s_request(rn->k8s, "PATCH", path, obj, 0, NULL, &kerr) != 0) {
        snprintf(errstr, size, "%s", kerr.message);
        return -1;
    }
    return 0;
}

static void random_password(char *out, size_t size)
{
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    unsigned char raw[32];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, raw, sizeof(raw)) : -1;

    if (fd >= 0)
        close(fd);
    if (got != (ssize_t)sizeof(raw))
        upm_fatal("cannot read /dev/urandom for a password");
    for (size_t i = 0; i < sizeof(raw) && i + 1 < size; i++) {
        out[i] = alphabet[raw[i] % (sizeof(alphabet) - 1)];
        out[i + 1] = '\0';
    }
}

/* data[key] of a Secret, base64-decoded, into out. 0, -1 missing (msg). */
static int secret_value(struct run *rn, const char *name, const char *key, char *out, size_t size,
                        char *msg, size_t msg_size)
{
    char path[384];
    cJSON *sec = NULL;
    struct upm_k8s_error kerr;
    const cJSON *v;
    struct upm_buf dec;
    int rc = -1;

    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/secrets/%s", rn->c->ns, name);
    if (upm_k8s_request(rn->k8s, "GET", path, NULL, 0, &sec, &kerr) != 0) {
        snprintf(msg, msg_size, "Secret %.60s/%.100s: %.300s", rn->c->ns, name,
                 kerr.kind == UPM_K8S_ERR_NOT_FOUND ? "not found" : kerr.message);
        return -1;
    }
    v = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(sec, "data"), key);
    upm_buf_init(&dec, 0);
    if (!cJSON_IsString(v) ||
        upm_k8s_base64_decode(v->valuestring, strlen(v->valuestring), &dec) != 0)
        snprintf(msg, msg_size, "Secret %s/%s has no key \"%s\"", rn->c->ns, name, key);
    else if (dec.len == 0 || dec.len >= size || memchr(dec.data, '\0', dec.len))
        snprintf(msg, msg_size, "Secret %s/%s key \"%s\": empty or not a password", rn->c->ns, name,
                 key);
    else {
        memcpy(out, dec.data, dec.len);
        out[dec.len] = '\0';
        rc = 0;
    }
    upm_buf_free(&dec);
    cJSON_Delete(sec);
    return rc;
}

static int ensure_internal_password(struct run *rn, char *msg, size_t size)
{
    char name[128];

    snprintf(name, sizeof(name), "%s-internal", rn->c->name);
    if (secret_value(rn, name, "password", rn->password, sizeof(rn->password), msg, size) == 0)
        return 0;
    {
        char pw[40], coll[256];
        cJSON *sec;
        int rc;

        random_password(pw, sizeof(pw));
        sec = chc_render_internal_secret(rn->c, pw);
        snprintf(coll, sizeof(coll), "/api/v1/namespaces/%s/secrets", rn->c->ns);
        rc = apply(rn, coll, name, sec, false, msg, size);
        cJSON_Delete(sec);
        if (rc < 0)
            return -1;
    }
    /* Read back: another writer may have won the create. */
    return secret_value(rn, name, "password", rn->password, sizeof(rn->password), msg, size);
}

/* ---- observation ------------------------------------------------------------ */

static void observe(struct run *rn, struct chc_observed *o)
{
    char path[384];
    cJSON *list = NULL;
    const cJSON *it;
    struct upm_k8s_error kerr;

    snprintf(path, sizeof(path),
             "/apis/apps/v1/namespaces/%s/statefulsets?labelSelector=upmon.io%%2Fcluster%%3D%s",
             rn->c->ns, rn->c->name);
    if (upm_k8s_request(rn->k8s, "GET", path, NULL, 0, &list, &kerr) == 0) {
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(list, "items"))
        {
            const cJSON *labels = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(it, "metadata"), "labels");
            const cJSON *sh = cJSON_GetObjectItemCaseSensitive(labels, "upmon.io/shard");
            const cJSON *spec = cJSON_GetObjectItemCaseSensitive(it, "spec");
            const cJSON *st = cJSON_GetObjectItemCaseSensitive(it, "status");
            const cJSON *rep = cJSON_GetObjectItemCaseSensitive(spec, "replicas");
            const cJSON *ready = cJSON_GetObjectItemCaseSensitive(st, "readyReplicas");
            const cJSON *upd = cJSON_GetObjectItemCaseSensitive(st, "updatedReplicas");
            int i = cJSON_IsString(sh) ? atoi(sh->valuestring) : 0;

            if (i < 1 || i > CHC_MAX_SHARDS)
                continue;
            o->sts_exists[i] = true;
            o->sts_replicas[i] = cJSON_IsNumber(rep) ? rep->valueint : 0;
            o->sts_ready[i] = cJSON_IsNumber(ready) ? ready->valueint : 0;
            o->sts_updated[i] = cJSON_IsNumber(upd) ? upd->valueint : 0;
            {
                /* Counts written before the controller saw the latest template
                 * describe the old one: right after our own patch they still
                 * say every pod is Ready and updated. */
                const cJSON *gen = cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(it, "metadata"), "generation");
                const cJSON *og = cJSON_GetObjectItemCaseSensitive(st, "observedGeneration");

                if (cJSON_IsNumber(gen) &&
                    (!cJSON_IsNumber(og) || og->valuedouble < gen->valuedouble)) {
                    o->sts_ready[i] = 0;
                    o->sts_updated[i] = 0;
                }
            }
            {
                const cJSON *ctr = cJSON_GetArrayItem(
                    cJSON_GetObjectItemCaseSensitive(
                        cJSON_GetObjectItemCaseSensitive(
                            cJSON_GetObjectItemCaseSensitive(spec, "template"), "spec"),
                        "containers"),
                    0);
                const cJSON *img = cJSON_GetObjectItemCaseSensitive(ctr, "image");

                if (cJSON_IsString(img))
                    snprintf(o->sts_image[i], sizeof(o->sts_image[i]), "%s", img->valuestring);
            }
            if (i > o->sts_highest)
                o->sts_highest = i;
        }
    } else {
        upm_log_warn("operator", "listing StatefulSets failed | error=\"%s\"", kerr.message);
    }
    cJSON_Delete(list);
    list = NULL;
    snprintf(path, sizeof(path),
             "/api/v1/namespaces/%s/pods?labelSelector=upmon.io%%2Fcluster%%3D%s", rn->c->ns,
             rn->c->name);
    if (upm_k8s_request(rn->k8s, "GET", path, NULL, 0, &list, &kerr) == 0) {
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(list, "items"))
        {
            const cJSON *cs;
            const cJSON *meta = cJSON_GetObjectItemCaseSensitive(it, "metadata");
            const cJSON *pname = cJSON_GetObjectItemCaseSensitive(meta, "name");
            const cJSON *ip = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(it, "status"), "podIP");
            int sh = 0, rep = -1;

            if (cJSON_IsString(pname))
                chc_parse_pod_name(rn->c, pname->valuestring, &sh, &rep);
            if (cJSON_IsString(pname) && cJSON_IsString(ip) &&
                !cJSON_GetObjectItemCaseSensitive(meta, "deletionTimestamp") &&
                chc_parse_pod_name(rn->c, pname->valuestring, &sh, &rep) == 0)
                snprintf(o->pod_ip[sh][rep], sizeof(o->pod_ip[sh][rep]), "%s", ip->valuestring);

            if (sh >= 1 && rep >= 0 &&
                !cJSON_GetObjectItemCaseSensitive(meta, "deletionTimestamp")) {
                const cJSON *ctr = cJSON_GetArrayItem(
                    cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(it, "spec"),
                                                     "containers"),
                    0);
                const cJSON *img = cJSON_GetObjectItemCaseSensitive(ctr, "image");
                const cJSON *cond;
                bool ready = false;

                cJSON_ArrayForEach(
                    cond, cJSON_GetObjectItemCaseSensitive(
                              cJSON_GetObjectItemCaseSensitive(it, "status"), "conditions"))
                {
                    const cJSON *t = cJSON_GetObjectItemCaseSensitive(cond, "type");
                    const cJSON *s = cJSON_GetObjectItemCaseSensitive(cond, "status");

                    if (cJSON_IsString(t) && strcmp(t->valuestring, "Ready") == 0 &&
                        cJSON_IsString(s) && strcmp(s->valuestring, "True") == 0)
                        ready = true;
                }
                o->pod_ready_on_spec_image[sh][rep] =
                    ready && cJSON_IsString(img) &&
                    strcmp(img->valuestring, rn->c->spec.image) == 0;
            }
            cJSON_ArrayForEach(
                cs, cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(it, "status"),
                                                     "containerStatuses"))
            {
                const cJSON *w = cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(cs, "state"), "waiting");
                const cJSON *reason = cJSON_GetObjectItemCaseSensitive(w, "reason");
                const cJSON *name = cJSON_GetObjectItemCaseSensitive(
                    cJSON_GetObjectItemCaseSensitive(it, "metadata"), "name");

                if (cJSON_IsString(reason) &&
                    (strcmp(reason->valuestring, "ErrImagePull") == 0 ||
                     strcmp(reason->valuestring, "ImagePullBackOff") == 0 ||
                     strcmp(reason->valuestring, "InvalidImageName") == 0 ||
                     strcmp(reason->valuestring, "ErrImageNeverPull") == 0)) {
                    const cJSON *img = cJSON_GetObjectItemCaseSensitive(cs, "image");

                    o->image_error = true;
                    if (sh >= 1 && rep >= 0)
                        o->pod_image_error[sh][rep] = true;
                    snprintf(o->image_error_msg, sizeof(o->image_error_msg),
                             "pod %s cannot get image %s (%s)",
                             cJSON_IsString(name) ? name->valuestring : "?",
                             cJSON_IsString(img) ? img->valuestring : rn->c->spec.image,
                             reason->valuestring);
                }
            }
        }
    }
    cJSON_Delete(list);
}

/* ---- status --------------------------------------------------------------------- */

static cJSON *condition(const cJSON *old_status, const char *type, bool on, const char *reason,
                        const char *message, int64_t generation)
{
    cJSON *c = cJSON_CreateObject();
    const cJSON *it;
    char ts[32];

    now_rfc3339(ts, sizeof(ts));
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(old_status, "conditions"))
    {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "type");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(it, "status");
        const cJSON *lt = cJSON_GetObjectItemCaseSensitive(it, "lastTransitionTime");

        if (cJSON_IsString(t) && strcmp(t->valuestring, type) == 0 && cJSON_IsString(s) &&
            strcmp(s->valuestring, on ? "True" : "False") == 0 && cJSON_IsString(lt))
            snprintf(ts, sizeof(ts), "%s", lt->valuestring);
    }
    cJSON_AddStringToObject(c, "type", type);
    cJSON_AddStringToObject(c, "status", on ? "True" : "False");
    cJSON_AddStringToObject(c, "reason", reason);
    cJSON_AddStringToObject(c, "message", message);
    cJSON_AddStringToObject(c, "lastTransitionTime", ts);
    cJSON_AddNumberToObject(c, "observedGeneration", (double)generation);
    return c;
}

static cJSON *write_shards(const struct run *rn, int n)
{
    cJSON *a = cJSON_CreateArray();

    for (int i = 1; i <= n; i++) {
        cJSON *s = cJSON_CreateArray();

        for (int r = 0; r < rn->c->spec.replicas; r++) {
            char url[400];

            chc_pod_url(rn->c, i, r, rn->ctl->cfg.cluster_domain, url, sizeof(url));
            cJSON_AddItemToArray(s, cJSON_CreateString(url));
        }
        cJSON_AddItemToArray(a, s);
    }
    return a;
}

static cJSON *drain_json(const struct chc_drain *d)
{
    cJSON *j = cJSON_CreateObject(), *sh;

    if (d->from == 0)
        return cJSON_CreateNull();
    sh = cJSON_AddArrayToObject(j, "shards");
    for (int i = d->from; i <= d->to; i++)
        cJSON_AddItemToArray(sh, cJSON_CreateNumber(i));
    cJSON_AddNumberToObject(j, "step", (double)d->step);
    cJSON_AddNumberToObject(j, "steps", (double)d->steps);
    cJSON_AddNumberToObject(j, "rowsMoved", (double)d->rows_moved);
    cJSON_AddStringToObject(j, "table", d->table);
    cJSON_AddStringToObject(j, "partition", d->partition);
    cJSON_AddStringToObject(j, "startedAt", d->started_at);
    cJSON_AddStringToObject(j, "emptySince", d->empty_since);
    cJSON_AddNumberToObject(j, "source", d->source);
    cJSON_AddNumberToObject(j, "part", d->part);
    cJSON_AddNumberToObject(j, "sub", d->sub);
    cJSON_AddNumberToObject(j, "subs", d->subs);
    return j;
}

/*
 * Write the status: the plan's phase and conditions, the shard counts, and
 * the progress fields (published shards, write topology, topology
 * generation, drain). write_n < 0 leaves writeShards as it is.
 */
static int write_status(struct run *rn, const struct chc_plan *p, const struct chc_observed *o,
                        int write_n, char *errstr, size_t size)
{
    const struct chc *c = rn->c;
    const cJSON *old = cJSON_GetObjectItemCaseSensitive(rn->obj, "status");
    cJSON *body = cJSON_CreateObject(), *st = cJSON_AddObjectToObject(body, "status");
    cJSON *conds;
    struct upm_k8s_error kerr;
    char path[384], selector[256], ts[32];
    int existing = 0, ready = 0;
    bool degraded = p->action == CHC_DEGRADED;
    bool draining = c->status.drain.from > 0;
    bool steady = p->action == CHC_NONE;
    const cJSON *old_phase = cJSON_GetObjectItemCaseSensitive(old, "phase");
    int rc = 0;

    for (int i = 1; i <= CHC_MAX_SHARDS; i++) {
        if (o->sts_exists[i])
            existing++;
        if (o->sts_exists[i] && o->sts_ready[i] >= c->spec.replicas &&
            i <= c->status.published_shards)
            ready++;
    }
    cJSON_AddNumberToObject(st, "observedGeneration", (double)c->generation);
    cJSON_AddStringToObject(st, "phase", p->phase);
    cJSON_AddNumberToObject(st, "shards", existing);
    cJSON_AddNumberToObject(st, "readyShards", ready);
    cJSON_AddNumberToObject(st, "publishedShards", c->status.published_shards);
    cJSON_AddNumberToObject(st, "topologyGeneration", (double)c->status.topology_generation);
    snprintf(selector, sizeof(selector), "upmon.io/cluster=%s", c->name);
    cJSON_AddStringToObject(st, "selector", selector);
    if (write_n >= 0)
        cJSON_AddItemToObject(st, "writeShards", write_shards(rn, write_n));
    cJSON_AddItemToObject(st, "drain", drain_json(&c->status.drain));
    cJSON_AddStringToObject(st, "currentImage", c->status.current_image);
    cJSON_AddStringToObject(st, "rejectedImage", c->status.rejected_image);
    if (!cJSON_IsString(old_phase) || strcmp(old_phase->valuestring, p->phase) != 0) {
        now_rfc3339(ts, sizeof(ts));
        cJSON_AddStringToObject(st, "lastTransitionTime", ts);
        upm_prom_set(upm_prom_series_get(rn->ctl->m_transition, (const char *[]){c->name}),
                     (double)upm_clock_real_ns() / 1e9);
    }
    conds = cJSON_AddArrayToObject(st, "conditions");
    cJSON_AddItemToArray(conds, condition(old, "Ready", steady, p->reason,
                                          steady ? p->message : "not every shard is serving yet",
                                          c->generation));
    cJSON_AddItemToArray(conds, condition(old, "Scaling", !steady && !degraded && !draining,
                                          p->reason, p->message, c->generation));
    cJSON_AddItemToArray(conds,
                         condition(old, "Draining", draining, draining ? p->reason : "NoDrain",
                                   draining ? p->message : "no shard is leaving", c->generation));
    cJSON_AddItemToArray(
        conds, condition(old, "Degraded", degraded, degraded ? p->reason : "AsExpected",
                         degraded ? p->message : "nothing blocks reconciling", c->generation));
    snprintf(path, sizeof(path),
             "/apis/upmon.io/v1alpha1/namespaces/%s/clickhouseclusters/%s/status", c->ns, c->name);
    if (upm_k8s_request(rn->k8s, "PATCH", path, body, 0, NULL, &kerr) != 0) {
        snprintf(errstr, size, "status: %.480s", kerr.message);
        rc = -1;
    }
    cJSON_Delete(body);
    upm_prom_set(upm_prom_series_get(rn->ctl->m_desired, (const char *[]){c->name}),
                 c->spec.shards);
    {
        static const char *const phases[] = {"Creating", "Running", "Scaling", "Draining",
                                             "Degraded"};

        for (size_t i = 0; i < sizeof(phases) / sizeof(phases[0]); i++)
            upm_prom_set(
                upm_prom_series_get(rn->ctl->m_phase, (const char *[]){c->name, phases[i]}),
                strcmp(p->phase, phases[i]) == 0 ? 1 : 0);
        upm_prom_set(upm_prom_series_get(rn->ctl->m_drain_active, (const char *[]){c->name}),
                     c->status.drain.from > 0 ? 1 : 0);
    }
    upm_prom_set(upm_prom_series_get(rn->ctl->m_ready, (const char *[]){c->name}), ready);
    return rc;
}

/* ---- actions -------------------------------------------------------------------- */

static int ensure_objects(struct run *rn, const struct chc_observed *o, int remote_n, char *errstr,
                          size_t size)
{
    struct chc *c = rn->c;
    const char *domain = rn->ctl->cfg.cluster_domain;
    char coll[256], name[160], hash[17];
    char *server_xml = chc_render_server_xml(c);
    char *remote_xml = chc_render_remote_servers_xml(c, remote_n, domain, rn->password);
    char *users_xml =
        chc_render_users_xml(c, rn->password, (const char *const *)rn->user_passwords);
    cJSON *obj;
    int top =
        c->spec.shards > c->status.published_shards ? c->spec.shards : c->status.published_shards;
    int rc = 0;

    chc_hash_hex(server_xml, hash);
    snprintf(coll, sizeof(coll), "/api/v1/namespaces/%s/configmaps", c->ns);
    snprintf(name, sizeof(name), "%s-config", c->name);
    obj = chc_render_configmap(c, server_xml);
    if (apply(rn, coll, name, obj, true, errstr, size) < 0)
        rc = -1;
    cJSON_Delete(obj);
    snprintf(coll, sizeof(coll), "/api/v1/namespaces/%s/secrets", c->ns);
    snprintf(name, sizeof(name), "%s-credentials", c->name);
    obj = chc_render_credentials(c, remote_xml, users_xml);
    if (rc == 0 && apply(rn, coll, name, obj, true, errstr, size) < 0)
        rc = -1;
    cJSON_Delete(obj);
    snprintf(coll, sizeof(coll), "/api/v1/namespaces/%s/services", c->ns);
    obj = chc_render_client_service(c);
    if (rc == 0 && apply(rn, coll, c->name, obj, false, errstr, size) < 0)
        rc = -1;
    cJSON_Delete(obj);
    for (int i = 1; rc == 0 && i <= top; i++) {
        int replicas = c->spec.replicas;

        chc_shard_name(c, i, name, sizeof(name));
        snprintf(coll, sizeof(coll), "/api/v1/namespaces/%s/services", c->ns);
        obj = chc_render_shard_service(c, i);
        if (apply(rn, coll, name, obj, false, errstr, size) < 0)
            rc = -1;
        cJSON_Delete(obj);
        /* Fewer replicas only through the shrink step, after their tables are gone. */
        if (o->sts_exists[i] && o->sts_replicas[i] > replicas)
            replicas = o->sts_replicas[i];
        snprintf(coll, sizeof(coll), "/apis/apps/v1/namespaces/%s/statefulsets", c->ns);
        obj =
            chc_render_statefulset(c, i, replicas, rn->canary && i == 1 ? c->spec.image : rn->image,
                                   rn->canary && i == 1 ? replicas - 1 : 0, domain, hash);
        if (rc == 0) {
            int r = apply(rn, coll, name, obj, true, errstr, size);

            if (r < 0)
                rc = -1;
            else if (r == 1) {
                char m[320];

                snprintf(m, sizeof(m), "created StatefulSet %s (shard %d, %d replicas)", name, i,
                         replicas);
                emit_event(rn, false, "ShardCreated", m);
            }
        }
        cJSON_Delete(obj);
    }
    free(server_xml);
    free(remote_xml);
    free(users_xml);
    return rc;
}

static void fill_targets(struct run *rn, int first, int last, struct upm_schema_targets *t)
{
    t->items = upm_calloc((size_t)(last - first + 1) * (size_t)rn->c->spec.replicas + 1,
                          sizeof(*t->items));
    t->count = 0;
    for (int i = first; i <= last; i++) {
        for (int r = 0; r < rn->c->spec.replicas; r++) {
            char url[400], s[16], rep[128];

            chc_pod_url(rn->c, i, r, rn->ctl->cfg.cluster_domain, url, sizeof(url));
            snprintf(s, sizeof(s), "%d", i);
            snprintf(rep, sizeof(rep), "%s-s%d-%d", rn->c->name, i, r);
            t->items[t->count].shard = upm_strdup(s);
            t->items[t->count].replica = upm_strdup(rep);
            t->items[t->count].url = upm_strdup(url);
            t->count++;
        }
    }
}

static int apply_schema(struct run *rn, int first, int last, char *errstr, size_t size)
{
    struct op_ch ch = {rn->c, rn->ctl->cfg.cluster_domain, rn->password,
                       rn->ctl->cfg.ch_timeout_ms};
    struct upm_ch_config base;
    struct upm_schema_targets targets = {0};
    char *report = NULL;
    size_t report_len = 0;
    FILE *rep = open_memstream(&report, &report_len);
    int rc;

    op_ch_base(&ch, &base);
    fill_targets(rn, first, last, &targets);
    rc = upm_schema_apply(rn->ctl->schema, &base, &targets, rep, errstr, size);
    if (rep)
        fclose(rep);
    if (report && report_len)
        upm_log_info("operator", "schema | cluster=%s report=\"%.*s\"", rn->c->name,
                     (int)(report_len > 400 ? 400 : report_len), report);
    free(report);
    upm_schema_targets_free(&targets);
    op_ch_base_free(&base);
    return rc;
}

/* Ask the kubelet to refresh the pods' projected config now rather than at
 * its next periodic sync: an annotation change triggers a pod sync. */
static void nudge_pods(struct run *rn, int last, const char *value)
{
    for (int i = 1; i <= last; i++) {
        for (int r = 0; r < rn->c->spec.replicas; r++) {
            char path[384];
            cJSON *patch = cJSON_CreateObject();
            cJSON *ann =
                cJSON_AddObjectToObject(cJSON_AddObjectToObject(patch, "metadata"), "annotations");
            struct upm_k8s_error kerr;

            cJSON_AddStringToObject(ann, "upmon.io/topology", value);
            snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods/%s-s%d-%d", rn->c->ns,
                     rn->c->name, i, r);
            if (upm_k8s_request(rn->k8s, "PATCH", path, patch, 0, NULL, &kerr) != 0 &&
                kerr.kind != UPM_K8S_ERR_NOT_FOUND)
                upm_log_warn("operator", "pod annotation failed | pod=%s error=\"%s\"", path,
                             kerr.message);
            cJSON_Delete(patch);
        }
    }
}

/* 1 when every server of shards 1..servers shows `want` shards in the cluster. */
static int topology_loaded(struct run *rn, int servers, int want, char *msg, size_t size)
{
    struct op_ch ch = {rn->c, rn->ctl->cfg.cluster_domain, rn->password, 10000};
    char sql[256];
    struct upm_buf out;

    upm_buf_init(&out, 0);
    snprintf(sql, sizeof(sql),
             "SELECT count(DISTINCT shard_num) FROM system.clusters WHERE cluster = '%s'",
             rn->c->spec.cluster_name);
    for (int i = 1; i <= servers; i++) {
        for (int r = 0; r < rn->c->spec.replicas; r++) {
            if (op_ch_run(&ch, i, r, sql, &out, msg, size) != 0) {
                upm_buf_free(&out);
                return 0;
            }
            if (atoi(out.data ? out.data : "0") != want) {
                snprintf(msg, size, "server %s-s%d-%d shows %d shards, not %d yet", rn->c->name, i,
                         r, atoi(out.data ? out.data : "0"), want);
                upm_buf_free(&out);
                return 0;
            }
        }
    }
    upm_buf_free(&out);
    return 1;
}

/*
 * ClickHouse 18.16 resolves a cluster's host names once, when remote_servers
 * is loaded, and caches every resolution: a pod that comes back with a new IP
 * stays unreachable through the Distributed tables (and for replication
 * fetches) until the cache is dropped and the clusters rebuilt. Compare each
 * server's system.clusters addresses with the pods' IPs and heal the servers
 * that disagree. Returns how many servers were stale.
 */
static int heal_addresses(struct run *rn, const struct chc_observed *o, int shards)
{
    struct op_ch ch = {rn->c, rn->ctl->cfg.cluster_domain, rn->password, 10000};
    char sql[256], msg[512];
    struct upm_buf out;
    int stale_servers = 0;

    upm_buf_init(&out, 0);
    snprintf(sql, sizeof(sql),
             "SELECT host_name, host_address FROM system.clusters WHERE cluster = '%s'",
             rn->c->spec.cluster_name);
    for (int i = 1; i <= shards; i++) {
        for (int r = 0; r < rn->c->spec.replicas; r++) {
            char *line, *save = NULL;
            bool stale = false;

            if (!o->pod_ip[i][r][0] || op_ch_run(&ch, i, r, sql, &out, msg, sizeof(msg)) != 0)
                continue;
            for (line = strtok_r(out.data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char host[256], addr[64];
                int sh, rep;

                if (sscanf(line, "%255[^\t]\t%63s", host, addr) != 2 ||
                    chc_parse_pod_name(rn->c, host, &sh, &rep) != 0 || !o->pod_ip[sh][rep][0])
                    continue;
                if (strcmp(addr, o->pod_ip[sh][rep]) != 0)
                    stale = true;
            }
            if (!stale)
                continue;
            stale_servers++;
            upm_log_info("operator",
                         "server routes to a stale address; dropping its DNS cache "
                         "| cluster=%s shard=%d replica=%d",
                         rn->c->name, i, r);
            if (op_ch_run(&ch, i, r, "SYSTEM DROP DNS CACHE", NULL, msg, sizeof(msg)) != 0 ||
                op_ch_run(&ch, i, r, "SYSTEM RELOAD CONFIG", NULL, msg, sizeof(msg)) != 0)
                upm_log_warn("operator", "address refresh failed | error=\"%s\"", msg);
        }
    }
    upm_buf_free(&out);
    return stale_servers;
}

static int drop_database(struct run *rn, int shard, int replica, char *msg, size_t size)
{
    struct op_ch ch = {rn->c, rn->ctl->cfg.cluster_domain, rn->password,
                       rn->ctl->cfg.ch_timeout_ms};
    char sql[256];

    /* Dropping a replicated table removes its replica from coordination. */
    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s", rn->c->spec.database);
    return op_ch_run(&ch, shard, replica, sql, NULL, msg, size);
}

static int delete_shard(struct run *rn, int shard, char *msg, size_t size)
{
    char path[384], name[160];
    struct upm_k8s_error kerr;

    chc_shard_name(rn->c, shard, name, sizeof(name));
    snprintf(path, sizeof(path), "/apis/apps/v1/namespaces/%s/statefulsets/%s", rn->c->ns, name);
    if (upm_k8s_request(rn->k8s, "DELETE", path, NULL, 0, NULL, &kerr) != 0 &&
        kerr.kind != UPM_K8S_ERR_NOT_FOUND) {
        snprintf(msg, size, "%s", kerr.message);
        return -1;
    }
    snprintf(path, sizeof(path), "/api/v1/namespaces/%s/services/%s", rn->c->ns, name);
    if (upm_k8s_request(rn->k8s, "DELETE", path, NULL, 0, NULL, &kerr) != 0 &&
        kerr.kind != UPM_K8S_ERR_NOT_FOUND) {
        snprintf(msg, size, "%s", kerr.message);
        return -1;
    }
    return 0;
}

static bool waited_too_long(struct run *rn, const char *key, int64_t limit_ms)
{
    int64_t now = upm_clock_mono_ns();

    if (strcmp(rn->memo->wait_key, key) != 0) {
        snprintf(rn->memo->wait_key, sizeof(rn->memo->wait_key), "%s", key);
        rn->memo->wait_since = now;
        return false;
    }
    return (now - rn->memo->wait_since) / 1000000 > limit_ms;
}

static void schema_key(struct run *rn, const struct chc_observed *o, int top, char *out,
                       size_t size)
{
    struct upm_buf b;

    upm_buf_init(&b, 0);
    upm_buf_printf(&b, "%lld/%d/%d", (long long)rn->c->generation, top, rn->c->spec.replicas);
    for (int i = 1; i <= top; i++)
        upm_buf_printf(&b, "/%d", o->sts_ready[i]);
    upm_buf_putc(&b, '\0');
    chc_hash_hex(b.data, out);
    (void)size;
    upm_buf_free(&b);
}

/*
 * Which image the StatefulSets run. An image change is tried on one pod
 * first (shard 1's last replica, a StatefulSet partition): only when that pod
 * is Ready does every server move; when it cannot get the image, the image is
 * recorded as rejected, the pod goes back to the running image and the
 * resource is Degraded until spec.image changes — the cluster is never rolled
 * onto an image that does not run.
 */
static void image_plan(struct run *rn, struct chc_observed *o)
{
    struct chc *c = rn->c;
    const int last = c->spec.replicas - 1;

    if (!o->sts_exists[1])
        snprintf(c->status.current_image, sizeof(c->status.current_image), "%s", c->spec.image);
    else if (!c->status.current_image[0])
        /* Not recorded (a status written before the field existed): what the
         * last shard runs — never the canary's shard unless it is the only one. */
        snprintf(c->status.current_image, sizeof(c->status.current_image), "%s",
                 o->sts_image[o->sts_highest][0] ? o->sts_image[o->sts_highest] : c->spec.image);
    rn->image = c->status.current_image;
    rn->canary = false;
    if (strcmp(c->spec.image, c->status.current_image) == 0) {
        c->status.rejected_image[0] = '\0';
        return;
    }
    if (strcmp(c->status.rejected_image, c->spec.image) != 0 && last >= 0 &&
        o->pod_image_error[1][last] && strcmp(o->sts_image[1], c->spec.image) == 0) {
        char m[320];

        snprintf(c->status.rejected_image, sizeof(c->status.rejected_image), "%s", c->spec.image);
        snprintf(m, sizeof(m),
                 "the canary pod %s-s1-%d could not get image %.120s; it goes "
                 "back to %.100s",
                 c->name, last, c->spec.image, c->status.current_image);
        emit_event(rn, true, "ImageRejected", m);
    }
    if (strcmp(c->status.rejected_image, c->spec.image) == 0) {
        o->image_error = true;
        snprintf(o->image_error_msg, sizeof(o->image_error_msg),
                 "image %.80s could not be pulled or run by the canary pod; every server "
                 "keeps %.80s",
                 c->spec.image, c->status.current_image);
        return;
    }
    if (o->sts_exists[1] && strcmp(o->sts_image[1], c->spec.image) == 0 && o->sts_updated[1] >= 1 &&
        o->sts_ready[1] >= c->spec.replicas && last >= 0 && o->pod_ready_on_spec_image[1][last]) {
        /* The canary runs: every server moves. */
        snprintf(c->status.current_image, sizeof(c->status.current_image), "%s", c->spec.image);
        rn->image = c->status.current_image;
        emit_event(rn, false, "ImageAccepted", "the canary pod runs the new image; rolling it out");
        return;
    }
    rn->canary = true;
    /* The canary pod's own pull error must not stop the plan before it is judged. */
    if (last >= 0 && o->pod_image_error[1][last]) {
        o->image_error = false;
    }
    if (o->sts_ready[1] >= c->spec.replicas)
        o->sts_ready[1] = c->spec.replicas - 1; /* not Ready until the canary is judged */
}

/*
 * One reconcile step for one resource. Returns the requeue delay in ms
 * (0 = at once, -1 = at the next resync or event).
 */
static int64_t reconcile(struct run *rn)
{
    struct op_controller *ctl = rn->ctl;
    struct chc *c = rn->c;
    struct chc_observed o;
    struct chc_plan p;
    char msg[512] = "", key[64];
    int top, remote_n, write_n = -1;
    int64_t requeue = -1;
    bool ok = true;

    memset(&o, 0, sizeof(o));
    o.secrets_ok = true;
    if (ensure_internal_password(rn, msg, sizeof(msg)) != 0) {
        o.secrets_ok = false;
        /* The status field is shorter than the message buffer: cut, on purpose. */
        snprintf(o.secrets_error, sizeof(o.secrets_error), "%.*s", (int)sizeof(o.secrets_error) - 1,
                 msg);
    }
    rn->user_passwords = upm_calloc(c->spec.nusers + 1, sizeof(char *));
    for (size_t i = 0; o.secrets_ok && i < c->spec.nusers; i++) {
        char pw[256];

        if (secret_value(rn, c->spec.users[i].secret_name, c->spec.users[i].secret_key, pw,
                         sizeof(pw), o.secrets_error, sizeof(o.secrets_error)) != 0)
            o.secrets_ok = false;
        else
            rn->user_passwords[i] = upm_strdup(pw);
    }
    observe(rn, &o);
    image_plan(rn, &o);
    top = c->spec.shards > c->status.published_shards ? c->spec.shards : c->status.published_shards;
    schema_key(rn, &o, top, key, sizeof(key));
    o.schema_ok = strcmp(key, rn->memo->schema_key) == 0;
    chc_plan_next(c, &o, &p);
    upm_log_debug("operator", "plan | cluster=%s action=%s shards=%d..%d message=\"%s\"", c->name,
                  chc_action_name(p.action), p.first, p.last, p.message);

    if (p.action == CHC_DEGRADED) {
        /* A refused image: put the canary's StatefulSet back on the running
         * image (image_plan chose it); nothing else changes. */
        if (strcmp(p.reason, "ImageUnavailable") == 0 && o.secrets_ok &&
            ensure_objects(rn, &o,
                           c->status.published_shards > 0 ? c->status.published_shards
                                                          : c->spec.shards,
                           msg, sizeof(msg)) != 0)
            upm_log_warn("operator", "restoring the running image failed | error=\"%s\"", msg);
        emit_event(rn, true, p.reason, p.message);
        write_status(rn, &p, &o, -1, msg, sizeof(msg));
        return ctl->cfg.resync_ms;
    }
    /* remote_servers: the published shards (all wanted ones at creation). */
    remote_n = c->status.published_shards > 0 ? c->status.published_shards : c->spec.shards;
    if (ensure_objects(rn, &o, remote_n, msg, sizeof(msg)) != 0) {
        emit_event(rn, true, "ApplyFailed", msg);
        return 5000;
    }

    switch (p.action) {
    case CHC_NONE:
        if (heal_addresses(rn, &o, c->status.published_shards) > 0) {
            /* The cluster DNS may still answer the old address for its cache
             * time: look again soon, and do not report Ready meanwhile. */
            p.reason = "AddressesRefreshed";
            p.phase = "Running";
            p.action = CHC_WAIT_READY;
            snprintf(p.message, sizeof(p.message),
                     "servers resolved a restarted pod's old address; their DNS cache was "
                     "dropped and remote_servers reloaded");
            emit_event(rn, false, p.reason, p.message);
            write_n = c->status.published_shards;
            requeue = 5000;
            break;
        }
        if (c->spec.retention_enabled &&
            (rn->memo->retention_at == 0 ||
             (upm_clock_mono_ns() - rn->memo->retention_at) / 1000000000LL >=
                 c->spec.retention_interval_s)) {
            struct op_ch ch = {c, ctl->cfg.cluster_domain, rn->password, ctl->cfg.ch_timeout_ms};
            struct upm_ch_config base;
            struct upm_schema_targets targets = {0};
            struct upm_schema_retention ret = {c->spec.retention_raw_days,
                                               c->spec.retention_fine_days,
                                               c->spec.retention_daily_days};
            struct upm_schema_dropped *dropped = NULL;
            size_t ndropped = 0;

            op_ch_base(&ch, &base);
            fill_targets(rn, 1, c->spec.shards, &targets);
            if (upm_schema_drop_expired(&base, &targets, &ret, upm_clock_real_ns() / 1000000000LL,
                                        false, NULL, &dropped, &ndropped, msg, sizeof(msg)) != 0)
                emit_event(rn, true, "RetentionFailed", msg);
            else if (ndropped > 0) {
                snprintf(msg, sizeof(msg), "dropped %zu expired partition(s)", ndropped);
                emit_event(rn, false, "RetentionApplied", msg);
            }
            upm_prom_inc(upm_prom_series_get(ctl->m_retention, (const char *[]){c->name}),
                         (double)ndropped);
            free(dropped);
            upm_schema_targets_free(&targets);
            op_ch_base_free(&base);
            rn->memo->retention_at = upm_clock_mono_ns();
        }
        if (strcmp(c->status.phase, "Running") != 0)
            emit_event(rn, false, "Ready", p.message);
        write_n = c->status.published_shards;
        break;
    case CHC_WAIT_READY: {
        char wk[32];

        snprintf(wk, sizeof(wk), "ready-%d-%lld", p.first, (long long)c->generation);
        if (waited_too_long(rn, wk, ctl->cfg.ready_timeout_ms)) {
            p.action = CHC_DEGRADED;
            p.phase = "Degraded";
            p.reason = "ShardNotReady";
            snprintf(p.message + strlen(p.message), sizeof(p.message) - strlen(p.message),
                     " after %llds; see kubectl describe pod for shard %d",
                     (long long)(ctl->cfg.ready_timeout_ms / 1000), p.first);
            emit_event(rn, true, p.reason, p.message);
        }
        requeue = 3000;
        break;
    }
    case CHC_APPLY_SCHEMA:
        if (apply_schema(rn, 1, p.last, msg, sizeof(msg)) != 0) {
            emit_event(rn, true, "SchemaFailed", msg);
            ok = false;
            requeue = 5000;
        } else {
            snprintf(rn->memo->schema_key, sizeof(rn->memo->schema_key), "%s", key);
            snprintf(msg, sizeof(msg), "schema verified on every server of shards 1..%d", p.last);
            emit_event(rn, false, "SchemaApplied", msg);
            requeue = 0;
        }
        break;
    case CHC_PUBLISH: {
        char gen[32], wk[32];

        /* The Secret already holds remote_n shards; publish p.last. */
        {
            char coll[256], name[160];
            char *remote_xml =
                chc_render_remote_servers_xml(c, p.last, ctl->cfg.cluster_domain, rn->password);
            char *users_xml =
                chc_render_users_xml(c, rn->password, (const char *const *)rn->user_passwords);
            cJSON *obj = chc_render_credentials(c, remote_xml, users_xml);

            snprintf(coll, sizeof(coll), "/api/v1/namespaces/%s/secrets", c->ns);
            snprintf(name, sizeof(name), "%s-credentials", c->name);
            if (apply(rn, coll, name, obj, true, msg, sizeof(msg)) < 0)
                ok = false;
            cJSON_Delete(obj);
            free(remote_xml);
            free(users_xml);
        }
        if (!ok) {
            requeue = 5000;
            break;
        }
        /* A new value each few seconds: a nudge that raced the kubelet's view
         * of the Secret must not be the last one. */
        snprintf(gen, sizeof(gen), "shards-%d-%lld", p.last,
                 (long long)(upm_clock_mono_ns() / 3000000000LL));
        nudge_pods(rn, p.last, gen);
        if (!topology_loaded(rn, p.last, p.last, msg, sizeof(msg))) {
            snprintf(wk, sizeof(wk), "publish-%d", p.last);
            if (waited_too_long(rn, wk, ctl->cfg.publish_timeout_ms)) {
                p.action = CHC_DEGRADED;
                p.phase = "Degraded";
                p.reason = "TopologyNotLoaded";
                snprintf(p.message, sizeof(p.message),
                         "%.200s; the servers have not reloaded "
                         "remote_servers (check the kubelet's ConfigMap/Secret sync)",
                         msg);
                emit_event(rn, true, p.reason, p.message);
            }
            requeue = 2000;
            break;
        }
        c->status.published_shards = p.last;
        c->status.topology_generation++;
        write_n = p.last;
        snprintf(msg, sizeof(msg), "topology generation %lld: %d shards serving and written to",
                 (long long)c->status.topology_generation, p.last);
        emit_event(rn, false, "TopologyPublished", msg);
        requeue = 0;
        break;
    }
    case CHC_START_DRAIN:
        c->status.drain.from = p.first;
        c->status.drain.to = p.last;
        now_rfc3339(c->status.drain.started_at, sizeof(c->status.drain.started_at));
        c->status.topology_generation++;
        write_n = p.first - 1;
        emit_event(rn, false, "DrainStarted", p.message);
        requeue = 0;
        break;
    case CHC_CANCEL_DRAIN: {
        struct op_ch ch = {c, ctl->cfg.cluster_domain, rn->password, ctl->cfg.ch_timeout_ms};

        for (int s = p.first; s <= p.last; s++)
            for (int r = 0; r < c->spec.replicas; r++)
                if (op_ch_run(&ch, s, r, "SYSTEM START MERGES", NULL, msg, sizeof(msg)) != 0)
                    upm_log_warn("operator", "start merges failed | error=\"%s\"", msg);
        memset(&c->status.drain, 0, sizeof(c->status.drain));
        c->status.topology_generation++;
        write_n = c->status.published_shards;
        emit_event(rn, false, p.reason, p.message);
        requeue = 0;
        break;
    }
    case CHC_DRAIN: {
        struct op_ch ch = {c, ctl->cfg.cluster_domain, rn->password, ctl->cfg.ch_timeout_ms};
        int64_t wait_ms = 0;
        enum op_drain_result r;

        if (!ctl->fence_ok(ctl->fence_opaque))
            return -1;
        r = op_drain_step(&ch, &c->status.drain, upm_clock_real_ns() / 1000000000LL,
                          ctl->cfg.drain_grace_ms, ctl->cfg.drain_chunk_rows, &wait_ms, msg,
                          sizeof(msg));
        upm_prom_set(upm_prom_series_get(ctl->m_drain_rows, (const char *[]){c->name}),
                     (double)c->status.drain.rows_moved);
        upm_prom_set(upm_prom_series_get(ctl->m_drain_step, (const char *[]){c->name}),
                     (double)c->status.drain.step);
        if (r == OP_DRAIN_ERROR) {
            emit_event(rn, true, "DrainStalled", msg);
            ok = false;
            requeue = 5000;
        } else if (r == OP_DRAIN_WAIT) {
            requeue = wait_ms > 0 ? wait_ms : 1000;
        } else if (r == OP_DRAIN_PROGRESS) {
            upm_log_info("operator", "drain | cluster=%s %s", c->name, msg);
            requeue = 0;
        } else {
            /* Empty: take the shards out of remote_servers, then remove them. */
            int staying = c->status.drain.from - 1;
            char coll[256], name[160];
            char *remote_xml =
                chc_render_remote_servers_xml(c, staying, ctl->cfg.cluster_domain, rn->password);
            char *users_xml =
                chc_render_users_xml(c, rn->password, (const char *const *)rn->user_passwords);
            cJSON *obj = chc_render_credentials(c, remote_xml, users_xml);

            snprintf(coll, sizeof(coll), "/api/v1/namespaces/%s/secrets", c->ns);
            snprintf(name, sizeof(name), "%s-credentials", c->name);
            if (apply(rn, coll, name, obj, true, msg, sizeof(msg)) < 0)
                ok = false;
            cJSON_Delete(obj);
            free(remote_xml);
            free(users_xml);
            if (ok) {
                char gen[48];

                snprintf(gen, sizeof(gen), "shards-%d-%lld", staying,
                         (long long)(upm_clock_mono_ns() / 3000000000LL));
                nudge_pods(rn, staying, gen);
                if (!topology_loaded(rn, staying, staying, msg, sizeof(msg))) {
                    requeue = 2000;
                    break;
                }
            }
            for (int s = c->status.drain.from; ok && s <= c->status.drain.to; s++) {
                for (int rep = 0; rep < c->spec.replicas; rep++)
                    if (drop_database(rn, s, rep, msg, sizeof(msg)) != 0)
                        upm_log_warn("operator",
                                     "drop database failed | shard=%d replica=%d "
                                     "error=\"%s\"",
                                     s, rep, msg);
                if (delete_shard(rn, s, msg, sizeof(msg)) != 0)
                    ok = false;
            }
            if (!ok) {
                requeue = 5000;
                break;
            }
            snprintf(msg, sizeof(msg), "shards %d..%d drained (%lld rows moved) and removed",
                     c->status.drain.from, c->status.drain.to,
                     (long long)c->status.drain.rows_moved);
            emit_event(rn, false, "DrainFinished", msg);
            c->status.published_shards = staying;
            c->status.topology_generation++;
            memset(&c->status.drain, 0, sizeof(c->status.drain));
            write_n = staying;
            requeue = 0;
        }
        break;
    }
    case CHC_SHRINK_REPLICAS: {
        char path[384], name[160];
        cJSON *patch;
        struct upm_k8s_error kerr;

        for (int r = c->spec.replicas; r < o.sts_replicas[p.first]; r++)
            if (drop_database(rn, p.first, r, msg, sizeof(msg)) != 0) {
                emit_event(rn, true, "ReplicaCleanupFailed", msg);
                ok = false;
            }
        if (!ok) {
            requeue = 5000;
            break;
        }
        chc_shard_name(c, p.first, name, sizeof(name));
        snprintf(path, sizeof(path), "/apis/apps/v1/namespaces/%s/statefulsets/%s", c->ns, name);
        patch = cJSON_CreateObject();
        cJSON_AddNumberToObject(cJSON_AddObjectToObject(patch, "spec"), "replicas",
                                c->spec.replicas);
        if (upm_k8s_request(rn->k8s, "PATCH", path, patch, 0, NULL, &kerr) != 0) {
            snprintf(msg, sizeof(msg), "%s", kerr.message);
            ok = false;
        } else {
            emit_event(rn, false, p.reason, p.message);
        }
        cJSON_Delete(patch);
        requeue = 1000;
        break;
    }
    case CHC_REMOVE_UNPUBLISHED:
        for (int s = p.first; s <= p.last; s++)
            if (delete_shard(rn, s, msg, sizeof(msg)) != 0)
                ok = false;
        emit_event(rn, !ok, p.reason, ok ? p.message : msg);
        requeue = ok ? 0 : 5000;
        break;
    case CHC_DEGRADED:
        break;
    }
    if (write_status(rn, &p, &o, write_n, msg, sizeof(msg)) != 0) {
        upm_log_warn("operator", "status not written | cluster=%s error=\"%s\"", c->name, msg);
        ok = false;
        if (requeue < 0 || requeue > 2000)
            requeue = 2000;
    }
    upm_prom_inc(upm_prom_series_get(ctl->m_reconciles, (const char *[]){ok ? "ok" : "error"}), 1);
    if (!ok)
        upm_prom_inc(upm_prom_series_get(ctl->m_errors, (const char *[]){c->name}), 1);
    return requeue;
}

static int64_t reconcile_all(struct op_controller *ctl, struct upm_k8s_client *k8s)
{
    char path[256], err[512];
    cJSON *list = NULL;
    const cJSON *it;
    struct upm_k8s_error kerr;
    int64_t next = ctl->cfg.resync_ms;

    snprintf(path, sizeof(path), "/apis/upmon.io/v1alpha1/namespaces/%s/clickhouseclusters",
             ctl->ns);
    if (upm_k8s_request(k8s, "GET", path, NULL, 0, &list, &kerr) != 0) {
        upm_log_error("operator", "listing clusters failed | error=\"%s\"", kerr.message);
        return 5000;
    }
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(list, "items"))
    {
        struct chc c;
        struct run rn;
        int64_t rq;

        if (ctl->stop || !ctl->fence_ok(ctl->fence_opaque))
            break;
        memset(&rn, 0, sizeof(rn));
        if (chc_parse(it, &c, err, sizeof(err)) != 0) {
            upm_log_error("operator", "invalid ClickHouseCluster | error=\"%s\"", err);
            continue;
        }
        if (c.deleting) {
            chc_free(&c);
            continue;
        }
        rn.ctl = ctl;
        rn.k8s = k8s;
        rn.c = &c;
        rn.obj = (cJSON *)it;
        rn.memo = memo_for(ctl, c.uid);
        rq = reconcile(&rn);
        if (rq >= 0 && rq < next)
            next = rq;
        if (rn.user_passwords) {
            for (size_t i = 0; i < c.spec.nusers; i++)
                free(rn.user_passwords[i]);
            free(rn.user_passwords);
        }
        memset(rn.password, 0, sizeof(rn.password));
        chc_free(&c);
    }
    cJSON_Delete(list);
    return next;
}

static void *loop_main(void *arg)
{
    struct op_controller *ctl = arg;
    char err[512];
    struct upm_k8s_client *k8s = NULL;

    while (!ctl->stop) {
        int64_t next;

        if (!k8s) {
            k8s = upm_k8s_client_create(&ctl->k8s_cfg, NULL, err, sizeof(err));
            if (!k8s) {
                upm_log_error("operator", "client failed | error=\"%s\"", err);
                upm_clock_sleep_ms(5000, &ctl->stop);
                continue;
            }
        }
        pthread_mutex_lock(&ctl->mu);
        ctl->dirty = false;
        pthread_mutex_unlock(&ctl->mu);
        next = ctl->fence_ok(ctl->fence_opaque) ? reconcile_all(ctl, k8s) : 1000;
        if (next == 0)
            continue;
        pthread_mutex_lock(&ctl->mu);
        if (!ctl->dirty && !ctl->stop) {
            struct timespec ts;

            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += next / 1000;
            ts.tv_nsec += (next % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&ctl->cond, &ctl->mu, &ts);
        }
        pthread_mutex_unlock(&ctl->mu);
    }
    upm_k8s_client_destroy(k8s);
    return NULL;
}

struct op_controller *op_controller_create(const struct op_config *cfg,
                                           const struct upm_k8s_config *k8s_cfg,
                                           struct upm_prom_registry *reg, const char *identity,
                                           char *errstr, size_t errstr_size)
{
    struct op_controller *ctl = upm_calloc(1, sizeof(*ctl));
    pthread_condattr_t ca;
    const char *ns = cfg->ns && cfg->ns[0] ? cfg->ns : getenv("POD_NAMESPACE");

    if (!ns || !*ns) {
        snprintf(errstr, errstr_size,
                 "operator.namespace: empty and $POD_NAMESPACE is not set (which namespace?)");
        free(ctl);
        return NULL;
    }
    ctl->cfg = *cfg;
    ctl->k8s_cfg = *k8s_cfg;
    snprintf(ctl->ns, sizeof(ctl->ns), "%s", ns);
    snprintf(ctl->identity, sizeof(ctl->identity), "%s", identity);
    ctl->schema = upm_schema_set_embedded(errstr, errstr_size);
    if (!ctl->schema) {
        free(ctl);
        return NULL;
    }
    pthread_mutex_init(&ctl->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&ctl->cond, &ca);
    pthread_condattr_destroy(&ca);
    snprintf(ctl->watches[0].path, sizeof(ctl->watches[0].path),
             "/apis/upmon.io/v1alpha1/namespaces/%s/clickhouseclusters", ctl->ns);
    snprintf(ctl->watches[1].path, sizeof(ctl->watches[1].path),
             "/apis/apps/v1/namespaces/%s/statefulsets", ctl->ns);
    if (reg) {
        static const char *const cl[] = {"cluster"};
        static const char *const res[] = {"result"};

        ctl->m_reconciles = upm_prom_counter(reg, "upmon_operator_reconciles_total",
                                             "Reconcile steps by result.", 1, res);
        ctl->m_errors = upm_prom_counter(reg, "upmon_operator_reconcile_errors_total",
                                         "Reconcile steps that failed, per cluster.", 1, cl);
        ctl->m_desired = upm_prom_gauge(reg, "upmon_operator_shards_desired",
                                        "spec.shards of the cluster.", 1, cl);
        ctl->m_ready = upm_prom_gauge(reg, "upmon_operator_shards_ready",
                                      "Published shards with every replica Ready.", 1, cl);
        ctl->m_transition = upm_prom_gauge(reg, "upmon_operator_last_transition_timestamp_seconds",
                                           "When the cluster's phase last changed.", 1, cl);
        ctl->m_drain_rows = upm_prom_gauge(reg, "upmon_operator_drain_rows_moved",
                                           "Rows moved by the current drain.", 1, cl);
        ctl->m_drain_step =
            upm_prom_gauge(reg, "upmon_operator_drain_steps_done",
                           "(table, partition) units the current drain finished.", 1, cl);
        ctl->m_retention =
            upm_prom_counter(reg, "upmon_operator_retention_partitions_dropped_total",
                             "Expired partitions dropped by retention.", 1, cl);
        {
            static const char *const cp[] = {"cluster", "phase"};

            ctl->m_phase = upm_prom_gauge(reg, "upmon_operator_cluster_phase",
                                          "1 for the cluster's current phase (Creating, Running, "
                                          "Scaling, Draining, Degraded), 0 for the others.",
                                          2, cp);
        }
        ctl->m_drain_active =
            upm_prom_gauge(reg, "upmon_operator_drain_active",
                           "1 while shards of the cluster are being drained.", 1, cl);
    }
    return ctl;
}

int op_controller_watch(struct op_controller *ctl)
{
    for (int i = 0; i < 2; i++) {
        pthread_attr_t attr;

        ctl->watches[i].ctl = ctl;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&ctl->watches[i].thread, &attr, watch_main, &ctl->watches[i]) != 0) {
            pthread_attr_destroy(&attr);
            return -1;
        }
        pthread_attr_destroy(&attr);
        ctl->watching = true;
    }
    return 0;
}

int op_controller_start(struct op_controller *ctl, bool (*fence_ok)(void *), void *fence_opaque)
{
    if (ctl->started)
        return 0;
    ctl->stop = 0;
    ctl->fence_ok = fence_ok;
    ctl->fence_opaque = fence_opaque;
    if (pthread_create(&ctl->loop, NULL, loop_main, ctl) != 0)
        return -1;
    ctl->started = true;
    upm_log_info("operator", "leader work started | namespace=%s", ctl->ns);
    return 0;
}

int op_controller_stop(struct op_controller *ctl, int64_t timeout_ms)
{
    struct timespec ts;

    if (!ctl || !ctl->started)
        return 0;
    pthread_mutex_lock(&ctl->mu);
    ctl->stop = 1;
    pthread_cond_broadcast(&ctl->cond);
    pthread_mutex_unlock(&ctl->mu);
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    /* A reconcile step in flight (a ClickHouse statement) may outlast the
     * bound: then the elector aborts the process rather than keep a second
     * leader working. */
    if (pthread_timedjoin_np(ctl->loop, NULL, &ts) != 0)
        return -1;
    ctl->started = false;
    memset(ctl->memos, 0, sizeof(ctl->memos));
    upm_log_info("operator", "leader work stopped");
    return 0;
}

void op_controller_destroy(struct op_controller *ctl)
{
    if (!ctl)
        return;
    if (op_controller_stop(ctl, 60000) != 0)
        upm_fatal("leader work did not stop");
    /* The watch threads end with the process (a watch may be blocked in a
     * long request); they only read ctl->quit and kick. */
    ctl->quit = 1;
    upm_schema_set_destroy(ctl->schema);
    ctl->schema = NULL;
    if (ctl->watching)
        return; /* the detached watch threads may still read it; the process is ending */
    pthread_mutex_destroy(&ctl->mu);
    pthread_cond_destroy(&ctl->cond);
    free(ctl);
}
