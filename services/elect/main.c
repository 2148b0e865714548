/*
 * upmon-elect — one leader-election candidate on a Kubernetes Lease.
 *
 * The leader task is deliberately trivial: while leading it logs "leading"
 * once per heartbeat, checking the elector's fence before each line; a
 * standby logs "standing by". It exists for the system tests and for anyone
 * who wants to watch an election:
 *
 *   upmon-elect --config elect.yaml     (sections: log, http, k8s, lease, elect)
 *
 * Shutdown (SIGTERM/SIGINT): leader work stops, then the Lease is released
 * so a standby takes over within one retry period, then exit 0.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "upmon/alloc.h"
#include "upmon/clock.h"
#include "upmon/config.h"
#include "upmon/httpd.h"
#include "upmon/k8s.h"
#include "upmon/lease.h"
#include "upmon/log.h"
#include "upmon/prom.h"

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* The service's own section. */
struct elect_config {
    int64_t heartbeat_ms;
};

#define ELECT_F(field) offsetof(struct elect_config, field)
static const struct upm_config_key elect_keys[] = {
    {"heartbeat", UPM_CFG_DURATION_MS, ELECT_F(heartbeat_ms), "1s", 10, 3600000, NULL,
     "Interval of the \"leading\" / \"standing by\" log lines.", 0},
};

/*
 * The leader task: a thread that does "leader work" (one log line per
 * heartbeat) only while `run` is set and the elector's fence is open, and
 * acknowledges a stop request through `acked`. stop_leading waits for that
 * acknowledgement within the elector's bound.
 */
struct task {
    struct upm_lease *lease;
    int64_t heartbeat_ms;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool run;     /* guarded by mu: leader work allowed */
    bool working; /* guarded by mu: the thread is inside leader work */
    bool quit;    /* guarded by mu: the thread exits */
    uint64_t term;
};

static void *task_main(void *arg)
{
    struct task *t = arg;
    uint64_t beats = 0;

    pthread_mutex_lock(&t->mu);
    while (!t->quit) {
        if (t->run && upm_lease_fence_ok(t->lease)) {
            t->working = true;
            pthread_mutex_unlock(&t->mu);
            upm_log_info("elect", "leading | identity=%s term=%llu beat=%llu",
                         upm_lease_identity(t->lease), (unsigned long long)t->term,
                         (unsigned long long)beats++);
            pthread_mutex_lock(&t->mu);
            t->working = false;
            pthread_cond_broadcast(&t->cond);
        } else {
            pthread_mutex_unlock(&t->mu);
            upm_log_info("elect", "standing by | identity=%s", upm_lease_identity(t->lease));
            pthread_mutex_lock(&t->mu);
        }
        /* Sleep one heartbeat, waking early for a state change. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += t->heartbeat_ms / 1000;
        ts.tv_nsec += (t->heartbeat_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&t->cond, &t->mu, &ts);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

static void task_start_leading(void *opaque)
{
    struct task *t = opaque;

    pthread_mutex_lock(&t->mu);
    t->run = true;
    t->term++;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

/* Close the gate and wait until the thread is outside leader work. */
static int task_stop_leading(void *opaque, int64_t timeout_ms)
{
    struct task *t = opaque;
    struct timespec ts;
    int rc = 0;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&t->mu);
    t->run = false;
    pthread_cond_broadcast(&t->cond);
    while (t->working && rc == 0)
        rc = pthread_cond_timedwait(&t->cond, &t->mu, &ts);
    pthread_mutex_unlock(&t->mu);
    if (rc != 0)
        return -1;
    upm_log_info("elect", "leader work stopped | identity=%s", upm_lease_identity(t->lease));
    return 0;
}

static void usage(FILE *out)
{
    fputs("usage: upmon-elect [--config FILE] [--check-config] [--help]\n"
          "One Lease leader-election candidate with a trivial leader task.\n"
          "  --config FILE     YAML configuration (sections log, http, k8s, lease, elect);\n"
          "                    every key is overridable by UPMON_<SECTION>_<KEY>\n"
          "  --check-config    validate, print the effective config (secrets redacted), exit\n"
          "  --help            this text\n",
          out);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"check-config", no_argument, NULL, 'k'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    struct upm_log_config log_cfg = {0};
    struct upm_httpd_config http_cfg = {0};
    struct upm_k8s_config k8s_cfg = {0};
    struct upm_lease_config lease_cfg = {0};
    struct elect_config elect_cfg = {0};
    const struct upm_config_section sections[] = {
        {"log", upm_log_config_keys, upm_log_config_nkeys, &log_cfg},
        {"http", upm_httpd_config_keys, upm_httpd_config_nkeys, &http_cfg},
        {"k8s", upm_k8s_config_keys, upm_k8s_config_nkeys, &k8s_cfg},
        {"lease", upm_lease_config_keys, upm_lease_config_nkeys, &lease_cfg},
        {"elect", elect_keys, sizeof(elect_keys) / sizeof(elect_keys[0]), &elect_cfg},
    };
    const size_t nsections = sizeof(sections) / sizeof(sections[0]);
    const char *config_path = NULL;
    bool check_only = false;
    char err[512];
    struct upm_prom_registry *reg = NULL;
    struct upm_httpd *httpd = NULL;
    struct upm_k8s_client *client = NULL;
    struct upm_lease *lease = NULL;
    struct task task;
    bool task_running = false;
    struct sigaction sa;
    pthread_condattr_t ca;
    pthread_t task_thread;
    int c, rc = 1;

    memset(&task, 0, sizeof(task));
    pthread_mutex_init(&task.mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&task.cond, &ca);
    pthread_condattr_destroy(&ca);
    while ((c = getopt_long(argc, argv, "c:kh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'k':
            check_only = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (upm_config_load(sections, nsections, config_path, err, sizeof(err)) != 0 ||
        upm_lease_config_validate(&lease_cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "upmon-elect: %s\n", err);
        goto out;
    }
    if (check_only) {
        upm_config_print(sections, nsections, stdout);
        rc = 0;
        goto out;
    }
    upm_log_apply(&log_cfg);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    reg = upm_prom_registry_create();
    httpd = upm_httpd_create(&http_cfg, reg, err, sizeof(err));
    if (!httpd || upm_httpd_start(httpd, err, sizeof(err)) != 0) {
        upm_log_error("elect", "http server failed | error=\"%s\"", err);
        goto out;
    }
    client = upm_k8s_client_create(&k8s_cfg, NULL, err, sizeof(err));
    if (!client) {
        upm_log_error("elect", "kubernetes client failed | error=\"%s\"", err);
        goto out;
    }
    task.heartbeat_ms = elect_cfg.heartbeat_ms;
    lease = upm_lease_create(
        &lease_cfg, client, reg,
        &(struct upm_lease_callbacks){task_start_leading, task_stop_leading, &task}, NULL, err,
        sizeof(err));
    if (!lease) {
        upm_log_error("elect", "lease failed | error=\"%s\"", err);
        goto out;
    }
    task.lease = lease;
    if (pthread_create(&task_thread, NULL, task_main, &task) != 0) {
        upm_log_error("elect", "cannot start the leader task thread");
        goto out;
    }
    task_running = true;
    if (upm_lease_start(lease, err, sizeof(err)) != 0) {
        upm_log_error("elect", "lease failed | error=\"%s\"", err);
        goto out;
    }
    /* Readiness does not depend on leadership: a standby is ready. */
    upm_httpd_set_ready(httpd, true, NULL);
    upm_log_info("elect", "candidate started | identity=%s lease=%s/%s server=%s",
                 upm_lease_identity(lease), lease_cfg.ns, lease_cfg.name,
                 upm_k8s_client_server(client));
    while (!stop_signal)
        upm_clock_sleep_ms(100, NULL);
    upm_log_info("elect", "signal received: stopping leader work and releasing | signal=%d",
                 (int)stop_signal);
    upm_httpd_set_ready(httpd, false, "shutting down");
    rc = 0;
out:
    /* Order matters: the elector stops leader work and releases the Lease
     * before the task thread goes away. */
    upm_lease_destroy(lease);
    if (task_running) {
        pthread_mutex_lock(&task.mu);
        task.quit = true;
        pthread_cond_broadcast(&task.cond);
        pthread_mutex_unlock(&task.mu);
        pthread_join(task_thread, NULL);
    }
    upm_k8s_client_destroy(client);
    upm_httpd_destroy(httpd);
    upm_prom_registry_destroy(reg);
    upm_config_free(sections, nsections);
    pthread_mutex_destroy(&task.mu);
    pthread_cond_destroy(&task.cond);
    if (rc == 0 && !check_only)
        upm_log_info("elect", "exiting");
    return rc;
}
