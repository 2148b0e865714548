/*
 * The `incidents` section: a list of objects, which the table-driven config
 * loader cannot describe (it knows scalar keys and string lists). Rather
 * than grow a generic callback type into config.c for one user, the loader
 * skips the section (UPM_CFG_EXTERNAL) and this second libyaml pass over the
 * same text reads it with the same error style: file:line:column, the
 * offending key named, unknown and duplicate keys rejected.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "sim.h"
#include "upmon/alloc.h"

#define MAX_INPUT (4u * 1024u * 1024u)

struct ip {
    yaml_parser_t parser;
    yaml_event_t ev;
    bool have_ev;
    const char *name;
    char *errstr;
    size_t errstr_size;
};

static void ip_err(struct ip *ip, yaml_mark_t m, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void ip_err(struct ip *ip, yaml_mark_t m, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(ip->errstr, ip->errstr_size, "%s:%zu:%zu: %s", ip->name, m.line + 1, m.column + 1,
             msg);
}

static int ip_next(struct ip *ip)
{
    if (ip->have_ev)
        yaml_event_delete(&ip->ev);
    ip->have_ev = false;
    if (!yaml_parser_parse(&ip->parser, &ip->ev)) {
        ip_err(ip, ip->parser.problem_mark, "YAML syntax: %s",
               ip->parser.problem ? ip->parser.problem : "error");
        return -1;
    }
    ip->have_ev = true;
    if (ip->ev.type == YAML_ALIAS_EVENT) {
        ip_err(ip, ip->ev.start_mark, "aliases are not supported");
        return -1;
    }
    return 0;
}

/* Consume the node whose first event is current. */
static int ip_skip(struct ip *ip)
{
    size_t depth = 0;
    for (;;) {
        yaml_event_type_t t = ip->ev.type;
        if (t == YAML_MAPPING_START_EVENT || t == YAML_SEQUENCE_START_EVENT)
            depth++;
        else if (t == YAML_MAPPING_END_EVENT || t == YAML_SEQUENCE_END_EVENT)
            depth--;
        if (depth == 0)
            return 0;
        if (ip_next(ip) != 0)
            return -1;
    }
}

static bool is_null(const yaml_event_t *ev)
{
    if (ev->type != YAML_SCALAR_EVENT || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)ev->data.scalar.value;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") || !strcmp(v, "NULL");
}

enum ikey { K_NAME, K_KIND, K_START, K_DURATION, K_MAGNITUDE, K_COUNTRY, K_ORIGIN, K_SELLER, K_N };
static const char *const key_names[K_N] = {"name",      "kind",    "start",  "duration",
                                           "magnitude", "country", "origin", "seller"};

static int parse_value(struct ip *ip, size_t idx, enum ikey k, struct sim_incident *in)
{
    const char *v = (const char *)ip->ev.data.scalar.value;
    size_t len = ip->ev.data.scalar.length;
    yaml_mark_t m = ip->ev.start_mark;
    const char *kn = key_names[k];
    if (memchr(v, '\0', len)) {
        ip_err(ip, m, "incidents[%zu].%s: contains a NUL character", idx, kn);
        return -1;
    }
    switch (k) {
    case K_NAME:
        if (len == 0 || len > 64 || strspn(v, "abcdefghijklmnopqrstuvwxyz0123456789_-") != len) {
            ip_err(ip, m, "incidents[%zu].name: need 1..64 of [a-z0-9_-]", idx);
            return -1;
        }
        memcpy(in->name, v, len + 1);
        return 0;
    case K_KIND:
        for (int i = 0; i < SIM_INC_KIND_COUNT; i++) {
            if (strcmp(v, sim_incident_kind_name((enum sim_incident_kind)i)) == 0) {
                in->kind = (enum sim_incident_kind)i;
                return 0;
            }
        }
        ip_err(ip, m,
               "incidents[%zu].kind: \"%.40s\" is not one of failure_spike, latency, "
               "throughput_drop, seller_burst, seller_failures",
               idx, v);
        return -1;
    case K_START:
    case K_DURATION: {
        int64_t ms;
        if (upm_config_parse_duration_ms(v, &ms) != 0 || ms > INT64_MAX / 1000000) {
            ip_err(ip, m, "incidents[%zu].%s: \"%.40s\" is not a duration (e.g. 90s, 5m, 2h)", idx,
                   kn, v);
            return -1;
        }
        if (k == K_DURATION && ms == 0) {
            ip_err(ip, m, "incidents[%zu].duration: must be > 0", idx);
            return -1;
        }
        *(k == K_START ? &in->start_ns : &in->duration_ns) = ms * 1000000;
        return 0;
    }
    case K_MAGNITUDE: {
        char *end = NULL;
        errno = 0;
        double d = strtod(v, &end);
        if (len == 0 || errno || *end || !isfinite(d) || strpbrk(v, "xXnN")) {
            ip_err(ip, m, "incidents[%zu].magnitude: \"%.40s\" is not a number", idx, v);
            return -1;
        }
        in->magnitude = d;
        return 0;
    }
    case K_COUNTRY:
        if (len != 2 || !upm_event_country_valid(v)) {
            ip_err(ip, m, "incidents[%zu].country: \"%.40s\" is not an ISO 3166 alpha-2 code", idx,
                   v);
            return -1;
        }
        memcpy(in->country, v, 3);
        return 0;
    case K_ORIGIN:
        if (len == 0 || len > 64) {
            ip_err(ip, m, "incidents[%zu].origin: need 1..64 bytes", idx);
            return -1;
        }
        memcpy(in->origin, v, len + 1);
        return 0;
    case K_SELLER: {
        char *end = NULL;
        errno = 0;
        long long r = strtoll(v, &end, 10);
        if (len == 0 || errno || *end || r < 1 || r > 100000000 || v[0] == '+' || v[0] == ' ') {
            ip_err(ip, m, "incidents[%zu].seller: \"%.40s\" is not a seller rank (1..1e8)", idx, v);
            return -1;
        }
        in->seller = r;
        return 0;
    }
    default:
        return -1;
    }
}

/* After the mapping of one incident: required keys and ranges by kind. */
static int check_incident(struct ip *ip, size_t idx, const bool *seen, yaml_mark_t m,
                          struct sim_incident *in)
{
    static const enum ikey required[] = {K_NAME, K_KIND, K_START, K_DURATION, K_MAGNITUDE};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        if (!seen[required[i]]) {
            ip_err(ip, m, "incidents[%zu]: missing key %s", idx, key_names[required[i]]);
            return -1;
        }
    }
    bool seller_kind = in->kind == SIM_INC_SELLER_BURST || in->kind == SIM_INC_SELLER_FAILURES;
    if (seller_kind && !seen[K_SELLER]) {
        ip_err(ip, m, "incidents[%zu] (%s): kind %s needs a seller", idx, in->name,
               sim_incident_kind_name(in->kind));
        return -1;
    }
    if (!seller_kind && seen[K_SELLER]) {
        ip_err(ip, m,
               "incidents[%zu] (%s): seller applies only to seller_burst and "
               "seller_failures",
               idx, in->name);
        return -1;
    }
    if (seller_kind && (seen[K_COUNTRY] || seen[K_ORIGIN])) {
        ip_err(ip, m, "incidents[%zu] (%s): a seller incident takes no country or origin", idx,
               in->name);
        return -1;
    }
    double lo = 0, hi = 1;
    const char *range = "[0, 1]";
    if (in->kind == SIM_INC_LATENCY) {
        lo = 1, hi = 1000, range = "[1, 1000] (a factor)";
    } else if (in->kind == SIM_INC_SELLER_BURST) {
        lo = 1e-6, hi = 1e7, range = "(0, 1e7] attempts/s";
    }
    if (in->magnitude < lo || in->magnitude > hi) {
        ip_err(ip, m, "incidents[%zu].magnitude: %g is outside %s for kind %s", idx, in->magnitude,
               range, sim_incident_kind_name(in->kind));
        return -1;
    }
    return 0;
}

static int parse_incident(struct ip *ip, size_t idx, struct sim_incident *in)
{
    bool seen[K_N] = {false};
    yaml_mark_t start = ip->ev.start_mark;
    memset(in, 0, sizeof(*in));
    if (ip->ev.type != YAML_MAPPING_START_EVENT) {
        ip_err(ip, start, "incidents[%zu]: expected a mapping (name, kind, start, ...)", idx);
        return -1;
    }
    for (;;) {
        if (ip_next(ip) != 0)
            return -1;
        if (ip->ev.type == YAML_MAPPING_END_EVENT)
            break;
        if (ip->ev.type != YAML_SCALAR_EVENT) {
            ip_err(ip, ip->ev.start_mark, "incidents[%zu]: keys must be scalars", idx);
            return -1;
        }
        const char *key = (const char *)ip->ev.data.scalar.value;
        int k = -1;
        for (int i = 0; i < K_N; i++)
            if (strcmp(key, key_names[i]) == 0)
                k = i;
        if (k < 0) {
            ip_err(ip, ip->ev.start_mark,
                   "incidents[%zu]: unknown key \"%.40s\" (known: name, kind, start, duration, "
                   "magnitude, country, origin, seller)",
                   idx, key);
            return -1;
        }
        if (seen[k]) {
            ip_err(ip, ip->ev.start_mark, "incidents[%zu].%s: duplicate key", idx, key_names[k]);
            return -1;
        }
        seen[k] = true;
        if (ip_next(ip) != 0)
            return -1;
        if (ip->ev.type != YAML_SCALAR_EVENT) {
            ip_err(ip, ip->ev.start_mark, "incidents[%zu].%s: expected a scalar", idx,
                   key_names[k]);
            return -1;
        }
        if (parse_value(ip, idx, (enum ikey)k, in) != 0)
            return -1;
    }
    return check_incident(ip, idx, seen, start, in);
}

static int parse_list(struct ip *ip, struct sim_incident *out)
{
    if (is_null(&ip->ev))
        return 0;
    if (ip->ev.type != YAML_SEQUENCE_START_EVENT) {
        ip_err(ip, ip->ev.start_mark, "incidents: expected a list of incidents");
        return -1;
    }
    size_t n = 0;
    for (;;) {
        if (ip_next(ip) != 0)
            return -1;
        if (ip->ev.type == YAML_SEQUENCE_END_EVENT)
            return (int)n;
        if (n == SIM_MAX_INCIDENTS) {
            ip_err(ip, ip->ev.start_mark, "incidents: at most %d", SIM_MAX_INCIDENTS);
            return -1;
        }
        yaml_mark_t m = ip->ev.start_mark;
        if (parse_incident(ip, n, &out[n]) != 0)
            return -1;
        for (size_t j = 0; j < n; j++) {
            if (strcmp(out[j].name, out[n].name) == 0) {
                ip_err(ip, m, "incidents[%zu]: name \"%s\" already used by incidents[%zu]", n,
                       out[n].name, j);
                return -1;
            }
        }
        n++;
    }
}

int sim_incidents_parse(const char *yaml, size_t len, const char *name, struct sim_incident *out,
                        char *errstr, size_t errstr_size)
{
    struct ip ip;
    int rc = -1, n = 0;
    bool found = false;
    memset(&ip, 0, sizeof(ip));
    ip.name = name ? name : "<string>";
    ip.errstr = errstr;
    ip.errstr_size = errstr_size;
    if (len > MAX_INPUT) {
        snprintf(errstr, errstr_size, "%s: larger than %u bytes", ip.name, MAX_INPUT);
        return -1;
    }
    if (!yaml_parser_initialize(&ip.parser))
        upm_fatal("sim_incidents: libyaml out of memory");
    yaml_parser_set_input_string(&ip.parser, (const unsigned char *)yaml, len);
    if (ip_next(&ip) != 0 || ip_next(&ip) != 0) /* STREAM-START, DOCUMENT-START/STREAM-END */
        goto out;
    if (ip.ev.type == YAML_STREAM_END_EVENT) {
        rc = 0;
        goto out;
    }
    if (ip_next(&ip) != 0)
        goto out;
    if (ip.ev.type != YAML_MAPPING_START_EVENT) {
        rc = 0; /* not a mapping of sections: the config loader says why */
        goto out;
    }
    for (;;) {
        if (ip_next(&ip) != 0)
            goto out;
        if (ip.ev.type == YAML_MAPPING_END_EVENT)
            break;
        bool ours = ip.ev.type == YAML_SCALAR_EVENT &&
                    strcmp((const char *)ip.ev.data.scalar.value, "incidents") == 0;
        if (ip_skip(&ip) != 0 || ip_next(&ip) != 0) /* the key, then its value */
            goto out;
        if (!ours) {
            if (ip_skip(&ip) != 0)
                goto out;
            continue;
        }
        if (found) {
            ip_err(&ip, ip.ev.start_mark, "incidents: duplicate section");
            goto out;
        }
        found = true;
        n = parse_list(&ip, out);
        if (n < 0)
            goto out;
    }
    rc = n;
out:
    if (ip.have_ev)
        yaml_event_delete(&ip.ev);
    yaml_parser_delete(&ip.parser);
    return rc;
}
