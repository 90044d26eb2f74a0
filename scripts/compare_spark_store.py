"""Compare Feast's Spark offline store (params/spark.yaml, local mode) with the default
store and an independent merge_asof, on the crafted data of the offline-store test.

Needs what params/spark.yaml names: pyspark, a Java 17 runtime, and the s3a connector
jars (`scripts/spark_jars.sh`), and the stack up:

    .venv/bin/python scripts/compare_spark_store.py [params/ci.yaml] [--out FILE.json]

Both sides go through features.apply: under the Spark profile, repo_objects gives the
views a SparkSource over the same lake folder (s3a://) with kafka_offset as its
created-timestamp column, the tie-breaker Feast's SQL knows (RIDEMATCH_SPARK_CREATED= runs
without one: then an entity row comes back once per pair of tied feature rows).
"""

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comparison import compare, crafted_case, features, main, retrieve, save, start_with_store_env

from ridematch_nb.config import load_settings
from ridematch_nb.stack.control import LocalStack

# The package's SparkSource names kafka_offset as created timestamp (features.SPARK_CREATED);
# RIDEMATCH_SPARK_CREATED= runs without one, to show what it is for.
if "RIDEMATCH_SPARK_CREATED" in os.environ:
    features.SPARK_CREATED = os.environ["RIDEMATCH_SPARK_CREATED"] or None


def spark_settings(settings, spark_params: str = "params/spark.yaml"):
    """The profile with params/spark.yaml's Feast section (the package completes it with
    the profile's S3 endpoint and the connector's jars)."""
    return settings.with_overrides(feast=load_settings(spark_params).feast)


def run(params: str, out: str) -> dict:
    base = LocalStack(load_settings(params)).settings
    start_with_store_env(base, spark=True)  # s3a's keys; the Python of Spark's workers
    report = {}
    for name, seed, ties in (("no ties", 5, False), ("with ties", 13, True)):
        settings, tag, entities, (rule, no_ttl), data = crafted_case(base, "spark", seed, ties)
        sp = spark_settings(settings)
        t0 = time.perf_counter()
        got = retrieve(features.apply(sp, f"t_spark{tag}"), entities)
        data["spark"] = {**compare(got, rule, no_ttl), "s": time.perf_counter() - t0}
        report[name] = data
        save(report, out)  # Spark is slow here: keep what is done
    return report


if __name__ == "__main__":
    main(run, __doc__, "outputs/compare_spark_store.json")
