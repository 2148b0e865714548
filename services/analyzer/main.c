/*
 * upmon-analyzer — control charts and seller anomalies from the rollups
 * (design.md §4). Several replicas run; the one holding the Lease analyses,
 * the others stand by and export `upmon_leader 0` and no statistics.
 *
 *   upmon-analyzer --config analyzer.yaml            (Lease election)
 *   upmon-analyzer --config a.yaml --leader-election=off   (one local instance)
 *   upmon-analyzer --config a.yaml --once            (one cycle, then exit)
 */
#include <curl/curl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "analyzer.h"
#include "upmon/clickhouse.h"
#include "upmon/clock.h"
#include "upmon/config.h"
#include "upmon/httpd.h"
#include "upmon/k8s.h"
#include "upmon/lease.h"
#include "upmon/log.h"
#include "upmon/prom.h"

#define MOD "main"

static volatile int stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/*
 * The leader-work thread. Statistics are published only inside the gate,
 * which holds `mu` and checks `run` and the Lease fence; stop_leading takes
 * the same mutex, so once it returns no statistic can appear any more and
 * the standby's registry holds none. Queries in flight are not leader work
 * (they change nothing), so stopping never waits for ClickHouse.
 */
struct worker {
    struct analyzer *an;
    struct upm_lease *lease; /* NULL: --leader-election=off */
    int64_t cycle_ms;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool run, quit;
    uint64_t term;
    struct upm_prom_series *overruns;
};

static bool gate(void *opaque, bool enter)
{
    struct worker *w = opaque;
    if (!enter) {
        pthread_mutex_unlock(&w->mu);
        return true;
    }
    pthread_mutex_lock(&w->mu);
    if (w->run && (!w->lease || upm_lease_fence_ok(w->lease)))
        return true; /* held until gate(false) */
    pthread_mutex_unlock(&w->mu);
    return false;
}

static void start_leading(void *opaque)
{
    struct worker *w = opaque;
    pthread_mutex_lock(&w->mu);
    w->run = true;
    w->term++;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    upm_log_info(MOD, "leading: analysis starts");
}

static int stop_leading(void *opaque, int64_t timeout_ms)
{
    struct worker *w = opaque;
    (void)timeout_ms; /* publication holds the mutex for microseconds */
    pthread_mutex_lock(&w->mu);
    w->run = false;
    analyzer_clear(w->an);
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    upm_log_info(MOD, "standing by: statistics withdrawn");
    return 0;
}

static void add_ms(struct timespec *ts, int64_t ms)
{
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->quit) {
        int64_t wait_ms = w->cycle_ms;
        if (w->run) {
            pthread_mutex_unlock(&w->mu);
            int64_t t0 = upm_clock_mono_ns();
            if (analyzer_cycle(w->an) != 0)
                upm_log_warn(MOD, "cycle failed; retrying at the next tick");
            int64_t took_ms = (upm_clock_mono_ns() - t0) / 1000000;
            if (took_ms > w->cycle_ms) {
                /* Reported, not stacked: the next cycle starts at the next
                 * tick after this one ended. */
                upm_prom_inc(w->overruns, 1);
                upm_log_warn(MOD, "cycle overran | took_ms=%" PRId64 " cycle_ms=%" PRId64, took_ms,
                             w->cycle_ms);
            }
            wait_ms = w->cycle_ms - took_ms % w->cycle_ms;
            pthread_mutex_lock(&w->mu);
        } else {
            /* A warm standby: when it takes over, its first cycle publishes
             * without re-reading a day of history. */
            pthread_mutex_unlock(&w->mu);
            int64_t t0 = upm_clock_mono_ns();
            if (analyzer_warm(w->an) != 0)
                upm_log_debug(MOD, "standby refresh failed; retrying at the next tick");
            int64_t took_ms = (upm_clock_mono_ns() - t0) / 1000000;
            wait_ms = w->cycle_ms - took_ms % w->cycle_ms;
            pthread_mutex_lock(&w->mu);
        }
        if (w->quit)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        add_ms(&ts, wait_ms);
        uint64_t term = w->term;
        bool run = w->run;
        while (!w->quit && w->term == term && w->run == run &&
               pthread_cond_timedwait(&w->cond, &w->mu, &ts) == 0) {
        }
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static void usage(FILE *out)
{
    fputs("usage: upmon-analyzer [--config FILE] [--leader-election=on|off] [--once "
          "[--print-metrics]]\n"
          "                      [--check-config] [--help]\n"
          "  --config FILE             YAML configuration (sections log, http, clickhouse, k8s,\n"
          "                            lease, analyzer); every key is overridable by\n"
          "                            UPMON_<SECTION>_<KEY>\n"
          "  --leader-election=off     one local instance: lead without a Kubernetes Lease\n"
          "  --once                    run one cycle (no election), print its timing, exit\n"
          "  --print-metrics           with --once: print the /metrics text after the cycle\n"
          "  --check-config            validate, print the effective config, exit\n"
          "  --help                    this text\n\n"
          "The analyzer section (the others are in the README):\n\n",
          out);
    static struct an_config acfg;
    const struct upm_config_section own[] = {{"analyzer", an_config_keys, an_config_nkeys, &acfg}};
    upm_config_dump_markdown(own, 1, out);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    bool check = false, election = true, once = false, print_metrics = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            path = argv[i] + 9;
        } else if (strcmp(argv[i], "--leader-election=off") == 0) {
            election = false;
        } else if (strcmp(argv[i], "--leader-election=on") == 0) {
            election = true;
        } else if (strcmp(argv[i], "--once") == 0) {
            once = true;
        } else if (strcmp(argv[i], "--print-metrics") == 0) {
            print_metrics = true;
        } else if (strcmp(argv[i], "--check-config") == 0) {
            check = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "upmon-analyzer: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (once)
        election = false;

    struct upm_log_config lcfg = {0};
    struct upm_httpd_config hcfg = {0};
    struct upm_ch_config ccfg = {0};
    struct upm_k8s_config kcfg = {0};
    struct upm_lease_config lscfg = {0};
    struct an_config acfg = {0};
    /* The common http table with the analyzer's own default port. */
    struct upm_config_key http_keys[16];
    size_t nhttp = upm_httpd_config_nkeys < 16 ? upm_httpd_config_nkeys : 16;
    memcpy(http_keys, upm_httpd_config_keys, nhttp * sizeof(http_keys[0]));
    for (size_t i = 0; i < nhttp; i++) {
        if (strcmp(http_keys[i].name, "port") == 0)
            http_keys[i].def = "9303";
    }
    const struct upm_config_section sections[] = {
        {"log", upm_log_config_keys, upm_log_config_nkeys, &lcfg},
        {"http", http_keys, nhttp, &hcfg},
        {"clickhouse", upm_ch_config_keys, upm_ch_config_nkeys, &ccfg},
        {"k8s", upm_k8s_config_keys, upm_k8s_config_nkeys, &kcfg},
        {"lease", upm_lease_config_keys, upm_lease_config_nkeys, &lscfg},
        {"analyzer", an_config_keys, an_config_nkeys, &acfg},
    };
    const size_t nsections = sizeof(sections) / sizeof(sections[0]);
    struct upm_prom_registry *reg = NULL;
    struct upm_httpd *httpd = NULL;
    struct upm_k8s_client *k8s = NULL;
    struct upm_lease *lease = NULL;
    struct worker w;
    bool worker_started = false;
    pthread_t thread;
    char err[1024];
    int rc = 1;

    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w.cond, &ca);
    pthread_condattr_destroy(&ca);

    if (upm_config_load(sections, nsections, path, err, sizeof(err)) != 0 ||
        (election && upm_lease_config_validate(&lscfg, err, sizeof(err)) != 0)) {
        fprintf(stderr, "upmon-analyzer: %s\n", err);
        goto out;
    }
    if (check) {
        upm_config_print(sections, nsections, stdout);
        rc = 0;
        goto out;
    }
    upm_log_apply(&lcfg);
    curl_global_init(CURL_GLOBAL_DEFAULT);

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    reg = upm_prom_registry_create();
    w.cycle_ms = acfg.cycle_ms;
    w.overruns = upm_prom_series_get(
        upm_prom_counter(reg, "upmon_analyzer_cycle_overruns_total",
                         "Cycles that took longer than the cycle interval.", 0, NULL),
        NULL);
    w.an = analyzer_create(&acfg, &ccfg, reg, gate, &w, &stop_flag, err, sizeof(err));
    if (!w.an) {
        upm_log_error(MOD, "start failed | error=\"%s\"", err);
        goto out;
    }
    if (once) {
        w.run = true;
        int64_t t0 = upm_clock_mono_ns();
        rc = analyzer_cycle(w.an) == 0 ? 0 : 1;
        printf("cycle rc=%d seconds=%.3f\n", rc, (double)(upm_clock_mono_ns() - t0) / 1e9);
        if (print_metrics) {
            struct upm_buf b;
            upm_buf_init(&b, 0);
            upm_prom_render(reg, &b);
            fwrite(b.data ? b.data : "", 1, b.len, stdout);
            upm_buf_free(&b);
        }
        goto out;
    }
    httpd = upm_httpd_create(&hcfg, reg, err, sizeof(err));
    if (!httpd || upm_httpd_start(httpd, err, sizeof(err)) != 0) {
        upm_log_error(MOD, "http server failed | error=\"%s\"", err);
        goto out;
    }
    if (pthread_create(&thread, NULL, worker_main, &w) != 0) {
        upm_log_error(MOD, "cannot start the analysis thread");
        goto out;
    }
    worker_started = true;
    if (election) {
        k8s = upm_k8s_client_create(&kcfg, NULL, err, sizeof(err));
        if (!k8s) {
            upm_log_error(MOD, "kubernetes client failed | error=\"%s\"", err);
            goto out;
        }
        lease = upm_lease_create(&lscfg, k8s, reg,
                                 &(struct upm_lease_callbacks){start_leading, stop_leading, &w},
                                 NULL, err, sizeof(err));
        if (!lease) {
            upm_log_error(MOD, "lease failed | error=\"%s\"", err);
            goto out;
        }
        pthread_mutex_lock(&w.mu);
        w.lease = lease;
        pthread_mutex_unlock(&w.mu);
        if (upm_lease_start(lease, err, sizeof(err)) != 0) {
            upm_log_error(MOD, "lease failed | error=\"%s\"", err);
            goto out;
        }
    } else {
        upm_prom_set(
            upm_prom_series_get(
                upm_prom_gauge(reg, "upmon_leader", "1 while this replica is the leader.", 0, NULL),
                NULL),
            1);
        start_leading(&w);
    }
    /* A standby is ready too: readiness is about serving /metrics. */
    upm_httpd_set_ready(httpd, true, NULL);
    upm_log_info(MOD,
                 "upmon-analyzer running | http_port=%d election=%s identity=%s cycle_ms=%" PRId64
                 " clock=%s",
                 upm_httpd_port(httpd), election ? "lease" : "off",
                 lease ? upm_lease_identity(lease) : "-", acfg.cycle_ms, acfg.clock);
    while (!stop_flag)
        upm_clock_sleep_ms(200, &stop_flag);
    upm_log_info(MOD, "signal received: stopping");
    upm_httpd_set_ready(httpd, false, "shutting down");
    rc = 0;
out:
    /* The elector stops leader work and releases the Lease first. */
    upm_lease_destroy(lease);
    if (worker_started) {
        pthread_mutex_lock(&w.mu);
        w.quit = true;
        pthread_cond_broadcast(&w.cond);
        pthread_mutex_unlock(&w.mu);
        pthread_join(thread, NULL);
    }
    analyzer_destroy(w.an);
    upm_k8s_client_destroy(k8s);
    upm_httpd_destroy(httpd);
    upm_prom_registry_destroy(reg);
    upm_config_free(sections, nsections);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cond);
    return rc;
}
