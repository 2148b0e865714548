/*
 * lease — leader election on a coordination.k8s.io/v1 Lease, with
 * client-go's semantics (design.md §5).
 *
 * Algorithm, one step every retry period:
 *   1. GET the Lease. 404: POST a record naming us (we lead when it
 *      succeeds; 409 means someone else created it first: re-read next step).
 *   2. If the record (resourceVersion or any spec field) differs from the
 *      one we saw last, note the local monotonic time: that is when we "saw it
 *      change". Expiry is judged ONLY as
 *          now_mono >= observed_change_mono + record.leaseDurationSeconds
 *      — the record's own duration, never ours, and never the record's
 *      renewTime against our wall clock, so clock offsets between candidates
 *      do not matter.
 *   3. Held by someone else and not expired: stand by. Otherwise PUT the
 *      record with the resourceVersion just read: holder = us, renewTime =
 *      now, acquireTime = now and leaseTransitions + 1 on a takeover (kept on
 *      a renewal). 409: someone wrote first; re-read next step, never
 *      overwrite.
 * Fencing. A leader's lease can expire in others' eyes no earlier than
 * (start of its last successful renew) + leaseDuration. The leader stops
 * leader work once (start of last successful renew) + renew_deadline has
 * passed without a new renewal (requests are bounded so as not to overrun
 * that deadline), logs it and counts upmon_leader_fenced_total. Leader work
 * gets (lease_duration - renew_deadline) / 2 to acknowledge; the callback
 * contract below makes that the caller's duty, and a stop_leading that
 * reports failure aborts the process (a supervisor restarts it), because
 * leader work that cannot be stopped is the split brain this module exists
 * to prevent. Work that must also be safe against a stalled elector thread
 * checks upm_lease_fence_ok() before each side effect.
 * Shutdown: stop leader work first, then release (holder "", duration 1 s)
 * so a standby takes over at its next step.
 *
 * Standbys step every retry_period × U[0.8, 1.0] (jitter de-synchronises
 * candidates while keeping takeover after a release within one period).
 *
 * Metrics (when a registry is given):
 *   upmon_leader                          1 while leading, else 0
 *   upmon_leader_transitions_total        times this candidate started leading
 *   upmon_leader_last_renew_age_seconds   leader: since the start of its last
 *                                         successful renewal; standby: since it
 *                                         last saw the record change
 *   upmon_leader_fenced_total             leadership given up because the
 *                                         renew deadline passed
 *
 * Threading: create, start, stop, destroy from one control thread; step and
 * release are for callers that drive the elector themselves (tests) and must
 * not be mixed with start. is_leader, fence_ok and leader_until_ns may be
 * called from any thread. Callbacks run on the elector's thread.
 */
#ifndef UPMON_LEASE_H
#define UPMON_LEASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "upmon/config.h"
#include "upmon/k8s.h"
#include "upmon/prom.h"

/* The `lease` configuration section. */
struct upm_lease_config {
    bool enabled;
    char *ns;                  /* Lease namespace (key "namespace") */
    char *name;                /* Lease name */
    char *identity;            /* "" = $POD_NAME, else the host name */
    int64_t lease_duration_ms; /* whole seconds */
    int64_t renew_deadline_ms;
    int64_t retry_period_ms;
};
extern const struct upm_config_key upm_lease_config_keys[];
extern const size_t upm_lease_config_nkeys;

/*
 * Check lease > renew deadline > 1.2 × retry period, lease in whole seconds,
 * a valid DNS-1123 name and namespace. 0, or -1 with errstr.
 */
int upm_lease_config_validate(const struct upm_lease_config *cfg, char *errstr, size_t errstr_size);

/* Clocks (tests inject offsets; NULL functions = the real clocks). */
struct upm_lease_clock {
    int64_t (*mono_ns)(void *opaque);
    int64_t (*real_ns)(void *opaque);
    void *opaque;
};

struct upm_lease_callbacks {
    /* Leadership acquired: start leader work (return promptly). */
    void (*start_leading)(void *opaque);
    /*
     * Leadership lost, fenced or released: return 0 only once every piece of
     * leader work has stopped, and do so within timeout_ms; return -1 if it
     * did not stop in time (the elector then aborts the process).
     */
    int (*stop_leading)(void *opaque, int64_t timeout_ms);
    void *opaque;
};

struct upm_lease;

/*
 * Create a candidate. cfg is validated and copied; client is borrowed (must
 * outlive the elector and is used only from the elector's thread); reg may be
 * NULL; cb and clock are copied (clock may be NULL). NULL + errstr on a bad
 * config.
 */
struct upm_lease *upm_lease_create(const struct upm_lease_config *cfg,
                                   struct upm_k8s_client *client, struct upm_prom_registry *reg,
                                   const struct upm_lease_callbacks *cb,
                                   const struct upm_lease_clock *clock, char *errstr,
                                   size_t errstr_size);
/* Stops (releasing) if running, then frees. NULL-safe. */
void upm_lease_destroy(struct upm_lease *e);

/* Run the election on a thread of its own. 0, or -1 + errstr. */
int upm_lease_start(struct upm_lease *e, char *errstr, size_t errstr_size);
/* Stop: leader work first, then release the Lease, then join. Bounded by
 * one request timeout + the stop_leading bound + one release request. */
void upm_lease_stop(struct upm_lease *e);

/* One election step; returns milliseconds until the next one. */
int64_t upm_lease_step(struct upm_lease *e);
/* Stop leading (if leading) and release the Lease if we hold it. 0, or -1
 * when the release request failed (it then expires normally). */
int upm_lease_release(struct upm_lease *e);

bool upm_lease_is_leader(const struct upm_lease *e);
/* True while leading and the renew deadline has not passed (by the
 * elector's monotonic clock): the fence leader work checks. */
bool upm_lease_fence_ok(const struct upm_lease *e);
/* Monotonic ns until which leadership is valid; 0 when not leading. */
int64_t upm_lease_leader_until_ns(const struct upm_lease *e);
const char *upm_lease_identity(const struct upm_lease *e);
/* Times this candidate was fenced (renew deadline passed). */
uint64_t upm_lease_fenced_count(const struct upm_lease *e);

/* Format ns since the epoch as RFC 3339 with microseconds, UTC
 * ("2026-11-22T10:20:38.123456Z"). out needs 32 bytes. */
void upm_lease_format_time(int64_t real_ns, char *out, size_t out_size);

#endif
