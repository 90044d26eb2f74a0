"""The Feast feature store over the lake: apply, materialize into Redis, push, verify.

feature_repo/ reads every endpoint and name from the environment; ``store()`` sets
that environment from the settings, so the repository works from any working
directory and never holds an endpoint or a secret.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from datetime import UTC, datetime
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from ridematch_nb import offline
from ridematch_nb.config import PROJECT_ROOT, Settings
from ridematch_nb.redis_io import check_redis
from ridematch_nb.storage import read_dataset

log = logging.getLogger(__name__)

REPO = PROJECT_ROOT / "feature_repo"
FEATURE_SERVICE = "driver_match_v1"
# The features of driver_match_v1 (feature_repo/), as the store serves them.
STORE_FEATURES = ["lat", "lon", "status", "accept_rate_7d", "avg_response_ms"]
PUSH_SOURCE = "driver_updates_push"


def project_name(settings: Settings) -> str:
    """One Feast project per data prefix, so profiles never share registries or keys."""
    suffix = re.sub(r"[^a-z0-9]+", "_", settings.prefix.lower()).strip("_")
    return f"ridematch_{suffix}" if suffix else "ridematch"


def registry_dir(settings: Settings):
    """Beside the online store's data: the embedded stack's folder (so resetting the stack
    resets what Feast believes it materialized), else feature_repo/data/."""
    folder = settings.stack.data_dir / "feast" if settings.stack else REPO / "data"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def feast_env(settings: Settings, project: str | None = None) -> dict[str, str]:
    """The environment feature_repo/ expands: endpoints, names, keys for s3fs."""
    project = project or project_name(settings)
    url = urlparse(settings.redis_url)
    db = (url.path or "/0").strip("/") or "0"
    redis = f"{url.hostname}:{url.port or 6379},db={db}"
    if url.password:
        redis += f",password={url.password}"
    lake = f"s3://{settings.bucket}" + (f"/{settings.prefix}" if settings.prefix else "")
    key, secret = settings.s3_credentials()
    return {
        "RIDEMATCH_FEAST_PROJECT": project,
        "RIDEMATCH_FEAST_REGISTRY": str(registry_dir(settings) / f"{project}.db"),
        "RIDEMATCH_FEAST_REDIS": redis,
        "RIDEMATCH_LAKE_URI": lake,
        "RIDEMATCH_S3_ENDPOINT": settings.s3_endpoint,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": settings.s3_region,
        **offline.feast_env(settings),  # the profile's offline store and batch engine
    }


def store(settings: Settings, project: str | None = None):
    """A FeatureStore for this profile (sets the environment feature_repo/ reads)."""
    from feast import FeatureStore

    from ridematch_nb import quiet_third_party_warnings

    quiet_third_party_warnings()
    os.environ.update(feast_env(settings, project))
    offline.use_duckdb(settings)  # DuckDB reads the lake with the packaged httpfs
    return FeatureStore(repo_path=str(REPO))


def repo_objects() -> list:
    """Entities, sources, views and services defined in feature_repo/ (fresh import)."""
    from feast.repo_operations import parse_repo

    repo_modules = ("entities", "data_sources", "feature_views", "feature_services")
    for name in list(sys.modules):  # definitions read the environment at import
        if name.split(".")[-1] in repo_modules and name.split(".")[0] in (*repo_modules, REPO.name):
            del sys.modules[name]
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    contents = parse_repo(REPO)
    objects: dict[tuple[str, str], object] = {}
    for group in ("entities", "data_sources", "feature_views", "feature_services"):
        for obj in getattr(contents, group):
            # a view imported by the services module shows up once per module
            objects.setdefault((group, obj.name), obj)
    return list(objects.values())


def apply(settings: Settings, project: str | None = None):
    """``feast apply`` for this profile; returns the store."""
    fs = store(settings, project)
    fs.apply(repo_objects())
    return fs


def event_time_range(settings: Settings) -> tuple[datetime, datetime] | None:
    """First and last event time of the landed driver updates, or None if none landed."""
    table = read_dataset(settings, "driver_update", columns=["timestamp"])
    if table.num_rows == 0:
        return None
    import pyarrow.compute as pc

    bounds = pc.min_max(table["timestamp"]).as_py()
    return bounds["min"], bounds["max"]


def materialize(fs, settings: Settings) -> dict:
    """Materialize into Redis up to the newest landed event, never past now.

    The first run starts at the oldest landed event (the simulated history lies in
    the past, beyond Feast's default look-back of one TTL); later runs continue
    incrementally from where the last one ended, unless the lake now holds another
    history (a backfill replaced it) or Redis lost what the registry remembers (a
    reset stack): then it starts over from the lake's first event, which is
    harmless, as Redis keeps the newer of two values.
    """
    check_redis(settings)
    span = event_time_range(settings)
    if span is None:
        raise ValueError("no driver_update landed in the lake yet: run the ETL (03) first")
    end = min(span[1] + pd.Timedelta(seconds=1), datetime.now(UTC))
    views = fs.list_feature_views()
    done = [v.most_recent_end_time for v in views if v.most_recent_end_time]
    newest = latest_offline(settings).sort_values("timestamp").index[-1:].tolist()
    online_empty = online(fs, newest)[STORE_FEATURES].isna().all(axis=None)
    if len(done) == len(views) and span[0] <= min(done) <= end and not online_empty:
        start = min(done)
        fs.materialize_incremental(end_date=end)
    else:
        start = span[0]
        fs.materialize(start_date=start, end_date=end)
    return {"start": start.isoformat(), "end": end.isoformat()}


def online(fs, driver_ids: list[str], features: list[str] | None = None) -> pd.DataFrame:
    """Online values of the feature service (or named features) for drivers."""
    refs = fs.get_feature_service(FEATURE_SERVICE) if features is None else features
    rows = [{"driver_id": d} for d in driver_ids]
    return fs.get_online_features(features=refs, entity_rows=rows).to_df()


def online_coverage(fs, driver_ids: list[str]) -> float:
    """Share of the drivers for whom the online store serves every feature."""
    if not driver_ids:
        return 0.0
    values = online(fs, driver_ids)[STORE_FEATURES]
    return round(float(values.notna().all(axis=1).mean()), 4)


def latest_offline(settings: Settings, driver_ids: list[str] | None = None) -> pd.DataFrame:
    """Each driver's newest row in the lake: what materialize must have put online."""
    df = read_dataset(settings, "driver_update").to_pandas()
    if driver_ids is not None:
        df = df[df["driver_id"].isin(driver_ids)]
    df = df.sort_values(["timestamp", "kafka_partition", "kafka_offset"])
    return df.groupby("driver_id").tail(1).set_index("driver_id").sort_index()


def values_equal(a, b) -> bool:
    """Equal feature values: exactly, or as floats to 1e-9 (Redis and parquet round-trip
    floats through different encodings)."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        return bool(np.isclose(float(a), float(b), rtol=0, atol=1e-9))
    return bool(a == b)


def verify(fs, settings: Settings, driver_ids: list[str]) -> pd.DataFrame:
    """Online vs latest offline per driver and feature; a ``match`` column says if equal."""
    on = online(fs, driver_ids).set_index("driver_id").sort_index()
    off = latest_offline(settings, driver_ids)
    rows = []
    for driver in driver_ids:
        for feat in STORE_FEATURES:
            a = on.at[driver, feat] if driver in on.index else None
            b = off.at[driver, feat] if driver in off.index else None
            same = values_equal(a, b)
            rows.append(
                {
                    "driver_id": driver,
                    "feature": feat,
                    "online": a,
                    "offline": b,
                    "match": bool(same),
                }
            )
    return pd.DataFrame(rows)


def require_match(check: pd.DataFrame) -> None:
    """Fail loudly when an online value differs from the lake's newest row."""
    bad = check[~check["match"]]
    if len(bad):
        sample = bad.head(5).to_dict(orient="records")
        raise ValueError(f"{len(bad)} online values differ from the lake, e.g. {sample}")
