/*
 * controller — the operator's leader work: watch ClickHouseCluster resources
 * and the StatefulSets they own, and reconcile each one step at a time
 * (plan.h decides, this module acts on the API server and the ClickHouse
 * servers, drain.h moves rows). Runs only while leading; a standby keeps its
 * watches closed.
 */
#ifndef UPMON_OPERATOR_CONTROLLER_H
#define UPMON_OPERATOR_CONTROLLER_H

#include <stdbool.h>
#include <stdint.h>

#include "upmon/config.h"
#include "upmon/k8s.h"
#include "upmon/prom.h"
#include "upmon/schema.h"

struct op_config {
    char *ns;                   /* namespace watched; "" = $POD_NAMESPACE */
    int64_t resync_ms;          /* full reconcile at least this often */
    int64_t ready_timeout_ms;   /* a shard not Ready after this: Degraded (still waited for) */
    int64_t publish_timeout_ms; /* servers not showing a published topology after this */
    int64_t drain_grace_ms;     /* after the write topology drops a shard, before its rows move */
    int64_t drain_chunk_rows;   /* rows per moved block */
    char *cluster_domain;
    int64_t ch_timeout_ms; /* per ClickHouse statement */
};
extern const struct upm_config_key op_config_keys[];
extern const size_t op_config_nkeys;

struct op_controller;

/* k8s_cfg makes the controller's own clients (one per thread). reg may be
 * NULL. NULL + errstr on failure. */
struct op_controller *op_controller_create(const struct op_config *cfg,
                                           const struct upm_k8s_config *k8s_cfg,
                                           struct upm_prom_registry *reg, const char *identity,
                                           char *errstr, size_t errstr_size);
/* Start the watches (ClickHouseClusters and StatefulSets of the namespace):
 * they run for the life of the process, leader or not, and only wake the
 * reconcile loop. 0 / -1. */
int op_controller_watch(struct op_controller *ctl);
/* Start leader work (the reconcile thread); fence_ok is checked before each
 * resource and each drain unit. */
int op_controller_start(struct op_controller *ctl, bool (*fence_ok)(void *), void *fence_opaque);
/* Stop leader work within timeout_ms: 0, or -1 when a step in flight did not
 * finish in time. */
int op_controller_stop(struct op_controller *ctl, int64_t timeout_ms);
void op_controller_destroy(struct op_controller *ctl);

#endif
