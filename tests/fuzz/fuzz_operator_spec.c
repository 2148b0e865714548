/*
 * fuzz_operator_spec — the JSON that upmon-operator and upmon-ingest read from
 * the API server: a ClickHouseCluster object into chc_parse (the operator's
 * spec and recorded progress) and into ing_topology_from_object (ingest's
 * write topology). Any bytes: no crash, leak or UB; a failure names a field;
 * a parsed spec keeps the CRD's bounds, and what it renders is well formed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "render.h"
#include "spec.h"
#include "topology.h"
#include "upmon/alloc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = upm_strndup((const char *)data, size);
    cJSON *obj = cJSON_Parse(text);
    struct chc c;
    struct upm_strlist shards = {0};
    char err[256] = "";
    int rc;

    free(text);
    if (!obj)
        return 0;
    if (chc_parse(obj, &c, err, sizeof(err)) == 0) {
        if (c.spec.shards < 1 || c.spec.shards > CHC_MAX_SHARDS || c.spec.replicas < 1 ||
            c.spec.replicas > CHC_MAX_REPLICAS || c.spec.nnodes < 1 ||
            c.status.published_shards > CHC_MAX_SHARDS || c.status.drain.to > CHC_MAX_SHARDS)
            abort();
        char *xml = chc_render_server_xml(&c);
        char *remote = chc_render_remote_servers_xml(&c, c.spec.shards, "cluster.local", "p&<");
        cJSON *sts = chc_render_statefulset(&c, c.spec.shards, c.spec.replicas, c.spec.image, 1,
                                            "cluster.local", "0123456789abcdef");
        if (!xml || !strstr(xml, "</yandex>") || !remote || strstr(remote, "p&<") || !sts)
            abort();
        free(xml);
        free(remote);
        cJSON_Delete(sts);
        chc_free(&c);
    } else if (err[0] == '\0') {
        abort();
    }
    err[0] = '\0';
    rc = ing_topology_from_object(obj, &shards, err, sizeof(err));
    if (rc == 1 && shards.count == 0)
        abort();
    if (rc == -1 && (err[0] == '\0' || shards.count != 0))
        abort();
    upm_strlist_free(&shards);
    cJSON_Delete(obj);
    return 0;
}
