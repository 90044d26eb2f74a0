"""The engine comparisons of "Beyond one machine" (scripts/compare_*_store.py) and the
Spark profile, without Ray, Spark or servers: the counting that the README's figures
come from, and the profile settings the s3a connector found on PyPI can read."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ridematch_nb import offline
from ridematch_nb.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
ENV = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "s3cret"}


def script(name: str):
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def frame(state: list, stats: list) -> pd.DataFrame:
    out = pd.DataFrame(
        {
            "lat": state,
            "lon": state,
            "status": state,
            "accept_rate_7d": stats,
            "avg_response_ms": stats,
        }
    )
    out.index.name = "row"
    return out


def test_the_comparison_counts_values_past_the_ttl_apart_from_wrong_ones():
    compare = script("compare_ray_store").compare
    nan = np.nan
    rule = frame([1.0, nan, nan, 4.0], [1.0, 2.0, nan, 4.0])  # Feast's rule: TTL applied
    no_ttl = frame([1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])  # the same join, no TTL
    got = frame([1.0, 2.0, 3.0, nan], [1.0, 2.5, 3.0, 4.0])
    counts = compare(got, rule, no_ttl)
    assert counts["rows"] == 4 and "rows_missing" not in counts
    assert counts["driver_state"] == {
        "differ_from_feast_rule": 3,
        "differ_from_merge_asof_without_ttl": 1,
        "value_older_than_ttl": 2,
        "null_where_a_value_is_due": 1,
    }
    assert counts["driver_stats"]["value_older_than_ttl"] == 1
    assert counts["driver_stats"]["differ_from_feast_rule"] == 2  # 2.5 is wrong, 3.0 stale
    assert compare(rule, rule, no_ttl)["driver_state"]["differ_from_feast_rule"] == 0


def test_the_comparison_names_missing_and_repeated_entity_rows():
    compare = script("compare_ray_store").compare
    rule = frame([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    got = pd.concat([rule.iloc[[0, 0, 1]]])  # row 2 lost, row 0 twice
    counts = compare(got, rule, rule)
    assert counts["rows"] == 3 and counts["rows_missing"] == 1
    assert counts["rows_extra_or_repeated"] == 1
    assert counts["driver_state"]["null_where_a_value_is_due"] == 1


def test_the_spark_profile_is_feasts_spark_store_with_settings_hadoop_aws_331_reads():
    settings = load_settings("params/spark.yaml", env=ENV)
    configs = offline.store_configs(settings)
    store = configs["offline_store"]
    assert store["type"] == "spark" and configs["batch_engine"]["type"] == "spark.engine"
    assert offline.lake_files(settings) == ""  # Spark reads the dataset's folder
    conf = store["spark_conf"]
    assert all(isinstance(v, str) for v in conf.values())  # Feast's spark_conf: Dict[str, str]
    # Hadoop 3.4's defaults are durations ("60s") that hadoop-aws 3.3.1 reads as numbers
    for key in (
        "fs.s3a.connection.establish.timeout",
        "fs.s3a.connection.timeout",
        "fs.s3a.connection.ttl",
        "fs.s3a.threads.keepalivetime",
        "fs.s3a.multipart.purge.age",
    ):
        assert conf[f"spark.hadoop.{key}"].isdigit(), key
    # its credentials come from the environment, through the SDK v1 the jars bundle
    provider = conf["spark.hadoop.fs.s3a.aws.credentials.provider"]
    assert provider.startswith("com.amazonaws.") and "Environment" in provider
    assert not any("secret" in k.lower() or "access.key" in k for k in conf)  # no keys here
