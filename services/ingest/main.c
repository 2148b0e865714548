/*
 * upmon-ingest — Kafka events into the sharded ClickHouse cluster, each
 * valid event stored exactly once (docs/ingest.md).
 */
#include <curl/curl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingest.h"
#include "topology.h"
#include "upmon/clickhouse.h"
#include "upmon/config.h"
#include "upmon/httpd.h"
#include "upmon/kafka.h"
#include "upmon/log.h"
#include "upmon/prom.h"

#define MOD "main"

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: upmon-ingest [--config FILE] [--check-config] [--help]\n"
                 "  --config FILE   YAML configuration (sections log, http, kafka, clickhouse,\n"
                 "                  ingest); every key can be overridden by UPMON_<SECTION>_<KEY>\n"
                 "  --check-config  validate, print the effective configuration (secrets\n"
                 "                  redacted) and exit 0, or print the error and exit 1\n"
                 "  --help          this text\n\n"
                 "The ingest section (log, http, kafka and clickhouse are in the README):\n\n");
    static struct ing_config icfg;
    const struct upm_config_section own[] = {{"ingest", ing_config_keys, ing_config_nkeys, &icfg}};
    upm_config_dump_markdown(own, 1, out);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int check = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strcmp(argv[i], "--check-config") == 0) {
            check = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "upmon-ingest: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }

    struct upm_log_config lcfg = {0};
    struct upm_httpd_config hcfg = {0};
    struct upm_kafka_config kcfg = {0};
    struct upm_ch_config ccfg = {0};
    struct ing_config icfg = {0};
    struct upm_k8s_config k8cfg = {0};
    struct ing_topology *topo = NULL;
    uint64_t topo_gen = 0;
    /* The common http table with ingest's own default port. */
    struct upm_config_key http_keys[16];
    size_t nhttp = upm_httpd_config_nkeys < 16 ? upm_httpd_config_nkeys : 16;
    memcpy(http_keys, upm_httpd_config_keys, nhttp * sizeof(http_keys[0]));
    for (size_t i = 0; i < nhttp; i++) {
        if (strcmp(http_keys[i].name, "port") == 0)
            http_keys[i].def = "9302";
    }
    const struct upm_config_section sections[] = {
        {"log", upm_log_config_keys, upm_log_config_nkeys, &lcfg},
        {"http", http_keys, nhttp, &hcfg},
        {"kafka", upm_kafka_config_keys, upm_kafka_config_nkeys, &kcfg},
        {"clickhouse", upm_ch_config_keys, upm_ch_config_nkeys, &ccfg},
        {"ingest", ing_config_keys, ing_config_nkeys, &icfg},
        {"k8s", upm_k8s_config_keys, upm_k8s_config_nkeys, &k8cfg},
    };
    const size_t nsections = sizeof(sections) / sizeof(sections[0]);
    struct upm_prom_registry *reg = NULL;
    struct upm_httpd *httpd = NULL;
    struct ingest *in = NULL;
    char errstr[1024];
    int rc = 1;

    if (upm_config_load(sections, nsections, path, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "upmon-ingest: %s\n", errstr);
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
    httpd = upm_httpd_create(&hcfg, reg, errstr, sizeof(errstr));
    if (!httpd || upm_httpd_start(httpd, errstr, sizeof(errstr)) != 0) {
        upm_log_error(MOD, "http server failed | error=\"%s\"", errstr);
        goto out;
    }
    if (icfg.topology_resource[0]) {
        const char *ns =
            icfg.topology_namespace[0] ? icfg.topology_namespace : getenv("POD_NAMESPACE");
        topo = ing_topology_start(&k8cfg, ns, icfg.topology_resource, errstr, sizeof(errstr));
        if (!topo) {
            upm_log_error(MOD, "start failed | error=\"%s\"", errstr);
            goto out;
        }
        /* Not ready (readyz) until the operator has published a topology. */
        while (!stop_flag && !ing_topology_wait(topo, 5000, NULL))
            upm_log_info(MOD, "waiting for the write topology of ClickHouseCluster %s/%s", ns,
                         icfg.topology_resource);
        if (stop_flag) {
            rc = 0;
            goto out;
        }
        upm_strlist_free(&icfg.shards);
        ing_topology_take(topo, &topo_gen, &icfg.shards);
    }
    in = ingest_create(&icfg, &kcfg, &ccfg, reg, httpd, &stop_flag, errstr, sizeof(errstr));
    if (in && topo)
        ingest_follow_topology(in, topo, topo_gen);
    if (!in) {
        upm_log_error(MOD, "start failed | error=\"%s\"", errstr);
        goto out;
    }
    upm_log_info(MOD, "upmon-ingest running | http_port=%d shards=%zu", upm_httpd_port(httpd),
                 icfg.shards.count);
    rc = ingest_run(in) == 0 ? 0 : 1;
    upm_log_info(MOD, "upmon-ingest stopped | rc=%d", rc);
out:
    ingest_destroy(in);
    ing_topology_stop(topo);
    upm_httpd_destroy(httpd);
    upm_prom_registry_destroy(reg);
    upm_config_free(sections, nsections);
    return rc;
}
