/*
 * prom — a Prometheus metrics registry with text exposition (format 0.0.4).
 *
 * A metric is a family: name, help, type and label names. A series is one
 * combination of label values inside it. Series are created on first use and
 * their pointers stay valid until the series is removed or the registry is
 * destroyed, so hot paths look a series up once and update it lock-free.
 *
 *   struct upm_prom_metric *m = upm_prom_counter(reg, "upmon_events_total",
 *       "Events consumed by type.", 1, (const char *[]){"type"});
 *   struct upm_prom_series *s = upm_prom_series_get(m, (const char *[]){"SAVE"});
 *   upm_prom_inc(s, 1);
 *
 * Thread-safety: every function may be called from any thread. Value
 * updates are atomic; creating/removing series and rendering take the
 * registry's mutex. Rendering is consistent per series, not across series.
 *
 * Names must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* and not start with "__"; label values are any
 * UTF-8 and are escaped (\\, \", \n) on output; help text escapes \\ and \n.
 * Histograms get _bucket{le=...}, _sum and _count with a +Inf bucket; "le"
 * is therefore not allowed as a histogram's own label name.
 *
 * Output: families in registration order, series in creation order (stable
 * text for tests and diffs). A family with no series is omitted entirely
 * (no HELP/TYPE lines), so a cleared family stops being exported. Integral
 * sample values print exactly (1e15 as 1000000000000000), others with %.17g;
 * +Inf, -Inf and NaN as Prometheus spells them. Bucket bounds print the way
 * Prometheus' Go client does (le="0.005", le="1", le="1e+06", le="+Inf").
 */
#ifndef UPMON_PROM_H
#define UPMON_PROM_H

#include <stddef.h>

#include "upmon/buf.h"

struct upm_prom_registry;
struct upm_prom_metric;
struct upm_prom_series;

enum upm_prom_type {
    UPM_PROM_COUNTER,
    UPM_PROM_GAUGE,
    UPM_PROM_HISTOGRAM,
};

struct upm_prom_registry *upm_prom_registry_create(void);
/* Frees every metric and series. NULL-safe. */
void upm_prom_registry_destroy(struct upm_prom_registry *reg);

/*
 * Register a family, or return the existing one when name, type, label names
 * (and buckets) match; the first registration's help text is kept. NULL if
 * the name or a label name is invalid or repeated, or the name is taken with
 * a different shape (programming errors: logged). help may be NULL (no HELP
 * line). The registry keeps copies of all strings. The metric lives until
 * the registry is destroyed.
 */
struct upm_prom_metric *upm_prom_counter(struct upm_prom_registry *reg, const char *name,
                                         const char *help, size_t nlabels,
                                         const char *const *labels);
struct upm_prom_metric *upm_prom_gauge(struct upm_prom_registry *reg, const char *name,
                                       const char *help, size_t nlabels, const char *const *labels);
/* buckets: finite, strictly increasing upper bounds, +Inf implied (a trailing
 * +Inf is accepted and dropped). NULL on a bad bucket list (logged). */
struct upm_prom_metric *upm_prom_histogram(struct upm_prom_registry *reg, const char *name,
                                           const char *help, size_t nbuckets, const double *buckets,
                                           size_t nlabels, const char *const *labels);

/* The series for these label values (exactly the family's count; NULL when
 * it has none), created at 0 on first use. Never NULL for a valid metric and
 * valid values; NULL (logged) when m is NULL or values or one of them is NULL
 * for a labelled family. The update functions below are no-ops on a NULL
 * series, so a registration mistake cannot crash a hot path. */
struct upm_prom_series *upm_prom_series_get(struct upm_prom_metric *m, const char *const *values);
/* Remove one series (bounded-cardinality exports such as a top-K). Pointers
 * to it become invalid: the caller must not update a series concurrently with
 * its removal. Unknown values are ignored. */
void upm_prom_series_remove(struct upm_prom_metric *m, const char *const *values);
/* Remove every series of the family (e.g. a standby stops exporting); the
 * same pointer rule as upm_prom_series_remove applies. */
void upm_prom_metric_clear(struct upm_prom_metric *m);

/* Counter: add v >= 0 (negative and NaN values are ignored: counters only
 * rise). Lock-free. */
void upm_prom_inc(struct upm_prom_series *s, double v);
/* Gauge: set / add (v may be negative). */
void upm_prom_set(struct upm_prom_series *s, double v);
void upm_prom_add(struct upm_prom_series *s, double v);
/* Histogram: record one observation; a value equal to a bound counts in
 * that bound's bucket, NaN in +Inf only. Lock-free. */
void upm_prom_observe(struct upm_prom_series *s, double v);
/* Current value of a counter or gauge (tests, derived gauges); for a
 * histogram, its observation count. 0 for NULL. */
double upm_prom_value(const struct upm_prom_series *s);

/* Append the whole registry in text exposition format to out. 0, or -1 if
 * out's limit was reached (out then holds a truncated rendering). Holds the
 * registry's mutex throughout, so series creation waits for a render. */
int upm_prom_render(struct upm_prom_registry *reg, struct upm_buf *out);

#endif
