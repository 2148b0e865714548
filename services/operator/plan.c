/*
 * plan — the next reconcile step; see plan.h.
 */
#include "plan.h"

#include <stdio.h>
#include <string.h>

const char *chc_action_name(enum chc_action a)
{
    switch (a) {
    case CHC_NONE:
        return "none";
    case CHC_DEGRADED:
        return "degraded";
    case CHC_SHRINK_REPLICAS:
        return "shrink-replicas";
    case CHC_WAIT_READY:
        return "wait-ready";
    case CHC_APPLY_SCHEMA:
        return "apply-schema";
    case CHC_PUBLISH:
        return "publish";
    case CHC_START_DRAIN:
        return "start-drain";
    case CHC_DRAIN:
        return "drain";
    case CHC_CANCEL_DRAIN:
        return "cancel-drain";
    case CHC_REMOVE_UNPUBLISHED:
        return "remove-unpublished";
    }
    return "?";
}

static void set(struct chc_plan *p, enum chc_action a, int first, int last, const char *phase,
                const char *reason)
{
    p->action = a;
    p->first = first;
    p->last = last;
    p->phase = phase;
    p->reason = reason;
}

void chc_plan_next(const struct chc *c, const struct chc_observed *o, struct chc_plan *p)
{
    const int want = c->spec.shards, published = c->status.published_shards;
    const struct chc_drain *d = &c->status.drain;
    int top = want > published ? want : published;

    memset(p, 0, sizeof(*p));
    if (!o->secrets_ok) {
        set(p, CHC_DEGRADED, 0, 0, "Degraded", "SecretMissing");
        snprintf(p->message, sizeof(p->message),
                 "%.200s; create it (the running servers keep their current users)",
                 o->secrets_error);
        return;
    }
    if (o->image_error) {
        set(p, CHC_DEGRADED, 0, 0, "Degraded", "ImageUnavailable");
        snprintf(p->message, sizeof(p->message),
                 "%.200s; fix spec.image (no further shard is created or changed until then)",
                 o->image_error_msg);
        return;
    }
    if (d->from > 0) {
        if (want >= d->from && d->table[0]) {
            /* Half a partition moved: cancelling now would leave its moved rows
             * on the staying shards and the originals in place (counted twice). */
            set(p, CHC_DRAIN, d->from, d->to, "Draining", "DrainCancelling");
            snprintf(p->message, sizeof(p->message),
                     "spec.shards is %d again: finishing the move of %.40s partition %.16s "
                     "before the drain is cancelled",
                     want, d->table, d->partition);
            return;
        }
        if (want >= d->from) {
            set(p, CHC_CANCEL_DRAIN, d->from, d->to, "Scaling", "DrainCancelled");
            snprintf(p->message, sizeof(p->message),
                     "spec.shards is %d again: shards %d..%d stay and rejoin the write topology",
                     want, d->from, d->to);
            return;
        }
        set(p, CHC_DRAIN, d->from, d->to, "Draining", "Draining");
        snprintf(p->message, sizeof(p->message),
                 "moving the rows of shards %d..%d onto shards 1..%d (step %lld of %lld)", d->from,
                 d->to, d->from - 1, (long long)d->step, (long long)d->steps);
        return;
    }
    if (want < published) {
        set(p, CHC_START_DRAIN, want + 1, published, "Draining", "ScaleDown");
        snprintf(p->message, sizeof(p->message),
                 "shards %d..%d leave: ingest stops writing to them, then their rows move to "
                 "shards 1..%d",
                 want + 1, published, want);
        return;
    }
    if (o->sts_highest > top) {
        /* Never in a write or query topology, so they hold no rows. */
        set(p, CHC_REMOVE_UNPUBLISHED, top + 1, o->sts_highest, "Scaling", "ShardsRemoved");
        snprintf(p->message, sizeof(p->message),
                 "shards %d..%d were created but never published; removing them", top + 1,
                 o->sts_highest);
        return;
    }
    for (int i = 1; i <= top && i <= CHC_MAX_SHARDS; i++) {
        if (o->sts_exists[i] && o->sts_replicas[i] > c->spec.replicas) {
            set(p, CHC_SHRINK_REPLICAS, i, i, "Scaling", "ReplicasRemoved");
            snprintf(p->message, sizeof(p->message),
                     "shard %d goes from %d to %d replicas: the departing replicas' tables are "
                     "dropped (clearing them from coordination) before their pods",
                     i, o->sts_replicas[i], c->spec.replicas);
            return;
        }
    }
    for (int i = 1; i <= top && i <= CHC_MAX_SHARDS; i++) {
        if (!o->sts_exists[i] || o->sts_ready[i] < c->spec.replicas ||
            o->sts_replicas[i] != c->spec.replicas) {
            const char *phase = published == 0 ? "Creating" : "Scaling";

            set(p, CHC_WAIT_READY, i, i, phase,
                i > published ? "ShardStarting" : "ReplicasStarting");
            snprintf(p->message, sizeof(p->message), "shard %d: %d of %d replicas Ready", i,
                     o->sts_exists[i] ? o->sts_ready[i] : 0, c->spec.replicas);
            return;
        }
    }
    if (!o->schema_ok) {
        set(p, CHC_APPLY_SCHEMA, 1, top, published == 0 ? "Creating" : "Scaling", "SchemaApplying");
        snprintf(p->message, sizeof(p->message),
                 "applying the schema migrations on every server of shards 1..%d", top);
        return;
    }
    if (published < want) {
        set(p, CHC_PUBLISH, 1, want, published == 0 ? "Creating" : "Scaling", "Publishing");
        snprintf(p->message, sizeof(p->message),
                 "publishing the topology of %d shards (was %d): remote_servers on every server, "
                 "then the write topology ingest follows",
                 want, published);
        return;
    }
    set(p, CHC_NONE, 1, want, "Running", "Ready");
    snprintf(p->message, sizeof(p->message), "%d shards x %d replicas serving", want,
             c->spec.replicas);
}
