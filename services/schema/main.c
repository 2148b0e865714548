/*
 * upmon-schema — the ClickHouse schema on every server of the cluster.
 *
 *   upmon-schema [--config FILE] [--sql-dir DIR] apply|status|verify
 *   upmon-schema [--config FILE] drop-expired [--dry-run]
 *   upmon-schema [--config FILE] --check-config
 *
 * A one-shot tool (a Kubernetes Job, a CI step, an operator's shell), so it
 * serves no /metrics: it reports on stdout, logs on stderr, and its exit
 * status is the result (0 ok, 1 failed, 2 usage or configuration).
 */
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "upmon/clickhouse.h"
#include "upmon/config.h"
#include "upmon/log.h"
#include "upmon/schema.h"

struct schema_config {
    struct upm_strlist topology;
    char *sql_dir;
    int64_t raw_days;
    int64_t fine_days;
    int64_t daily_days;
};

#define SC_F(f) offsetof(struct schema_config, f)
static const struct upm_config_key schema_keys[] = {
    {"topology", UPM_CFG_STRING_LIST, SC_F(topology), "", 1, 0, NULL,
     "Servers as shard:replica=url items; empty = every clickhouse.urls entry, shard and "
     "replica read from its macros.",
     0},
    {"sql_dir", UPM_CFG_STRING, SC_F(sql_dir), "", 1, 0, NULL,
     "Folder of NNNN_name.sql migrations; empty = the copy built into the binary.", 0},
    {"raw_days", UPM_CFG_INT, SC_F(raw_days), "365", 1, 36500, NULL,
     "Days of raw events (events_local) kept by drop-expired.", 0},
    {"fine_days", UPM_CFG_INT, SC_F(fine_days), "365", 1, 36500, NULL,
     "Days kept of the per-second, per-minute and per-attempt rollups.", 0},
    {"daily_days", UPM_CFG_INT, SC_F(daily_days), "1825", 1, 36500, NULL,
     "Days kept of the per-day rollup (whole months are dropped).", 0},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: upmon-schema [--config FILE] [--sql-dir DIR] COMMAND [--dry-run]\n"
                 "       upmon-schema [--config FILE] --check-config\n"
                 "commands:\n"
                 "  apply         apply pending migrations on every server\n"
                 "  status        list applied and pending migrations per server\n"
                 "  verify        exit 1 unless every server has every migration and table\n"
                 "  drop-expired  drop partitions older than the schema.*_days ages\n"
                 "options:\n"
                 "  --config FILE   YAML configuration (sections log, clickhouse, schema);\n"
                 "                  every key is overridable by UPMON_<SECTION>_<KEY>\n"
                 "  --sql-dir DIR   read migrations from DIR instead of the built-in copy\n"
                 "  --dry-run       drop-expired: list what would be dropped, drop nothing\n"
                 "  --check-config  validate and print the effective configuration, exit 0/1\n"
                 "  --help          this text\n"
                 "sections: log and clickhouse (see the README's configuration reference;\n"
                 "clickhouse.urls lists every server unless schema.topology is set) and:\n\n");
    /* The service's own section, from the same table the loader uses. */
    static struct schema_config scratch;
    const struct upm_config_section own[] = {
        {"schema", schema_keys, sizeof(schema_keys) / sizeof(schema_keys[0]), &scratch},
    };
    upm_config_dump_markdown(own, 1, out);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"sql-dir", required_argument, NULL, 's'},
        {"dry-run", no_argument, NULL, 'n'},      {"check-config", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *sql_dir = NULL;
    int dry_run = 0, check_config = 0, c;
    while ((c = getopt_long(argc, argv, "c:s:nkh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 's':
            sql_dir = optarg;
            break;
        case 'n':
            dry_run = 1;
            break;
        case 'k':
            check_config = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    const char *cmd = optind < argc ? argv[optind] : NULL;
    if (!check_config && (!cmd || optind + 1 != argc)) {
        usage(stderr);
        return 2;
    }
    if (cmd && strcmp(cmd, "apply") && strcmp(cmd, "status") && strcmp(cmd, "verify") &&
        strcmp(cmd, "drop-expired")) {
        fprintf(stderr, "upmon-schema: unknown command \"%s\"\n", cmd);
        usage(stderr);
        return 2;
    }
    if (dry_run && cmd && strcmp(cmd, "drop-expired") != 0) {
        fprintf(stderr, "upmon-schema: --dry-run only applies to drop-expired\n");
        return 2;
    }

    struct upm_log_config log_cfg = {0};
    struct upm_ch_config ch_cfg = {0};
    struct schema_config sc = {0};
    const struct upm_config_section sections[] = {
        {"log", upm_log_config_keys, upm_log_config_nkeys, &log_cfg},
        {"clickhouse", upm_ch_config_keys, upm_ch_config_nkeys, &ch_cfg},
        {"schema", schema_keys, sizeof(schema_keys) / sizeof(schema_keys[0]), &sc},
    };
    const size_t nsections = sizeof(sections) / sizeof(sections[0]);
    struct upm_schema_set *set = NULL;
    struct upm_schema_targets targets = {0};
    char errstr[1024] = "";
    int rc = 1;

    if (upm_config_load(sections, nsections, config_path, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "upmon-schema: configuration: %s\n", errstr);
        rc = check_config ? 1 : 2;
        goto out;
    }
    upm_log_apply(&log_cfg);
    if (!sql_dir && sc.sql_dir && *sc.sql_dir)
        sql_dir = sc.sql_dir;
    set = sql_dir ? upm_schema_set_from_dir(sql_dir, errstr, sizeof(errstr))
                  : upm_schema_set_embedded(errstr, sizeof(errstr));
    if (!set) {
        fprintf(stderr, "upmon-schema: migrations: %s\n", errstr);
        goto out;
    }
    if (sc.topology.count > 0 &&
        upm_schema_parse_topology(&sc.topology, &targets, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "upmon-schema: schema.topology: %s\n", errstr);
        goto out;
    }
    if (check_config) {
        upm_config_print(sections, nsections, stdout);
        printf("# %zu migration(s) from %s, last %s\n", set->count,
               sql_dir ? sql_dir : "the built-in copy", set->items[set->count - 1].name);
        rc = 0;
        goto out;
    }
    if (targets.count == 0 && upm_schema_discover(&ch_cfg, &targets, errstr, sizeof(errstr)) != 0) {
        fprintf(stderr, "upmon-schema: topology: %s\n", errstr);
        goto out;
    }

    int r;
    if (strcmp(cmd, "apply") == 0) {
        r = upm_schema_apply(set, &ch_cfg, &targets, stdout, errstr, sizeof(errstr));
    } else if (strcmp(cmd, "status") == 0) {
        r = upm_schema_status(set, &ch_cfg, &targets, stdout, errstr, sizeof(errstr));
    } else if (strcmp(cmd, "verify") == 0) {
        r = upm_schema_verify(set, &ch_cfg, &targets, stdout, errstr, sizeof(errstr));
    } else {
        struct upm_schema_retention ret = {sc.raw_days, sc.fine_days, sc.daily_days};
        r = upm_schema_drop_expired(&ch_cfg, &targets, &ret, (int64_t)time(NULL), dry_run != 0,
                                    stdout, NULL, NULL, errstr, sizeof(errstr));
    }
    if (r != 0) {
        fprintf(stderr, "upmon-schema: %s failed: %s\n", cmd, errstr);
        goto out;
    }
    rc = 0;
out:
    upm_schema_targets_free(&targets);
    upm_schema_set_destroy(set);
    upm_config_free(sections, nsections);
    return rc;
}
