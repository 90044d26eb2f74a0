"""Feast's offline store per params profile: DuckDB by default, reading the lake in S3.

Why DuckDB: Feast 0.67's DuckDB store (built on ibis) runs the point-in-time join as
one SQL query that DuckDB executes column by column on every core, reading only the
columns it needs straight from the parquet in S3; the default profile uses it with an
ASOF join (``ridematch_nb.features.asof_store``). Feast's dask store, the one used before, spent
minutes and gigabytes on the same join of one day (figures in BENCHMARKS.md).

DuckDB reaches S3 through its ``httpfs`` extension, which it would normally download on
first use. Nothing may be downloaded at run time here, so the extension comes from the
PyPI package ``duckdb-ext-httpfs`` (built for the pinned duckdb), and the connection is
told to look for extensions in that package's folder and never to install any. Feast's
store reads through ibis's default backend; ``use_duckdb`` makes that backend a DuckDB
connection prepared this way, holding the profile's S3 endpoint and keys as a secret of
that connection only (never written anywhere).

A profile picks another store Feast supports with a ``feast:`` section, e.g.::

    feast:
      offline_store: {type: spark, spark_conf: {spark.master: "local[2]"}}
      batch_engine: {type: spark.engine, ...}
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlparse

import yaml

from ridematch_nb.config import ConfigError, Settings, resolve_path
from ridematch_nb.contract.columnar import LINEAGE_COLUMNS

# Feast loads a store by dotted path; asof_store's config takes its type from here.
ASOF_STORE = "ridematch_nb.features.asof_store.AsofDuckDBOfflineStore"
# Rows of a driver at the same second: the one produced last (Kafka order) is the value.
DEFAULT_OFFLINE_STORE = {"type": ASOF_STORE, "tie_break": list(LINEAGE_COLUMNS)}
DUCKDB_STORES = ("duckdb", ASOF_STORE)
LAKE_GLOB = "date=*/hour=*/*.parquet"  # the ETL's partitions (ridematch_nb.lake.storage.data_key)
DEFAULT_BATCH_ENGINE = {"type": "local"}
SPARK_STORE = "spark"
SPARK_ENGINE = "spark.engine"
S3A_ENDPOINT = "spark.hadoop.fs.s3a.endpoint"
# DuckDB's own share of memory for the join: past it, it spills to disk instead of
# growing (the training set build must stay well under 1.5 GiB).
DUCKDB_MEMORY_LIMIT = "1GB"


def store_configs(settings: Settings) -> dict[str, dict]:
    """The ``offline_store`` and ``batch_engine`` of the profile's Feast config."""
    section = settings.feast or {}
    unknown = sorted(set(section) - {"offline_store", "batch_engine"})
    if unknown:
        raise ConfigError(
            f"params file {settings.params_file}: unknown key(s) {unknown} in section 'feast' "
            "(known: offline_store, batch_engine)"
        )
    out = {}
    for key, default in (
        ("offline_store", DEFAULT_OFFLINE_STORE),
        ("batch_engine", DEFAULT_BATCH_ENGINE),
    ):
        value = section.get(key, default)
        if not isinstance(value, dict) or not isinstance(value.get("type"), str):
            raise ConfigError(
                f"params file {settings.params_file}: 'feast.{key}' should be a mapping with a "
                f"'type' (one of Feast's), got {value!r}"
            )
        out[key] = value
    return _with_spark_conf(settings, out)


def _with_spark_conf(settings: Settings, configs: dict[str, dict]) -> dict[str, dict]:
    """Feast's Spark store and engine, completed from the profile: the lake's S3 endpoint
    (the profile's, so it is named in one place), ``spark.jars`` relative to the project,
    and the engine gets the store's session settings (whichever of the two starts Spark
    in a process decides them, and materialization reads through the store)."""
    store, engine = configs["offline_store"], configs["batch_engine"]
    shared = (store.get("spark_conf") or {}) if store["type"] == SPARK_STORE else {}
    out = dict(configs)
    if store["type"] == SPARK_STORE:
        out["offline_store"] = {**store, "spark_conf": _spark_conf(settings, shared)}
    if engine["type"] == SPARK_ENGINE:
        merged = {**shared, **(engine.get("spark_conf") or {})}
        out["batch_engine"] = {**engine, "spark_conf": _spark_conf(settings, merged)}
    return out


def _spark_conf(settings: Settings, conf: dict) -> dict[str, str]:
    conf = {str(k): str(v) for k, v in conf.items()}  # Feast's spark_conf: Dict[str, str]
    conf[S3A_ENDPOINT] = settings.s3_endpoint
    if conf.get("spark.jars"):
        conf["spark.jars"] = ",".join(
            jar if "://" in jar or jar.startswith("local:") else str(resolve_path(jar))
            for jar in (j.strip() for j in conf["spark.jars"].split(","))
            if jar
        )
    return conf


def missing_spark_jars(settings: Settings) -> list[str]:
    """The local files ``spark.jars`` names that are not there (the s3a connector comes
    from scripts/spark_jars.sh, not from the default install)."""
    store = store_configs(settings)["offline_store"]
    jars = (store.get("spark_conf") or {}).get("spark.jars", "")
    local = [j for j in jars.split(",") if j and "://" not in j and not j.startswith("local:")]
    return [j for j in local if not Path(j).is_file()]


def feast_env(settings: Settings) -> dict[str, str]:
    """Environment variables feature_store.yaml expands into its offline store and batch
    engine (each a one-line YAML mapping)."""
    configs = store_configs(settings)
    duckdb = configs["offline_store"]["type"] in DUCKDB_STORES
    env = {
        "RIDEMATCH_FEAST_OFFLINE_STORE": _flow(configs["offline_store"]),
        "RIDEMATCH_FEAST_BATCH_ENGINE": _flow(configs["batch_engine"]),
    }
    if not duckdb:  # Ray reads s3:// through pyarrow, which takes the endpoint from here
        env["AWS_ENDPOINT_URL"] = settings.s3_endpoint
    return env


def _flow(mapping: dict) -> str:
    return yaml.safe_dump(mapping, default_flow_style=True, width=10_000).strip()


def extensions_dir() -> Path:
    """The folder of DuckDB extensions shipped by the duckdb-ext-* packages."""
    try:
        import duckdb_ext
    except ImportError:
        raise RuntimeError(
            "DuckDB's httpfs extension is not installed: it comes from the PyPI package "
            "duckdb-ext-httpfs (run `make install`)"
        ) from None
    return Path(next(iter(duckdb_ext.__path__))) / "extensions"


class LakeAccess(NamedTuple):
    """Where the lake's S3 is and the keys to it."""

    endpoint: str
    region: str
    key: str
    secret: str

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"LakeAccess({self.endpoint!r}, {self.region!r}, {self.key!r}, '***')"


def lake_access(settings: Settings) -> LakeAccess:
    key, secret = settings.s3_credentials()
    return LakeAccess(settings.s3_endpoint, settings.s3_region, key, secret)


def duckdb_secret_sql(lake: LakeAccess) -> str:
    """A DuckDB S3 secret for the lake's endpoint (path-style URLs, as SeaweedFS and
    MinIO serve them)."""
    url = urlparse(lake.endpoint)
    quote = lambda s: "'" + str(s).replace("'", "''") + "'"  # noqa: E731
    return (
        "CREATE OR REPLACE SECRET ridematch_s3 (TYPE s3, "
        f"KEY_ID {quote(lake.key)}, SECRET {quote(lake.secret)}, REGION {quote(lake.region)}, "
        f"ENDPOINT {quote(url.netloc)}, URL_STYLE 'path', "
        f"USE_SSL {'true' if url.scheme == 'https' else 'false'})"
    )


def duckdb_connection(lake: LakeAccess, memory_limit: str = DUCKDB_MEMORY_LIMIT):
    """An ibis DuckDB backend that reads the lake's S3 with the packaged httpfs."""
    import ibis

    spill = tempfile.mkdtemp(prefix="ridematch-duckdb-")  # where a big join spills
    atexit.register(shutil.rmtree, spill, ignore_errors=True)
    con = ibis.duckdb.connect(
        extension_directory=str(extensions_dir()),
        autoinstall_known_extensions=False,
        autoload_known_extensions=True,
        memory_limit=memory_limit,
        temp_directory=spill,
        threads=os.cpu_count() or 1,
        # DuckDB runs an ASOF join as a nested loop when it *estimates* the left side
        # below this many rows; after a first ASOF join its estimate can be tiny while
        # the real side is every entity row (measured: 130 s instead of 2 s). Never.
        asof_loop_join_threshold=0,
    )
    con.raw_sql("LOAD httpfs")
    con.raw_sql(duckdb_secret_sql(lake))
    return con


# One connection per process and lake. A forked child (the benchmarks measure in forked
# children) must neither use nor close its parent's connection, whose threads did not
# come along: it opens its own and keeps the inherited one referenced, untouched.
_CONNECTIONS: dict[tuple, object] = {}


def connection(lake: LakeAccess):
    """The DuckDB connection (ibis backend) reading this lake; one per process and lake,
    so two profiles in one process never share one."""
    index = (os.getpid(), *lake)
    con = _CONNECTIONS.get(index)
    if con is None:
        con = _CONNECTIONS[index] = duckdb_connection(lake)
    return con


def offline_store_config(settings: Settings) -> dict:
    """The profile's ``offline_store`` for a RepoConfig: our ASOF store also gets the lake's
    endpoint and keys (held in the config object, never in the environment)."""
    config = dict(store_configs(settings)["offline_store"])
    if config["type"] == ASOF_STORE:
        lake = lake_access(settings)
        config.update(
            s3_endpoint=lake.endpoint,
            s3_region=lake.region,
            s3_key_id=lake.key,
            s3_secret=lake.secret,
        )
    return config


def lake_files(settings: Settings) -> str:
    """How the store names the dataset's files under its folder: DuckDB reads no bare
    folder, so it gets a glob over every date=/hour= partition; others the folder."""
    return LAKE_GLOB if store_configs(settings)["offline_store"]["type"] in DUCKDB_STORES else ""


def feast_store_env(settings: Settings) -> dict[str, str]:
    """What Feast's own dask, Ray and Spark stores need in the environment to read the lake
    (they take S3 keys from nowhere else); for a process of their own to export."""
    key, secret = settings.s3_credentials()
    return {
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": settings.s3_region,
        "AWS_ENDPOINT_URL": settings.s3_endpoint,
    }


def use_feast_store(settings: Settings) -> None:
    """Feast's own stores (``duckdb``, ``dask``, ``ray``, ``spark``; the bench's comparisons
    and the Ray and Spark profiles) read S3 through process-wide settings. For ``duckdb``:
    make ibis's default backend a connection to the lake. For the others the environment
    must hold the keys (``feast_store_env``; Spark's s3a connector reads them there too):
    this never writes it, and fails fast naming what to export when it does not (and,
    for Spark, when the connector's jars or its engine's PYSPARK_PYTHON are missing; with
    Spark's engine it starts the session, ``start_spark``). Our ASOF store needs none of
    this (it reads through ``connection``)."""
    kind = store_configs(settings)["offline_store"]["type"]
    if kind == ASOF_STORE:
        return
    if kind == "duckdb":
        import ibis

        ibis.set_backend(connection(lake_access(settings)))
        return
    missing = missing_spark_jars(settings) if kind == SPARK_STORE else []
    if missing:
        raise ConfigError(
            f"params file {settings.params_file}: spark.jars names files that are not there: "
            f"{missing} (run scripts/spark_jars.sh to fetch the s3a connector)"
        )
    wanted = feast_store_env(settings)
    if any(os.environ.get(k) != v for k, v in wanted.items()):
        raise ConfigError(
            f"params file {settings.params_file}: Feast's {kind!r} store reads S3 keys only "
            "from the environment; export "
            + ", ".join(sorted(wanted))
            + " (ridematch_nb.features.offline.feast_store_env gives their values) and run again"
        )
    engine = store_configs(settings)["batch_engine"]["type"]
    if engine == SPARK_ENGINE and not os.environ.get("PYSPARK_PYTHON"):
        # Spark's engine writes online from Python workers, started as PYSPARK_PYTHON or
        # else the first python3 on PATH, which need not have Feast.
        raise ConfigError(
            f"params file {settings.params_file}: Feast's Spark engine runs Python workers; "
            "export PYSPARK_PYTHON (a Python with this project installed, e.g. "
            f"{sys.executable}) and run again"
        )
    if engine == SPARK_ENGINE:
        start_spark(settings)


def start_spark(settings: Settings):
    """This process's Spark session, started with the profile's engine ``spark_conf``
    unless one runs. Feast 0.67's Spark engine starts one itself when none runs, but
    hands Spark its whole ``batch_engine`` mapping (type, spark_conf, ...) as settings
    (``compute_engines/base.py`` l. 183-196, ``spark/compute.py`` l. 81-85), so a session
    it starts has neither the s3a jars nor the endpoint: materializing first (notebook
    04) then fails with "S3AFileSystem not found"."""
    from feast.infra.compute_engines.spark.utils import get_or_create_new_spark_session

    return get_or_create_new_spark_session(store_configs(settings)["batch_engine"]["spark_conf"])
