"""Crafted driver updates landed in S3 as the ETL lands them, entity rows at chosen and
random times, and the point-in-time join written by hand without Feast: per view, pandas
``merge_asof`` by driver, backward (a row at exactly t counts), within the view's TTL (a
row exactly TTL old still counts), after keeping, of rows of one driver at the same
second, the one with the highest Kafka offset. The offline-store test and the engine
comparisons in scripts/ share them."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from ridematch_nb.contract.columnar import landed_table as to_table
from ridematch_nb.features import store as features
from ridematch_nb.lake.storage import Lake, chunk_name, data_key
from tests.helpers.lake import driver_update as event

T0 = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
STATE = ["lat", "lon", "status"]  # driver_state, TTL 30 minutes
STATS = ["accept_rate_7d", "avg_response_ms"]  # driver_stats, TTL 7 days
TTL = {"state": timedelta(minutes=30), "stats": timedelta(days=7)}


def land(settings, updates: pd.DataFrame) -> None:
    """One parquet file per (date, hour), as the ETL writes them, Kafka offsets kept."""
    lake = Lake(settings)
    for (date, hour), part in updates.groupby(
        [updates.ts.dt.strftime("%Y-%m-%d"), updates.ts.dt.hour]
    ):
        items = [
            (event(r.driver_id, r.ts, r.lat, r.status, r.rate, r.ms), r.ts, r.partition, r.offset)
            for r in part.itertuples()
        ]
        stem = chunk_name("crafted", 0, int(part.offset.min()), int(part.offset.max()))
        lake.put_table(
            data_key(settings.prefix, "driver_update", date, hour, stem),
            to_table("driver_update", items),
        )


def crafted_updates(rng: np.random.Generator) -> pd.DataFrame:
    """20 drivers over 9 days, at whole seconds; many share a second with another update
    of the same driver (ties), some go quiet for longer than each TTL."""
    rows = []
    for d in range(20):
        n = int(rng.integers(5, 60))
        offsets = np.sort(rng.choice(9 * 24 * 60, size=n, replace=False))  # minutes
        for m in offsets:
            ts = T0 - timedelta(days=8) + timedelta(minutes=int(m), seconds=int(rng.integers(0, 3)))
            rows.append((f"driver_{d}", ts))
            if rng.random() < 0.25:  # a second update of the same driver in the same second
                rows.append((f"driver_{d}", ts))
    frame = pd.DataFrame(rows, columns=["driver_id", "ts"])
    frame["lat"] = 40.60 + rng.random(len(frame)) / 5
    frame["status"] = rng.choice(["idle", "en_route", "on_trip", "offline"], len(frame))
    frame["rate"] = rng.random(len(frame)).round(4)
    frame["ms"] = rng.integers(300, 15000, len(frame))
    # each driver lives on one partition, as the ETL's keyed topic puts it; files are
    # written in shuffled order so nothing depends on the order rows come back in
    frame["partition"] = frame.driver_id.str.slice(7).astype(int) % 3
    frame["offset"] = frame.groupby("partition").cumcount()
    return frame.sample(frac=1, random_state=1).reset_index(drop=True)


def entity_rows(updates: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """At every update's exact time, exactly a TTL after some, just past a TTL, before a
    driver's first update, for a driver without updates, duplicates, and random times."""
    picks = updates.sample(60, random_state=2)
    at = [
        *zip(picks.driver_id, picks.ts, strict=True),
        *zip(picks.driver_id, picks.ts + TTL["state"], strict=True),
        *zip(picks.driver_id, picks.ts + TTL["state"] + timedelta(seconds=1), strict=True),
        *zip(picks.driver_id, picks.ts + TTL["stats"], strict=True),
        *zip(picks.driver_id, picks.ts + TTL["stats"] + timedelta(seconds=1), strict=True),
        *zip(picks.driver_id, picks.ts + timedelta(days=3), strict=True),
        ("driver_0", updates.ts.min() - timedelta(hours=1)),
        ("driver_nobody", T0),
    ]
    drivers = rng.choice(updates.driver_id.unique(), 400)
    start = updates.ts.min()
    seconds = rng.integers(0, int((T0 - start).total_seconds()) + 86_400, 400)
    at += [(d, start + timedelta(seconds=int(s))) for d, s in zip(drivers, seconds, strict=True)]
    frame = pd.DataFrame(at, columns=["driver_id", "event_timestamp"])
    frame = pd.concat([frame, frame.head(10)], ignore_index=True)  # duplicate entity rows
    frame["row"] = np.arange(len(frame))
    return frame


def reference(updates: pd.DataFrame, entities: pd.DataFrame, ttl: dict = TTL) -> pd.DataFrame:
    """The point-in-time join by hand: merge_asof per view, backward, within the TTL
    (a TTL of None: no limit, to show what a store that ignores TTLs returns)."""
    lake = updates.rename(
        columns={"ts": "timestamp", "rate": "accept_rate_7d", "ms": "avg_response_ms"}
    )
    lake = lake.sort_values(["timestamp", "partition", "offset"])
    lake = lake.groupby(["driver_id", "timestamp"]).tail(1)  # ties: the last produced
    lake["lon"] = -73.98
    left = entities.sort_values("event_timestamp")
    out = left
    for view, cols in (("state", STATE), ("stats", STATS)):
        right = lake[["driver_id", "timestamp", *cols]].sort_values("timestamp")
        joined = pd.merge_asof(
            left,
            right,
            left_on="event_timestamp",
            right_on="timestamp",
            by="driver_id",
            direction="backward",
            allow_exact_matches=True,
            tolerance=ttl[view],
        )
        out = out.merge(joined[["row", *cols]], on="row")
    return out.set_index("row").sort_index()


def retrieve(fs, entities: pd.DataFrame) -> pd.DataFrame:
    job = fs.get_historical_features(
        entity_df=entities, features=fs.get_feature_service(features.FEATURE_SERVICE)
    )
    return job.to_df().set_index("row").sort_index()
