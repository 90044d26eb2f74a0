"""Crafted driver updates, landed in the lake as the ETL would land them."""

from datetime import UTC, datetime, timedelta

from ridematch_nb.contract.columnar import landed_table
from ridematch_nb.lake.storage import Lake, chunk_name, data_key

T0 = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)


def driver_update(
    driver: str, ts: datetime, lat: float, status: str = "idle", rate: float = 0.5, ms: int = 1000
) -> dict:
    """A valid driver_update at ``ts`` (whole seconds)."""
    return {
        "event_type": "driver_update",
        "driver_id": driver,
        "lat": lat,
        "lon": -73.98,
        "status": status,
        "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "accept_rate_7d": rate,
        "avg_response_ms": ms,
    }


def update(driver: str, minute: float, lat: float, status: str = "idle", rate: float = 0.5):
    """A driver_update ``minute`` minutes after T0, with its time."""
    ts = T0 + timedelta(minutes=minute)
    return driver_update(driver, ts, lat, status, rate), ts


def land(settings, rows, offset0: int = 0) -> None:
    """Write crafted driver updates into the lake as the ETL would (one file per hour)."""
    lake = Lake(settings)
    by_hour = {}
    for i, (event, ts) in enumerate(rows):
        by_hour.setdefault((ts.strftime("%Y-%m-%d"), ts.hour), []).append(
            (event, ts, 0, offset0 + i)
        )
    for (date, hour), items in by_hour.items():
        stem = chunk_name("crafted", 0, items[0][3], items[-1][3])
        key = data_key(settings.prefix, "driver_update", date, hour, stem)
        lake.put_table(key, landed_table("driver_update", items))
