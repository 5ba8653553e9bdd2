"""Every ``forge_*`` series an alert or a dashboard panel queries is one the code exports: a renamed
metric breaks this test instead of leaving an alert that never fires or an empty panel."""

from __future__ import annotations

import importlib
import json
import pkgutil
import re

import pytest
from prometheus_client import REGISTRY

import forge.observability
from forge.api.auth import limits  # its own series: forge_rate_limit_store_errors_total

from .checks import PLATFORM, build

_SERIES = re.compile(r"\bforge_[a-z0-9_]+")


def _exported() -> set[str]:
    """Sample names (``_total``, ``_bucket``… included) of every metric registered once all of
    forge.observability and the API's rate limits are imported."""
    for module in pkgutil.iter_modules(forge.observability.__path__):
        importlib.import_module(f"forge.observability.{module.name}")
    assert limits.STORE_ERRORS is not None
    names = set(REGISTRY._names_to_collectors)  # every sample name, suffixes included
    return {name for name in names if name.startswith("forge_")}


def _alert_queries() -> dict[str, str]:
    (rule,) = (o for o in build("forge/base") if o["kind"] == "PrometheusRule")
    return {r["alert"]: r["expr"] for group in rule["spec"]["groups"] for r in group["rules"] if "alert" in r}


def _panel_queries() -> list[str]:
    dashboard = json.loads((PLATFORM / "components" / "monitoring" / "dashboard.json").read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", []) if "expr" in target]


@pytest.mark.parametrize(("alert", "expr"), sorted(_alert_queries().items()))
def test_every_alert_queries_series_the_code_exports(alert: str, expr: str) -> None:
    unknown = set(_SERIES.findall(expr)) - _exported()
    assert not unknown, f"{alert} queries {sorted(unknown)}, which no forge process exports"


def test_every_dashboard_panel_queries_series_the_code_exports() -> None:
    queries = _panel_queries()
    assert queries
    unknown = {series for expr in queries for series in _SERIES.findall(expr)} - _exported()
    assert not unknown, f"the dashboard queries {sorted(unknown)}, which no forge process exports"


def test_the_check_sees_a_renamed_series() -> None:
    assert "forge_dlq_messages" in _exported()
    assert "forge_dlq_messagez" not in _exported()
