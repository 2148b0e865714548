"""Grafana dashboards as a test or a bench sees them: their panels and queries, and the
ClickHouse plugin's macros expanded the way the plugin's backend expands them (its
pkg/macros), so a query can be sent to a server exactly as Grafana would send it."""

import datetime
import glob
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARDS = sorted(glob.glob(os.path.join(ROOT, "dashboards", "*.json")))
# What Grafana substitutes in PromQL before a query leaves it (its built-in variables).
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


def load(path):
    with open(path) as f:
        return json.load(f)


def panels(dash):
    for p in dash["panels"]:
        if p["type"] == "row":
            for q in p.get("panels", []):
                yield q
        else:
            yield p


def targets(kind):
    for path in DASHBOARDS:
        dash = load(path)
        for p in panels(dash):
            for t in p.get("targets", []):
                if t.get("datasource", p.get("datasource", {})).get("type") == kind:
                    yield "%s: %s/%s" % (os.path.basename(path), p["title"], t["refId"]), p, t
        if kind == "grafana-clickhouse-datasource":
            for v in dash["templating"]["list"]:
                if v["type"] == "query":
                    yield ("%s: variable %s" % (os.path.basename(path), v["name"]),
                           {"type": "variable"}, v["query"])


def registered_metrics():
    names = set()
    for path in glob.glob(os.path.join(ROOT, "services", "*", "*.c")) + \
            glob.glob(os.path.join(ROOT, "common", "src", "*.c")):
        with open(path) as f:
            names |= set(re.findall(r'"(upmon_[a-z0-9_]+)"', f.read()))
    return names


def expand(text):
    for k, v in sorted(GRAFANA_VARS.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(k, v)
    return text


def expand_macros(sql, t_from, t_to, interval_s):
    """The ClickHouse plugin's macros as its backend expands them (pkg/macros of
    grafana/clickhouse-datasource): times as toDateTime(<unix s>), dates as
    toDate('YYYY-MM-DD') in UTC, the interval in whole seconds (at least 1)."""
    def day(t):
        return "toDate('%s')" % datetime.datetime.fromtimestamp(
            t, datetime.timezone.utc).strftime("%Y-%m-%d")

    def dt(t):
        return "toDateTime(%d)" % t

    secs = max(int(interval_s), 1)
    fns = {
        "timeFilter": lambda a: "%s >= %s AND %s <= %s" % (a[0], dt(t_from), a[0], dt(t_to)),
        "dateFilter": lambda a: "%s >= %s AND %s <= %s" % (a[0], day(t_from), a[0], day(t_to)),
        "dateTimeFilter": lambda a: "(%s >= %s AND %s <= %s) AND (%s >= %s AND %s <= %s)" % (
            a[0], day(t_from), a[0], day(t_to), a[1], dt(t_from), a[1], dt(t_to)),
        "timeInterval": lambda a: "toStartOfInterval(toDateTime(%s), INTERVAL %d second)"
                                  % (a[0], secs),
    }
    fns["dt"] = fns["dateTimeFilter"]

    def call(m):
        args = [a.strip() for a in m.group(2).split(",")]
        want = 2 if m.group(1) in ("dt", "dateTimeFilter") else 1
        if len(args) != want:
            raise ValueError("$__%s expects %d argument(s), got %r" % (m.group(1), want, args))
        return fns[m.group(1)](args)

    sql = re.sub(r"\$__(timeFilter|dateFilter|dateTimeFilter|dt|timeInterval)\(([^()]*)\)",
                 call, sql)
    sql = sql.replace("$__fromTime", dt(t_from)).replace("$__toTime", dt(t_to))
    sql = sql.replace("$__interval_s", str(secs))
    left = re.findall(r"\$__\w+", sql)
    if left:
        raise ValueError("macros the plugin does not have (or this test does not know): %s"
                         % sorted(set(left)))
    return sql


def set_variables(sql, values):
    for k, v in values.items():
        sql = sql.replace("${%s}" % k, str(v)).replace("$" + k + " ", str(v) + " ")
    left = re.findall(r"\$\{?(\w+)", sql)
    if left:
        raise ValueError("variables no dashboard defines: %s" % sorted(set(left)))
    return sql


def server_state(target):
    """A panel on the server's own state (system.parts, the replication queue): it reads no
    upmon data, may rightly be empty, and means nothing on an in-process engine."""
    tables = set(re.findall(r"\bFROM\s+([a-z_0-9.]+)", target["rawSql"]))
    return bool(tables) and all(t.startswith("system.") for t in tables)


