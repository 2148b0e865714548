/*
 * spec — a ClickHouseCluster resource (upmon.io/v1alpha1) as the operator
 * reads it: the spec a user wrote and the parts of the status the operator
 * keeps its progress in.
 *
 * The API server validates the spec against the CRD schema first, so most
 * bad values never arrive; this parser checks again (a resource written while
 * an older CRD was installed, or a fuzzer) and names the field it rejects.
 * Every string is owned; free with chc_free.
 */
#ifndef UPMON_OPERATOR_SPEC_H
#define UPMON_OPERATOR_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define CHC_MAX_SHARDS   64
#define CHC_MAX_REPLICAS 5

struct chc_node {
    char *host;
    int port;
};

struct chc_kv {
    char *key;
    char *value;
};

struct chc_user {
    char *name;
    char *secret_name;
    char *secret_key;
    char *profile;
    char **networks;
    size_t nnetworks;
};

struct chc_spec {
    int shards;
    int replicas;
    char *image;
    char *pull_policy;
    char **command;
    size_t ncommand;
    char *database;
    char *cluster_name;
    char *coord_kind; /* zookeeper | keeper */
    struct chc_node *nodes;
    size_t nnodes;
    char *coord_root;
    int session_timeout_ms;
    cJSON *resources; /* owned copy, may be NULL */
    char *storage_size;
    char *storage_class; /* "" = default class */
    bool reclaim_retain;
    struct chc_kv *settings;
    size_t nsettings;
    struct chc_kv *profile_settings;
    size_t nprofile_settings;
    struct chc_user *users;
    size_t nusers;
    bool retention_enabled;
    int retention_raw_days, retention_fine_days, retention_daily_days;
    int retention_interval_s;
    cJSON *pod_template; /* owned copy, may be NULL */
};

/* What the operator recorded in .status (its progress between steps). */
struct chc_drain {
    int from; /* first departing shard (1-based); 0 = no drain */
    int to;   /* last departing shard */
    int64_t step, steps, rows_moved;
    int source;    /* departing shard the current (table, partition) is read from */
    int part;      /* index of the part being moved (min_block_number order) */
    int sub, subs; /* hash sub-chunk of that part, and their count (fixed per part) */
    char table[64];
    char partition[32];
    char started_at[32]; /* RFC 3339, "" = not recorded */
    char empty_since[32];
};

struct chc_status {
    int64_t observed_generation;
    int published_shards;
    int64_t topology_generation;
    char phase[32];
    char current_image[256];  /* the image every server runs ("" = spec.image) */
    char rejected_image[256]; /* an image the canary pod could not get */
    struct chc_drain drain;
};

struct chc {
    char *ns;
    char *name;
    char *uid;
    char *resource_version;
    int64_t generation;
    bool deleting; /* metadata.deletionTimestamp set */
    struct chc_spec spec;
    struct chc_status status;
};

/* Parse a ClickHouseCluster object. 0, or -1 with errstr naming the field
 * ("spec.shards: must be 1..64"); *out is then freed already. */
int chc_parse(const cJSON *obj, struct chc *out, char *errstr, size_t errstr_size);
/* NULL-safe; leaves *c zeroed. */
void chc_free(struct chc *c);

/* A Kubernetes resource quantity ("10Gi", "500M", "1.5Gi"). 1 if valid. */
bool chc_quantity_valid(const char *s);
/* A settings key: element names [A-Za-z_][A-Za-z0-9_]* joined by '/'. */
bool chc_settings_key_valid(const char *s);
/* A DNS-1123 subdomain (hosts) / label (names). */
bool chc_dns_subdomain_valid(const char *s);
bool chc_dns_label_valid(const char *s);

#endif
