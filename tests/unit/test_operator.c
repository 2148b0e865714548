/* upmon-operator's pure parts: the resource parser, the reconcile plan (desired
 * vs observed → the next step), the rendered configuration and objects, and
 * the drain's helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "drain.h"
#include "plan.h"
#include "render.h"
#include "spec.h"

static const char *const base_json =
    "{\"apiVersion\":\"upmon.io/v1alpha1\",\"kind\":\"ClickHouseCluster\","
    "\"metadata\":{\"name\":\"ch\",\"namespace\":\"data\",\"uid\":\"u-1\",\"generation\":3,"
    "\"resourceVersion\":\"42\"},"
    "\"spec\":{\"shards\":2,\"replicas\":2,\"image\":\"localhost/upmon/clickhouse:18.16\","
    "\"coordination\":{\"nodes\":[{\"host\":\"zk-0.zk\",\"port\":2181},{\"host\":\"zk-1.zk\"}]},"
    "\"storage\":{\"size\":\"1Gi\",\"storageClassName\":\"upmon-local\"},"
    "\"settings\":{\"max_concurrent_queries\":\"50\",\"merge_tree/parts_to_throw_insert\":\"600\"},"
    "\"users\":[{\"name\":\"upmon\",\"passwordSecret\":{\"name\":\"ch-users\",\"key\":\"pw\"}}]}}";

static int parse_text(const char *text, struct chc *c, char *err, size_t size)
{
    cJSON *j = cJSON_Parse(text);
    int rc;

    assert_non_null(j);
    rc = chc_parse(j, c, err, size);
    cJSON_Delete(j);
    return rc;
}

/* base_json with one field of spec replaced (path "spec.x" only). */
static int parse_with(const char *key, const char *value_json, struct chc *c, char *err,
                      size_t size)
{
    cJSON *j = cJSON_Parse(base_json), *spec = cJSON_GetObjectItem(j, "spec");
    int rc;

    cJSON_DeleteItemFromObject(spec, key);
    if (value_json)
        cJSON_AddItemToObject(spec, key, cJSON_Parse(value_json));
    rc = chc_parse(j, c, err, size);
    cJSON_Delete(j);
    return rc;
}

static void test_parse_defaults(void **state)
{
    struct chc c;
    char err[256] = "";

    (void)state;
    assert_int_equal(parse_text(base_json, &c, err, sizeof(err)), 0);
    assert_string_equal(c.name, "ch");
    assert_string_equal(c.ns, "data");
    assert_int_equal(c.generation, 3);
    assert_int_equal(c.spec.shards, 2);
    assert_int_equal(c.spec.nnodes, 2);
    assert_int_equal(c.spec.nodes[1].port, 2181);
    assert_string_equal(c.spec.database, "upmon");
    assert_string_equal(c.spec.cluster_name, "upmon");
    assert_true(c.spec.reclaim_retain);
    assert_int_equal(c.spec.retention_raw_days, 30);
    assert_int_equal(c.spec.nusers, 1);
    assert_string_equal(c.spec.users[0].profile, "default");
    assert_int_equal(c.status.published_shards, 0);
    assert_int_equal(c.status.drain.from, 0);
    chc_free(&c);
}

static void test_parse_rejects_with_field(void **state)
{
    static const struct {
        const char *key, *value, *want;
    } cases[] = {
        {"shards", "0", "spec.shards: must be 1..64"},
        {"shards", "2.5", "spec.shards: must be an integer"},
        {"replicas", "9", "spec.replicas: must be 1..5"},
        {"image", "\"\"", "spec.image: must not be empty"},
        {"imagePullPolicy", "\"Sometimes\"", "spec.imagePullPolicy"},
        {"database", "\"up-mon\"", "spec.database"},
        {"coordination", NULL, "spec.coordination: is required"},
        {"coordination", "{\"nodes\":[]}", "spec.coordination.nodes: must list 1..7 nodes"},
        {"coordination", "{\"nodes\":[{\"host\":\"Bad_Host\"}]}",
         "spec.coordination.nodes[0].host"},
        {"storage", "{\"size\":\"ten gigs\"}", "spec.storage.size"},
        {"storage", "{\"reclaimPolicy\":\"Keep\"}", "spec.storage.reclaimPolicy"},
        {"settings", "{\"a/../b\":\"1\"}", "spec.settings: key"},
        {"settings", "{\"x\":1}", "spec.settings.x: must be a string"},
        {"users", "[{\"name\":\"default\",\"passwordSecret\":{\"name\":\"s\",\"key\":\"k\"}}]",
         "reserved"},
        {"users", "[{\"name\":\"a\"}]", "spec.users[0].passwordSecret: is required"},
        {"users",
         "[{\"name\":\"a\",\"passwordSecret\":{\"name\":\"s\",\"key\":\"k\"}},"
         "{\"name\":\"a\",\"passwordSecret\":{\"name\":\"s\",\"key\":\"k\"}}]",
         "appears twice"},
        {"users",
         "[{\"name\":\"a\",\"networks\":[\"10.0.0.0/8; rm\"],\"passwordSecret\":{\"name\":\"s\","
         "\"key\":\"k\"}}]",
         "is not a network"},
        {"retention", "{\"rawDays\":0}", "spec.retention.rawDays"},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct chc c;
        char err[256] = "";

        assert_int_equal(parse_with(cases[i].key, cases[i].value, &c, err, sizeof(err)), -1);
        if (!strstr(err, cases[i].want))
            fail_msg("case %zu: \"%s\" does not contain \"%s\"", i, err, cases[i].want);
    }
}

static void test_parse_name_and_status(void **state)
{
    struct chc c;
    char err[256];
    cJSON *j = cJSON_Parse(base_json);
    cJSON *meta = cJSON_GetObjectItem(j, "metadata");

    (void)state;
    cJSON_ReplaceItemInObject(meta, "name",
                              cJSON_CreateString("a-very-long-cluster-name-that-cannot-fit-pods"));
    assert_int_equal(chc_parse(j, &c, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "metadata.name"));
    cJSON_ReplaceItemInObject(meta, "name", cJSON_CreateString("ch"));
    cJSON_AddItemToObject(
        j, "status",
        cJSON_Parse("{\"publishedShards\":3,\"topologyGeneration\":7,"
                    "\"drain\":{\"shards\":[3],\"step\":2,\"table\":\"events_local\","
                    "\"partition\":\"20261204\",\"startedAt\":\"2026-12-04T10:00:00Z\","
                    "\"source\":3,\"part\":4,\"sub\":1,\"subs\":2}}"));
    assert_int_equal(chc_parse(j, &c, err, sizeof(err)), 0);
    assert_int_equal(c.status.published_shards, 3);
    assert_int_equal(c.status.topology_generation, 7);
    assert_int_equal(c.status.drain.from, 3);
    assert_int_equal(c.status.drain.to, 3);
    assert_int_equal(c.status.drain.part, 4);
    assert_int_equal(c.status.drain.subs, 2);
    assert_string_equal(c.status.drain.partition, "20261204");
    chc_free(&c);
    cJSON_Delete(j);
}

static void test_validators(void **state)
{
    (void)state;
    assert_true(chc_quantity_valid("10Gi"));
    assert_true(chc_quantity_valid("1.5Gi"));
    assert_true(chc_quantity_valid("500M"));
    assert_false(chc_quantity_valid("Gi"));
    assert_false(chc_quantity_valid("1.Gi"));
    assert_false(chc_quantity_valid("10GB"));
    assert_true(chc_settings_key_valid("merge_tree/max_parts_in_total"));
    assert_false(chc_settings_key_valid("/x"));
    assert_false(chc_settings_key_valid("x//y"));
    assert_false(chc_settings_key_valid("x y"));
    assert_true(chc_dns_subdomain_valid("zk-0.zk-headless.ns.svc.cluster.local"));
    assert_false(chc_dns_subdomain_valid("-zk"));
    assert_false(chc_dns_subdomain_valid("zk..x"));
}

/* ---- plan ---- */

static struct chc *cluster(int shards, int replicas, int published)
{
    static struct chc c;
    char err[256];

    chc_free(&c);
    assert_int_equal(parse_text(base_json, &c, err, sizeof(err)), 0);
    c.spec.shards = shards;
    c.spec.replicas = replicas;
    c.status.published_shards = published;
    return &c;
}

static void observed_ready(struct chc_observed *o, int nshards, int replicas)
{
    memset(o, 0, sizeof(*o));
    o->secrets_ok = true;
    o->schema_ok = true;
    for (int i = 1; i <= nshards; i++) {
        o->sts_exists[i] = true;
        o->sts_replicas[i] = replicas;
        o->sts_ready[i] = replicas;
    }
    o->sts_highest = nshards;
}

static void test_plan_create(void **state)
{
    struct chc_observed o;
    struct chc_plan p;
    struct chc *c = cluster(2, 2, 0);

    (void)state;
    memset(&o, 0, sizeof(o));
    o.secrets_ok = true;
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_WAIT_READY);
    assert_int_equal(p.first, 1);
    assert_string_equal(p.phase, "Creating");
    observed_ready(&o, 2, 2);
    o.schema_ok = false;
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_APPLY_SCHEMA);
    assert_int_equal(p.last, 2);
    o.schema_ok = true;
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_PUBLISH);
    assert_int_equal(p.last, 2);
    c->status.published_shards = 2;
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_NONE);
    assert_string_equal(p.phase, "Running");
}

static void test_plan_scale_up_waits_for_schema_before_publish(void **state)
{
    struct chc_observed o;
    struct chc_plan p;
    struct chc *c = cluster(3, 2, 2);

    (void)state;
    observed_ready(&o, 2, 2);
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_WAIT_READY);
    assert_int_equal(p.first, 3);
    assert_string_equal(p.reason, "ShardStarting");
    observed_ready(&o, 3, 2);
    o.sts_ready[3] = 1;
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_WAIT_READY);
    o.sts_ready[3] = 2;
    o.schema_ok = false;
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_APPLY_SCHEMA);
    assert_int_equal(p.last, 3);
    o.schema_ok = true;
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_PUBLISH);
    assert_int_equal(p.last, 3);
}

static void test_plan_scale_down_drains(void **state)
{
    struct chc_observed o;
    struct chc_plan p;
    struct chc *c = cluster(2, 2, 3);

    (void)state;
    observed_ready(&o, 3, 2);
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_START_DRAIN);
    assert_int_equal(p.first, 3);
    assert_int_equal(p.last, 3);
    c->status.drain.from = 3;
    c->status.drain.to = 3;
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_DRAIN);
    assert_string_equal(p.phase, "Draining");
    /* Even a not-ready shard does not stop a drain already recorded. */
    o.sts_ready[1] = 0;
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_DRAIN);
    /* Asked for again in the middle of a partition: that partition finishes first. */
    c->spec.shards = 3;
    snprintf(c->status.drain.table, sizeof(c->status.drain.table), "events_local");
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_DRAIN);
    assert_string_equal(p.reason, "DrainCancelling");
    /* Between partitions: the drain is cancelled. */
    c->status.drain.table[0] = '\0';
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_CANCEL_DRAIN);
    c->status.drain.from = 0;
}

static void test_plan_replicas_and_leftovers(void **state)
{
    struct chc_observed o;
    struct chc_plan p;
    struct chc *c = cluster(2, 1, 2);

    (void)state;
    observed_ready(&o, 2, 2);
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_SHRINK_REPLICAS);
    assert_int_equal(p.first, 1);
    c = cluster(2, 3, 2);
    observed_ready(&o, 2, 2);
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_WAIT_READY);
    assert_string_equal(p.reason, "ReplicasStarting");
    /* A shard created by a scale-up that was withdrawn before publishing. */
    c = cluster(2, 2, 2);
    observed_ready(&o, 3, 2);
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_REMOVE_UNPUBLISHED);
    assert_int_equal(p.first, 3);
    assert_int_equal(p.last, 3);
}

static void test_plan_degraded_touches_nothing(void **state)
{
    struct chc_observed o;
    struct chc_plan p;
    struct chc *c = cluster(3, 2, 2);

    (void)state;
    observed_ready(&o, 2, 2);
    o.secrets_ok = false;
    snprintf(o.secrets_error, sizeof(o.secrets_error), "Secret data/ch-users: not found");
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_DEGRADED);
    assert_string_equal(p.reason, "SecretMissing");
    assert_non_null(strstr(p.message, "ch-users"));
    o.secrets_ok = true;
    o.image_error = true;
    snprintf(o.image_error_msg, sizeof(o.image_error_msg), "pod ch-s3-0 cannot get image x");
    chc_plan_next(c, &o, &p);
    assert_int_equal(p.action, CHC_DEGRADED);
    assert_string_equal(p.reason, "ImageUnavailable");
    assert_non_null(strstr(p.message, "spec.image"));
    chc_free(c);
}

/* ---- render ---- */

static void test_render_config(void **state)
{
    struct chc c;
    char err[256];
    char *xml, *remote, *users;
    const char *pw[] = {"app<pw>"};

    (void)state;
    assert_int_equal(parse_text(base_json, &c, err, sizeof(err)), 0);
    xml = chc_render_server_xml(&c);
    assert_non_null(strstr(xml, "<node><host>zk-0.zk</host><port>2181</port></node>"));
    assert_non_null(strstr(xml, "<shard from_env=\"UPMON_SHARD\"/>"));
    assert_non_null(strstr(xml, "<replica from_env=\"UPMON_POD_NAME\"/>"));
    assert_non_null(strstr(xml, "<max_concurrent_queries>50</max_concurrent_queries>"));
    assert_non_null(
        strstr(xml, "<merge_tree><parts_to_throw_insert>600</parts_to_throw_insert></merge_tree>"));
    assert_non_null(strstr(xml, "<replicated_deduplication_window>1000<"));
    remote = chc_render_remote_servers_xml(&c, 3, "cluster.local", "s3&cret");
    assert_non_null(strstr(remote, "<remote_servers replace=\"1\">"));
    assert_non_null(strstr(remote, "<host>ch-s3-1.ch-s3.data.svc.cluster.local</host>"));
    assert_non_null(strstr(remote, "<password>s3&amp;cret</password>"));
    assert_null(strstr(remote, "ch-s4-"));
    assert_non_null(strstr(remote, "<internal_replication>true</internal_replication>"));
    users = chc_render_users_xml(&c, "int", pw);
    assert_non_null(strstr(users, "<upmon>"));
    assert_non_null(strstr(users, "<password>app&lt;pw&gt;</password>"));
    assert_non_null(strstr(users, "<ip>127.0.0.1</ip>"));
    assert_non_null(strstr(users, "<insert_distributed_sync>1</insert_distributed_sync>"));
    free(xml);
    free(remote);
    free(users);
    chc_free(&c);
}

static void test_render_statefulset(void **state)
{
    struct chc c;
    char err[256], url[256];
    cJSON *sts;
    const cJSON *spec, *pod, *ctr, *env, *it, *owner;
    bool fqdn = false;

    (void)state;
    assert_int_equal(parse_text(base_json, &c, err, sizeof(err)), 0);
    sts = chc_render_statefulset(&c, 2, 2, c.spec.image, 0, "cluster.local", "abc");
    spec = cJSON_GetObjectItem(sts, "spec");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(sts, "metadata"), "name")->valuestring, "ch-s2");
    assert_int_equal(cJSON_GetObjectItem(spec, "replicas")->valueint, 2);
    assert_string_equal(cJSON_GetObjectItem(spec, "serviceName")->valuestring, "ch-s2");
    owner = cJSON_GetArrayItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(sts, "metadata"), "ownerReferences"), 0);
    assert_string_equal(cJSON_GetObjectItem(owner, "uid")->valuestring, "u-1");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(owner, "controller")));
    pod = cJSON_GetObjectItem(cJSON_GetObjectItem(spec, "template"), "spec");
    ctr = cJSON_GetArrayItem(cJSON_GetObjectItem(pod, "containers"), 0);
    assert_string_equal(cJSON_GetObjectItem(ctr, "image")->valuestring,
                        "localhost/upmon/clickhouse:18.16");
    env = cJSON_GetObjectItem(ctr, "env");
    cJSON_ArrayForEach(it, env)
    {
        const cJSON *v = cJSON_GetObjectItem(it, "value");

        if (strcmp(cJSON_GetObjectItem(it, "name")->valuestring, "UPMON_SHARD") == 0)
            assert_string_equal(v->valuestring, "2");
        if (strcmp(cJSON_GetObjectItem(it, "name")->valuestring, "UPMON_POD_FQDN") == 0) {
            assert_string_equal(v->valuestring, "$(UPMON_POD_NAME).ch-s2.data.svc.cluster.local");
            fqdn = true;
        }
    }
    assert_true(fqdn);
    assert_true(cJSON_IsTrue(
        cJSON_GetObjectItem(cJSON_GetObjectItem(pod, "securityContext"), "runAsNonRoot")));
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(spec, "persistentVolumeClaimRetentionPolicy"),
                            "whenScaled")
            ->valuestring,
        "Retain");
    {
        int sh = 0, rep = 0;

        assert_int_equal(chc_parse_pod_name(&c, "ch-s12-3.ch-s12.data.svc", &sh, &rep), 0);
        assert_int_equal(sh, 12);
        assert_int_equal(rep, 3);
        assert_int_equal(chc_parse_pod_name(&c, "ch-s2-1", &sh, &rep), 0);
        assert_int_equal(chc_parse_pod_name(&c, "ch-s2-9", &sh, &rep), -1);
        assert_int_equal(chc_parse_pod_name(&c, "ch-s0-1", &sh, &rep), -1);
        assert_int_equal(chc_parse_pod_name(&c, "chx-s2-1", &sh, &rep), -1);
        assert_int_equal(chc_parse_pod_name(&c, "ch-s2-1x", &sh, &rep), -1);
        assert_int_equal(chc_parse_pod_name(&c, "ch-s-1", &sh, &rep), -1);
    }
    chc_pod_url(&c, 2, 1, "cluster.local", url, sizeof(url));
    assert_string_equal(url, "http://ch-s2-1.ch-s2.data.svc.cluster.local:8123");
    cJSON_Delete(sts);
    chc_free(&c);
}

static void test_drain_helpers(void **state)
{
    char where[128], ts[32];

    (void)state;
    assert_int_equal(op_partition_where("20261204", where, sizeof(where)), 0);
    assert_string_equal(where, "event_date = toDate('2026-12-04')");
    assert_int_equal(op_partition_where("202612", where, sizeof(where)), 0);
    assert_string_equal(where, "toYYYYMM(day) = 202612");
    assert_int_equal(op_partition_where("all", where, sizeof(where)), -1);
    assert_int_equal(op_partition_where("2026120'", where, sizeof(where)), -1);
    op_time_format(1796385600, ts, sizeof(ts));
    assert_string_equal(ts, "2026-12-04T12:00:00Z");
    assert_int_equal(op_time_parse(ts), 1796385600);
    assert_int_equal(op_time_parse("2026-12-04 12:00"), -1);
    assert_int_equal(op_time_parse(""), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_defaults),
        cmocka_unit_test(test_parse_rejects_with_field),
        cmocka_unit_test(test_parse_name_and_status),
        cmocka_unit_test(test_validators),
        cmocka_unit_test(test_plan_create),
        cmocka_unit_test(test_plan_scale_up_waits_for_schema_before_publish),
        cmocka_unit_test(test_plan_scale_down_drains),
        cmocka_unit_test(test_plan_replicas_and_leftovers),
        cmocka_unit_test(test_plan_degraded_touches_nothing),
        cmocka_unit_test(test_render_config),
        cmocka_unit_test(test_render_statefulset),
        cmocka_unit_test(test_drain_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
