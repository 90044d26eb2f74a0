"""Summaries of what was read or landed, as small tables: the numbers notebooks 02 and 03
show and record (their charts come from plots)."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pandas as pd
import pyarrow as pa

from ridematch_nb.geo import CITY_TZ


def local_hour(ts: pd.Series) -> pd.Series:
    """Hour of day in New York, where the simulated riders and drivers live."""
    return ts.dt.tz_convert(CITY_TZ).dt.hour


def acceptance_table(offers: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Acceptance rate (and count) by pickup distance band and by hour of day."""
    edges = [0, 0.5, 1, 1.5, 2, 3, 4, 6, 200]
    labels = [f"{a:g}–{b:g}" if b < 200 else f">{a:g}" for a, b in pairwise(edges)]
    bands = pd.cut(offers["pickup_km"], edges, labels=labels, include_lowest=True)
    by_km = offers.groupby(bands, observed=True)["accepted"].agg(rate="mean", offers="count")
    by_hour = offers.groupby(local_hour(offers["timestamp"]))["accepted"].agg(
        rate="mean", offers="count"
    )
    return by_km, by_hour


def stream_summary(
    frames: dict[str, pd.DataFrame], rejected: dict[str, int], events_read: int
) -> dict[str, Any]:
    """What notebook 02 records about a read of the topic: counts by type and reason,
    drivers seen, acceptance overall and by pickup distance, the event-time span."""
    offers = frames["offer_outcome"]
    by_km, _ = acceptance_table(offers)
    stamps = [df["timestamp"] for df in frames.values() if len(df)]
    return {
        "events_read": events_read,
        "by_type": {etype: len(df) for etype, df in frames.items()},
        "rejected": rejected,
        "drivers_seen": int(frames["driver_update"]["driver_id"].nunique()),
        "acceptance_rate": round(float(offers["accepted"].mean()), 4) if len(offers) else None,
        "acceptance_by_km": {str(k): round(v, 4) for k, v in by_km["rate"].items()},
        "first_event": str(min(s.min() for s in stamps)) if stamps else None,
        "last_event": str(max(s.max() for s in stamps)) if stamps else None,
    }


def rows_per_hour(tables: dict[str, pa.Table]) -> dict[str, pd.Series]:
    """Rows per event type and hour of event time (UTC), from tables with a timestamp."""
    return {
        etype: table.column("timestamp").to_pandas().dt.floor("h").value_counts().sort_index()
        for etype, table in tables.items()
    }
