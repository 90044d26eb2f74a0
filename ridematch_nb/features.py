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
from ridematch_nb.storage import read_dataset

log = logging.getLogger(__name__)

REPO = PROJECT_ROOT / "feature_repo"
FEATURE_SERVICE = "driver_match_v1"
ONLINE_FEATURES = ["lat", "lon", "status", "accept_rate_7d", "avg_response_ms"]
PUSH_SOURCE = "driver_updates_push"


class FeatureStoreUnavailable(RuntimeError):
    """Redis (online) or S3 (offline) cannot be reached; names which and the fix."""


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


def check_redis(settings: Settings) -> None:
    from ridematch_nb.stack import redis_check

    try:
        redis_check(settings.redis_url)
    except Exception as exc:
        raise FeatureStoreUnavailable(
            f"Redis (online store) at {settings.redis_url} is not reachable ({exc}).\n"
            "  fix: start the local stack with `make stack-up`"
        ) from None


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
    online_empty = online(fs, newest)[ONLINE_FEATURES].isna().all(axis=None)
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
        for feat in ONLINE_FEATURES:
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


def push_driver_updates(fs, events: pd.DataFrame) -> int:
    """Write the newest driver state straight into the online store (between batches)."""
    from feast.data_source import PushMode

    cols = ["driver_id", "timestamp", *ONLINE_FEATURES]
    fs.push(PUSH_SOURCE, events[cols], to=PushMode.ONLINE)
    return len(events)


PUSH_GROUP = "ridematch-online-push"


def stream_to_online(
    settings: Settings,
    fs,
    mode: str = "follow",
    group: str = PUSH_GROUP,
    from_beginning: bool = False,
    idle_s: float = 5.0,
    max_records: int | None = None,
    topic: str | None = None,
) -> dict:
    """Keep the online store fresh between materializations: read driver updates from the
    topic and push each poll's newest state per driver straight into Redis (and into the
    geo index of idle drivers that matching searches).

    Its own consumer group, so it neither waits for nor disturbs the ETL. Older values
    never overwrite newer ones online (the store compares event times), so replays and
    late materializations are harmless. ``drain`` stops when caught up and quiet.
    """
    import time

    import redis

    from ridematch_nb.kafka_io import (
        caught_up,
        group_consumer,
        poll_through_outages,
        stop_on_sigterm,
    )
    from ridematch_nb.matching import update_index

    check_redis(settings)
    index = redis.Redis.from_url(settings.redis_url)
    consumer = group_consumer(settings, group, topic, from_beginning=from_beginning)
    counts = {"read": 0, "pushed": 0, "skipped": 0}
    quiet_since = time.monotonic()
    try:
        with stop_on_sigterm() as stop:
            outage: dict = {}
            while not stop["now"]:
                batch = poll_through_outages(consumer, settings, outage, timeout_ms=200)
                if not batch:
                    assigned = consumer.assignment()
                    quiet = time.monotonic() - quiet_since >= idle_s
                    if mode == "drain" and assigned and caught_up(consumer, assigned) and quiet:
                        break
                    continue
                quiet_since = time.monotonic()
                frame = _newest_driver_states(batch, counts)
                if len(frame):
                    counts["pushed"] += push_driver_updates(fs, frame)
                    update_index(index, fs.project, frame)
                consumer.commit()
                if max_records and counts["read"] >= max_records:
                    break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return counts


def _newest_driver_states(batch: dict, counts: dict) -> pd.DataFrame:
    """The newest valid driver_update per driver in one poll (others counted, not pushed)."""
    from ridematch_nb.events import InvalidEvent, decode

    newest: dict[str, dict] = {}
    for records in batch.values():
        for record in records:
            counts["read"] += 1
            try:
                event = decode(record.value)
            except InvalidEvent:
                counts["skipped"] += 1
                continue
            if event["event_type"] != "driver_update":
                continue
            seen = newest.get(event["driver_id"])
            if seen is None or event["timestamp"] >= seen["timestamp"]:
                newest[event["driver_id"]] = event
    frame = pd.DataFrame(list(newest.values()))
    if len(frame):
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


def require_match(check: pd.DataFrame) -> None:
    """Fail loudly when an online value differs from the lake's newest row."""
    bad = check[~check["match"]]
    if len(bad):
        sample = bad.head(5).to_dict(orient="records")
        raise ValueError(f"{len(bad)} online values differ from the lake, e.g. {sample}")


class OnlineReader:
    """The feature service's online values for many drivers in one Redis round trip.

    Why not ``get_online_features``: for 50 drivers Feast spends about 2 ms in Python
    (entity protos, one pipeline per feature view, response protos) around 0.4 ms of
    Redis. This reads the very hashes Feast's Redis store writes (key: serialized
    entity key + project; field: murmur3 of ``view:feature``), all views of all drivers
    in one pipeline, and decodes each value proto once. Entity keys are cached, since
    the same drivers come back request after request. A test holds it equal to
    ``get_online_features``; the layout comes from Feast's own helpers, so a Feast
    upgrade that changed it fails that test instead of serving nulls.
    """

    def __init__(self, fs, settings: Settings, service: str = FEATURE_SERVICE) -> None:
        import redis
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.infra.online_stores.helpers import _mmh3, compute_versioned_name

        self._serialize = serialize_entity_key
        self._version = fs.config.entity_key_serialization_version
        self._project = fs.project.encode()
        versioning = fs.config.registry.enable_online_feature_view_versioning
        self.names, self._fields = [], []
        for projection in fs.get_feature_service(service).feature_view_projections:
            view = compute_versioned_name(fs.get_feature_view(projection.name), versioning)
            for feat in projection.features:
                self.names.append(feat.name)
                self._fields.append(_mmh3(f"{view}:{feat.name}"))
        self.redis = redis.Redis.from_url(settings.redis_url)
        self._keys: dict[str, bytes] = {}

    def _key(self, driver_id: str) -> bytes:
        key = self._keys.get(driver_id)
        if key is None:
            from feast.protos.feast.types.EntityKey_pb2 import EntityKey
            from feast.protos.feast.types.Value_pb2 import Value

            entity = EntityKey(join_keys=["driver_id"], entity_values=[Value(string_val=driver_id)])
            key = self._serialize(entity, entity_key_serialization_version=self._version)
            key = self._keys[driver_id] = key + self._project
        return key

    def columns(self, driver_ids: list[str]) -> dict[str, list]:
        """``{"driver_id": [...], feature: [...]}``, None where a driver has no value."""
        from feast.protos.feast.types.Value_pb2 import Value

        pipe = self.redis.pipeline(transaction=False)
        for driver in driver_ids:
            pipe.hmget(self._key(driver), self._fields)
        replies = pipe.execute()
        out: dict[str, list] = {"driver_id": list(driver_ids)}
        for i, name in enumerate(self.names):
            values = []
            for reply in replies:
                raw = reply[i]
                if raw is None:
                    values.append(None)
                    continue
                proto = Value.FromString(raw)
                kind = proto.WhichOneof("val")
                values.append(getattr(proto, kind) if kind else None)
            out[name] = values
        return out

    def frame(self, driver_ids: list[str]) -> pd.DataFrame:
        return pd.DataFrame(self.columns(driver_ids))
