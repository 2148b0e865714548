#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <regex.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/alloc.h"
#include "upmon/clock.h"
#include "upmon/k8s.h"
#include "upmon/lease.h"
#include "upmon/log.h"
#include "upmon/prom.h"

/* ------------------------------------------------------------------------ */
/* A fake API server holding one Lease, with the server's optimistic
 * concurrency: PUT succeeds only with the current resourceVersion.          */

#define LEASES "/apis/coordination.k8s.io/v1/namespaces/ns/leases"
#define ITEM   LEASES "/lk"

struct fake_api {
    cJSON *lease; /* NULL = 404 */
    long rv;
    /* Fail the next fail_count requests (method fail_method, NULL = any)
     * with fail_status (0 = a transport timeout). fail_count < 0 = forever. */
    int fail_status;
    int fail_count;
    const char *fail_method;
    /* Before answering the next request with this method, let "other" write
     * (a concurrent candidate wins the race). */
    const char *race_method;
    const char *race_holder;
    int gets, posts, puts;
    int64_t max_timeout_ms; /* largest per-request timeout seen (0 = client default) */
    /* Set by the test's stop_leading: lets the fake check the release
     * happened after leader work stopped. */
    bool *work_stopped;
    bool release_saw_work_running;
};

static void respond(const struct upm_k8s_request *req, struct upm_k8s_response *resp, int status,
                    const cJSON *obj)
{
    char *text = obj ? cJSON_PrintUnformatted(obj) : NULL;

    resp->status = status;
    if (text) {
        req->on_data(req->opaque, text, strlen(text));
        free(text);
    }
}

static void respond_status(const struct upm_k8s_request *req, struct upm_k8s_response *resp,
                           int status, const char *reason, const char *message)
{
    cJSON *st = cJSON_CreateObject();

    cJSON_AddStringToObject(st, "kind", "Status");
    cJSON_AddStringToObject(st, "status", "Failure");
    cJSON_AddStringToObject(st, "reason", reason);
    cJSON_AddStringToObject(st, "message", message);
    cJSON_AddNumberToObject(st, "code", status);
    respond(req, resp, status, st);
    cJSON_Delete(st);
}

static void set_rv(cJSON *o, long rv)
{
    cJSON *md = cJSON_GetObjectItemCaseSensitive(o, "metadata");
    char b[32];

    if (!md)
        md = cJSON_AddObjectToObject(o, "metadata");
    snprintf(b, sizeof(b), "%ld", rv);
    cJSON_DeleteItemFromObjectCaseSensitive(md, "resourceVersion");
    cJSON_AddStringToObject(md, "resourceVersion", b);
}

/* Store a record as another writer would (bumps the resourceVersion). */
static void fake_write(struct fake_api *f, const char *holder, int duration_s, const char *renew,
                       int transitions)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *md = cJSON_AddObjectToObject(o, "metadata");
    cJSON *spec = cJSON_AddObjectToObject(o, "spec");

    cJSON_AddStringToObject(md, "name", "lk");
    cJSON_AddStringToObject(md, "namespace", "ns");
    cJSON_AddStringToObject(spec, "holderIdentity", holder);
    cJSON_AddNumberToObject(spec, "leaseDurationSeconds", duration_s);
    cJSON_AddStringToObject(spec, "acquireTime", "2020-01-01T00:00:00.000000Z");
    cJSON_AddStringToObject(spec, "renewTime", renew);
    cJSON_AddNumberToObject(spec, "leaseTransitions", transitions);
    set_rv(o, ++f->rv);
    cJSON_Delete(f->lease);
    f->lease = o;
}

static const char *spec_str(const struct fake_api *f, const char *key)
{
    const cJSON *v =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(f->lease, "spec"), key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double spec_num(const struct fake_api *f, const char *key)
{
    const cJSON *v =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(f->lease, "spec"), key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static int fake_perform(void *ctx, const struct upm_k8s_request *req, struct upm_k8s_response *resp)
{
    struct fake_api *f = ctx;
    cJSON *body = NULL;

    memset(resp, 0, sizeof(*resp));
    if (req->timeout_ms > f->max_timeout_ms)
        f->max_timeout_ms = req->timeout_ms;
    if (f->fail_count != 0 && (!f->fail_method || strcmp(f->fail_method, req->method) == 0)) {
        if (f->fail_count > 0)
            f->fail_count--;
        if (f->fail_status == 0) {
            resp->timed_out = true;
            snprintf(resp->transport_error, sizeof(resp->transport_error), "timed out");
            return -1;
        }
        respond_status(req, resp, f->fail_status, "InternalError", "injected");
        return 0;
    }
    if (f->race_method && strcmp(f->race_method, req->method) == 0) {
        fake_write(f, f->race_holder, 15, "2020-01-01T00:00:00.000000Z", 7);
        f->race_method = NULL;
    }
    if (strcmp(req->method, "GET") == 0) {
        f->gets++;
        assert_string_equal(req->path, ITEM);
        if (!f->lease)
            respond_status(req, resp, 404, "NotFound", "leases \"lk\" not found");
        else
            respond(req, resp, 200, f->lease);
        return 0;
    }
    assert_non_null(req->body);
    body = cJSON_ParseWithLength(req->body, req->body_len);
    assert_non_null(body);
    if (strcmp(req->method, "POST") == 0) {
        f->posts++;
        assert_string_equal(req->path, LEASES);
        if (f->lease) {
            respond_status(req, resp, 409, "AlreadyExists", "leases \"lk\" already exists");
        } else {
            set_rv(body, ++f->rv);
            f->lease = body;
            body = NULL;
            respond(req, resp, 201, f->lease);
        }
    } else if (strcmp(req->method, "PUT") == 0) {
        const cJSON *rv = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(body, "metadata"), "resourceVersion");
        char cur[32];

        f->puts++;
        assert_string_equal(req->path, ITEM);
        /* Every update must be conditional: an unconditional write is the
         * split-brain bug this module exists to avoid. */
        assert_true(cJSON_IsString(rv));
        snprintf(cur, sizeof(cur), "%ld", f->rv);
        if (!f->lease || strcmp(rv->valuestring, cur) != 0) {
            respond_status(req, resp, 409, "Conflict", "the object has been modified");
        } else {
            const cJSON *h = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(body, "spec"), "holderIdentity");
            if (f->work_stopped && cJSON_IsString(h) && h->valuestring[0] == '\0' &&
                !*f->work_stopped)
                f->release_saw_work_running = true;
            set_rv(body, ++f->rv);
            cJSON_Delete(f->lease);
            f->lease = body;
            body = NULL;
            respond(req, resp, 200, f->lease);
        }
    } else {
        fail_msg("unexpected method %s", req->method);
    }
    cJSON_Delete(body);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* A candidate: its own client, clocks and leader-work flag.                */

struct cand {
    int64_t mono;
    int64_t real;
    struct upm_k8s_client *client;
    struct upm_prom_registry *reg;
    struct upm_lease *e;
    int starts, stops;
    bool working;
    bool stopped_flag;
    int64_t stopped_at; /* mono when stop_leading ran */
    int64_t stop_bound_ms;
};

static int64_t c_mono(void *o)
{
    return ((struct cand *)o)->mono;
}

static int64_t c_real(void *o)
{
    return ((struct cand *)o)->real;
}

static void c_start(void *o)
{
    struct cand *c = o;
    c->starts++;
    c->working = true;
    c->stopped_flag = false;
}

static int c_stop(void *o, int64_t bound_ms)
{
    struct cand *c = o;
    c->stops++;
    c->working = false;
    c->stopped_flag = true;
    c->stopped_at = c->mono;
    c->stop_bound_ms = bound_ms;
    return 0;
}

static struct upm_lease_config cfg_default(const char *identity)
{
    struct upm_lease_config cfg = {
        .enabled = true,
        .ns = (char *)"ns",
        .name = (char *)"lk",
        .identity = (char *)identity,
        .lease_duration_ms = 15000,
        .renew_deadline_ms = 10000,
        .retry_period_ms = 2000,
    };
    return cfg;
}

static void cand_init_cfg(struct cand *c, struct fake_api *f, const struct upm_lease_config *cfg,
                          int64_t mono0, int64_t real0)
{
    struct upm_k8s_creds creds = {0};
    struct upm_k8s_transport tp = {fake_perform, NULL, f};
    struct upm_lease_callbacks cb;
    struct upm_lease_clock clk;
    char err[256];

    memset(c, 0, sizeof(*c));
    cb = (struct upm_lease_callbacks){c_start, c_stop, c};
    clk = (struct upm_lease_clock){c_mono, c_real, c};
    c->mono = mono0;
    c->real = real0;
    creds.server = upm_strdup("https://fake");
    c->client = upm_k8s_client_create_creds(&creds, 5000, 60000, &tp, err, sizeof(err));
    assert_non_null(c->client);
    c->reg = upm_prom_registry_create();
    c->e = upm_lease_create(cfg, c->client, c->reg, &cb, &clk, err, sizeof(err));
    if (!c->e)
        fail_msg("create: %s", err);
}

static void cand_init(struct cand *c, struct fake_api *f, const char *id, int64_t mono0,
                      int64_t real0)
{
    struct upm_lease_config cfg = cfg_default(id);
    cand_init_cfg(c, f, &cfg, mono0, real0);
}

static void cand_free(struct cand *c)
{
    upm_lease_destroy(c->e);
    upm_k8s_client_destroy(c->client);
    upm_prom_registry_destroy(c->reg);
}

static void advance(struct cand *c, int64_t ms)
{
    c->mono += ms * UPM_NS_PER_MS;
    c->real += ms * UPM_NS_PER_MS;
}

static double metric(struct cand *c, const char *name)
{
    struct upm_buf b;
    char *p;
    double v = -1;

    upm_buf_init(&b, 0);
    upm_prom_render(c->reg, &b);
    for (p = b.data; p && *p;) {
        size_t l = strlen(name);
        if (strncmp(p, name, l) == 0 && p[l] == ' ') {
            v = strtod(p + l + 1, NULL);
            break;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    upm_buf_free(&b);
    return v;
}

static struct fake_api *fake_new(void)
{
    return upm_calloc(1, sizeof(struct fake_api));
}

static void fake_free(struct fake_api *f)
{
    cJSON_Delete(f->lease);
    free(f);
}

/* ------------------------------------------------------------------------ */

static void test_config_validation(void **state)
{
    struct upm_lease_config cfg = cfg_default("a");
    char err[256];

    assert_int_equal(upm_lease_config_validate(&cfg, err, sizeof(err)), 0);
    cfg.renew_deadline_ms = 15000; /* lease must exceed renew deadline */
    assert_int_equal(upm_lease_config_validate(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "renew_deadline"));
    cfg = cfg_default("a");
    cfg.renew_deadline_ms = 2400; /* exactly 1.2 x retry: refused */
    assert_int_equal(upm_lease_config_validate(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "1.2"));
    cfg.renew_deadline_ms = 2401;
    assert_int_equal(upm_lease_config_validate(&cfg, err, sizeof(err)), 0);
    cfg = cfg_default("a");
    cfg.lease_duration_ms = 15500; /* leaseDurationSeconds is an integer */
    assert_int_equal(upm_lease_config_validate(&cfg, err, sizeof(err)), -1);
    cfg = cfg_default("a");
    cfg.name = (char *)"Bad_Name";
    assert_int_equal(upm_lease_config_validate(&cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "lease.name"));
    cfg = cfg_default("a");
    cfg.ns = (char *)"";
    assert_int_equal(upm_lease_config_validate(&cfg, err, sizeof(err)), -1);
    /* The short test settings used by the system tests are valid. */
    cfg = cfg_default("a");
    cfg.lease_duration_ms = 4000;
    cfg.renew_deadline_ms = 3000;
    cfg.retry_period_ms = 1000;
    assert_int_equal(upm_lease_config_validate(&cfg, err, sizeof(err)), 0);
    /* create refuses what validate refuses */
    cfg.retry_period_ms = 2500;
    {
        struct upm_k8s_creds creds = {0};
        struct upm_k8s_client *client;
        struct upm_lease_callbacks cb = {c_start, c_stop, NULL};
        creds.server = upm_strdup("https://fake");
        client = upm_k8s_client_create_creds(&creds, 1000, 1000,
                                             &(struct upm_k8s_transport){fake_perform, NULL, NULL},
                                             err, sizeof(err));
        assert_null(upm_lease_create(&cfg, client, NULL, &cb, NULL, err, sizeof(err)));
        upm_k8s_client_destroy(client);
    }
}

static void test_identity_from_pod_name(void **state)
{
    struct fake_api *f = fake_new();
    struct cand c;

    setenv("POD_NAME", "analyzer-7d9f-x2", 1);
    cand_init(&c, f, "", 0, 0);
    assert_string_equal(upm_lease_identity(c.e), "analyzer-7d9f-x2");
    cand_free(&c);
    unsetenv("POD_NAME");
    cand_init(&c, f, "", 0, 0);
    assert_true(strlen(upm_lease_identity(c.e)) > 0); /* the host name */
    assert_string_not_equal(upm_lease_identity(c.e), "analyzer-7d9f-x2");
    cand_free(&c);
    fake_free(f);
}

static void test_create_when_absent(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a;
    regex_t re;

    cand_init(&a, f, "a", 1000 * UPM_NS_PER_S, INT64_C(1795000000123456789));
    assert_int_equal(metric(&a, "upmon_leader"), 0);
    assert_int_equal(upm_lease_step(a.e), 2000);
    assert_true(upm_lease_is_leader(a.e));
    assert_true(upm_lease_fence_ok(a.e));
    assert_int_equal(a.starts, 1);
    assert_int_equal(f->posts, 1);
    assert_string_equal(spec_str(f, "holderIdentity"), "a");
    assert_int_equal(spec_num(f, "leaseDurationSeconds"), 15);
    assert_int_equal(spec_num(f, "leaseTransitions"), 0);
    /* RFC 3339 with microseconds, from the injected wall clock. */
    assert_int_equal(regcomp(&re,
                             "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z$",
                             REG_EXTENDED),
                     0);
    assert_int_equal(regexec(&re, spec_str(f, "renewTime"), 0, NULL, 0), 0);
    regfree(&re);
    assert_string_equal(spec_str(f, "renewTime"), "2026-11-18T11:06:40.123456Z");
    assert_string_equal(spec_str(f, "acquireTime"), spec_str(f, "renewTime"));
    assert_int_equal(metric(&a, "upmon_leader"), 1);
    assert_int_equal(metric(&a, "upmon_leader_transitions_total"), 1);

    /* Renewal: PUT with the resourceVersion just read, acquireTime and
     * transitions kept, renewTime moves. */
    advance(&a, 2000);
    upm_lease_step(a.e);
    assert_true(upm_lease_is_leader(a.e));
    assert_int_equal(f->puts, 1);
    assert_int_equal(a.starts, 1);
    assert_string_equal(spec_str(f, "acquireTime"), "2026-11-18T11:06:40.123456Z");
    assert_string_equal(spec_str(f, "renewTime"), "2026-11-18T11:06:42.123456Z");
    assert_int_equal(spec_num(f, "leaseTransitions"), 0);
    cand_free(&a);
    fake_free(f);
}

static void test_conflict_on_create(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a;

    cand_init(&a, f, "a", 0, 0);
    /* Another candidate creates the Lease between our GET (404) and POST. */
    f->race_method = "POST";
    f->race_holder = "b";
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    assert_int_equal(a.starts, 0);
    assert_int_equal(f->posts, 1);
    assert_string_equal(spec_str(f, "holderIdentity"), "b");
    /* Next step re-reads and stands by: b's lease is fresh for us. */
    advance(&a, 2000);
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    assert_int_equal(f->puts, 0);
    assert_string_equal(spec_str(f, "holderIdentity"), "b");
    cand_free(&a);
    fake_free(f);
}

static void test_conflict_on_update(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a;
    long rv_before;

    fake_write(f, "b", 15, "2020-01-01T00:00:00.000000Z", 3);
    cand_init(&a, f, "a", 0, 0);
    upm_lease_step(a.e); /* sees b's record: timer starts */
    assert_false(upm_lease_is_leader(a.e));
    advance(&a, 15000);     /* b's record unchanged for its whole duration */
    f->race_method = "PUT"; /* ...but b renews just before our takeover PUT lands */
    f->race_holder = "b";
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    assert_int_equal(a.starts, 0);
    assert_int_equal(f->puts, 1);
    /* Never overwritten: b's renewal stands. */
    assert_string_equal(spec_str(f, "holderIdentity"), "b");
    assert_int_equal(spec_num(f, "leaseTransitions"), 7);
    rv_before = f->rv;
    /* The renewal is a change: the expiry timer restarts when we see it
     * (the next read, at t = 17 s), so the takeover waits until 32 s. */
    advance(&a, 2000);
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    assert_int_equal(f->rv, rv_before);
    advance(&a, 14999);
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    advance(&a, 1);
    upm_lease_step(a.e);
    assert_true(upm_lease_is_leader(a.e));
    assert_int_equal(spec_num(f, "leaseTransitions"), 8);
    cand_free(&a);
    fake_free(f);
}

static void test_expired_other_holder(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a;

    fake_write(f, "b", 15, "2020-01-01T00:00:00.000000Z", 4);
    cand_init(&a, f, "a", 5 * UPM_NS_PER_S, 0);
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    advance(&a, 14999);
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    assert_int_equal(f->puts, 0);
    advance(&a, 1);
    upm_lease_step(a.e);
    assert_true(upm_lease_is_leader(a.e));
    assert_string_equal(spec_str(f, "holderIdentity"), "a");
    assert_int_equal(spec_num(f, "leaseTransitions"), 5); /* +1 on takeover */
    assert_int_equal(spec_num(f, "leaseDurationSeconds"), 15);
    assert_string_not_equal(spec_str(f, "acquireTime"), "2020-01-01T00:00:00.000000Z");
    cand_free(&a);
    fake_free(f);
}

static void test_record_changed_restarts_timer(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a;

    fake_write(f, "b", 15, "2020-01-01T00:00:00.000000Z", 0);
    cand_init(&a, f, "a", 0, 0);
    upm_lease_step(a.e);
    advance(&a, 10000);
    /* b renews: only the resourceVersion moves (same content). */
    cJSON *copy = cJSON_Duplicate(f->lease, true);
    set_rv(copy, ++f->rv);
    cJSON_Delete(f->lease);
    f->lease = copy;
    upm_lease_step(a.e); /* observed at t=10 s */
    advance(&a, 6000);   /* t=16 s: expired by the old timer, not by the new one */
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    advance(&a, 8999); /* t=24.999 s */
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    advance(&a, 1); /* t=25 s = 10 + 15 */
    upm_lease_step(a.e);
    assert_true(upm_lease_is_leader(a.e));
    cand_free(&a);
    fake_free(f);
}

static void test_record_duration_is_used(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a;

    /* The holder asked for 30 s; ours is 15 s. Taking over at 15 s would be
     * the split brain of ports that use their own duration. */
    fake_write(f, "b", 30, "2020-01-01T00:00:00.000000Z", 0);
    cand_init(&a, f, "a", 0, 0);
    upm_lease_step(a.e);
    advance(&a, 20000);
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    advance(&a, 9999);
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    advance(&a, 1);
    upm_lease_step(a.e);
    assert_true(upm_lease_is_leader(a.e));
    /* Our record carries our own duration. */
    assert_int_equal(spec_num(f, "leaseDurationSeconds"), 15);
    cand_free(&a);
    fake_free(f);

    /* A shorter record duration (5 s) expires sooner than ours would. */
    f = fake_new();
    fake_write(f, "b", 5, "2020-01-01T00:00:00.000000Z", 0);
    cand_init(&a, f, "a", 0, 0);
    upm_lease_step(a.e);
    advance(&a, 4999);
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    advance(&a, 1);
    upm_lease_step(a.e);
    assert_true(upm_lease_is_leader(a.e));
    cand_free(&a);
    fake_free(f);
}

static void test_released_record_taken_at_once(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a;

    fake_write(f, "", 1, "2020-01-01T00:00:00.000000Z", 2);
    cand_init(&a, f, "a", 0, 0);
    upm_lease_step(a.e);
    assert_true(upm_lease_is_leader(a.e));
    assert_int_equal(spec_num(f, "leaseTransitions"), 3);
    cand_free(&a);
    fake_free(f);
}

/*
 * Two candidates whose wall clocks are 7 minutes apart (and whose monotonic
 * clocks have unrelated origins) share one API server, interleaving steps
 * over two simulated minutes: exactly one leader at every instant, and no
 * takeover while the leader keeps renewing.
 */
static void test_clock_offsets(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a, b;
    int leaders_seen_a = 0, leaders_seen_b = 0;

    cand_init(&a, f, "a", 3 * UPM_NS_PER_S, INT64_C(1795000000) * UPM_NS_PER_S);
    cand_init(&b, f, "b", 987654 * UPM_NS_PER_S,
              (INT64_C(1795000000) - 420) * UPM_NS_PER_S); /* 7 min behind */
    for (int t = 0; t < 120000; t += 500) {
        if (t % 2000 == 0)
            upm_lease_step(a.e);
        if (t % 2000 == 1000)
            upm_lease_step(b.e);
        assert_false(upm_lease_is_leader(a.e) && upm_lease_is_leader(b.e));
        leaders_seen_a += upm_lease_is_leader(a.e);
        leaders_seen_b += upm_lease_is_leader(b.e);
        advance(&a, 500);
        advance(&b, 500);
    }
    /* a won the first step and kept the lease by renewing; b never took it
     * despite a's renewTime being 7 minutes "in the future" for b. */
    assert_true(leaders_seen_a > 200);
    assert_int_equal(leaders_seen_b, 0);
    assert_int_equal(a.starts, 1);
    assert_int_equal(b.starts, 0);
    /* Now a crashes (stops stepping): b takes over 15 s after it last saw a
     * change, by its own monotonic clock. */
    int64_t t_last_change = -1;
    for (int t = 0; t < 30000; t += 1000) {
        upm_lease_step(b.e);
        if (upm_lease_is_leader(b.e)) {
            t_last_change = t;
            break;
        }
        advance(&b, 1000);
    }
    assert_true(t_last_change >= 14000 && t_last_change <= 16000);
    cand_free(&a);
    cand_free(&b);
    fake_free(f);
}

static void test_renew_failure_fences_before_expiry(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a, b;
    int64_t renew_start;

    cand_init(&a, f, "a", 100 * UPM_NS_PER_S, 0);
    cand_init(&b, f, "b", 100 * UPM_NS_PER_S, 0);
    upm_lease_step(a.e);
    assert_true(upm_lease_is_leader(a.e));
    advance(&a, 2000);
    advance(&b, 2000);
    renew_start = a.mono;
    upm_lease_step(a.e); /* last successful renewal starts here */
    upm_lease_step(b.e); /* b sees the change at the same instant */
    assert_true(upm_lease_is_leader(a.e));
    /* The API server becomes unreachable for everyone. */
    f->fail_status = 503;
    f->fail_count = -1;
    for (int i = 0; i < 20 && upm_lease_is_leader(a.e); i++) {
        int64_t next = upm_lease_step(a.e);
        if (!upm_lease_is_leader(a.e))
            break;
        /* Steps never sleep past the renew deadline. */
        assert_true(a.mono + next * UPM_NS_PER_MS <= renew_start + 10 * UPM_NS_PER_S || next <= 1);
        advance(&a, next);
    }
    assert_false(upm_lease_is_leader(a.e));
    assert_false(upm_lease_fence_ok(a.e));
    assert_int_equal(a.stops, 1);
    assert_false(a.working);
    /* Stopped at the renew deadline, well before the lease can expire. */
    assert_true(a.stopped_at >= renew_start + 10 * UPM_NS_PER_S);
    assert_true(a.stopped_at < renew_start + 15 * UPM_NS_PER_S);
    /* The ack bound leaves the work time to stop before expiry. */
    assert_int_equal(a.stop_bound_ms, 2500);
    assert_true(a.stopped_at + a.stop_bound_ms * UPM_NS_PER_MS < renew_start + 15 * UPM_NS_PER_S);
    assert_int_equal(upm_lease_fenced_count(a.e), 1);
    assert_int_equal(metric(&a, "upmon_leader_fenced_total"), 1);
    assert_int_equal(metric(&a, "upmon_leader"), 0);

    /* The server returns: b cannot take over before the record expires by
     * its clock (15 s after it saw the last renewal). */
    f->fail_count = 0;
    b.mono = renew_start + 14999 * UPM_NS_PER_MS;
    upm_lease_step(b.e);
    assert_false(upm_lease_is_leader(b.e));
    b.mono = renew_start + 15000 * UPM_NS_PER_MS;
    upm_lease_step(b.e);
    assert_true(upm_lease_is_leader(b.e));
    /* a, back, sees b's fresh record and does not lead again. */
    advance(&a, 2000);
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    assert_int_equal(a.starts, 1);
    cand_free(&a);
    cand_free(&b);
    fake_free(f);
}

static void test_renew_timeouts_fence(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a;

    cand_init(&a, f, "a", 0, 0);
    upm_lease_step(a.e);
    assert_true(upm_lease_is_leader(a.e));
    /* One failed renewal inside the deadline does not stop leader work. */
    f->fail_status = 0;
    f->fail_count = 1;
    advance(&a, 2000);
    upm_lease_step(a.e);
    assert_true(upm_lease_is_leader(a.e));
    assert_int_equal(a.stops, 0);
    advance(&a, 2000);
    upm_lease_step(a.e); /* succeeds: deadline moves */
    assert_true(upm_lease_is_leader(a.e));
    f->fail_count = -1;
    advance(&a, 9999);
    upm_lease_step(a.e);
    assert_true(upm_lease_is_leader(a.e));
    advance(&a, 1);
    assert_false(upm_lease_fence_ok(a.e)); /* the fence closes on time by itself */
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    assert_int_equal(upm_lease_fenced_count(a.e), 1);
    cand_free(&a);
    fake_free(f);
}

/* A leader's requests are bounded by what is left of its renew deadline, so
 * a hanging API server cannot carry it past the deadline unnoticed. */
static void test_leader_requests_bounded_by_deadline(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a;

    cand_init(&a, f, "a", 0, 0);
    upm_lease_step(a.e);
    assert_true(upm_lease_is_leader(a.e));
    advance(&a, 9000);
    f->max_timeout_ms = 0;
    upm_lease_step(a.e); /* 1 s left of the 10 s renew deadline */
    assert_true(upm_lease_is_leader(a.e));
    assert_in_range(f->max_timeout_ms, 1, 1000);
    advance(&a, 9999);
    f->max_timeout_ms = 0;
    upm_lease_step(a.e); /* the renewal just now started at t=9 s: 1 ms left */
    assert_int_equal(f->max_timeout_ms, 1);
    cand_free(&a);
    fake_free(f);
}

static void test_lost_to_other_stops(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a;

    cand_init(&a, f, "a", 0, 0);
    upm_lease_step(a.e);
    assert_true(upm_lease_is_leader(a.e));
    fake_write(f, "b", 15, "2020-01-01T00:00:00.000000Z", 1);
    advance(&a, 2000);
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    assert_int_equal(a.stops, 1);
    assert_string_equal(spec_str(f, "holderIdentity"), "b");
    cand_free(&a);
    fake_free(f);
}

static void test_release_on_shutdown(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a, b;

    cand_init(&a, f, "a", 0, 0);
    cand_init(&b, f, "b", 0, 0);
    f->work_stopped = &a.stopped_flag;
    upm_lease_step(a.e);
    upm_lease_step(b.e);
    assert_true(upm_lease_is_leader(a.e));
    assert_false(upm_lease_is_leader(b.e));
    assert_int_equal(upm_lease_release(a.e), 0);
    assert_false(upm_lease_is_leader(a.e));
    assert_int_equal(a.stops, 1);
    assert_false(f->release_saw_work_running); /* work stopped before the release */
    assert_string_equal(spec_str(f, "holderIdentity"), "");
    assert_int_equal(spec_num(f, "leaseDurationSeconds"), 1);
    assert_int_equal(spec_num(f, "leaseTransitions"), 0);
    /* b takes over at its very next step, well inside one retry period. */
    advance(&b, 100);
    upm_lease_step(b.e);
    assert_true(upm_lease_is_leader(b.e));
    assert_int_equal(spec_num(f, "leaseTransitions"), 1);
    /* A standby's release is a no-op: it holds nothing. */
    int puts = f->puts;
    f->work_stopped = NULL;
    assert_int_equal(upm_lease_release(a.e), 0);
    assert_int_equal(f->puts, puts);
    assert_string_equal(spec_str(f, "holderIdentity"), "b");
    cand_free(&a);
    cand_free(&b);
    fake_free(f);
}

static void test_release_conflict_keeps_other(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a;

    cand_init(&a, f, "a", 0, 0);
    upm_lease_step(a.e);
    f->race_method = "PUT";
    f->race_holder = "b";
    assert_int_equal(upm_lease_release(a.e), -1);
    assert_string_equal(spec_str(f, "holderIdentity"), "b");
    cand_free(&a);
    fake_free(f);
}

static void test_disabled_never_leads(void **state)
{
    struct fake_api *f = fake_new();
    struct upm_lease_config cfg = cfg_default("a");
    struct cand a;

    cfg.enabled = false;
    cand_init_cfg(&a, f, &cfg, 0, 0);
    upm_lease_step(a.e);
    assert_false(upm_lease_is_leader(a.e));
    assert_int_equal(f->gets + f->posts + f->puts, 0);
    cand_free(&a);
    fake_free(f);
}

static void test_forbidden_keeps_retrying(void **state)
{
    struct fake_api *f = fake_new();
    struct cand a;

    cand_init(&a, f, "a", 0, 0);
    f->fail_status = 403;
    f->fail_count = 3;
    for (int i = 0; i < 3; i++) {
        int64_t next = upm_lease_step(a.e);
        assert_false(upm_lease_is_leader(a.e));
        assert_in_range(next, 1600, 2000);
        advance(&a, next);
    }
    upm_lease_step(a.e);
    assert_true(upm_lease_is_leader(a.e));
    cand_free(&a);
    fake_free(f);
}

/* Threaded mode with the real clocks: start, lead, stop releases. */
struct tstate {
    atomic_int starts;
    atomic_int stops;
};

static void t_start(void *o)
{
    atomic_fetch_add(&((struct tstate *)o)->starts, 1);
}

static int t_stop(void *o, int64_t bound)
{
    atomic_fetch_add(&((struct tstate *)o)->stops, 1);
    return 0;
}

static void test_thread_start_stop(void **state)
{
    struct fake_api *f = fake_new();
    struct upm_k8s_creds creds = {0};
    struct upm_k8s_transport tp = {fake_perform, NULL, f};
    struct tstate ts = {0};
    struct upm_lease_callbacks cb = {t_start, t_stop, &ts};
    struct upm_lease_config cfg = cfg_default("a");
    struct upm_k8s_client *client;
    struct upm_lease *e;
    char err[256];
    int64_t deadline;

    cfg.lease_duration_ms = 2000;
    cfg.renew_deadline_ms = 1500;
    cfg.retry_period_ms = 100;
    creds.server = upm_strdup("https://fake");
    client = upm_k8s_client_create_creds(&creds, 1000, 60000, &tp, err, sizeof(err));
    e = upm_lease_create(&cfg, client, NULL, &cb, NULL, err, sizeof(err));
    assert_non_null(e);
    assert_int_equal(upm_lease_start(e, err, sizeof(err)), 0);
    deadline = upm_clock_mono_ns() + 5 * UPM_NS_PER_S;
    while (!upm_lease_is_leader(e) && upm_clock_mono_ns() < deadline)
        upm_clock_sleep_ms(10, NULL);
    assert_true(upm_lease_is_leader(e));
    /* Let it renew a few times. */
    deadline = upm_clock_mono_ns() + 5 * UPM_NS_PER_S;
    while (f->puts < 3 && upm_clock_mono_ns() < deadline)
        upm_clock_sleep_ms(10, NULL);
    assert_true(f->puts >= 3);
    upm_lease_stop(e);
    assert_false(upm_lease_is_leader(e));
    assert_int_equal(atomic_load(&ts.starts), 1);
    assert_int_equal(atomic_load(&ts.stops), 1);
    assert_string_equal(spec_str(f, "holderIdentity"), "");
    upm_lease_destroy(e);
    upm_k8s_client_destroy(client);
    fake_free(f);
}

static void test_format_time(void **state)
{
    char b[40];

    upm_lease_format_time(0, b, sizeof(b));
    assert_string_equal(b, "1970-01-01T00:00:00.000000Z");
    upm_lease_format_time(INT64_C(1795000000999999999), b, sizeof(b));
    assert_string_equal(b, "2026-11-18T11:06:40.999999Z");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_validation),
        cmocka_unit_test(test_identity_from_pod_name),
        cmocka_unit_test(test_format_time),
        cmocka_unit_test(test_create_when_absent),
        cmocka_unit_test(test_conflict_on_create),
        cmocka_unit_test(test_conflict_on_update),
        cmocka_unit_test(test_expired_other_holder),
        cmocka_unit_test(test_record_changed_restarts_timer),
        cmocka_unit_test(test_record_duration_is_used),
        cmocka_unit_test(test_released_record_taken_at_once),
        cmocka_unit_test(test_clock_offsets),
        cmocka_unit_test(test_renew_failure_fences_before_expiry),
        cmocka_unit_test(test_renew_timeouts_fence),
        cmocka_unit_test(test_leader_requests_bounded_by_deadline),
        cmocka_unit_test(test_lost_to_other_stops),
        cmocka_unit_test(test_release_on_shutdown),
        cmocka_unit_test(test_release_conflict_keeps_other),
        cmocka_unit_test(test_disabled_never_leads),
        cmocka_unit_test(test_forbidden_keeps_retrying),
        cmocka_unit_test(test_thread_start_stop),
    };

    upm_log_set_level(UPM_LOG_WARN);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
