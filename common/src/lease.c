#include "upmon/lease.h"
#include "upmon/errstr.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "upmon/alloc.h"
#include "upmon/buf.h"
#include "upmon/clock.h"
#include "upmon/log.h"

#define LEASE_F(field) offsetof(struct upm_lease_config, field)

const struct upm_config_key upm_lease_config_keys[] = {
    {"enabled", UPM_CFG_BOOL, LEASE_F(enabled), "true", 1, 0, NULL,
     "Take part in leader election (false: never lead).", 0},
    {"namespace", UPM_CFG_STRING, LEASE_F(ns), "default", 1, 0, NULL,
     "Namespace of the Lease object.", 0},
    {"name", UPM_CFG_STRING, LEASE_F(name), "upmon", 1, 0, NULL, "Name of the Lease object.", 0},
    {"identity", UPM_CFG_STRING, LEASE_F(identity), "", 1, 0, NULL,
     "Holder identity; empty = $POD_NAME, else the host name.", 0},
    {"lease_duration", UPM_CFG_DURATION_MS, LEASE_F(lease_duration_ms), "15s", 1000, 3600000, NULL,
     "How long a lease is valid without renewal (whole seconds).", 0},
    {"renew_deadline", UPM_CFG_DURATION_MS, LEASE_F(renew_deadline_ms), "10s", 1, 3600000, NULL,
     "A leader that has not renewed for this long stops leader work.", 0},
    {"retry_period", UPM_CFG_DURATION_MS, LEASE_F(retry_period_ms), "2s", 1, 3600000, NULL,
     "Interval between acquire/renew attempts.", 0},
};
const size_t upm_lease_config_nkeys =
    sizeof(upm_lease_config_keys) / sizeof(upm_lease_config_keys[0]);

static bool dns1123(const char *s, size_t max)
{
    size_t l = s ? strlen(s) : 0;

    if (l == 0 || l > max)
        return false;
    for (size_t i = 0; i < l; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && !(c == '-' || (c == '.' && max > 63)))
            return false;
        if (!alnum && (i == 0 || i == l - 1))
            return false;
    }
    return true;
}

int upm_lease_config_validate(const struct upm_lease_config *cfg, char *errstr, size_t errstr_size)
{
    if (!dns1123(cfg->ns, 63)) {
        upm_errstr_set(errstr, errstr_size, "lease.namespace: \"%s\" is not a DNS-1123 label",
                       cfg->ns ? cfg->ns : "");
        return -1;
    }
    if (!dns1123(cfg->name, 253)) {
        upm_errstr_set(errstr, errstr_size, "lease.name: \"%s\" is not a DNS-1123 subdomain",
                       cfg->name ? cfg->name : "");
        return -1;
    }
    if (cfg->lease_duration_ms < 1000 || cfg->lease_duration_ms % 1000 != 0) {
        upm_errstr_set(errstr, errstr_size,
                       "lease.lease_duration: %lld ms is not a whole number of seconds",
                       (long long)cfg->lease_duration_ms);
        return -1;
    }
    if (cfg->retry_period_ms <= 0) {
        upm_errstr_set(errstr, errstr_size, "lease.retry_period must be positive");
        return -1;
    }
    if (!(cfg->lease_duration_ms > cfg->renew_deadline_ms)) {
        upm_errstr_set(
            errstr, errstr_size,
            "lease.lease_duration (%lld ms) must be greater than lease.renew_deadline (%lld "
            "ms)",
            (long long)cfg->lease_duration_ms, (long long)cfg->renew_deadline_ms);
        return -1;
    }
    /* Integer form of renew_deadline > 1.2 × retry_period. */
    if (!(cfg->renew_deadline_ms * 5 > cfg->retry_period_ms * 6)) {
        upm_errstr_set(
            errstr, errstr_size,
            "lease.renew_deadline (%lld ms) must be greater than 1.2 x lease.retry_period "
            "(%lld ms)",
            (long long)cfg->renew_deadline_ms, (long long)cfg->retry_period_ms);
        return -1;
    }
    if (cfg->identity && strlen(cfg->identity) > 253) {
        upm_errstr_set(errstr, errstr_size, "lease.identity: longer than 253 bytes");
        return -1;
    }
    return 0;
}

void upm_lease_format_time(int64_t real_ns, char *out, size_t out_size)
{
    time_t secs = (time_t)(real_ns / UPM_NS_PER_S);
    long us = (long)((real_ns % UPM_NS_PER_S) / 1000);
    struct tm tm;

    if (us < 0) {
        us += 1000000;
        secs -= 1;
    }
    if (out_size == 0)
        return;
    out[0] = '\0';
    gmtime_r(&secs, &tm);
    /* strftime for the date: a -O3 build proves no bound for tm's fields and, with
     * -Werror, fails on one snprintf of them (format-truncation). */
    size_t n = strftime(out, out_size, "%Y-%m-%dT%H:%M:%S", &tm);
    if (n == 0)
        return;
    snprintf(out + n, out_size - n, ".%06ldZ", us);
}

/* ------------------------------------------------------------------------ */

/* The spec fields we compare to detect "the record changed". */
struct record {
    char *holder; /* "" when released or unset */
    int64_t duration_s;
    char *acquire;
    char *renew;
    int64_t transitions;
    char *rv;
};

static void record_free(struct record *r)
{
    free(r->holder);
    free(r->acquire);
    free(r->renew);
    free(r->rv);
    memset(r, 0, sizeof(*r));
}

static char *str_field(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    return upm_strdup(cJSON_IsString(v) ? v->valuestring : "");
}

static int64_t int_field(const cJSON *o, const char *name, int64_t dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e12)
        return dflt;
    return (int64_t)v->valuedouble;
}

static void record_from_json(const cJSON *lease, struct record *r)
{
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(lease, "spec");
    const cJSON *md = cJSON_GetObjectItemCaseSensitive(lease, "metadata");

    r->holder = str_field(spec, "holderIdentity");
    r->duration_s = int_field(spec, "leaseDurationSeconds", -1);
    r->acquire = str_field(spec, "acquireTime");
    r->renew = str_field(spec, "renewTime");
    r->transitions = int_field(spec, "leaseTransitions", 0);
    r->rv = str_field(md, "resourceVersion");
}

static bool record_equal(const struct record *a, const struct record *b)
{
    return a->rv && b->rv && strcmp(a->rv, b->rv) == 0 && strcmp(a->holder, b->holder) == 0 &&
           a->duration_s == b->duration_s && strcmp(a->acquire, b->acquire) == 0 &&
           strcmp(a->renew, b->renew) == 0 && a->transitions == b->transitions;
}

struct upm_lease {
    struct upm_lease_config cfg; /* strings owned */
    struct upm_k8s_client *client;
    struct upm_lease_callbacks cb;
    struct upm_lease_clock clock;
    char *path;      /* .../namespaces/NS/leases */
    char *item_path; /* .../namespaces/NS/leases/NAME */

    /* Elector thread only. */
    cJSON *cached;           /* last Lease object read or written */
    struct record observed;  /* its record */
    int64_t observed_mono;   /* when we saw the record change */
    int64_t last_renew_mono; /* start of our last successful write */
    unsigned rng;

    /* Any thread. */
    atomic_bool leading;
    atomic_llong leader_until; /* mono ns; 0 when not leading */
    atomic_ullong fenced;

    struct upm_prom_series *m_leader, *m_transitions, *m_age, *m_fenced;

    pthread_t thread;
    bool running;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool stop; /* guarded by mu */
};

static int64_t now_mono(const struct upm_lease *e)
{
    return e->clock.mono_ns ? e->clock.mono_ns(e->clock.opaque) : upm_clock_mono_ns();
}

static int64_t now_real(const struct upm_lease *e)
{
    return e->clock.real_ns ? e->clock.real_ns(e->clock.opaque) : upm_clock_real_ns();
}

static char *default_identity(void)
{
    const char *pod = getenv("POD_NAME");
    char host[256];

    if (pod && pod[0])
        return upm_strdup(pod);
    if (gethostname(host, sizeof(host)) == 0) {
        host[sizeof(host) - 1] = '\0';
        if (host[0])
            return upm_strdup(host);
    }
    return upm_strdup("unknown");
}

struct upm_lease *upm_lease_create(const struct upm_lease_config *cfg,
                                   struct upm_k8s_client *client, struct upm_prom_registry *reg,
                                   const struct upm_lease_callbacks *cb,
                                   const struct upm_lease_clock *clock, char *errstr,
                                   size_t errstr_size)
{
    struct upm_lease *e;
    struct upm_buf b;

    if (upm_lease_config_validate(cfg, errstr, errstr_size) != 0)
        return NULL;
    if (!client || !cb || !cb->start_leading || !cb->stop_leading) {
        upm_errstr_set(errstr, errstr_size, "lease: client and both callbacks are required");
        return NULL;
    }
    e = upm_calloc(1, sizeof(*e));
    e->cfg = *cfg;
    e->cfg.ns = upm_strdup(cfg->ns);
    e->cfg.name = upm_strdup(cfg->name);
    e->cfg.identity =
        cfg->identity && cfg->identity[0] ? upm_strdup(cfg->identity) : default_identity();
    e->client = client;
    e->cb = *cb;
    if (clock)
        e->clock = *clock;
    upm_buf_init(&b, 0);
    upm_buf_printf(&b, "/apis/coordination.k8s.io/v1/namespaces/%s/leases", e->cfg.ns);
    e->path = upm_buf_steal(&b, NULL);
    upm_buf_printf(&b, "%s/%s", e->path, e->cfg.name);
    e->item_path = upm_buf_steal(&b, NULL);
    e->rng = (unsigned)(now_mono(e) ^ (int64_t)getpid());
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cond, NULL);
    if (reg) {
        e->m_leader = upm_prom_series_get(
            upm_prom_gauge(reg, "upmon_leader", "1 while this replica leads, else 0.", 0, NULL),
            NULL);
        e->m_transitions =
            upm_prom_series_get(upm_prom_counter(reg, "upmon_leader_transitions_total",
                                                 "Times this replica started leading.", 0, NULL),
                                NULL);
        e->m_age = upm_prom_series_get(
            upm_prom_gauge(reg, "upmon_leader_last_renew_age_seconds",
                           "Leader: seconds since its last successful renewal began; standby: "
                           "since it last saw the Lease change.",
                           0, NULL),
            NULL);
        e->m_fenced = upm_prom_series_get(
            upm_prom_counter(reg, "upmon_leader_fenced_total",
                             "Times leader work was stopped because the renew deadline passed.", 0,
                             NULL),
            NULL);
        upm_prom_set(e->m_leader, 0);
    }
    return e;
}

bool upm_lease_is_leader(const struct upm_lease *e)
{
    return atomic_load(&((struct upm_lease *)e)->leading);
}

int64_t upm_lease_leader_until_ns(const struct upm_lease *e)
{
    return atomic_load(&((struct upm_lease *)e)->leader_until);
}

bool upm_lease_fence_ok(const struct upm_lease *e)
{
    int64_t until = upm_lease_leader_until_ns(e);

    return upm_lease_is_leader(e) && until > 0 && now_mono(e) < until;
}

const char *upm_lease_identity(const struct upm_lease *e)
{
    return e->cfg.identity;
}

uint64_t upm_lease_fenced_count(const struct upm_lease *e)
{
    return atomic_load(&((struct upm_lease *)e)->fenced);
}

/* Stop leader work, bounded so that it ends before others may take over. */
static void stop_leading(struct upm_lease *e, const char *why)
{
    int64_t bound_ms = (e->cfg.lease_duration_ms - e->cfg.renew_deadline_ms) / 2;
    int64_t t0;

    if (!atomic_load(&e->leading))
        return;
    /* Clear the fence first: work that checks it stops even before the
     * callback runs. */
    atomic_store(&e->leader_until, 0);
    atomic_store(&e->leading, false);
    upm_prom_set(e->m_leader, 0);
    upm_log_info("lease", "stopping leader work | lease=%s/%s identity=%s reason=%s", e->cfg.ns,
                 e->cfg.name, e->cfg.identity, why);
    t0 = now_mono(e);
    if (e->cb.stop_leading(e->cb.opaque, bound_ms) != 0) {
        upm_log_error("lease",
                      "leader work did not stop within the bound: exiting before the lease can "
                      "expire | bound_ms=%lld",
                      (long long)bound_ms);
        upm_fatal("lease: leader work did not stop");
    }
    upm_log_info("lease", "stopped leading | lease=%s/%s identity=%s stop_ms=%lld", e->cfg.ns,
                 e->cfg.name, e->cfg.identity, (long long)((now_mono(e) - t0) / UPM_NS_PER_MS));
}

static void fence(struct upm_lease *e, int64_t now)
{
    atomic_fetch_add(&e->fenced, 1);
    upm_prom_inc(e->m_fenced, 1);
    upm_log_error("lease",
                  "renew deadline passed without a successful renewal: fencing leader work | "
                  "lease=%s/%s identity=%s since_renew_ms=%lld renew_deadline_ms=%lld",
                  e->cfg.ns, e->cfg.name, e->cfg.identity,
                  (long long)((now - e->last_renew_mono) / UPM_NS_PER_MS),
                  (long long)e->cfg.renew_deadline_ms);
    stop_leading(e, "fenced");
}

/* Remember a record just read or written; restart the expiry timer when it
 * differs from the one we saw before. Takes ownership of obj. */
static void observe(struct upm_lease *e, cJSON *obj, int64_t now)
{
    struct record r = {0};

    record_from_json(obj, &r);
    if (!record_equal(&r, &e->observed)) {
        record_free(&e->observed);
        e->observed = r;
        e->observed_mono = now;
    } else {
        record_free(&r);
    }
    cJSON_Delete(e->cached);
    e->cached = obj;
}

static void forget(struct upm_lease *e)
{
    cJSON_Delete(e->cached);
    e->cached = NULL;
    record_free(&e->observed);
}

static void set_spec(cJSON *spec, const char *key, cJSON *v)
{
    if (cJSON_HasObjectItem(spec, key))
        cJSON_ReplaceItemInObjectCaseSensitive(spec, key, v);
    else
        cJSON_AddItemToObject(spec, key, v);
}

/* A Lease object from base (copied; NULL = new) with our record in it. */
static cJSON *build_lease(struct upm_lease *e, const cJSON *base, const char *holder,
                          int64_t duration_s, const char *acquire, const char *renew,
                          int64_t transitions)
{
    cJSON *o, *md, *spec;

    if (base) {
        o = cJSON_Duplicate(base, true);
    } else {
        o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "apiVersion", "coordination.k8s.io/v1");
        cJSON_AddStringToObject(o, "kind", "Lease");
        md = cJSON_AddObjectToObject(o, "metadata");
        cJSON_AddStringToObject(md, "name", e->cfg.name);
        cJSON_AddStringToObject(md, "namespace", e->cfg.ns);
    }
    if (!o)
        upm_fatal("cJSON");
    spec = cJSON_GetObjectItemCaseSensitive(o, "spec");
    if (!cJSON_IsObject(spec)) {
        cJSON_DeleteItemFromObjectCaseSensitive(o, "spec");
        spec = cJSON_AddObjectToObject(o, "spec");
    }
    set_spec(spec, "holderIdentity", cJSON_CreateString(holder));
    set_spec(spec, "leaseDurationSeconds", cJSON_CreateNumber((double)duration_s));
    set_spec(spec, "acquireTime", cJSON_CreateString(acquire));
    set_spec(spec, "renewTime", cJSON_CreateString(renew));
    set_spec(spec, "leaseTransitions", cJSON_CreateNumber((double)transitions));
    return o;
}

enum attempt {
    ATTEMPT_ACQUIRED, /* we hold the lease now */
    ATTEMPT_HELD,     /* someone else holds a valid lease */
    ATTEMPT_FAILED,   /* error or conflict: try again */
};

static void log_k8s_error(const struct upm_lease *e, const char *what,
                          const struct upm_k8s_error *err)
{
    /* Conflicts are the protocol working; everything else is worth a warning. */
    if (err->kind == UPM_K8S_ERR_CONFLICT)
        upm_log_info("lease", "%s: conflict, someone else wrote first; re-reading | lease=%s/%s",
                     what, e->cfg.ns, e->cfg.name);
    else
        upm_log_warn("lease", "%s failed | lease=%s/%s kind=%s retriable=%d error=\"%s\"", what,
                     e->cfg.ns, e->cfg.name, upm_k8s_errkind_name(err->kind), err->retriable,
                     err->message);
}

/* Per-request timeout: the client's default, or what is left until deadline
 * (mono ns; 0 = none) so that a hung request cannot carry a leader past its
 * renew deadline unnoticed. */
static int64_t request_timeout(const struct upm_lease *e, int64_t deadline)
{
    int64_t left;

    if (deadline == 0)
        return 0;
    left = (deadline - now_mono(e)) / UPM_NS_PER_MS;
    return left < 1 ? 1 : left;
}

static enum attempt try_acquire_or_renew(struct upm_lease *e, int64_t deadline,
                                         int64_t *write_start)
{
    struct upm_k8s_error err;
    cJSON *got = NULL;
    cJSON *obj = NULL;
    cJSON *resp = NULL;
    char ts[40];
    int64_t now;
    int64_t dur_s = e->cfg.lease_duration_ms / 1000;
    const struct record *r;
    bool ours;
    enum attempt res = ATTEMPT_FAILED;

    upm_lease_format_time(now_real(e), ts, sizeof(ts));
    if (upm_k8s_request(e->client, "GET", e->item_path, NULL, request_timeout(e, deadline), &got,
                        &err) != 0) {
        if (err.kind != UPM_K8S_ERR_NOT_FOUND) {
            log_k8s_error(e, "get lease", &err);
            goto out;
        }
        forget(e);
        obj = build_lease(e, NULL, e->cfg.identity, dur_s, ts, ts, 0);
        *write_start = now_mono(e);
        if (upm_k8s_request(e->client, "POST", e->path, obj, request_timeout(e, deadline), &resp,
                            &err) != 0) {
            log_k8s_error(e, "create lease", &err);
            goto out;
        }
        upm_log_info("lease", "created lease | lease=%s/%s identity=%s", e->cfg.ns, e->cfg.name,
                     e->cfg.identity);
        observe(e, resp ? resp : cJSON_Duplicate(obj, true), now_mono(e));
        resp = NULL;
        res = ATTEMPT_ACQUIRED;
        goto out;
    }
    if (!cJSON_IsObject(got)) {
        upm_log_warn("lease", "get lease: response is not an object | lease=%s/%s", e->cfg.ns,
                     e->cfg.name);
        goto out;
    }
    now = now_mono(e);
    observe(e, got, now);
    got = NULL;
    r = &e->observed;
    ours = strcmp(r->holder, e->cfg.identity) == 0;
    if (r->holder[0] && !ours) {
        /* The record's own duration: the holder decides how long its lease
         * lasts. A record without one gets ours. */
        int64_t d = r->duration_s >= 0 ? r->duration_s : dur_s;
        if (now < e->observed_mono + d * UPM_NS_PER_S) {
            res = ATTEMPT_HELD;
            goto out;
        }
        upm_log_info("lease",
                     "lease expired by our clock: taking over | lease=%s/%s holder=%s "
                     "unchanged_ms=%lld duration_s=%lld",
                     e->cfg.ns, e->cfg.name, r->holder,
                     (long long)((now - e->observed_mono) / UPM_NS_PER_MS), (long long)d);
    }
    if (ours && atomic_load(&e->leading))
        obj = build_lease(e, e->cached, e->cfg.identity, dur_s, r->acquire[0] ? r->acquire : ts, ts,
                          r->transitions);
    else
        obj = build_lease(e, e->cached, e->cfg.identity, dur_s, ts, ts,
                          ours ? r->transitions : r->transitions + 1);
    *write_start = now_mono(e);
    /* PUT carries metadata.resourceVersion from the object just read: the
     * server rejects it with 409 if anyone wrote in between. */
    if (upm_k8s_request(e->client, "PUT", e->item_path, obj, request_timeout(e, deadline), &resp,
                        &err) != 0) {
        log_k8s_error(e, ours ? "renew lease" : "take over lease", &err);
        goto out;
    }
    observe(e, resp ? resp : cJSON_Duplicate(obj, true), now_mono(e));
    resp = NULL;
    res = ATTEMPT_ACQUIRED;
out:
    cJSON_Delete(got);
    cJSON_Delete(obj);
    cJSON_Delete(resp);
    return res;
}

static int64_t jittered_retry(struct upm_lease *e)
{
    int64_t r = e->cfg.retry_period_ms;

    return r - (int64_t)((double)r * 0.2 * ((double)rand_r(&e->rng) / RAND_MAX));
}

int64_t upm_lease_step(struct upm_lease *e)
{
    int64_t now = now_mono(e);
    int64_t req_deadline = 0; /* 0 = the client's own timeout */
    int64_t write_start = 0;
    int64_t deadline;
    bool was_leading = atomic_load(&e->leading);
    enum attempt a;

    if (!e->cfg.enabled)
        return e->cfg.retry_period_ms;
    deadline = e->last_renew_mono + e->cfg.renew_deadline_ms * UPM_NS_PER_MS;
    if (was_leading) {
        if (now >= deadline) {
            fence(e, now);
            was_leading = false;
        } else {
            req_deadline = deadline;
        }
    }
    a = try_acquire_or_renew(e, req_deadline, &write_start);
    now = now_mono(e);
    if (a == ATTEMPT_ACQUIRED) {
        e->last_renew_mono = write_start;
        if (!was_leading) {
            atomic_store(&e->leader_until, write_start + e->cfg.renew_deadline_ms * UPM_NS_PER_MS);
            atomic_store(&e->leading, true);
            upm_prom_set(e->m_leader, 1);
            upm_prom_inc(e->m_transitions, 1);
            upm_log_info("lease", "became leader | lease=%s/%s identity=%s transitions=%lld",
                         e->cfg.ns, e->cfg.name, e->cfg.identity,
                         (long long)e->observed.transitions);
            e->cb.start_leading(e->cb.opaque);
        } else {
            atomic_store(&e->leader_until, write_start + e->cfg.renew_deadline_ms * UPM_NS_PER_MS);
        }
        upm_prom_set(e->m_age, (double)(now - write_start) / 1e9);
        return e->cfg.retry_period_ms;
    }
    if (was_leading) {
        if (a == ATTEMPT_HELD) {
            upm_log_warn("lease", "lease is held by another candidate | lease=%s/%s holder=%s",
                         e->cfg.ns, e->cfg.name, e->observed.holder);
            stop_leading(e, "lost");
        } else if (now >= deadline) {
            fence(e, now);
        } else {
            int64_t left = (deadline - now) / UPM_NS_PER_MS;
            upm_prom_set(e->m_age, (double)(now - e->last_renew_mono) / 1e9);
            return left < e->cfg.retry_period_ms ? (left > 0 ? left : 1) : e->cfg.retry_period_ms;
        }
    }
    if (e->observed.rv)
        upm_prom_set(e->m_age, (double)(now - e->observed_mono) / 1e9);
    return jittered_retry(e);
}

int upm_lease_release(struct upm_lease *e)
{
    struct upm_k8s_error err;
    cJSON *obj = NULL;
    cJSON *resp = NULL;
    char ts[40];
    int rc = -1;

    stop_leading(e, "shutdown");
    /* Release only a record we hold, at the resourceVersion we wrote: a 409
     * means someone else already wrote, and their record stays. */
    if (!e->cached || !e->observed.holder || strcmp(e->observed.holder, e->cfg.identity) != 0)
        return 0;
    upm_lease_format_time(now_real(e), ts, sizeof(ts));
    obj = build_lease(e, e->cached, "", 1, e->observed.acquire, ts, e->observed.transitions);
    if (upm_k8s_request(e->client, "PUT", e->item_path, obj, 0, &resp, &err) != 0) {
        log_k8s_error(e, "release lease", &err);
        goto out;
    }
    upm_log_info("lease", "released lease | lease=%s/%s identity=%s", e->cfg.ns, e->cfg.name,
                 e->cfg.identity);
    observe(e, resp ? resp : cJSON_Duplicate(obj, true), now_mono(e));
    resp = NULL;
    rc = 0;
out:
    cJSON_Delete(obj);
    cJSON_Delete(resp);
    return rc;
}

static void *elector_main(void *arg)
{
    struct upm_lease *e = arg;

    pthread_mutex_lock(&e->mu);
    while (!e->stop) {
        int64_t ms;
        struct timespec ts;

        pthread_mutex_unlock(&e->mu);
        ms = upm_lease_step(e);
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += ms / 1000;
        ts.tv_nsec += (ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&e->mu);
        while (!e->stop) {
            if (pthread_cond_timedwait(&e->cond, &e->mu, &ts) == ETIMEDOUT)
                break;
        }
    }
    pthread_mutex_unlock(&e->mu);
    upm_lease_release(e);
    return NULL;
}

int upm_lease_start(struct upm_lease *e, char *errstr, size_t errstr_size)
{
    pthread_condattr_t ca;
    int rc;

    if (e->running) {
        upm_errstr_set(errstr, errstr_size, "lease: already running");
        return -1;
    }
    /* Timed waits on the monotonic clock, so a wall-clock step cannot
     * stretch or shrink a retry period. */
    pthread_cond_destroy(&e->cond);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->cond, &ca);
    pthread_condattr_destroy(&ca);
    e->stop = false;
    rc = pthread_create(&e->thread, NULL, elector_main, e);
    if (rc != 0) {
        upm_errstr_set(errstr, errstr_size, "lease: pthread_create: %s", strerror(rc));
        return -1;
    }
    e->running = true;
    return 0;
}

void upm_lease_stop(struct upm_lease *e)
{
    if (!e || !e->running)
        return;
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->thread, NULL);
    e->running = false;
}

void upm_lease_destroy(struct upm_lease *e)
{
    if (!e)
        return;
    upm_lease_stop(e);
    forget(e);
    free(e->path);
    free(e->item_path);
    free(e->cfg.ns);
    free(e->cfg.name);
    free(e->cfg.identity);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cond);
    free(e);
}
