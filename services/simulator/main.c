/*
 * upmon-simulator — a realistic, fast, scriptable upload-event generator.
 *
 * main wires the generator (sim.c), the incident script (sim_incidents.c)
 * and the output (Kafka or JSON lines), paces it (token bucket and
 * simulated-clock speed), serves /metrics /healthz /readyz, and shuts down
 * within a bound: stop generating, flush with a deadline, report what was
 * delivered and what was not, exit 0.
 *
 * Accounting, printed at exit and exported: every generated event ends up
 * delivered, failed (a delivery report with an error, including messages
 * purged at the flush deadline) or unqueued (built but never accepted by
 * the producer because the stop came while its queue was full):
 *   generated == delivered + failed + unqueued.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim.h"
#include "upmon/alloc.h"
#include "upmon/buf.h"
#include "upmon/clock.h"
#include "upmon/config.h"
#include "upmon/event.h"
#include "upmon/httpd.h"
#include "upmon/kafka.h"
#include "upmon/log.h"
#include "upmon/prom.h"

#define MOD                      "simulator"
#define DEFAULT_HTTP_PORT        "9301" /* Prometheus in the local stack scrapes it here */
#define DEFAULT_KAFKA_PROPERTIES "queue.buffering.max.messages=50000"
#define FILE_CHUNK               (1u << 20)
#define TICK_NS                  (250 * UPM_NS_PER_MS)

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

struct counters {
    unsigned long long generated, delivered, failed, possibly_persisted;
};

static void on_delivery(void *opaque, const struct upm_kafka_delivery *d)
{
    struct counters *c = opaque;
    if (d->err == 0) {
        c->delivered++;
    } else {
        c->failed++;
        if (d->possibly_persisted)
            c->possibly_persisted++;
    }
}

/*
 * Sections whose shared table gets simulator-specific defaults: a copy of
 * the table with the default replaced, so other services keep theirs and
 * --check-config shows the effective value.
 *   http.port 9301: the local stack's Prometheus scrapes the simulator there.
 *   kafka.properties queue.buffering.max.messages=50000: the bounded queue
 *     the simulator holds while the broker is down; librdkafka's 100000
 *     costs some 30 MiB more RSS for no measurable throughput.
 */
#define MAX_SHARED_KEYS 32
static struct upm_config_key http_keys[MAX_SHARED_KEYS];
static struct upm_config_key kafka_keys[MAX_SHARED_KEYS];

static void copy_keys(struct upm_config_key *dst, const struct upm_config_key *src, size_t n,
                      const char *name, const char *def)
{
    if (n > MAX_SHARED_KEYS)
        upm_fatal("simulator: shared key table larger than expected");
    memcpy(dst, src, n * sizeof(*dst));
    for (size_t i = 0; i < n; i++)
        if (strcmp(dst[i].name, name) == 0)
            dst[i].def = def;
}

static void usage(FILE *out)
{
    fputs("usage: upmon-simulator [--config FILE] [--check-config] [options]\n"
          "       upmon-simulator --verify FILE|-\n"
          "\n"
          "Generates upload events (design.md section 2) to Kafka or as JSON lines.\n"
          "Options override the simulator section of the configuration:\n"
          "  --seed N          PRNG seed (same seed + config = same output)\n"
          "  --start TIME      simulated start, RFC 3339 UTC or \"now\"\n"
          "  --speed X         simulated seconds per real second (0 = unpaced)\n"
          "  --rate R          events per real second (0 = maximum)\n"
          "  --count N         stop after N events\n"
          "  --duration D      stop after D real time (e.g. 30s, 5m)\n"
          "  --output OUT      kafka | - (stdout) | FILE; into a file or stdout /metrics is\n"
          "                    served when http.port is free, and skipped with a warning\n"
          "                    when it is not\n"
          "  --check-config    validate, print the effective config (secrets redacted), exit\n"
          "  --verify FILE|-   parse JSON lines with the event parser; print lines, valid,\n"
          "                    invalid, distinct request ids and an order-independent\n"
          "                    checksum of the lines; exit 0 iff all are valid\n"
          "  --help            this text\n"
          "SIGTERM/SIGINT: stop, flush for simulator.flush_timeout, report, exit 0.\n",
          out);
}

/* ---- verify mode --------------------------------------------------------- */

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return h ? h : 1;
}

static int verify(const char *path)
{
    FILE *in = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!in) {
        fprintf(stderr, "upmon-simulator: %s: %s\n", path, strerror(errno));
        return 1;
    }
    char *line = NULL;
    size_t cap = 0, nset = 1u << 16, used = 0;
    uint64_t *set = upm_calloc(nset, sizeof(*set));
    unsigned long long lines = 0, valid = 0, reasons[UPM_EVENT_REASON_COUNT] = {0};
    uint64_t sum = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, in)) >= 0) {
        if (n > 0 && line[n - 1] == '\n')
            n--;
        lines++;
        /* Order-independent digest of the lines: equal for a topic and a
         * file holding the same messages in any order. */
        sum += fnv1a(line, (size_t)n);
        struct upm_event ev;
        struct upm_event_error err;
        if (upm_event_parse(line, (size_t)n, NULL, &ev, &err) != 0) {
            reasons[err.reason < UPM_EVENT_REASON_COUNT ? err.reason : 0]++;
            continue;
        }
        valid++;
        /* A 64-bit hash per request id: a false "duplicate" among a few
         * million ids has a chance below 1e-6. */
        if (2 * (used + 1) > nset) {
            size_t n2 = nset * 2;
            uint64_t *s2 = upm_calloc(n2, sizeof(*s2));
            for (size_t i = 0; i < nset; i++) {
                if (!set[i])
                    continue;
                size_t j = set[i] & (n2 - 1);
                while (s2[j])
                    j = (j + 1) & (n2 - 1);
                s2[j] = set[i];
            }
            free(set);
            set = s2;
            nset = n2;
        }
        uint64_t h = fnv1a(ev.request_id, strlen(ev.request_id));
        size_t j = h & (nset - 1);
        while (set[j] && set[j] != h)
            j = (j + 1) & (nset - 1);
        if (!set[j]) {
            set[j] = h;
            used++;
        }
        upm_event_clear(&ev);
    }
    printf("lines=%llu valid=%llu invalid=%llu distinct=%zu sum=%016llx\n", lines, valid,
           lines - valid, used, (unsigned long long)sum);
    for (int r = 1; r < UPM_EVENT_REASON_COUNT; r++)
        if (reasons[r])
            printf("reason %s=%llu\n", upm_event_reason_name((enum upm_event_reason)r), reasons[r]);
    free(line);
    free(set);
    if (in != stdin)
        fclose(in);
    return lines == valid ? 0 : 1;
}

/* ---- metrics --------------------------------------------------------------- */

struct metrics {
    struct upm_prom_series *generated, *delivered, *failed, *queued, *rate, *backpressure,
        *sim_time;
    struct upm_prom_series *incident[SIM_MAX_INCIDENTS];
};

static void metrics_init(struct metrics *m, struct upm_prom_registry *reg, const struct sim *s)
{
    m->generated = upm_prom_series_get(
        upm_prom_counter(reg, "upmon_simulator_generated_total", "Events generated.", 0, NULL),
        NULL);
    m->delivered = upm_prom_series_get(
        upm_prom_counter(reg, "upmon_simulator_delivered_total",
                         "Events delivered (Kafka delivery report OK, or written to the file).", 0,
                         NULL),
        NULL);
    m->failed = upm_prom_series_get(
        upm_prom_counter(reg, "upmon_simulator_failed_total",
                         "Events whose delivery failed (reported undelivered).", 0, NULL),
        NULL);
    m->queued = upm_prom_series_get(
        upm_prom_gauge(reg, "upmon_simulator_queued",
                       "Events handed to the producer and not yet reported.", 0, NULL),
        NULL);
    m->rate =
        upm_prom_series_get(upm_prom_gauge(reg, "upmon_simulator_rate",
                                           "Current output rate, events per second.", 0, NULL),
                            NULL);
    m->backpressure = upm_prom_series_get(
        upm_prom_gauge(reg, "upmon_simulator_backpressure",
                       "1 while the producer queue is full (broker slow or down).", 0, NULL),
        NULL);
    m->sim_time = upm_prom_series_get(
        upm_prom_gauge(reg, "upmon_simulator_simulated_time_seconds",
                       "Simulated clock: ts_ns of the last event, in seconds.", 0, NULL),
        NULL);
    struct upm_prom_metric *inc =
        upm_prom_gauge(reg, "upmon_simulator_incident_active",
                       "1 while the scripted incident is active (simulated time).", 2,
                       (const char *[]){"incident", "kind"});
    for (size_t i = 0; i < sim_incident_count(s); i++) {
        const struct sim_incident *in = sim_incident(s, i);
        m->incident[i] =
            upm_prom_series_get(inc, (const char *[]){in->name, sim_incident_kind_name(in->kind)});
    }
}

/* ---- run --------------------------------------------------------------------- */

struct run {
    const struct sim_config *cfg;
    struct sim *sim;
    struct upm_kafka_producer *producer;
    FILE *out;
    struct counters c;
    struct metrics m;
    bool incident_on[SIM_MAX_INCIDENTS];
    unsigned long long unqueued;
};

static void update_incidents(struct run *r)
{
    int64_t now = sim_now(r->sim);
    for (size_t i = 0; i < sim_incident_count(r->sim); i++) {
        bool on = sim_incident_active_at(r->sim, i, now);
        if (on == r->incident_on[i])
            continue;
        r->incident_on[i] = on;
        const struct sim_incident *in = sim_incident(r->sim, i);
        upm_prom_set(r->m.incident[i], on ? 1 : 0);
        upm_log_info(MOD,
                     "%s | incident=%s kind=%s magnitude=%g country=%s origin=%s seller=%lld "
                     "sim_ts_ns=%lld",
                     on ? "incident started" : "incident ended", in->name,
                     sim_incident_kind_name(in->kind), in->magnitude,
                     in->country[0] ? in->country : "*", in->origin[0] ? in->origin : "*",
                     (long long)in->seller, (long long)now);
    }
}

/* Wait up to ns (at most 20 ms, so signals and ticks stay responsive),
 * serving delivery reports meanwhile when producing. Sub-millisecond waits
 * sleep exactly: a rate of thousands per second with a small burst needs
 * them. */
static void sleep_ns(struct run *r, int64_t ns)
{
    if (ns > 20 * UPM_NS_PER_MS)
        ns = 20 * UPM_NS_PER_MS;
    if (r->producer && ns >= UPM_NS_PER_MS) {
        upm_kafka_producer_poll(r->producer, (int)(ns / UPM_NS_PER_MS));
        return;
    }
    struct timespec ts = {0, (long)ns};
    nanosleep(&ts, NULL);
}

static int run(struct run *r)
{
    const struct sim_config *cfg = r->cfg;
    struct upm_buf buf;
    struct upm_event ev;
    bool pending = false, counted = false, backpressure = false;
    int rc = 0;
    int64_t t0 = upm_clock_mono_ns(), last_tick = t0, last_bp_log = 0;
    int64_t start_sim = sim_now(r->sim);
    struct sim_bucket bucket;
    sim_bucket_init(&bucket, cfg->rate, (double)cfg->burst, t0);
    unsigned long long tick_generated = 0;
    unsigned poll_every = 0;

    upm_buf_init(&buf, 0);
    memset(&ev, 0, sizeof(ev));
    for (;;) {
        if (stop_signal)
            break;
        int64_t now = upm_clock_mono_ns();
        if (cfg->duration_ms && now - t0 >= cfg->duration_ms * UPM_NS_PER_MS)
            break;
        if (now - last_tick >= TICK_NS || ++poll_every >= 4096) {
            poll_every = 0;
            if (r->producer)
                upm_kafka_producer_poll(r->producer, 0);
            if (now - last_tick >= TICK_NS) {
                double dt = (double)(now - last_tick) / 1e9;
                upm_prom_set(r->m.rate, (double)(r->c.generated - tick_generated) / dt);
                tick_generated = r->c.generated;
                last_tick = now;
                upm_prom_set(r->m.sim_time, (double)sim_now(r->sim) / 1e9);
                upm_prom_set(r->m.queued, (double)(r->c.generated - r->c.delivered - r->c.failed -
                                                   (pending && counted ? 1 : 0)));
                upm_prom_inc(r->m.delivered,
                             (double)r->c.delivered - upm_prom_value(r->m.delivered));
                upm_prom_inc(r->m.failed, (double)r->c.failed - upm_prom_value(r->m.failed));
                update_incidents(r);
            }
        }
        if (!pending) {
            if (cfg->count && r->c.generated >= (unsigned long long)cfg->count)
                break;
            sim_next(r->sim, &ev, NULL);
            pending = true;
            counted = false;
        }
        /* Pacing: the simulated clock, then the token bucket. */
        if (cfg->speed > 0) {
            int64_t due = t0 + (int64_t)((double)(ev.ts_ns - start_sim) / cfg->speed);
            if (due > now) {
                sleep_ns(r, due - now);
                continue;
            }
        }
        if (cfg->rate > 0) {
            int64_t wait = sim_bucket_take(&bucket, now);
            if (wait > 0) {
                sleep_ns(r, wait);
                continue;
            }
        }
        /* Counted once past pacing: an event still waiting for its time
         * when a stop comes was never emitted, so it is not "generated". */
        if (!counted) {
            counted = true;
            r->c.generated++;
            upm_prom_inc(r->m.generated, 1);
        }
        if (r->out) {
            if (sim_serialize(&ev, &buf) != 0 || upm_buf_putc(&buf, '\n') != 0)
                upm_fatal("simulator: serialize into an unlimited buffer failed");
            pending = false;
            if (buf.len >= FILE_CHUNK) {
                if (fwrite(buf.data, 1, buf.len, r->out) != buf.len) {
                    upm_log_error(MOD, "write failed | error=\"%s\"", strerror(errno));
                    rc = -1;
                    break;
                }
                upm_buf_reset(&buf);
            }
            r->c.delivered++;
            continue;
        }
        upm_buf_reset(&buf);
        if (sim_serialize(&ev, &buf) != 0)
            upm_fatal("simulator: serialize into an unlimited buffer failed");
        int retriable = 0;
        if (upm_kafka_produce(r->producer, NULL, ev.attempt_id, strlen(ev.attempt_id), buf.data,
                              buf.len, NULL, 0, NULL, &retriable) == 0) {
            pending = false;
            if (backpressure) {
                backpressure = false;
                upm_prom_set(r->m.backpressure, 0);
                upm_log_info(MOD, "producer queue has room again | queued=%llu",
                             r->c.generated - r->c.delivered - r->c.failed);
            }
            continue;
        }
        if (!retriable) {
            char why[256] = "";
            upm_kafka_producer_fatal(r->producer, why, sizeof(why));
            upm_log_error(MOD, "produce failed for good | error=\"%s\"", why);
            rc = -1;
            break;
        }
        /* Queue full (broker slow or down): keep the event, tell, retry. */
        upm_prom_set(r->m.backpressure, 1);
        backpressure = true;
        now = upm_clock_mono_ns();
        if (now - last_bp_log >= 10 * UPM_NS_PER_S) {
            last_bp_log = now;
            upm_log_warn(MOD,
                         "back-pressure: producer queue full, waiting for the broker | "
                         "queued=%llu delivered=%llu failed=%llu",
                         r->c.generated - r->c.delivered - r->c.failed - 1, r->c.delivered,
                         r->c.failed);
        }
    }
    if (pending && counted) {
        /* Emitted but never accepted by the producer (stopped while full). */
        r->unqueued++;
    }
    if (r->out && buf.len && fwrite(buf.data, 1, buf.len, r->out) != buf.len) {
        upm_log_error(MOD, "write failed | error=\"%s\"", strerror(errno));
        rc = -1;
    }
    if (r->out && fflush(r->out) != 0) {
        upm_log_error(MOD, "write failed | error=\"%s\"", strerror(errno));
        rc = -1;
    }
    upm_buf_free(&buf);
    return rc;
}

/* ---- main -------------------------------------------------------------------- */

static int set_string(char **field, const char *v)
{
    free(*field);
    *field = upm_strdup(v);
    return 0;
}

static int parse_i64_flag(const char *flag, const char *v, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < 0) {
        fprintf(stderr, "upmon-simulator: %s: \"%s\" is not a non-negative integer\n", flag, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_double_flag(const char *flag, const char *v, double *out)
{
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= 0) || x > 1e9) {
        fprintf(stderr, "upmon-simulator: %s: \"%s\" is not a number in [0, 1e9]\n", flag, v);
        return -1;
    }
    *out = x;
    return 0;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct upm_buf b;
    char chunk[65536];
    size_t n;
    upm_buf_init(&b, 8u << 20);
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (upm_buf_append(&b, chunk, n) != 0) {
            fclose(f);
            upm_buf_free(&b);
            errno = EFBIG;
            return NULL;
        }
    }
    fclose(f);
    return upm_buf_steal(&b, len);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},   {"check-config", no_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},           {"seed", required_argument, NULL, 's'},
        {"start", required_argument, NULL, 'S'},    {"speed", required_argument, NULL, 'x'},
        {"rate", required_argument, NULL, 'r'},     {"count", required_argument, NULL, 'n'},
        {"duration", required_argument, NULL, 'd'}, {"output", required_argument, NULL, 'o'},
        {"verify", required_argument, NULL, 'V'},   {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    bool check = false;
    const char *flag_val[128] = {NULL};
    int c, status = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'C':
            check = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            return verify(optarg);
        case 's':
        case 'S':
        case 'x':
        case 'r':
        case 'n':
        case 'd':
        case 'o':
            flag_val[c] = optarg;
            break;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "upmon-simulator: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    struct upm_log_config log_cfg = {0};
    struct upm_httpd_config http_cfg = {0};
    struct upm_kafka_config kafka_cfg = {0};
    struct sim_config sim_cfg = {0};
    copy_keys(http_keys, upm_httpd_config_keys, upm_httpd_config_nkeys, "port", DEFAULT_HTTP_PORT);
    copy_keys(kafka_keys, upm_kafka_config_keys, upm_kafka_config_nkeys, "properties",
              DEFAULT_KAFKA_PROPERTIES);
    const struct upm_config_section sections[] = {
        {"log", upm_log_config_keys, upm_log_config_nkeys, &log_cfg},
        {"http", http_keys, upm_httpd_config_nkeys, &http_cfg},
        {"kafka", kafka_keys, upm_kafka_config_nkeys, &kafka_cfg},
        {"simulator", sim_config_keys, sim_config_nkeys, &sim_cfg},
        {"incidents", UPM_CFG_EXTERNAL, 0, NULL},
    };
    const size_t nsections = sizeof(sections) / sizeof(sections[0]);
    struct sim_incident incidents[SIM_MAX_INCIDENTS];
    int nincidents = 0;
    char err[1024];
    char *yaml = NULL;
    size_t yaml_len = 0;
    struct upm_prom_registry *reg = NULL;
    struct upm_httpd *httpd = NULL;
    struct run r;
    memset(&r, 0, sizeof(r));

    if (upm_config_load(sections, nsections, config_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "upmon-simulator: %s\n", err);
        goto out;
    }
    if (config_path) {
        yaml = read_file(config_path, &yaml_len);
        if (!yaml) {
            fprintf(stderr, "upmon-simulator: %s: %s\n", config_path, strerror(errno));
            goto out;
        }
        nincidents = sim_incidents_parse(yaml, yaml_len, config_path, incidents, err, sizeof(err));
        if (nincidents < 0) {
            fprintf(stderr, "upmon-simulator: %s\n", err);
            goto out;
        }
    }
    /* Flags override the file and the environment. */
    if ((flag_val['s'] && parse_i64_flag("--seed", flag_val['s'], &sim_cfg.seed) != 0) ||
        (flag_val['x'] && parse_double_flag("--speed", flag_val['x'], &sim_cfg.speed) != 0) ||
        (flag_val['r'] && parse_double_flag("--rate", flag_val['r'], &sim_cfg.rate) != 0) ||
        (flag_val['n'] && parse_i64_flag("--count", flag_val['n'], &sim_cfg.count) != 0))
        goto out;
    if (flag_val['d'] && upm_config_parse_duration_ms(flag_val['d'], &sim_cfg.duration_ms) != 0) {
        fprintf(stderr, "upmon-simulator: --duration: \"%s\" is not a duration\n", flag_val['d']);
        goto out;
    }
    if (flag_val['S'])
        set_string(&sim_cfg.start, flag_val['S']);
    if (flag_val['o'])
        set_string(&sim_cfg.output, flag_val['o']);

    int64_t start_ns;
    if (strcmp(sim_cfg.start, "now") == 0) {
        start_ns = upm_clock_real_ns();
    } else if (sim_parse_time(sim_cfg.start, &start_ns) != 0) {
        fprintf(stderr,
                "upmon-simulator: simulator.start: \"%s\" is not \"now\" or an RFC 3339 "
                "UTC time (2026-01-01T00:00:00Z)\n",
                sim_cfg.start);
        goto out;
    }
    r.cfg = &sim_cfg;
    r.sim = sim_create(&sim_cfg, start_ns, incidents, (size_t)nincidents, err, sizeof(err));
    if (!r.sim) {
        fprintf(stderr, "upmon-simulator: %s\n", err);
        goto out;
    }
    if (check) {
        upm_config_print(sections, nsections, stdout);
        printf("incidents:%s\n", nincidents ? "" : " []");
        for (int i = 0; i < nincidents; i++) {
            const struct sim_incident *in = &incidents[i];
            printf("  - {name: %s, kind: %s, start: %lldms, duration: %lldms, magnitude: %.17g",
                   in->name, sim_incident_kind_name(in->kind), (long long)(in->start_ns / 1000000),
                   (long long)(in->duration_ns / 1000000), in->magnitude);
            if (in->country[0])
                printf(", country: %s", in->country);
            if (in->origin[0])
                printf(", origin: \"%s\"", in->origin);
            if (in->seller)
                printf(", seller: %lld", (long long)in->seller);
            printf("}\n");
        }
        status = 0;
        goto out;
    }

    upm_log_apply(&log_cfg);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    reg = upm_prom_registry_create();
    metrics_init(&r.m, reg, r.sim);
    bool to_kafka = strcmp(sim_cfg.output, "kafka") == 0;
    httpd = upm_httpd_create(&http_cfg, reg, err, sizeof(err));
    if (!httpd || upm_httpd_start(httpd, err, sizeof(err)) != 0) {
        if (to_kafka || !httpd) {
            upm_log_error(MOD, "http server failed | error=\"%s\"", err);
            goto out;
        }
        /* A run into a file or stdout is an offline tool: it must work beside a running
         * demo whose simulator holds the port. Its figures are still printed at exit. */
        upm_log_warn(MOD,
                     "metrics server not started; continuing without /metrics (set http.port "
                     "or UPMON_HTTP_PORT to a free port, 0 for any, to have them) | error=\"%s\"",
                     err);
        upm_httpd_destroy(httpd);
        httpd = NULL;
    }
    if (to_kafka) {
        r.producer = upm_kafka_producer_create(&kafka_cfg, reg, err, sizeof(err));
        if (!r.producer) {
            upm_log_error(MOD, "kafka producer failed | error=\"%s\"", err);
            goto out;
        }
        upm_kafka_producer_set_delivery_cb(r.producer, on_delivery, &r.c);
    } else if (strcmp(sim_cfg.output, "-") == 0) {
        r.out = stdout;
    } else {
        r.out = fopen(sim_cfg.output, "w");
        if (!r.out) {
            upm_log_error(MOD, "cannot open output | path=\"%s\" error=\"%s\"", sim_cfg.output,
                          strerror(errno));
            goto out;
        }
    }
    upm_httpd_set_ready(httpd, true, NULL);
    upm_log_info(MOD,
                 "started | output=%s seed=%lld start_ns=%lld sellers=%lld incidents=%d "
                 "http_port=%d",
                 sim_cfg.output, (long long)sim_cfg.seed, (long long)start_ns,
                 (long long)sim_cfg.sellers, nincidents, upm_httpd_port(httpd));

    int rc = run(&r);
    upm_httpd_set_ready(httpd, false, "stopping");
    if (r.producer) {
        upm_log_info(MOD, "flushing | queued=%llu timeout_ms=%lld",
                     r.c.generated - r.c.delivered - r.c.failed - r.unqueued,
                     (long long)sim_cfg.flush_timeout_ms);
        int left = upm_kafka_producer_flush(r.producer, (int)sim_cfg.flush_timeout_ms);
        if (left > 0)
            upm_log_warn(MOD, "flush deadline passed; purging | in_flight=%d", left);
        /* Destroy purges what is left; its failure reports are counted. */
        upm_kafka_producer_destroy(r.producer);
        r.producer = NULL;
    }
    upm_prom_inc(r.m.delivered, (double)r.c.delivered - upm_prom_value(r.m.delivered));
    upm_prom_inc(r.m.failed, (double)(r.c.failed + r.unqueued) - upm_prom_value(r.m.failed));
    upm_prom_set(r.m.queued, 0);
    upm_log_info(MOD,
                 "done | generated=%llu delivered=%llu undelivered=%llu failed=%llu "
                 "possibly_persisted=%llu unqueued=%llu signal=%d",
                 r.c.generated, r.c.delivered, r.c.failed + r.unqueued, r.c.failed,
                 r.c.possibly_persisted, r.unqueued, (int)stop_signal);
    status = rc == 0 ? 0 : 1;
out:
    if (r.producer)
        upm_kafka_producer_destroy(r.producer);
    if (r.out && r.out != stdout)
        fclose(r.out);
    upm_httpd_destroy(httpd);
    sim_destroy(r.sim);
    upm_prom_registry_destroy(reg);
    upm_config_free(sections, nsections);
    free(yaml);
    return status;
}
