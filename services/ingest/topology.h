/*
 * topology — the shards ingest writes to, followed from a ClickHouseCluster
 * resource (upmon-operator, docs/operator.md): its .status.writeShards lists,
 * per shard, the replicas' HTTP URLs. The operator adds a shard there only
 * once it is Ready with the schema, and removes a departing shard before its
 * drain starts, so following it is all ingest needs to do.
 *
 * A thread list-watches the resource's collection (relist on 410, backoff on
 * errors, no polling) and keeps the newest list with a generation number; the
 * ingest loop asks between groups whether it changed and switches at a group
 * boundary (ingest.c), so a group is always stored under the topology it was
 * cut with.
 */
#ifndef UPMON_INGEST_TOPOLOGY_H
#define UPMON_INGEST_TOPOLOGY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "upmon/config.h"
#include "upmon/k8s.h"

/*
 * The write topology of a ClickHouseCluster object: items "u1|u2" per shard
 * (out zeroed on entry). 1 when the status has one (out filled), 0 when it
 * has none yet (the operator has not published), -1 when it is malformed
 * (errstr). Pure; fuzzed.
 */
int ing_topology_from_object(const cJSON *obj, struct upm_strlist *out, char *errstr,
                             size_t errstr_size);

struct ing_topology;

/* Watch ClickHouseCluster ns/name with a client made from k8s_cfg. NULL +
 * errstr when the client cannot be made or the names are invalid. */
struct ing_topology *ing_topology_start(const struct upm_k8s_config *k8s_cfg, const char *ns,
                                        const char *name, char *errstr, size_t errstr_size);
/* When the generation differs from *seen: copy the shards into out (zeroed
 * on entry), update *seen and return true. */
bool ing_topology_take(struct ing_topology *t, uint64_t *seen, struct upm_strlist *out);
/* Wait up to timeout_ms for a first topology (stop cuts it short). */
bool ing_topology_wait(struct ing_topology *t, int64_t timeout_ms, const volatile int *stop);
/* Stops watching at the next event or watch timeout; frees what it can. */
void ing_topology_stop(struct ing_topology *t);

#endif
