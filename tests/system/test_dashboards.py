"""The Grafana dashboards in dashboards/ (issue 18, in progress): their structure, and every
query run against the real servers of the stack.

A real Grafana cannot run on these machines, so each panel's query is executed the way
Grafana would send it: PromQL with Grafana's interval variables expanded to the stack's
Prometheus (it must parse and evaluate), SQL to a ClickHouse server of the stack (it must
run and return the columns the panel reads). Every metric a panel names must be one an upmon
service registers, so a renamed metric fails here rather than showing an empty panel.
"""

import glob
import json
import os
import re
import urllib.parse

import pytest

from conftest import ClickHouse, http_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARDS = sorted(glob.glob(os.path.join(ROOT, "dashboards", "*.json")))
# What Grafana substitutes before a query leaves it (its built-in variables).
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
DATASOURCES = {"prometheus": "${datasource}", "grafana-clickhouse-datasource": "${clickhouse}"}


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
        for p in panels(load(path)):
            for t in p.get("targets", []):
                if t.get("datasource", p.get("datasource", {})).get("type") == kind:
                    yield "%s: %s/%s" % (os.path.basename(path), p["title"], t["refId"]), t


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


def test_there_are_dashboards():
    assert DASHBOARDS, "no dashboards/*.json"


@pytest.mark.parametrize("path", DASHBOARDS, ids=os.path.basename)
def test_structure(path):
    raw = open(path).read()
    dash = json.loads(raw)
    assert "${DS_" not in raw and "__inputs" not in dash, \
        "exported with ${DS_...} inputs: the provisioning sidecar cannot fill them"
    assert dash["schemaVersion"] >= 36 and dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids, cells = set(), set()
    for p in panels(dash):
        assert p["id"] not in ids, "panel id %s twice" % p["id"]
        ids.add(p["id"])
        ds = p["datasource"]
        assert DATASOURCES.get(ds["type"]) == ds["uid"], \
            "%s: data source %s is not chosen by its template variable" % (p["title"], ds)
        assert ds["uid"][2:-1] in variables, "%s: no variable %s" % (p["title"], ds["uid"])
        assert p.get("targets"), "%s: no query" % p["title"]
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, "%s: wider than the grid" % p["title"]
        mine = {(g["x"] + i, g["y"] + j) for i in range(g["w"]) for j in range(g["h"])}
        assert not mine & cells, "%s overlaps another panel" % p["title"]
        cells |= mine
        assert p.get("description"), "%s: no description" % p["title"]


def test_every_metric_named_is_registered_by_a_service():
    known = registered_metrics()
    missing = []
    for where, t in targets("prometheus"):
        for name in re.findall(r"\b(upmon_[a-z0-9_]+)", t["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name not in known and base not in known:
                missing.append("%s: %s" % (where, name))
    assert not missing, "metrics no service registers:\n" + "\n".join(missing)


@pytest.mark.parametrize("where,target", list(targets("prometheus")), ids=lambda x: x
                         if isinstance(x, str) else "")
def test_promql_evaluates_on_the_stack(stack, where, target):
    prom = stack["env"]["UPMON_PROMETHEUS_URL"]
    url = prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expand(target["expr"])})
    res = http_json(url)
    assert res["status"] == "success", (where, res)


@pytest.mark.parametrize("where,target", list(targets("grafana-clickhouse-datasource")),
                         ids=lambda x: x if isinstance(x, str) else "")
def test_sql_runs_on_a_stack_server(stack, where, target):
    env = stack["env"]
    url = env["UPMON_CLICKHOUSE_URLS"].split(",")[0].split(";")[0]
    ch = ClickHouse(url, env["UPMON_CLICKHOUSE_USER"], env["UPMON_CLICKHOUSE_PASSWORD"])
    out = ch.query(expand(target["rawSql"]) + " FORMAT JSONCompact")
    cols = [c["name"] for c in json.loads(out)["meta"]]
    assert cols, (where, out)
