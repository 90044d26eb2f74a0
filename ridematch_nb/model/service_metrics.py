"""The match service's Prometheus metrics (a registry of its own, feature drift computed
at each scrape) and the ASGI middleware that times each whole request.

Under ``serve --workers N`` prometheus_client runs in its multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, see ``replicas``): counters and histograms are summed over
the workers at each scrape, whichever worker answers it. Drift is the answering
worker's own window: each worker sees a share of the same requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily

from ridematch_nb.model import drift

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)


class DriftCollector:
    """``feature_drift_score{feature_name}``, computed at each scrape from the served
    model's window (none before ``drift.MIN_LIVE`` values, none for a model saved without
    a reference)."""

    def __init__(self, window: Callable[[], drift.DriftWindow | None]) -> None:
        self.window = window

    def describe(self):
        return [self._family()]

    def collect(self):
        family, window = self._family(), self.window()
        for feature, score in (window.scores() if window else {}).items():
            family.add_metric([feature], score)
        yield family

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "feature_drift_score",
            "Two-sample Kolmogorov-Smirnov statistic of each model feature: the last "
            f"{drift.WINDOW} scored candidates against the training set's sample",
            labels=["feature_name"],
        )


class Metrics:
    """The service's Prometheus metrics, in a registry of its own; ``exposed`` is what
    ``/metrics`` writes: that registry, or, for one of ``serve``'s workers, the sum of
    every worker's files (asked by the caller, not read from PROMETHEUS_MULTIPROC_DIR:
    Feast sets that variable for itself on import, in one process too)."""

    def __init__(
        self, window: Callable[[], drift.DriftWindow | None], summed_over_workers: bool = False
    ) -> None:
        self.registry = r = CollectorRegistry()
        self.exposed = r
        if summed_over_workers:
            self.exposed = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.exposed)
        self.exposed.register(DriftCollector(window))
        self.latency = Histogram(
            "match_request_latency_seconds",
            "Whole request, arrival at the app to last byte written, by path and outcome",
            ["path", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.parts = Histogram(
            "match_part_seconds",
            "Time of each part of a match",
            ["part"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter("match_errors_total", "Errors by kind", ["error_type"], registry=r)
        self.candidates = Histogram(
            "match_candidates",
            "Idle drivers found within the radius, per request",
            buckets=(0, 1, 2, 5, 10, 20, 50),
            registry=r,
        )
        self.missing = Counter(
            "feature_missing_total",
            "Candidates the online store had no value for, by feature",
            ["feature_name"],
            registry=r,
        )
        self.scores = Histogram(
            "prediction_scores",
            "The model's acceptance scores of ranked candidates",
            buckets=[i / 10 for i in range(11)],
            registry=r,
        )


class TimedApp:
    """ASGI middleware: each request's time from its arrival at the app (its headers
    read) to the last byte written, by path and outcome (the status class). A path the
    app does not route counts as ``other``: a scanner's URLs would make a series each."""

    def __init__(self, app, histogram: Histogram, paths: set[str]) -> None:
        self.app, self.histogram, self.paths = app, histogram, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]
        path = scope["path"] if scope["path"] in self.paths else "other"

        async def timed_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                outcome = f"{status[0] // 100}xx"
                self.histogram.labels(path, outcome).observe(time.perf_counter() - start)

        await self.app(scope, receive, timed_send)
