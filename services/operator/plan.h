/*
 * plan — the operator's decisions as a pure function: the resource (spec and
 * the progress recorded in its status) and what was observed in the cluster
 * go in, the one next step comes out. The controller executes that step and
 * asks again; every step is idempotent and leaves its progress in the status
 * or in the objects it creates, so a new leader that starts from what it
 * finds takes the same step again (docs/operator.md, the state machine).
 */
#ifndef UPMON_OPERATOR_PLAN_H
#define UPMON_OPERATOR_PLAN_H

#include <stdbool.h>
#include <stddef.h>

#include "spec.h"

/* What the controller saw, indexed by shard (1..CHC_MAX_SHARDS). */
struct chc_observed {
    bool sts_exists[CHC_MAX_SHARDS + 1];
    int sts_replicas[CHC_MAX_SHARDS + 1]; /* .spec.replicas */
    int sts_ready[CHC_MAX_SHARDS + 1];    /* .status.readyReplicas */
    int sts_highest;                      /* highest shard with a StatefulSet, 0 = none */
    bool secrets_ok;                      /* every user's Secret and key resolved */
    char secrets_error[256];
    bool image_error; /* a pod of the cluster cannot pull or run its image */
    char image_error_msg[256];
    bool schema_ok; /* the schema was verified on every server of shards 1..max(D,P) */
    /* Pod IPs by shard and replica ordinal ("" = no pod or no IP yet). */
    char pod_ip[CHC_MAX_SHARDS + 1][CHC_MAX_REPLICAS][48];
    int sts_updated[CHC_MAX_SHARDS + 1];     /* .status.updatedReplicas */
    char sts_image[CHC_MAX_SHARDS + 1][256]; /* the template's image */
    bool pod_image_error[CHC_MAX_SHARDS + 1][CHC_MAX_REPLICAS];
    /* The pod is Ready and its spec names spec.image (the canary is judged on this, never
     * on the StatefulSet's counts, which lag a template change). */
    bool pod_ready_on_spec_image[CHC_MAX_SHARDS + 1][CHC_MAX_REPLICAS];
};

enum chc_action {
    CHC_NONE = 0,           /* steady: Ready */
    CHC_DEGRADED,           /* cannot reconcile: condition + Event, nothing touched */
    CHC_SHRINK_REPLICAS,    /* shard: drop its departing replicas' tables, then scale down */
    CHC_WAIT_READY,         /* shard: StatefulSet not Ready yet */
    CHC_APPLY_SCHEMA,       /* shards 1..last: migrations on every server */
    CHC_PUBLISH,            /* remote_servers and write topology = shards 1..last */
    CHC_START_DRAIN,        /* shards first..last leave the write topology */
    CHC_DRAIN,              /* move the departing shards' rows, then remove them */
    CHC_CANCEL_DRAIN,       /* shards were asked for again during a drain */
    CHC_REMOVE_UNPUBLISHED, /* shards first..last were created, never published, not wanted */
};

struct chc_plan {
    enum chc_action action;
    int first, last;    /* shard range the action is about */
    const char *phase;  /* Creating, Running, Scaling, Draining, Degraded */
    const char *reason; /* CamelCase, for conditions and Events */
    char message[320];  /* what a person can act on */
};

/* The next step. Pure. */
void chc_plan_next(const struct chc *c, const struct chc_observed *o, struct chc_plan *out);
const char *chc_action_name(enum chc_action a);

#endif
