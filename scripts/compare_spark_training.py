"""Build notebook 05's training set through the package under the Spark profile and
compare it with the default store's, row by row, on the data already in a profile's lake;
optionally materialize with Spark's engine and check Redis against the lake's newest rows.

Needs the stack up, data landed by 01-03 (`python -m ridematch_nb run --params P --only
01 02 03 04`) and what params/spark.yaml names (pyspark, Java 17, scripts/spark_jars.sh):

    .venv/bin/python scripts/compare_spark_training.py [params/ci.yaml] [--materialize]

The Spark side is the profile P with params/spark.yaml's ``feast`` section: the same lake,
endpoint and Redis. Each side applies the repository under a Feast project of its own
(features.apply), so neither sees the other's registry or online values. Nothing is
swapped by hand: ``features.repo_objects`` gives the Spark profile its SparkSource.
"""

import argparse
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comparison import features, save, start_with_store_env

from ridematch_nb.config import load_settings
from ridematch_nb.features import offline
from ridematch_nb.lake.storage import read_dataset
from ridematch_nb.model import training


def differences(ours: pd.DataFrame, theirs: pd.DataFrame, key: str = "offer_id") -> dict:
    """Rows of two training sets matched by ``key``: how many each has, how many only one
    has, and per column how many matched rows differ (floats to 1e-9, NaN equal to NaN)."""
    a, b = ours.set_index(key), theirs.set_index(key)
    common = a.index.intersection(b.index)
    out = {
        "rows": len(a),
        "rows_other": len(b),
        "repeated_keys": int(a.index.duplicated().sum() + b.index.duplicated().sum()),
        "only_in_first": int((~a.index.isin(b.index)).sum()),
        "only_in_second": int((~b.index.isin(a.index)).sum()),
        "columns_only_in_one": sorted(set(a.columns) ^ set(b.columns)),
    }
    a, b = a.loc[common].sort_index(), b.loc[common].sort_index()
    same = {c: equal(a[c], b[c]) for c in sorted(set(a.columns) & set(b.columns))}
    row_equal = np.logical_and.reduce(list(same.values())) if same else np.ones(len(a), bool)
    out["rows_compared"] = len(common)
    out["rows_differing"] = int((~row_equal).sum())
    out["values_differing_by_column"] = {c: int((~s).sum()) for c, s in same.items() if not s.all()}
    return out


def equal(x: pd.Series, y: pd.Series) -> np.ndarray:
    """Element-wise equality: floats to 1e-9, NaN/None equal to NaN/None."""
    if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
        return np.isclose(x.astype(float), y.astype(float), rtol=0, atol=1e-9, equal_nan=True)
    return np.asarray((x.astype(object) == y.astype(object)) | (x.isna() & y.isna()))


def online_check(fs, settings) -> dict:
    """features.verify over every driver in the lake: online equal to the newest row."""
    table = read_dataset(settings, "driver_update", columns=["driver_id"])
    drivers = sorted(set(table["driver_id"].to_pylist()))
    check = features.verify(fs, settings, drivers)
    per_driver = check.groupby("driver_id")["match"].all()
    return {
        "drivers": len(drivers),
        "drivers_all_equal": int(per_driver.sum()),
        "values_differing": int((~check["match"]).sum()),
        "values_null_online": int(check["online"].isna().sum()),
    }


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, round(time.perf_counter() - t0, 1)


def run(params: str, spark_params: str, materialize: bool) -> dict:
    base = load_settings(params)
    spark = base.with_overrides(feast=load_settings(spark_params).feast)
    start_with_store_env(base, spark=True)  # s3a's keys; the Python of Spark's workers
    tag = uuid.uuid4().hex[:6]
    offers = training.offers_with_requests(base)
    report: dict = {"params": params, "offers": len(offers)}
    sides = {}
    for name, settings in (("default", base), ("spark", spark)):
        fs, apply_s = timed(features.apply, settings, f"cmp_{name}_{tag}")
        rows, build_s = timed(training.training_set, fs, offers, features.FEATURE_SERVICE)
        sides[name] = (fs, settings, rows)
        report[name] = {
            "store": offline.store_configs(settings)["offline_store"]["type"],
            "apply_s": apply_s,
            "training_set_s": build_s,
            "rows": len(rows),
        }
    report["training_set"] = differences(sides["default"][2], sides["spark"][2])
    if materialize:
        for name, (fs, settings, _) in sides.items():
            _, report[name]["materialize_s"] = timed(features.materialize, fs, settings)
            report[name]["batch_engine"] = offline.store_configs(settings)["batch_engine"]["type"]
            report[name]["online"] = online_check(fs, settings)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params", nargs="?", default="params/ci.yaml")
    parser.add_argument("--spark", default="params/spark.yaml", help="its feast section")
    parser.add_argument("--materialize", action="store_true")
    parser.add_argument("--out", default="outputs/compare_spark_training.json")
    args = parser.parse_args()
    save(run(args.params, args.spark, args.materialize), args.out)


if __name__ == "__main__":
    main()
