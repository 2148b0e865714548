/*
 * config_reference — the README's configuration reference, generated from
 * the key tables of the common sections.
 *
 *   config_reference                 print the Markdown reference
 *   config_reference --check FILE    exit 1 if FILE's block differs (a ctest)
 *   config_reference --write FILE    replace FILE's block in place
 *
 * The block sits between <!-- config-reference:begin --> and
 * <!-- config-reference:end -->. Services add their own sections to their
 * --help; this covers what every service shares.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/buf.h"
#include "upmon/clickhouse.h"
#include "upmon/config.h"
#include "upmon/httpd.h"
#include "upmon/k8s.h"
#include "upmon/kafka.h"
#include "upmon/lease.h"
#include "upmon/log.h"

#include "analyzer.h"
#include "controller.h"
#include "ingest.h"
#include "sim.h"

#define BEGIN_MARK "<!-- config-reference:begin -->\n"
#define END_MARK   "<!-- config-reference:end -->"

static char *render(void)
{
    static struct upm_log_config log_cfg;
    static struct upm_httpd_config http_cfg;
    static struct upm_kafka_config kafka_cfg;
    static struct upm_ch_config ch_cfg;
    static struct upm_k8s_config k8s_cfg;
    static struct upm_lease_config lease_cfg;
    static struct sim_config sim_cfg;
    static struct ing_config ing_cfg;
    static struct an_config an_cfg;
    static struct op_config op_cfg;
    const struct upm_config_section sections[] = {
        {"log", upm_log_config_keys, upm_log_config_nkeys, &log_cfg},
        {"http", upm_httpd_config_keys, upm_httpd_config_nkeys, &http_cfg},
        {"kafka", upm_kafka_config_keys, upm_kafka_config_nkeys, &kafka_cfg},
        {"clickhouse", upm_ch_config_keys, upm_ch_config_nkeys, &ch_cfg},
        {"k8s", upm_k8s_config_keys, upm_k8s_config_nkeys, &k8s_cfg},
        {"lease", upm_lease_config_keys, upm_lease_config_nkeys, &lease_cfg},
        /* The services' own sections (each service reads only its own). */
        {"simulator", sim_config_keys, sim_config_nkeys, &sim_cfg},
        {"ingest", ing_config_keys, ing_config_nkeys, &ing_cfg},
        {"analyzer", an_config_keys, an_config_nkeys, &an_cfg},
        {"operator", op_config_keys, op_config_nkeys, &op_cfg},
    };
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (!out) {
        perror("open_memstream");
        exit(2);
    }
    upm_config_dump_markdown(sections, sizeof(sections) / sizeof(sections[0]), out);
    fclose(out);
    return text;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "config_reference: %s: %s\n", path, strerror(errno));
        exit(2);
    }
    struct upm_buf b;
    upm_buf_init(&b, 16u << 20);
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (upm_buf_append(&b, chunk, n) != 0) {
            fprintf(stderr, "config_reference: %s: too large\n", path);
            exit(2);
        }
    }
    fclose(f);
    return upm_buf_steal(&b, NULL);
}

int main(int argc, char **argv)
{
    char *ref = render();
    if (argc == 1) {
        fputs(ref, stdout);
        free(ref);
        return 0;
    }
    if (argc != 3 || (strcmp(argv[1], "--check") != 0 && strcmp(argv[1], "--write") != 0)) {
        fprintf(stderr, "usage: config_reference [--check|--write README.md]\n");
        return 2;
    }
    char *doc = slurp(argv[2]);
    char *begin = strstr(doc, BEGIN_MARK);
    char *end = begin ? strstr(begin, END_MARK) : NULL;
    if (!begin || !end) {
        fprintf(stderr, "config_reference: %s has no config-reference markers\n", argv[2]);
        return 2;
    }
    begin += strlen(BEGIN_MARK);
    int rc = 0;
    if (strcmp(argv[1], "--check") == 0) {
        size_t have = (size_t)(end - begin);
        if (have != strlen(ref) || memcmp(begin, ref, have) != 0) {
            fprintf(stderr,
                    "config_reference: the configuration reference in %s is out of date;\n"
                    "regenerate it with: build/tests/config_reference --write %s\n",
                    argv[2], argv[2]);
            rc = 1;
        }
    } else {
        FILE *f = fopen(argv[2], "wb");
        if (!f) {
            fprintf(stderr, "config_reference: %s: %s\n", argv[2], strerror(errno));
            rc = 2;
        } else {
            fwrite(doc, 1, (size_t)(begin - doc), f);
            fputs(ref, f);
            fputs(end, f);
            if (fclose(f) != 0)
                rc = 2;
        }
    }
    free(doc);
    free(ref);
    return rc;
}
