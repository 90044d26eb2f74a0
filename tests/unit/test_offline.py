"""The offline store per profile: defaults, wrong values that name themselves, the config
Feast reads, and the DuckDB connection's S3 secret (no servers)."""

from pathlib import Path

import pytest
import yaml

from ridematch_nb.config import ConfigError, load_settings
from ridematch_nb.features import offline

ENV = {"AWS_ACCESS_KEY_ID": "k'ey", "AWS_SECRET_ACCESS_KEY": "s3cret"}


def profile(tmp_path: Path, feast: str = "") -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(
        f"extends: {Path('params/ci.yaml').resolve()}\nservices:\n  secrets_file: ''\n{feast}"
    )
    return path


def test_the_default_is_the_asof_duckdb_store_breaking_ties_by_kafka_order(tmp_path):
    settings = load_settings(profile(tmp_path), env=ENV)
    configs = offline.store_configs(settings)
    assert (
        configs["offline_store"]["type"]
        == "ridematch_nb.features.asof_store.AsofDuckDBOfflineStore"
    )
    assert configs["offline_store"]["tie_break"] == ["kafka_partition", "kafka_offset"]
    assert configs["batch_engine"] == {"type": "local"}


def test_the_asof_store_path_names_the_class_feast_will_import():
    from feast.repo_config import get_offline_config_from_type  # what Feast does with it

    from ridematch_nb.features.asof_store import AsofDuckDBOfflineStoreConfig

    assert get_offline_config_from_type(offline.ASOF_STORE) is AsofDuckDBOfflineStoreConfig
    assert AsofDuckDBOfflineStoreConfig().type == offline.ASOF_STORE


def test_feature_store_yaml_gets_the_profiles_store_as_one_line_yaml(tmp_path):
    feast = "feast:\n  offline_store: {type: ray, ray_address: 'ray://head:10001'}\n"
    settings = load_settings(profile(tmp_path, feast), env=ENV)
    env = offline.feast_env(settings)
    assert "\n" not in env["RIDEMATCH_FEAST_OFFLINE_STORE"]
    store = yaml.safe_load(f"offline_store: {env['RIDEMATCH_FEAST_OFFLINE_STORE']}")
    assert store["offline_store"] == {"type": "ray", "ray_address": "ray://head:10001"}


@pytest.mark.parametrize(
    "feast, names",
    [
        ("feast:\n  offline_store: spark\n", "feast.offline_store"),
        ("feast:\n  batch_engine: {engine: spark}\n", "feast.batch_engine"),
        ("feast:\n  offline: {type: duckdb}\n", "offline"),
    ],
)
def test_a_wrong_feast_section_fails_fast_and_names_the_key(tmp_path, feast, names):
    settings = load_settings(profile(tmp_path, feast), env=ENV)
    with pytest.raises(ConfigError, match=names):
        offline.store_configs(settings)


def test_the_duckdb_secret_holds_the_profiles_endpoint_path_style_and_quoted_keys(tmp_path):
    settings = load_settings(profile(tmp_path), env=ENV)
    sql = offline.duckdb_secret_sql(offline.lake_access(settings))
    host = settings.s3_endpoint.split("://", 1)[1]
    assert f"ENDPOINT '{host}'" in sql and "URL_STYLE 'path'" in sql and "USE_SSL false" in sql
    assert "KEY_ID 'k''ey'" in sql  # a quote in a key cannot end the string


def test_the_httpfs_extension_comes_from_an_installed_package():
    found = list(offline.extensions_dir().glob("v*/*/httpfs.duckdb_extension"))
    assert found, "duckdb-ext-httpfs should ship httpfs.duckdb_extension"
    import duckdb

    assert any(f"v{duckdb.__version__}" in str(p) for p in found)  # built for our duckdb


def test_the_ray_profile_selects_feasts_ray_store_and_engine_over_the_lakes_folder():
    settings = load_settings("params/ray.yaml", env=ENV)
    env = offline.feast_env(settings)
    assert yaml.safe_load(env["RIDEMATCH_FEAST_OFFLINE_STORE"])["type"] == "ray"
    assert yaml.safe_load(env["RIDEMATCH_FEAST_BATCH_ENGINE"])["type"] == "ray.engine"
    assert offline.lake_files(settings) == ""  # Ray reads the folder; DuckDB alone a glob
    assert env["AWS_ENDPOINT_URL"] == settings.s3_endpoint  # pyarrow in Ray finds our S3
    assert offline.lake_files(load_settings("params/local.yaml", env=ENV)) == offline.LAKE_GLOB


def test_a_process_leaves_no_duckdb_spill_folder_behind(tmp_path):
    import subprocess
    import sys

    code = (
        "from ridematch_nb.features import offline\n"
        "con = offline.duckdb_connection(offline.LakeAccess('http://s3.test:1', 'r', 'k', 's'))\n"
        "print(con.raw_sql(\"SELECT current_setting('temp_directory')\").fetchone()[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    spill = Path(out.stdout.strip())
    assert spill.name.startswith("ridematch-duckdb-")  # the connection used one of ours
    assert not spill.exists()
