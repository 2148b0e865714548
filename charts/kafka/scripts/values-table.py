#!/usr/bin/env python3
"""The values table of charts/kafka/README.md, generated from the chart itself.

Every key of values.yaml with its type (from values.schema.json), its default (values.yaml)
and its description (the `# --` comment above it in values.yaml, else the schema's
description). The table sits in README.md between the markers
<!-- values-table:begin --> and <!-- values-table:end -->.

  python3 charts/kafka/scripts/values-table.py           # print the table
  python3 charts/kafka/scripts/values-table.py --write   # rewrite it in README.md
  python3 charts/kafka/scripts/values-table.py --check   # exit 1 when README.md is stale

Needs PyYAML (python3 -m pip install pyyaml). tests/system/test_chart_kafka.py runs --check.
"""

import json
import os
import re
import sys

try:
    import yaml
except ImportError:  # say what is missing instead of a traceback
    sys.exit("values-table.py: PyYAML is required (python3 -m pip install pyyaml)")

CHART = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN = "<!-- values-table:begin -->"
END = "<!-- values-table:end -->"
# Objects shown as one row: Kubernetes types, whose fields are Kubernetes' own.
LEAVES = {"resources", "topicsJob.resources"}
KEY = re.compile(r"^( *)([A-Za-z0-9_.-]+):")


def comments(path):
    """{dotted key: text of the `# --` comment block right above it} from values.yaml."""
    out, stack, block = {}, [], None
    with open(path) as f:
        for line in f:
            stripped = line.strip()
            if stripped.startswith("# --"):
                block = [stripped[4:].strip()]
                continue
            if stripped.startswith("#"):
                if block is not None:
                    block.append(stripped[1:].strip())
                continue
            m = KEY.match(line)
            if not m:
                if not stripped.startswith("-"):
                    block = None
                continue
            indent = len(m.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, m.group(2)))
            if block is not None:
                out[".".join(k for _, k in stack)] = " ".join(block)
            block = None
    return out


def type_of(schema):
    t = schema.get("type", "any")
    t = " or ".join(t) if isinstance(t, list) else t
    if "enum" in schema:
        t += " (%s)" % ", ".join(json.dumps(v) for v in schema["enum"])
    return t


def rows(schema, values, docs, prefix=""):
    for key, sub in schema.get("properties", {}).items():
        path = prefix + key
        if key == "global" or (path not in docs and values is not None and key not in values):
            continue
        default = values.get(key) if isinstance(values, dict) else None
        if sub.get("properties") and path not in LEAVES and isinstance(default, dict):
            yield from rows(sub, default, docs, path + ".")
            continue
        text = json.dumps(default)
        if len(text) > 60:
            text = "see values.yaml"
        desc = docs.get(path) or sub.get("description", "")
        yield path, type_of(sub), text, desc
        # The fields of a list's items (topics[].name, ...): their own rows, without defaults.
        for field, fs in sub.get("items", {}).get("properties", {}).items():
            req = " Required." if field in sub["items"].get("required", []) else ""
            yield "%s[].%s" % (path, field), type_of(fs), None, fs.get("description", "") + req


def table():
    with open(os.path.join(CHART, "values.schema.json")) as f:
        schema = json.load(f)
    with open(os.path.join(CHART, "values.yaml")) as f:
        values = yaml.safe_load(f)
    docs = comments(os.path.join(CHART, "values.yaml"))
    lines = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for path, typ, default, desc in rows(schema, values, docs):
        cell = lambda s: s.replace("|", "\\|")
        if default is None:
            default = "-"
        elif default != "see values.yaml":
            default = "`%s`" % cell(default)
        lines.append("| `%s` | %s | %s | %s |" % (path, cell(typ), default, cell(desc)))
    return "\n".join(lines) + "\n"


def main(argv):
    mode = argv[1] if len(argv) > 1 else ""
    if mode not in ("", "--write", "--check"):
        sys.exit(__doc__)
    tbl = table()
    if not mode:
        sys.stdout.write(tbl)
        return 0
    readme = os.path.join(CHART, "README.md")
    with open(readme) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        sys.exit("values-table.py: %s lacks the markers %s ... %s" % (readme, BEGIN, END))
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + BEGIN + "\n" + tbl + END + tail
    if mode == "--check":
        if new != text:
            print("values-table.py: the values table in %s is stale; run "
                  "`python3 charts/kafka/scripts/values-table.py --write`" % readme)
            return 1
        return 0
    with open(readme, "w") as f:
        f.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
