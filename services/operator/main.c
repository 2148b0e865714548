/*
 * upmon-operator — runs ClickHouseCluster resources (upmon.io/v1alpha1): one
 * StatefulSet per shard, the generated configuration, the schema on new
 * shards, drains before removing shards, retention. docs/operator.md.
 *
 *   upmon-operator --config operator.yaml   (sections log, http, k8s, lease, operator)
 *
 * Replicas elect one leader with a Lease; only the leader reconciles, the
 * others keep their watches and stand by. SIGTERM: leader work stops, the
 * Lease is released (a standby takes over within one retry period), exit 0.
 */
#include <getopt.h>
#include <signal.h>
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
#include "controller.h"

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

struct leader {
    struct op_controller *ctl;
    struct upm_lease *lease;
};

static bool fence(void *opaque)
{
    struct leader *l = opaque;

    return upm_lease_fence_ok(l->lease);
}

static void start_leading(void *opaque)
{
    struct leader *l = opaque;

    if (op_controller_start(l->ctl, fence, l) != 0)
        upm_fatal("cannot start the reconcile thread");
}

static int stop_leading(void *opaque, int64_t timeout_ms)
{
    struct leader *l = opaque;

    return op_controller_stop(l->ctl, timeout_ms);
}

static void usage(FILE *out)
{
    fputs("usage: upmon-operator [--config FILE] [--check-config] [--help]\n"
          "Runs ClickHouseCluster resources (shards, replicas, schema, drain, retention).\n"
          "  --config FILE     YAML configuration (sections log, http, k8s, lease, operator);\n"
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
    struct op_config op_cfg = {0};
    const struct upm_config_section sections[] = {
        {"log", upm_log_config_keys, upm_log_config_nkeys, &log_cfg},
        {"http", upm_httpd_config_keys, upm_httpd_config_nkeys, &http_cfg},
        {"k8s", upm_k8s_config_keys, upm_k8s_config_nkeys, &k8s_cfg},
        {"lease", upm_lease_config_keys, upm_lease_config_nkeys, &lease_cfg},
        {"operator", op_config_keys, op_config_nkeys, &op_cfg},
    };
    const size_t nsections = sizeof(sections) / sizeof(sections[0]);
    const char *config_path = NULL;
    bool check_only = false;
    char err[512];
    struct upm_prom_registry *reg = NULL;
    struct upm_httpd *httpd = NULL;
    struct upm_k8s_client *client = NULL;
    struct leader leader = {0};
    struct sigaction sa;
    int c, rc = 1;

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
        fprintf(stderr, "upmon-operator: %s\n", err);
        goto out;
    }
    if (!lease_cfg.enabled) {
        fprintf(stderr, "upmon-operator: lease.enabled: must be true (two operators reconciling "
                        "one cluster would race)\n");
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
        upm_log_error("operator", "http server failed | error=\"%s\"", err);
        goto out;
    }
    client = upm_k8s_client_create(&k8s_cfg, NULL, err, sizeof(err));
    if (!client) {
        upm_log_error("operator", "kubernetes client failed | error=\"%s\"", err);
        goto out;
    }
    leader.ctl = op_controller_create(&op_cfg, &k8s_cfg, reg,
                                      getenv("POD_NAME") ? getenv("POD_NAME") : "upmon-operator",
                                      err, sizeof(err));
    if (!leader.ctl) {
        upm_log_error("operator", "%s", err);
        goto out;
    }
    leader.lease =
        upm_lease_create(&lease_cfg, client, reg,
                         &(struct upm_lease_callbacks){start_leading, stop_leading, &leader}, NULL,
                         err, sizeof(err));
    if (!leader.lease) {
        upm_log_error("operator", "lease failed | error=\"%s\"", err);
        goto out;
    }
    if (op_controller_watch(leader.ctl) != 0 ||
        upm_lease_start(leader.lease, err, sizeof(err)) != 0) {
        upm_log_error("operator", "start failed | error=\"%s\"", err);
        goto out;
    }
    upm_httpd_set_ready(httpd, true, NULL);
    upm_log_info("operator", "started | identity=%s lease=%s/%s server=%s",
                 upm_lease_identity(leader.lease), lease_cfg.ns, lease_cfg.name,
                 upm_k8s_client_server(client));
    while (!stop_signal)
        upm_clock_sleep_ms(100, NULL);
    upm_log_info("operator", "signal received: stopping | signal=%d", (int)stop_signal);
    upm_httpd_set_ready(httpd, false, "shutting down");
    rc = 0;
out:
    upm_lease_destroy(leader.lease);
    op_controller_destroy(leader.ctl);
    upm_k8s_client_destroy(client);
    upm_httpd_destroy(httpd);
    upm_prom_registry_destroy(reg);
    upm_config_free(sections, nsections);
    return rc;
}
