"""Compare Feast's Spark offline store (params/spark.yaml, local mode) with the default
store and an independent merge_asof, on the crafted data of the offline-store test.

Needs what params/spark.yaml names: pyspark, a Java 17 runtime, and the s3a connector
jars (`scripts/spark_jars.sh`), and the stack up:

    .venv/bin/python scripts/compare_spark_store.py [params/ci.yaml] [--out FILE.json]

Feast's Spark store reads only a SparkSource, so this gives the feature views a
SparkSource over the same lake folder (s3a://) in place of the repository's FileSource;
everything else (entities, views, TTLs, the feature service) is the repository's. The
SparkSource names kafka_offset as its created-timestamp column, the tie-breaker Feast's
SQL knows (RIDEMATCH_SPARK_CREATED= runs without one: then an entity row comes back once
per pair of tied feature rows).
"""

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from compare_ray_store import compare, references

from ridematch_nb import features, offline
from ridematch_nb.config import load_settings
from ridematch_nb.stack import LocalStack
from tests.integration.test_offline_store import (
    crafted_updates,
    entity_rows,
    land,
    retrieve,
)

# Feast breaks ties at one event time by the created timestamp only; without one, Spark's
# join returns an entity row once per tied feature row. Each driver's updates live on
# one Kafka partition, so the offset orders them as the default store's tie_break does.
CREATED = os.environ.get("RIDEMATCH_SPARK_CREATED", "kafka_offset") or None


def spark_objects(settings) -> list:
    """The repository's objects with a SparkSource over the lake folder in place of the
    FileSource (views and the push source keep their names, schema and TTLs)."""
    from feast import FileSource, PushSource
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    objects = features.repo_objects(settings)
    lake = f"{features.lake_root(settings)}/driver_update/".replace("s3://", "s3a://", 1)
    files = {o.name: o for o in objects if isinstance(o, FileSource)}
    sparks = {
        name: SparkSource(
            name=name,
            path=lake,
            file_format="parquet",
            timestamp_field=f.timestamp_field,
            created_timestamp_column=CREATED,
        )
        for name, f in files.items()
    }
    out = []
    for obj in objects:
        if isinstance(obj, FileSource):
            obj = sparks[obj.name]
        elif isinstance(obj, PushSource):
            obj.batch_source = sparks[obj.batch_source.name]
        elif getattr(obj, "batch_source", None) is not None and obj.batch_source.name in sparks:
            obj.batch_source = sparks[obj.batch_source.name]
            if getattr(obj, "stream_source", None) is not None:
                obj.stream_source.batch_source = obj.batch_source
        out.append(obj)
    return out


def spark_settings(settings):
    """params/spark.yaml's Feast section, the S3 endpoint of this profile added."""
    conf = load_settings("params/spark.yaml").feast
    store = dict(conf["offline_store"])
    store["spark_conf"] = {
        **store["spark_conf"],
        "spark.hadoop.fs.s3a.endpoint": settings.s3_endpoint,
        "spark.jars": ",".join(str(p) for p in sorted(Path(".venv/spark-jars").glob("*.jar"))),
    }
    return settings.with_overrides(feast={**conf, "offline_store": store})


def run(params: str) -> dict:
    base = LocalStack(load_settings(params)).settings
    report = {}
    for name, seed, ties in (("no ties", 5, False), ("with ties", 13, True)):
        tag = uuid.uuid4().hex[:8]
        settings = base.with_overrides(prefix=f"tests/spark{tag}")
        rng = np.random.default_rng(seed)
        updates = crafted_updates(rng)
        if not ties:
            updates = updates.drop_duplicates(["driver_id", "ts"], keep=False)
        land(settings, updates)
        entities = entity_rows(updates, rng)
        rule, no_ttl = references(updates, entities)
        t0 = time.perf_counter()
        ours = retrieve(features.apply(settings, f"t_spark{tag}"), entities)
        data = {
            "updates": len(updates),
            "entity_rows": len(entities),
            "default store": {**compare(ours, rule, no_ttl), "s": time.perf_counter() - t0},
        }
        sp = spark_settings(settings)
        os.environ.update(offline.feast_store_env(sp))  # s3a reads the keys from there
        t0 = time.perf_counter()
        fs = features.store(sp, f"t_spark{tag}")
        fs.apply(spark_objects(sp))
        got = retrieve(fs, entities)
        data["spark"] = {**compare(got, rule, no_ttl), "s": time.perf_counter() - t0}
        report[name] = data
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params", nargs="?", default="params/ci.yaml")
    parser.add_argument("--out", default="outputs/compare_spark_store.json")
    args = parser.parse_args()
    report = run(args.params)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
