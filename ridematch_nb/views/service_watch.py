"""What the live view shows of the match service: its request rate, p99 and feature drift,
read from its own ``/metrics`` (as Prometheus would scrape them), and the live rider
requests the view sends it.

The p99 is that of the requests answered between two scrapes, from the latency
histogram's buckets (linear within a bucket, as Prometheus' ``histogram_quantile``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ridematch_nb.contract.events import parse_ts
from ridematch_nb.model import service

LATENCY = "match_request_latency_seconds"
FORWARD_QUEUE = 200  # live requests waiting to be sent; more than that are dropped


@dataclass
class Scrape:
    """One reading of ``/metrics``: ``/match`` requests so far, their cumulative latency
    buckets (upper bound in seconds -> count), and the drift gauges."""

    at: float
    count: float
    buckets: dict[float, float]
    drift: dict[str, float]


def parse(text: str, at: float) -> Scrape:
    count, buckets, drift = 0.0, {}, {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == f"{LATENCY}_bucket" and s.labels.get("path") == "/match":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value  # every outcome
            elif s.name == f"{LATENCY}_count" and s.labels.get("path") == "/match":
                count += s.value
            elif s.name == "feature_drift_score":
                drift[s.labels["feature_name"]] = s.value
    return Scrape(at, count, buckets, drift)


def quantile_between(before: Scrape, after: Scrape, q: float) -> float | None:
    """The q-quantile (seconds) of the requests answered between two scrapes."""
    bounds = sorted(after.buckets)
    counts = [after.buckets[b] - before.buckets.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank, lower, below = q * counts[-1], 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return lower  # above the last finite bucket: its bound is all one knows
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            return lower + (bound - lower) * share
        lower, below = bound, cumulative
    return lower


class ServiceWatch:
    """Scrapes the service now and then; keeps rate, p99 and drift for the charts."""

    def __init__(self, url: str, history: int = 600) -> None:
        self.url = url
        self.http = httpx.Client(timeout=2)
        self.last: Scrape | None = None
        self.points: deque = deque(maxlen=history)  # (at, requests/s, p99 ms)
        self.drift: dict[str, float] = {}
        self.up = False

    def sample(self) -> None:
        try:
            text = self.http.get(f"{self.url}/metrics").text
        except httpx.HTTPError:
            self.up, self.last = False, None
            return
        now = parse(text, time.time())
        self.up, self.drift = True, now.drift
        if self.last is not None and now.at > self.last.at:
            rate = (now.count - self.last.count) / (now.at - self.last.at)
            p99 = quantile_between(self.last, now, 0.99)
            self.points.append((now.at, rate, None if p99 is None else p99 * 1000))
        self.last = now


def request_body(event: dict) -> dict:
    """A ``rider_request`` event (as ``contract.decode`` gives it) as ``POST /match``
    takes it: the service's own body of a request, from the event's fields."""
    (lat, lon), (dest_lat, dest_lon) = event["origin"], event["dest"]
    request = {
        "rider_id": event["rider_id"],
        "origin_lat": lat,
        "origin_lon": lon,
        "dest_lat": dest_lat,
        "dest_lon": dest_lon,
        "timestamp": parse_ts(event["timestamp"]),
    }
    return service.request_body(request)


@dataclass
class Forwarder:
    """Sends the live rider requests to the service from a thread of its own, so a slow
    answer never holds up the charts; counts what it sent, what failed, what it dropped."""

    url: str
    counts: dict = field(
        default_factory=lambda: {"sent": 0, "answered": 0, "failed": 0, "dropped": 0}
    )

    last_failure: str = ""  # what the last failed request got, for the summary

    def __post_init__(self) -> None:
        self._queue: deque = deque()
        self._wake = threading.Event()
        threading.Thread(target=self._run, name="live-forwarder", daemon=True).start()

    def offer(self, events: list[dict]) -> None:
        for event in events:
            if len(self._queue) >= FORWARD_QUEUE:
                self.counts["dropped"] += 1
            else:
                self._queue.append(event)
        self._wake.set()

    def _run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while True:
                self._wake.wait(1.0)
                self._wake.clear()
                while self._queue:
                    event = self._queue.popleft()
                    self.counts["sent"] += 1
                    try:
                        reply = http.post(f"{self.url}/match", json=request_body(event))
                    except httpx.HTTPError as exc:
                        self.counts["failed"] += 1
                        self.last_failure = f"{type(exc).__name__}: {exc}"
                        continue
                    if reply.status_code == 200:
                        self.counts["answered"] += 1
                    else:
                        self.counts["failed"] += 1
                        self.last_failure = f"{reply.status_code}: {reply.text[:200]}"
