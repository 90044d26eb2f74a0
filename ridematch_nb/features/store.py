"""The Feast feature store over the lake: apply, materialize into Redis, push, verify.

feature_repo/ holds static definitions and no endpoint or secret. ``store()`` builds
Feast's configuration as an object from the settings (``repo_config``) and ``apply()``
gives copies of the definitions the profile's lake, so the repository works from any
working directory, for several profiles in one process, without touching the
environment. feature_store.yaml's ``${VAR}``s serve the ``feast`` CLI only
(``feast_env`` says what to export).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from datetime import UTC, datetime
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from ridematch_nb.config import PROJECT_ROOT, Settings
from ridematch_nb.contract.columnar import LINEAGE_COLUMNS, OFFSET
from ridematch_nb.features import offline
from ridematch_nb.features.redis_io import check_redis, redis_client
from ridematch_nb.lake.storage import Lake, lake_path, read_dataset

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


def _redis_connection(settings: Settings) -> str:
    """Feast's Redis connection string for the profile's URL (password included)."""
    url = urlparse(settings.redis_url)
    db = (url.path or "/0").strip("/") or "0"
    redis = f"{url.hostname}:{url.port or 6379},db={db}"
    return redis + (f",password={url.password}" if url.password else "")


def lake_root(settings: Settings) -> str:
    return f"s3://{settings.bucket}" + (f"/{settings.prefix}" if settings.prefix else "")


def repo_config(settings: Settings, project: str | None = None):
    """The profile's Feast configuration as an object: project, registry, Redis, the
    offline store and batch engine (``offline``). Nothing goes through the environment."""
    from feast.repo_config import RepoConfig

    project = project or project_name(settings)
    return RepoConfig(
        project=project,
        provider="local",
        registry={"path": str(registry_dir(settings) / f"{project}.db"), "cache_ttl_seconds": 60},
        online_store={"type": "redis", "connection_string": _redis_connection(settings)},
        offline_store=offline.offline_store_config(settings),
        batch_engine=offline.store_configs(settings)["batch_engine"],
        entity_key_serialization_version=3,
        repo_path=REPO,
    )


def store(settings: Settings, project: str | None = None):
    """A FeatureStore for this profile, built from ``repo_config``: two profiles can be
    used side by side in one process, and the process environment is left as it was
    (except for Feast's own stores other than ours, which take S3 keys only from there:
    see ``offline.use_feast_store``)."""
    from feast import FeatureStore

    from ridematch_nb import quiet_third_party_warnings

    quiet_third_party_warnings()
    offline.use_feast_store(settings)
    return FeatureStore(repo_path=str(REPO), config=repo_config(settings, project))


def feast_env(settings: Settings, project: str | None = None) -> dict[str, str]:
    """What to export to use the ``feast`` CLI inside feature_repo/ for this profile (its
    feature_store.yaml expands these); the package itself never sets them."""
    key, secret = settings.s3_credentials()
    return {
        "RIDEMATCH_FEAST_PROJECT": project or project_name(settings),
        "RIDEMATCH_FEAST_REGISTRY": str(registry_dir(settings) / f"{project_name(settings)}.db"),
        "RIDEMATCH_FEAST_REDIS": _redis_connection(settings),
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_ENDPOINT_URL": settings.s3_endpoint,
        **offline.feast_env(settings),
    }


def on_loopback(args: list[str]) -> list[str]:
    """Feast's arguments, with ``--host 127.0.0.1`` added to a ``feast ui`` not given a
    host: Feast's default for it is every interface, and this stack listens on 127.0.0.1
    only (``feast serve``'s default is already that)."""
    given = any(a in ("-h", "--host") or a.startswith(("--host=", "-h")) for a in args)
    return [*args, "--host", "127.0.0.1"] if "ui" in args and not given else args


def run_feast_cli(settings: Settings, args: list[str]) -> int:
    """Run Feast's own command line inside feature_repo/ for this profile (``feast plan``,
    ``feast serve``, ``feast ui``...): a child process given ``feast_env``, so nothing is
    exported by hand and this process's environment is left alone. Its exit code."""
    import shutil
    import subprocess
    from pathlib import Path

    beside = Path(sys.executable).parent / "feast"
    feast = str(beside) if beside.is_file() else shutil.which("feast")
    if feast is None:
        raise RuntimeError("the feast command is not installed: run `make install`")
    env = {**os.environ, **feast_env(settings)}
    child = subprocess.Popen(
        [feast, *on_loopback(args)], cwd=PROJECT_ROOT / "feature_repo", env=env
    )
    # stopping this command stops feast too (a server such as `feast serve` included)
    previous = signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    try:
        return child.wait()
    except KeyboardInterrupt:
        child.terminate()
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)


REPO_MODULES = ("entities", "data_sources", "feature_views", "feature_services")


def repo_modules() -> list:
    """feature_repo/'s modules, executed afresh. Not through Feast's parse_repo, which
    finds them relative to the working directory (it fails from anywhere else); they
    import each other by bare names (``from entities import driver``), so the folder is
    on ``sys.path`` only while they load, and their generic names leave ``sys.modules``
    afterwards (a module of the user's called ``entities`` is put back as it was)."""
    import importlib

    saved = {name: sys.modules.pop(name) for name in REPO_MODULES if name in sys.modules}
    sys.path.insert(0, str(REPO))
    try:
        return [importlib.import_module(name) for name in REPO_MODULES]
    finally:
        sys.path.remove(str(REPO))
        for name in REPO_MODULES:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def repo_objects(settings: Settings) -> list:
    """Entities, sources, views and services of feature_repo/, for this profile: the
    definitions are static (the local profile's lake); copies of them get the profile's
    lake path and S3 endpoint. Feast's Spark store reads only a SparkSource, so under a
    Spark profile the views' lake source becomes one (``spark_source``)."""
    import copy

    from feast import Entity, FeatureService, FeatureView, FileSource
    from feast.data_source import DataSource

    kinds = (Entity, DataSource, FeatureView, FeatureService)
    objects: dict[tuple[str, str], object] = {}
    for module in repo_modules():
        for obj in vars(module).values():
            if isinstance(obj, kinds):
                objects.setdefault((type(obj).__name__, obj.name), copy.deepcopy(obj))
    path = f"{lake_root(settings)}/driver_update/{offline.lake_files(settings)}"
    spark = offline.store_configs(settings)["offline_store"]["type"] == offline.SPARK_STORE
    done: dict[int, object] = {}  # one profile copy per source object (views share them)

    def for_profile(source):
        if source is None or id(source) in done:
            return done.get(id(source))
        out = source
        if isinstance(source, FileSource):
            source.file_options.uri = path
            source.file_options.s3_endpoint_override = settings.s3_endpoint
            out = spark_source(source) if spark else source
        elif getattr(source, "batch_source", None) is not None:  # a push source
            source.batch_source = for_profile(source.batch_source)
        done[id(source)] = out
        return out

    result = []
    for obj in objects.values():
        if isinstance(obj, DataSource):
            obj = for_profile(obj)
        elif isinstance(obj, FeatureView):
            obj.data_source = for_profile(obj.data_source)
            obj.stream_source = for_profile(obj.stream_source)
            obj.batch_source = for_profile(obj.batch_source)
        result.append(obj)
    return result


# Feast breaks ties at one event time only by a source's created-timestamp column (its
# SQL orders by it); without one, Spark returns an entity row once per tied feature row.
# Each driver's updates live on one Kafka partition, so the offset orders them as the
# default store's tie_break (kafka_partition, kafka_offset) does.
SPARK_CREATED = OFFSET


def spark_source(source):
    """A SparkSource over the same lake folder as a profile's FileSource (``s3a://``,
    Hadoop's S3 connector), with its timestamp field and ``kafka_offset`` as created
    timestamp: what Feast's Spark store and engine read."""
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    uri = source.file_options.uri
    return SparkSource(
        name=source.name,
        path=uri.replace("s3://", "s3a://", 1) if uri.startswith("s3://") else uri,
        file_format="parquet",
        timestamp_field=source.timestamp_field,
        created_timestamp_column=SPARK_CREATED,
        field_mapping=dict(source.field_mapping),
        description=source.description,
        tags=dict(source.tags),
        owner=source.owner,
    )


def apply(settings: Settings, project: str | None = None):
    """``feast apply`` for this profile; returns the store."""
    fs = store(settings, project)
    fs.apply(repo_objects(settings))
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
    history (a file materialized before is gone or changed: a backfill replaced it)
    or Redis lost what the registry remembers (a reset stack): then it forgets the
    project's online values and starts over from the lake's first event. Forgetting
    matters: Feast's Redis store keeps the newer of two values, and another history
    (another seed, another world) can hold a newer value for a driver than this
    one's newest.
    """
    check_redis(settings)
    span = event_time_range(settings)
    if span is None:
        raise ValueError("no driver_update landed in the lake yet: run the ETL (03) first")
    end = min(span[1] + pd.Timedelta(seconds=1), datetime.now(UTC))
    views = fs.list_feature_views()
    done = [v.most_recent_end_time for v in views if v.most_recent_end_time]
    files = Lake(settings).etags(lake_path(settings.prefix, "driver_update/"))
    client = redis_client(settings)
    seen_key = f"{fs.project}:materialized_files"
    seen = {k.decode(): v.decode() for k, v in client.hgetall(seen_key).items()}
    same_history = bool(seen) and all(files.get(k) == etag for k, etag in seen.items())
    if same_history and len(done) == len(views) and span[0] <= min(done) <= end:
        start = min(done)
        fs.materialize_incremental(end_date=end)
    else:
        start = span[0]
        forget_online(fs)
        client.delete(seen_key)
        fs.materialize(start_date=start, end_date=end)
    if files:
        client.hset(seen_key, mapping=files)
    return {"start": start.isoformat(), "end": end.isoformat()}


def forget_online(fs) -> None:
    """Delete every driver's online values of this project (Feast's own Redis store call)."""
    from feast.infra.online_stores.redis import RedisOnlineStore

    RedisOnlineStore().delete_entity_values(fs.config, ["driver_id"])


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
    df = df.sort_values(["timestamp", *LINEAGE_COLUMNS])
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
