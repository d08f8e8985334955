"""The Grafana dashboard in deploy/ reads only metrics and labels that a running server exposes: every
metric a panel queries, and every label it groups or filters by, is found in a live scrape."""

from __future__ import annotations

import json
import re
import uuid

import grpc
import pytest
from dataservice.v1 import user_service_pb2 as pb
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import REPO

DASHBOARD = REPO / "deploy" / "grafana" / "dataservice.json"
_METRIC = re.compile(r"\b((?:grpc_server|dataservice)_[a-z_]+)\b")
_GROUPING = re.compile(r"by \(([^)]*)\)")
_MATCHER = re.compile(r"([a-z_]+)\s*(?:=~|!=|=)")
# Labels Prometheus adds when it scrapes, and the histogram bucket label.
_SCRAPE_LABELS = {"job", "instance", "le"}


def _queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


async def test_every_metric_and_label_the_dashboard_queries_is_exposed(app, users):
    with pytest.raises(grpc.aio.AioRpcError):  # an RPC and a database call, so that their families have samples
        await users.GetUser(pb.GetUserRequest(id=str(uuid.uuid4())))
    exposed: dict[str, set[str]] = {}  # sample name -> its labels (none known when it has no sample yet)
    for family in text_string_to_metric_families(generate_latest(app.metrics_registry).decode()):
        for name in _sample_names(family.name, family.type):
            exposed.setdefault(name, set())
        for sample in family.samples:
            exposed.setdefault(sample.name, set()).update(sample.labels)
    for query in _queries():
        metrics = set(_METRIC.findall(query))
        assert metrics, query
        for metric in metrics:
            assert metric in exposed, f"{metric} (in {query!r}) is not exposed"
        labels = {label.strip() for group in _GROUPING.findall(query) for label in group.split(",")}
        labels |= set(_MATCHER.findall(query))
        known = set().union(*(exposed[metric] for metric in metrics))
        if known:  # a family without samples yet (no Redis error so far) shows no labels to compare
            assert labels <= known | _SCRAPE_LABELS, f"{labels - known} (in {query!r}) are no labels of {metrics}"


def _sample_names(family: str, kind: str) -> list[str]:
    """The names a family's samples take in an exposition."""
    if kind == "counter":
        return [f"{family}_total"]
    if kind == "histogram":
        return [f"{family}_bucket", f"{family}_count", f"{family}_sum"]
    if kind == "info":
        return [f"{family}_info"]
    return [family]
