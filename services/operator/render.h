/*
 * render — what the operator writes: the ClickHouse configuration files and
 * the Kubernetes objects of a cluster, as pure functions of the resource.
 *
 * Names (N = metadata.name, i = shard 1.., r = replica ordinal 0..):
 *   StatefulSet and headless Service per shard   N-s<i>
 *   pod                                          N-s<i>-<r>
 *   pod DNS name                                 N-s<i>-<r>.N-s<i>.<ns>.svc.<domain>
 *   client Service (every Ready server)          N
 *   ConfigMap with config.d/upmon.xml            N-config
 *   Secret with remote_servers.xml, users.xml    N-credentials (they hold passwords)
 *   Secret with the operator's own password      N-internal
 * The operator and the servers among themselves use the user upmon_internal.
 *
 * Every object carries the labels app.kubernetes.io/name=clickhouse,
 * app.kubernetes.io/instance=N, app.kubernetes.io/managed-by=upmon-operator,
 * upmon.io/cluster=N (and upmon.io/shard=i on a shard's objects), and an
 * owner reference to the resource, so deleting the resource deletes them.
 */
#ifndef UPMON_OPERATOR_RENDER_H
#define UPMON_OPERATOR_RENDER_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "spec.h"

#define CHC_INTERNAL_USER    "upmon_internal"
#define CHC_HTTP_PORT        8123
#define CHC_TCP_PORT         9000
#define CHC_INTERSERVER_PORT 9009

/* "N-s3" into out. */
void chc_shard_name(const struct chc *c, int shard, char *out, size_t size);
/* The pod's DNS name. */
void chc_pod_fqdn(const struct chc *c, int shard, int replica, const char *domain, char *out,
                  size_t size);
/* "http://<fqdn>:8123". */
void chc_pod_url(const struct chc *c, int shard, int replica, const char *domain, char *out,
                 size_t size);

/* "N-s<i>-<r>" or "N-s<i>-<r>.<anything>" → shard i and replica r. 0, or -1
 * when s is not one of this cluster's pod names. */
int chc_parse_pod_name(const struct chc *c, const char *s, int *shard, int *replica);

/* XML text escaping into a malloc'd string. */
char *chc_xml_escape(const char *s);

/* config.d/upmon.xml: listen, ports, coordination, macros (shard from
 * $UPMON_SHARD, replica from $UPMON_POD_NAME), interserver host, merge_tree
 * defaults and the user's settings overrides. malloc'd. */
char *chc_render_server_xml(const struct chc *c);
/* config.d/remote_servers.xml for shards 1..nshards (replaces any cluster the
 * image ships). malloc'd. */
char *chc_render_remote_servers_xml(const struct chc *c, int nshards, const char *domain,
                                    const char *internal_password);
/* users.d/upmon-users.xml: upmon_internal, the spec's users with the
 * passwords resolved from their Secrets (passwords[i] for users[i]), the
 * default user confined to localhost, the default profile's settings. */
char *chc_render_users_xml(const struct chc *c, const char *internal_password,
                           const char *const *passwords);

/* metadata for an owned object: name, namespace, labels (shard 0 = none),
 * ownerReferences. */
cJSON *chc_render_metadata(const struct chc *c, const char *name, int shard);
cJSON *chc_render_configmap(const struct chc *c, const char *server_xml);
cJSON *chc_render_credentials(const struct chc *c, const char *remote_xml, const char *users_xml);
cJSON *chc_render_internal_secret(const struct chc *c, const char *password);
cJSON *chc_render_shard_service(const struct chc *c, int shard);
cJSON *chc_render_client_service(const struct chc *c);
/* The shard's StatefulSet with `replicas` pods running `image`. config_hash
 * goes into a pod annotation so a changed server configuration rolls the
 * pods; pods with an ordinal below `partition` keep the previous template (a
 * canary rolls only the last pod). */
cJSON *chc_render_statefulset(const struct chc *c, int shard, int replicas, const char *image,
                              int partition, const char *domain, const char *config_hash);

/* FNV-1a 64 as 16 hex digits (config hashes). */
void chc_hash_hex(const char *s, char out[17]);

#endif
