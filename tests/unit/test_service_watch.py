"""The live panel's reading of the service's metrics: counts, p99 between two scrapes,
drift; and the live requests as the service takes them."""

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from ridematch_nb.contract.events import SEED_EXAMPLES
from ridematch_nb.model.service import MatchRequest
from ridematch_nb.model.service_metrics import LATENCY_BUCKETS
from ridematch_nb.views.service_watch import parse, quantile_between, request_body


class _Drift:
    def collect(self):
        g = GaugeMetricFamily("feature_drift_score", "d", labels=["feature_name"])
        g.add_metric(["pickup_km"], 0.25)
        yield g


def _registry():
    r = CollectorRegistry()
    h = Histogram(
        "match_request_latency_seconds",
        "l",
        ["path", "outcome"],
        buckets=LATENCY_BUCKETS,
        registry=r,
    )
    r.register(_Drift())
    return r, h


def test_counts_every_outcome_of_match_and_nothing_else():
    r, h = _registry()
    for _ in range(3):
        h.labels("/match", "2xx").observe(0.004)
    h.labels("/match", "4xx").observe(0.001)
    h.labels("/health", "2xx").observe(0.001)
    got = parse(generate_latest(r).decode(), at=0.0)
    assert got.count == 4 and got.buckets[float("inf")] == 4
    assert got.buckets[0.005] == 4 and got.buckets[0.003] == 1
    assert got.drift == {"pickup_km": 0.25}


def test_p99_is_of_the_requests_between_two_scrapes():
    r, h = _registry()
    for _ in range(100):
        h.labels("/match", "2xx").observe(0.5)  # slow ones first
    before = parse(generate_latest(r).decode(), at=0.0)
    rng = np.random.default_rng(0)
    for v in rng.uniform(0.0031, 0.0049, 1000):
        h.labels("/match", "2xx").observe(float(v))
    after = parse(generate_latest(r).decode(), at=1.0)
    p99 = quantile_between(before, after, 0.99)
    assert 0.003 < p99 <= 0.005  # only the fast ones count: in their bucket
    assert p99 == pytest.approx(0.003 + 0.002 * 0.99)  # linear within the bucket
    assert quantile_between(after, after, 0.99) is None  # no request between


def test_a_live_rider_request_is_a_valid_match_body():
    body = request_body(SEED_EXAMPLES["rider_request"])
    parsed = MatchRequest(**body)
    assert (parsed.rider_lat, parsed.rider_lon) == tuple(SEED_EXAMPLES["rider_request"]["origin"])
    assert parsed.timestamp.isoformat().startswith("2025-01-19T18:00:00")


def test_a_timestamp_without_its_offset_is_refused_by_name():
    """Scoring converts the time to the city's zone: a naive one would be a 500 there."""
    from pydantic import ValidationError

    body = request_body(SEED_EXAMPLES["rider_request"])
    with pytest.raises(ValidationError) as refused:
        MatchRequest(**{**body, "timestamp": "2025-01-19T18:00:00"})
    assert [e["loc"] for e in refused.value.errors()] == [("timestamp",)]
