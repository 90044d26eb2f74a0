"""Online driver matching: candidates near the rider, their online features, model scores.

Candidates come from a Redis geo index of idle drivers (``GEOSEARCH`` by radius),
kept up by whoever writes driver state online: ``online.rebuild_index`` after a
materialization, ``online.stream_to_online`` between them. Features come from the
online store through the model's feature service (``online.OnlineReader``: one
Redis round trip for all candidates); request features from the very
function training used (``training.request_features``), so serving sees what
training saw.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from ridematch_nb.config import Settings
from ridematch_nb.features.online import OnlineReader, index_key
from ridematch_nb.features.redis_io import redis_client
from ridematch_nb.features.store import STORE_FEATURES, values_equal
from ridematch_nb.model.training import TrainedModel, derived_features

# What a match returns per candidate, best first.
RANKED = ["driver_id", "score", "pickup_km", "accept_rate_7d", "status"]


@dataclass
class Match:
    """One request's ranked candidates and where the time went (milliseconds)."""

    request_id: str
    best_first: dict[str, np.ndarray]  # the RANKED columns, best candidate first
    skipped_missing: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    missing_by_feature: dict[str, int] = field(default_factory=dict)  # candidates without it
    features: dict[str, np.ndarray] = field(default_factory=dict)  # the scored, by model feature

    @property
    def ranked(self) -> pd.DataFrame:
        """The ranked candidates as a frame, built when asked: the service reads the
        columns, since a frame a request cost it a tenth of its time (py-spy)."""
        return pd.DataFrame(self.best_first, columns=RANKED)

    @property
    def ranked_count(self) -> int:
        return len(self.best_first["driver_id"])


class Matcher:
    """Ranks idle drivers within a radius of a request by the model's acceptance score."""

    def __init__(
        self,
        settings: Settings,
        fs,
        trained: TrainedModel,
        project: str,
        radius_km: float = 6.0,
        max_candidates: int = 50,
    ) -> None:
        self.model, self.key = trained, index_key(project)
        # one request's candidates are a few rows: OpenMP threads cost more than they
        # give there, and on a busy machine they made a prediction a hundred times slower
        threadpool_limits(1)
        self.radius_km, self.max_candidates = radius_km, max_candidates
        self.redis = redis_client(settings, serving=True)
        self.reader = OnlineReader(fs, settings, trained.feature_service)

    def candidates(self, lat: float, lon: float, radius_km: float | None = None) -> list[str]:
        found = self.redis.geosearch(
            self.key,
            longitude=lon,
            latitude=lat,
            radius=radius_km or self.radius_km,
            unit="km",
            sort="ASC",
            count=self.max_candidates,
        )
        return [d.decode() for d in found]

    def match(self, request: dict) -> Match:
        t0 = time.perf_counter()
        ids = self.candidates(
            request["origin_lat"], request["origin_lon"], request.get("radius_km")
        )
        t1 = time.perf_counter()
        online = self.reader.columns(ids)
        t2 = time.perf_counter()
        # the index may lag the store: only drivers the store has, and has as idle
        keep = [
            i
            for i, status in enumerate(online["status"])
            if status == "idle" and all(online[f][i] is not None for f in STORE_FEATURES)
        ]
        cols = {name: [values[i] for i in keep] for name, values in online.items()}
        cols.update({k: request[k] for k in ("origin_lat", "origin_lon", "dest_lat", "dest_lon")})
        scored = {}
        if not keep:
            best_first = {c: np.array([]) for c in RANKED}
        else:
            cols.update(derived_features(cols, request["timestamp"]))
            scores = self.model.score_columns(cols)
            order = np.argsort(-scores, kind="stable")
            cols["score"] = scores
            best_first = {c: np.asarray(cols[c])[order] for c in RANKED}
            scored = {f: np.asarray(cols[f], dtype=float) for f in self.model.features}
        t3 = time.perf_counter()
        timings = {
            "candidates": (t1 - t0) * 1e3,
            "features": (t2 - t1) * 1e3,
            "scoring": (t3 - t2) * 1e3,
            "total": (t3 - t0) * 1e3,
        }
        missing = {f: sum(v is None for v in online[f]) for f in STORE_FEATURES}
        skipped = len(ids) - len(keep)
        return Match(request["request_id"], best_first, skipped, timings, missing, scored)


def percentiles(samples_ms, quantiles=(0.5, 0.95, 0.99)) -> dict[str, float | None]:
    """``{"p50_ms": ..., "p95_ms": ..., "p99_ms": ...}`` of latency samples in ms, linearly
    interpolated (None when there are none): every latency report uses this one."""
    values = np.asarray(list(samples_ms), dtype=float)
    return {
        f"p{round(q * 100)}_ms": round(float(np.quantile(values, q)), 3) if len(values) else None
        for q in quantiles
    }


def latency_table(timings: list[dict[str, float]]) -> pd.DataFrame:
    """p50 / p95 / p99 of each part of the match (one dict of parts per match), in ms."""
    frame = pd.DataFrame(timings)
    return pd.DataFrame({part: percentiles(frame[part]) for part in frame}).T


def skew_check(fs, service_name: str, driver_ids: list[str], as_of) -> pd.DataFrame:
    """For the same drivers and moment: what training would see (historical, as of
    ``as_of``) against what serving fetches now. After a materialization up to
    ``as_of`` with no push since, they must be equal."""
    service = fs.get_feature_service(service_name)
    entity_df = pd.DataFrame(
        {"driver_id": driver_ids, "event_timestamp": [pd.Timestamp(as_of)] * len(driver_ids)}
    )
    hist = fs.get_historical_features(entity_df=entity_df, features=service).to_df()
    online = fs.get_online_features(
        features=service, entity_rows=[{"driver_id": d} for d in driver_ids]
    ).to_df()
    merged = hist.merge(online, on="driver_id", suffixes=("_offline", "_online"))
    out = {"driver_id": merged["driver_id"]}
    for feat in STORE_FEATURES:
        a, b = merged[f"{feat}_offline"], merged[f"{feat}_online"]
        out[feat] = [values_equal(x, y) for x, y in zip(a, b, strict=True)]
    return pd.DataFrame(out).set_index("driver_id")
