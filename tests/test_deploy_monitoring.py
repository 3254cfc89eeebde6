"""deploy/prometheus-rules.yml and deploy/grafana-dashboard.json: the rules pass `promtool check
rules` and their own `promtool test rules` (tests/prometheus-rules-test.yml), and every metric the
rules and the dashboard name is one the daemon exports (daemon/metrics.py's registry)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from clevertim_sync.daemon.healthz import MirrorFacts, QueueFacts, ResourceFacts
from clevertim_sync.daemon.metrics import DaemonMetrics

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
RULES_TEST = Path(__file__).resolve().parent / "prometheus-rules-test.yml"
# Series Prometheus makes itself, not the daemon.
PROMETHEUS_OWN = {"up"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        # `make test` installs it (scripts/ensure-system-packages); CI must not pass without it.
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: scripts/ensure-system-packages installs it")
        pytest.skip("promtool is not installed (Debian's prometheus package)")
    return found


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


def test_each_rule_fires_on_its_condition_and_not_before() -> None:
    done = subprocess.run(
        [_promtool(), "test", "rules", RULES_TEST.name],
        cwd=RULES_TEST.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def exported_series() -> set[str]:
    """Every series name the daemon's /metrics may carry, with the suffixes of each type."""
    at = datetime(2026, 12, 1, tzinfo=UTC)
    facts = MirrorFacts(
        "default",
        [ResourceFacts("contact", at, at, 1, "x", True, "y")],
        QueueFacts({"conflict": 1}, 1, 5.0),
        ("backup",),
        {"contact": 3600.0},
    )
    metrics = DaemonMetrics(lambda: [facts])
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names |= {family.name + "_total", family.name + "_created"}
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum", "_created")}
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (functions, keywords and labels left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if m.start() > 0 and (text[m.start() - 1].isdigit() or text[m.start() - 1] == "."):
            continue  # the letters of a number: 1e3, 0.95
        if text[m.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if m.group().lower() not in KEYWORDS:
            names.add(m.group())
    return names


def test_the_name_parser_finds_metrics_and_only_them() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, job) (rate(a_bucket{job="x", le!="1"}[5m]))) '
        "> on(instance) group_left(account) b_total offset 5m and time() - c "
        '> bool 1e3 unless d{account=~"$account"}'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d"}


def _rule_exprs() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query["query"])
            assert m, query
            exprs.append(m.group(1))
    return exprs


def test_every_metric_the_rules_and_the_dashboard_name_is_exported() -> None:
    exported = exported_series() | PROMETHEUS_OWN
    rule_exprs, dash_exprs = _rule_exprs(), _dashboard_exprs()
    assert len(rule_exprs) == 7 and len(dash_exprs) > 10
    named = {name: expr for expr in rule_exprs + dash_exprs for name in metric_names(expr)}
    unknown = {name: expr for name, expr in named.items() if name not in exported}
    assert not unknown, f"not exported by daemon/metrics.py: {unknown}"
    # The dashboard shows every metric family the daemon exports (a new one needs a panel).
    shown = {name for expr in dash_exprs for name in metric_names(expr)}
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", n) for n in exported - PROMETHEUS_OWN}
    missing = {f for f in families if not any(s == f or s.startswith(f + "_") for s in shown)}
    assert not missing, f"no dashboard panel shows {sorted(missing)}"
