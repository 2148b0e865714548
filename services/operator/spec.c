/*
 * spec — parse a ClickHouseCluster object; see spec.h.
 */
#include "spec.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "upmon/alloc.h"

static int fail(char *errstr, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *errstr, size_t size, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(errstr, size, fmt, ap);
    va_end(ap);
    return -1;
}

bool chc_dns_label_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > 63 || !isalnum((unsigned char)s[0]) || !isalnum((unsigned char)s[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
            return false;
    return true;
}

bool chc_dns_subdomain_valid(const char *s)
{
    size_t n = strlen(s), start = 0;

    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            char label[64];
            size_t len = i - start;

            if (len == 0 || len > 63)
                return false;
            memcpy(label, s + start, len);
            label[len] = '\0';
            if (!chc_dns_label_valid(label))
                return false;
            start = i + 1;
        }
    }
    return true;
}

bool chc_quantity_valid(const char *s)
{
    static const char *const suffixes[] = {"",  "Ki", "Mi", "Gi", "Ti", "Pi",
                                           "k", "M",  "G",  "T",  "P"};
    const char *p = s;

    if (!isdigit((unsigned char)*p))
        return false;
    while (isdigit((unsigned char)*p))
        p++;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++)
        if (strcmp(p, suffixes[i]) == 0)
            return true;
    return false;
}

static bool ident_valid(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n == 0 || n > max || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return false;
    return true;
}

bool chc_settings_key_valid(const char *s)
{
    char part[128];
    size_t start = 0, n = strlen(s);

    if (n == 0 || n > 255)
        return false;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == '/') {
            size_t len = i - start;

            if (len == 0 || len >= sizeof(part))
                return false;
            memcpy(part, s + start, len);
            part[len] = '\0';
            if (!ident_valid(part, sizeof(part) - 1))
                return false;
            start = i + 1;
        }
    }
    return true;
}

/* A string field: absent → def (may be NULL = required). */
static int get_str(const cJSON *obj, const char *key, const char *def, const char *path, char **out,
                   char *errstr, size_t size)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;

    if (!v || cJSON_IsNull(v)) {
        if (!def)
            return fail(errstr, size, "%s%s: is required", path, key);
        *out = upm_strdup(def);
        return 0;
    }
    if (!cJSON_IsString(v) || !v->valuestring)
        return fail(errstr, size, "%s%s: must be a string", path, key);
    if (strlen(v->valuestring) > 4096)
        return fail(errstr, size, "%s%s: longer than 4096 bytes", path, key);
    *out = upm_strdup(v->valuestring);
    return 0;
}

static int get_int(const cJSON *obj, const char *key, int def, int min, int max, const char *path,
                   int *out, char *errstr, size_t size)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;

    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v))
        return fail(errstr, size, "%s%s: must be an integer", path, key);
    /* Range first: casting a huge double to an integer is undefined. */
    if (!(v->valuedouble >= min && v->valuedouble <= max))
        return fail(errstr, size, "%s%s: must be %d..%d, not %.0f", path, key, min, max,
                    v->valuedouble);
    if (v->valuedouble != (double)(int)v->valuedouble)
        return fail(errstr, size, "%s%s: must be an integer", path, key);
    *out = (int)v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *obj, const char *key, bool def, const char *path, bool *out,
                    char *errstr, size_t size)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;

    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return fail(errstr, size, "%s%s: must be true or false", path, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static const cJSON *get_obj(const cJSON *obj, const char *key, const char *path, char *errstr,
                            size_t size, int *rc)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;

    *rc = 0;
    if (!v || cJSON_IsNull(v))
        return NULL;
    if (!cJSON_IsObject(v)) {
        *rc = fail(errstr, size, "%s%s: must be an object", path, key);
        return NULL;
    }
    return v;
}

static int get_strings(const cJSON *obj, const char *key, const char *path, char ***out, size_t *n,
                       char *errstr, size_t size)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    const cJSON *it;
    size_t i = 0;

    *out = NULL;
    *n = 0;
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsArray(v))
        return fail(errstr, size, "%s%s: must be a list of strings", path, key);
    if (cJSON_GetArraySize(v) > 64)
        return fail(errstr, size, "%s%s: more than 64 items", path, key);
    *out = upm_calloc((size_t)cJSON_GetArraySize(v) + 1, sizeof(char *));
    cJSON_ArrayForEach(it, v)
    {
        if (!cJSON_IsString(it) || !it->valuestring || strlen(it->valuestring) > 4096)
            return fail(errstr, size, "%s%s[%zu]: must be a string", path, key, i);
        (*out)[i++] = upm_strdup(it->valuestring);
        *n = i;
    }
    return 0;
}

static int get_map(const cJSON *obj, const char *key, const char *path, bool check_keys,
                   struct chc_kv **out, size_t *n, char *errstr, size_t size)
{
    int rc;
    const cJSON *m = get_obj(obj, key, path, errstr, size, &rc);
    const cJSON *it;

    *out = NULL;
    *n = 0;
    if (rc != 0 || !m)
        return rc;
    if (cJSON_GetArraySize(m) > 256)
        return fail(errstr, size, "%s%s: more than 256 entries", path, key);
    *out = upm_calloc((size_t)cJSON_GetArraySize(m) + 1, sizeof(**out));
    cJSON_ArrayForEach(it, m)
    {
        if (check_keys && !chc_settings_key_valid(it->string))
            return fail(errstr, size,
                        "%s%s: key \"%.64s\" is not an element path (names of letters, digits "
                        "and '_' joined by '/')",
                        path, key, it->string);
        if (!cJSON_IsString(it) || !it->valuestring)
            return fail(errstr, size, "%s%s.%.64s: must be a string", path, key, it->string);
        (*out)[*n].key = upm_strdup(it->string);
        (*out)[*n].value = upm_strdup(it->valuestring);
        (*n)++;
    }
    return 0;
}

static int parse_spec(const cJSON *spec, struct chc_spec *s, char *errstr, size_t size)
{
    const cJSON *coord, *storage, *retention, *v, *it;
    int rc;
    size_t i;

    if (!spec || !cJSON_IsObject(spec))
        return fail(errstr, size, "spec: is required and must be an object");
    if (get_int(spec, "shards", 1, 1, CHC_MAX_SHARDS, "spec.", &s->shards, errstr, size) != 0 ||
        get_int(spec, "replicas", 2, 1, CHC_MAX_REPLICAS, "spec.", &s->replicas, errstr, size) !=
            0 ||
        get_str(spec, "image", "clickhouse/clickhouse-server:24.8", "spec.", &s->image, errstr,
                size) != 0 ||
        get_str(spec, "imagePullPolicy", "IfNotPresent", "spec.", &s->pull_policy, errstr, size) !=
            0 ||
        get_strings(spec, "command", "spec.", &s->command, &s->ncommand, errstr, size) != 0 ||
        get_str(spec, "database", "upmon", "spec.", &s->database, errstr, size) != 0 ||
        get_str(spec, "clusterName", "upmon", "spec.", &s->cluster_name, errstr, size) != 0)
        return -1;
    if (s->image[0] == '\0')
        return fail(errstr, size, "spec.image: must not be empty");
    if (strcmp(s->pull_policy, "Always") != 0 && strcmp(s->pull_policy, "IfNotPresent") != 0 &&
        strcmp(s->pull_policy, "Never") != 0)
        return fail(errstr, size, "spec.imagePullPolicy: must be Always, IfNotPresent or Never");
    if (!ident_valid(s->database, 63))
        return fail(errstr, size, "spec.database: \"%.64s\" is not an identifier", s->database);
    if (!ident_valid(s->cluster_name, 63))
        return fail(errstr, size, "spec.clusterName: \"%.64s\" is not an identifier",
                    s->cluster_name);

    coord = get_obj(spec, "coordination", "spec.", errstr, size, &rc);
    if (rc != 0)
        return -1;
    if (!coord)
        return fail(errstr, size, "spec.coordination: is required");
    if (get_str(coord, "kind", "zookeeper", "spec.coordination.", &s->coord_kind, errstr, size) !=
            0 ||
        get_str(coord, "root", "", "spec.coordination.", &s->coord_root, errstr, size) != 0 ||
        get_int(coord, "sessionTimeoutMs", 30000, 1000, 600000, "spec.coordination.",
                &s->session_timeout_ms, errstr, size) != 0)
        return -1;
    if (strcmp(s->coord_kind, "zookeeper") != 0 && strcmp(s->coord_kind, "keeper") != 0)
        return fail(errstr, size, "spec.coordination.kind: must be zookeeper or keeper");
    if (s->coord_root[0] && s->coord_root[0] != '/')
        return fail(errstr, size, "spec.coordination.root: must start with '/'");
    for (const char *p = s->coord_root; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("/_.-", *p)))
            return fail(errstr, size, "spec.coordination.root: invalid character '%c'", *p);
    v = cJSON_GetObjectItemCaseSensitive(coord, "nodes");
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) < 1 || cJSON_GetArraySize(v) > 7)
        return fail(errstr, size, "spec.coordination.nodes: must list 1..7 nodes");
    s->nodes = upm_calloc((size_t)cJSON_GetArraySize(v), sizeof(*s->nodes));
    i = 0;
    cJSON_ArrayForEach(it, v)
    {
        char path[64];

        snprintf(path, sizeof(path), "spec.coordination.nodes[%zu].", i);
        if (!cJSON_IsObject(it))
            return fail(errstr, size, "%.60s: must be an object", path);
        if (get_str(it, "host", NULL, path, &s->nodes[i].host, errstr, size) != 0)
            return -1;
        s->nnodes = i + 1;
        if (get_int(it, "port", 2181, 1, 65535, path, &s->nodes[i].port, errstr, size) != 0)
            return -1;
        if (!chc_dns_subdomain_valid(s->nodes[i].host))
            return fail(errstr, size, "%shost: \"%.64s\" is not a DNS name", path,
                        s->nodes[i].host);
        i++;
    }

    v = cJSON_GetObjectItemCaseSensitive(spec, "resources");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsObject(v))
            return fail(errstr, size, "spec.resources: must be an object");
        s->resources = cJSON_Duplicate(v, 1);
    }
    storage = get_obj(spec, "storage", "spec.", errstr, size, &rc);
    if (rc != 0)
        return -1;
    {
        char *reclaim = NULL;

        if (get_str(storage, "size", "10Gi", "spec.storage.", &s->storage_size, errstr, size) !=
                0 ||
            get_str(storage, "storageClassName", "", "spec.storage.", &s->storage_class, errstr,
                    size) != 0 ||
            get_str(storage, "reclaimPolicy", "Retain", "spec.storage.", &reclaim, errstr, size) !=
                0) {
            free(reclaim);
            return -1;
        }
        if (strcmp(reclaim, "Retain") != 0 && strcmp(reclaim, "Delete") != 0) {
            free(reclaim);
            return fail(errstr, size, "spec.storage.reclaimPolicy: must be Retain or Delete");
        }
        s->reclaim_retain = strcmp(reclaim, "Retain") == 0;
        free(reclaim);
    }
    if (!chc_quantity_valid(s->storage_size))
        return fail(errstr, size, "spec.storage.size: \"%.64s\" is not a quantity (e.g. 10Gi)",
                    s->storage_size);
    if (s->storage_class[0] && !chc_dns_subdomain_valid(s->storage_class))
        return fail(errstr, size, "spec.storage.storageClassName: \"%.64s\" is not a name",
                    s->storage_class);
    if (get_map(spec, "settings", "spec.", true, &s->settings, &s->nsettings, errstr, size) != 0 ||
        get_map(spec, "profileSettings", "spec.", true, &s->profile_settings, &s->nprofile_settings,
                errstr, size) != 0)
        return -1;

    v = cJSON_GetObjectItemCaseSensitive(spec, "users");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > 32)
            return fail(errstr, size, "spec.users: must be a list of at most 32 users");
        s->users = upm_calloc((size_t)cJSON_GetArraySize(v) + 1, sizeof(*s->users));
        i = 0;
        cJSON_ArrayForEach(it, v)
        {
            char path[64], spath[80];
            struct chc_user *u = &s->users[i];
            const cJSON *sec;

            snprintf(path, sizeof(path), "spec.users[%zu].", i);
            s->nusers = i + 1;
            if (!cJSON_IsObject(it))
                return fail(errstr, size, "%.60s: must be an object", path);
            if (get_str(it, "name", NULL, path, &u->name, errstr, size) != 0 ||
                get_str(it, "profile", "default", path, &u->profile, errstr, size) != 0 ||
                get_strings(it, "networks", path, &u->networks, &u->nnetworks, errstr, size) != 0)
                return -1;
            if (!ident_valid(u->name, 63))
                return fail(errstr, size, "%sname: \"%.64s\" is not an identifier", path, u->name);
            if (strcmp(u->name, "default") == 0 || strcmp(u->name, "upmon_internal") == 0)
                return fail(errstr, size, "%sname: \"%s\" is reserved by the operator", path,
                            u->name);
            if (!ident_valid(u->profile, 63))
                return fail(errstr, size, "%sprofile: \"%.64s\" is not an identifier", path,
                            u->profile);
            for (size_t k = 0; k < u->nnetworks; k++)
                for (const char *p = u->networks[k]; *p; p++)
                    if (!(isxdigit((unsigned char)*p) || strchr(".:/", *p)))
                        return fail(errstr, size, "%snetworks[%zu]: \"%.64s\" is not a network",
                                    path, k, u->networks[k]);
            for (size_t k = 0; k < i; k++)
                if (strcmp(s->users[k].name, u->name) == 0)
                    return fail(errstr, size, "%sname: \"%s\" appears twice", path, u->name);
            snprintf(spath, sizeof(spath), "%spasswordSecret.", path);
            sec = get_obj(it, "passwordSecret", path, errstr, size, &rc);
            if (rc != 0)
                return -1;
            if (!sec)
                return fail(errstr, size, "%spasswordSecret: is required", path);
            if (get_str(sec, "name", NULL, spath, &u->secret_name, errstr, size) != 0 ||
                get_str(sec, "key", NULL, spath, &u->secret_key, errstr, size) != 0)
                return -1;
            if (!chc_dns_subdomain_valid(u->secret_name))
                return fail(errstr, size, "%sname: \"%.64s\" is not a Secret name", spath,
                            u->secret_name);
            i++;
        }
    }

    retention = get_obj(spec, "retention", "spec.", errstr, size, &rc);
    if (rc != 0 ||
        get_bool(retention, "enabled", true, "spec.retention.", &s->retention_enabled, errstr,
                 size) != 0 ||
        get_int(retention, "rawDays", 30, 1, 100000, "spec.retention.", &s->retention_raw_days,
                errstr, size) != 0 ||
        get_int(retention, "fineDays", 90, 1, 100000, "spec.retention.", &s->retention_fine_days,
                errstr, size) != 0 ||
        get_int(retention, "dailyDays", 400, 1, 100000, "spec.retention.", &s->retention_daily_days,
                errstr, size) != 0 ||
        get_int(retention, "intervalSeconds", 3600, 60, 86400 * 7, "spec.retention.",
                &s->retention_interval_s, errstr, size) != 0)
        return -1;
    v = cJSON_GetObjectItemCaseSensitive(spec, "podTemplate");
    if (v && !cJSON_IsNull(v)) {
        if (!cJSON_IsObject(v))
            return fail(errstr, size, "spec.podTemplate: must be an object");
        s->pod_template = cJSON_Duplicate(v, 1);
    }
    return 0;
}

static void copy_str(const cJSON *obj, const char *key, char *out, size_t size)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;

    out[0] = '\0';
    if (cJSON_IsString(v) && v->valuestring)
        snprintf(out, size, "%s", v->valuestring);
}

static int64_t get_i64(const cJSON *obj, const char *key)
{
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;

    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9.0e15)
        return 0;
    return (int64_t)v->valuedouble;
}

static void parse_status(const cJSON *st, struct chc_status *s)
{
    const cJSON *d, *shards;

    if (!cJSON_IsObject(st))
        return;
    s->observed_generation = get_i64(st, "observedGeneration");
    s->published_shards = (int)get_i64(st, "publishedShards");
    if (s->published_shards > CHC_MAX_SHARDS)
        s->published_shards = CHC_MAX_SHARDS;
    s->topology_generation = get_i64(st, "topologyGeneration");
    copy_str(st, "phase", s->phase, sizeof(s->phase));
    copy_str(st, "currentImage", s->current_image, sizeof(s->current_image));
    copy_str(st, "rejectedImage", s->rejected_image, sizeof(s->rejected_image));
    d = cJSON_GetObjectItemCaseSensitive(st, "drain");
    if (!cJSON_IsObject(d))
        return;
    shards = cJSON_GetObjectItemCaseSensitive(d, "shards");
    if (cJSON_IsArray(shards) && cJSON_GetArraySize(shards) > 0) {
        const cJSON *first = cJSON_GetArrayItem(shards, 0);
        const cJSON *last = cJSON_GetArrayItem(shards, cJSON_GetArraySize(shards) - 1);

        if (cJSON_IsNumber(first) && cJSON_IsNumber(last) && first->valuedouble >= 1 &&
            last->valuedouble >= first->valuedouble && last->valuedouble <= CHC_MAX_SHARDS) {
            s->drain.from = (int)first->valuedouble;
            s->drain.to = (int)last->valuedouble;
        }
    }
    s->drain.step = get_i64(d, "step");
    s->drain.steps = get_i64(d, "steps");
    s->drain.rows_moved = get_i64(d, "rowsMoved");
    s->drain.source = (int)(get_i64(d, "source") % (CHC_MAX_SHARDS + 1));
    s->drain.part = (int)(get_i64(d, "part") % 100000000);
    s->drain.sub = (int)(get_i64(d, "sub") % 1000000);
    s->drain.subs = (int)(get_i64(d, "subs") % 1000000);
    copy_str(d, "table", s->drain.table, sizeof(s->drain.table));
    copy_str(d, "partition", s->drain.partition, sizeof(s->drain.partition));
    copy_str(d, "startedAt", s->drain.started_at, sizeof(s->drain.started_at));
    copy_str(d, "emptySince", s->drain.empty_since, sizeof(s->drain.empty_since));
}

int chc_parse(const cJSON *obj, struct chc *out, char *errstr, size_t errstr_size)
{
    const cJSON *meta;

    memset(out, 0, sizeof(*out));
    if (!cJSON_IsObject(obj)) {
        fail(errstr, errstr_size, "resource: not a JSON object");
        return -1;
    }
    meta = cJSON_GetObjectItemCaseSensitive(obj, "metadata");
    if (!cJSON_IsObject(meta)) {
        fail(errstr, errstr_size, "metadata: is required");
        return -1;
    }
    if (get_str(meta, "namespace", NULL, "metadata.", &out->ns, errstr, errstr_size) != 0 ||
        get_str(meta, "name", NULL, "metadata.", &out->name, errstr, errstr_size) != 0 ||
        get_str(meta, "uid", "", "metadata.", &out->uid, errstr, errstr_size) != 0 ||
        get_str(meta, "resourceVersion", "", "metadata.", &out->resource_version, errstr,
                errstr_size) != 0)
        goto bad;
    if (!chc_dns_label_valid(out->ns)) {
        fail(errstr, errstr_size, "metadata.namespace: \"%.64s\" is not a DNS label", out->ns);
        goto bad;
    }
    /* Names become StatefulSet and pod names: <name>-s<N>-<R> must stay a label. */
    if (!chc_dns_label_valid(out->name) || strlen(out->name) > 40) {
        fail(errstr, errstr_size,
             "metadata.name: \"%.64s\" must be a DNS label of at most 40 characters (pod names "
             "add -sNN-R and the StatefulSet's revision hash)",
             out->name);
        goto bad;
    }
    out->generation = get_i64(meta, "generation");
    out->deleting = cJSON_GetObjectItemCaseSensitive(meta, "deletionTimestamp") != NULL;
    if (parse_spec(cJSON_GetObjectItemCaseSensitive(obj, "spec"), &out->spec, errstr,
                   errstr_size) != 0)
        goto bad;
    parse_status(cJSON_GetObjectItemCaseSensitive(obj, "status"), &out->status);
    return 0;
bad:
    chc_free(out);
    return -1;
}

static void free_strings(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void free_kv(struct chc_kv *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(kv[i].key);
        free(kv[i].value);
    }
    free(kv);
}

void chc_free(struct chc *c)
{
    struct chc_spec *s;

    if (!c)
        return;
    s = &c->spec;
    free(c->ns);
    free(c->name);
    free(c->uid);
    free(c->resource_version);
    free(s->image);
    free(s->pull_policy);
    free_strings(s->command, s->ncommand);
    free(s->database);
    free(s->cluster_name);
    free(s->coord_kind);
    for (size_t i = 0; i < s->nnodes; i++)
        free(s->nodes[i].host);
    free(s->nodes);
    free(s->coord_root);
    cJSON_Delete(s->resources);
    free(s->storage_size);
    free(s->storage_class);
    free_kv(s->settings, s->nsettings);
    free_kv(s->profile_settings, s->nprofile_settings);
    for (size_t i = 0; i < s->nusers; i++) {
        free(s->users[i].name);
        free(s->users[i].secret_name);
        free(s->users[i].secret_key);
        free(s->users[i].profile);
        free_strings(s->users[i].networks, s->users[i].nnetworks);
    }
    free(s->users);
    cJSON_Delete(s->pod_template);
    memset(c, 0, sizeof(*c));
}
