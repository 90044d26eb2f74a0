"""The engine comparisons of docs/beyond-one-machine.md (scripts/compare_*_store.py) and
the Spark profile, without Ray, Spark or servers: the counting that its figures come
from, and the profile settings the s3a connector found on PyPI can read."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ridematch_nb.config import load_settings
from ridematch_nb.features import offline

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
    compare = script("comparison").compare
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
    compare = script("comparison").compare
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


def spark_settings(**env):
    return load_settings("params/spark.yaml", env={**ENV, **env})


def test_the_spark_profile_gives_the_views_a_spark_source_breaking_ties_by_kafka_offset():
    from feast import FeatureView, FileSource, PushSource
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    from ridematch_nb.features import store as features

    objects = features.repo_objects(spark_settings())
    views = [o for o in objects if isinstance(o, FeatureView)]
    assert {v.name for v in views} == {"driver_state", "driver_stats"}
    assert not any(isinstance(o, FileSource) for o in objects)
    pushes = [o for o in objects if isinstance(o, PushSource)]
    for holder in views + pushes + [v.stream_source for v in views]:
        source = holder.batch_source
        assert isinstance(source, SparkSource), holder.name
        assert source.created_timestamp_column == "kafka_offset"
        assert source.timestamp_field == "timestamp"
        assert source.path == "s3a://ridematch-raw/driver_update/"  # the folder, s3a
        assert source.file_format == "parquet"
    for view in views:  # the view and its push source read the same source
        assert view.stream_source.batch_source is view.batch_source


def test_the_local_profile_keeps_its_file_source_and_glob():
    from feast import FeatureView, FileSource

    from ridematch_nb.features import store as features

    settings = load_settings("params/local.yaml", env=ENV)
    for view in (o for o in features.repo_objects(settings) if isinstance(o, FeatureView)):
        source = view.batch_source
        assert type(source) is FileSource
        assert source.created_timestamp_column == ""
        assert source.path == f"s3://ridematch-raw/driver_update/{offline.LAKE_GLOB}"
        assert source.file_options.s3_endpoint_override == settings.s3_endpoint


def test_the_spark_store_and_engine_get_the_profiles_endpoint_and_the_projects_jars():
    settings = spark_settings().with_overrides(s3_endpoint="http://127.0.0.1:18999")
    configs = offline.store_configs(settings)
    store, engine = configs["offline_store"]["spark_conf"], configs["batch_engine"]["spark_conf"]
    assert store["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:18999"
    jars = store["spark.jars"].split(",")
    assert [Path(j).name for j in jars] == [
        "hadoop-aws-3.3.1.jar",
        "aws-java-sdk-bundle-1.11.901.jar",
    ]
    assert all(Path(j).is_absolute() and Path(j).parent == ROOT / ".venv/spark-jars" for j in jars)
    assert engine == store  # whichever starts Spark in a process, the session is the same
    assert offline.offline_store_config(settings)["spark_conf"] == store


def test_the_spark_profile_names_the_missing_connector_jars_and_workers_python(
    tmp_path, monkeypatch
):
    import pytest

    from ridematch_nb.config import ConfigError

    settings = spark_settings()
    feast = dict(settings.feast)
    store = dict(feast["offline_store"])
    jar = tmp_path / "hadoop-aws-none.jar"
    store["spark_conf"] = {**store["spark_conf"], "spark.jars": str(jar)}
    settings = settings.with_overrides(feast={**feast, "offline_store": store})
    assert offline.missing_spark_jars(settings) == [str(jar)]
    with pytest.raises(ConfigError, match=r"spark_jars\.sh"):
        offline.use_feast_store(settings)
    jar.write_bytes(b"")
    assert offline.missing_spark_jars(settings) == []
    for key, value in offline.feast_store_env(settings).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    with pytest.raises(ConfigError, match="PYSPARK_PYTHON"):  # spark.engine's workers
        offline.use_feast_store(settings)
    monkeypatch.setenv("PYSPARK_PYTHON", sys.executable)
    started = []  # no Spark in unit tests: what the session would be started with
    monkeypatch.setattr(offline, "start_spark", lambda s: started.append(s))
    offline.use_feast_store(settings)  # everything named is there: no error
    conf = offline.store_configs(started[0])["batch_engine"]["spark_conf"]
    assert conf["spark.jars"] == str(jar) and "type" not in conf  # the engine's spark_conf


def test_the_training_set_comparison_counts_rows_and_values_that_differ():
    differences = script("compare_spark_training").differences
    nan = np.nan
    first = pd.DataFrame(
        {
            "offer_id": ["a", "b", "c", "d"],
            "lat": [1.0, 2.0, nan, 4.0],
            "status": ["idle", "busy", None, "idle"],
        }
    )
    second = pd.DataFrame(
        {
            "offer_id": ["b", "c", "d", "e"],
            "lat": [2.0 + 1e-12, nan, 4.5, 5.0],  # b equal to 1e-9, c NaN both, d differs
            "status": ["busy", None, "busy", "idle"],
        }
    )
    out = differences(first, second)
    assert (out["rows"], out["rows_other"], out["rows_compared"]) == (4, 4, 3)
    assert (out["only_in_first"], out["only_in_second"]) == (1, 1)
    assert out["rows_differing"] == 1
    assert out["values_differing_by_column"] == {"lat": 1, "status": 1}
    assert differences(first, first)["rows_differing"] == 0


def test_a_comparison_script_starts_again_with_the_keys_instead_of_writing_its_environment(
    tmp_path,
):
    import os
    import subprocess

    child = tmp_path / "child.py"
    child.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'scripts')!r})\n"
        "from comparison import start_with_store_env\n"
        "from ridematch_nb.config import load_settings\n"
        "s = load_settings('params/ci.yaml').with_overrides(\n"
        "    aws_access_key_id='key', aws_secret_access_key='s3cret')\n"
        "print('pid', os.getpid(), os.environ.get('AWS_ACCESS_KEY_ID'), flush=True)\n"
        "start_with_store_env(s, spark=True)\n"
        "print('ran', os.environ['AWS_SECRET_ACCESS_KEY'], os.environ['PYSPARK_PYTHON'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PYSPARK"))}
    out = subprocess.run(
        [sys.executable, str(child)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].endswith(" None") and lines[1].endswith(" key")  # once without, once with
    assert lines[2] == f"ran s3cret {sys.executable}" and len(lines) == 3
