"""What the engine comparisons in scripts/ share: the crafted case of the offline-store
test landed under a prefix of its own, the row-by-row counts against its two references,
the report written as it grows, the command line, and the environment Feast's own stores
read their S3 keys from (given to the script's process when it starts, never written into
a running one)."""

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ridematch_nb.features import offline
from ridematch_nb.features import store as features
from ridematch_nb.process import start_again_with
from tests.helpers.crafted_lake import (
    STATE,
    STATS,
    TTL,
    crafted_updates,
    entity_rows,
    land,
    reference,
    retrieve,
)

__all__ = ["STATE", "STATS", "TTL", "crafted_updates", "features", "land", "retrieve"]


def start_with_store_env(settings, spark: bool = False) -> None:
    """Feast's Ray, dask and Spark stores take the lake's S3 keys from the environment
    only (``offline.feast_store_env``; Spark's workers also need PYSPARK_PYTHON). Rather
    than write them into this running process, start it again once with them
    (``process.start_again_with``)."""
    wanted = offline.feast_store_env(settings)
    if spark:
        wanted["PYSPARK_PYTHON"] = os.environ.get("PYSPARK_PYTHON", sys.executable)
    start_again_with(wanted)


def same(a: pd.Series, b: pd.Series) -> pd.Series:
    """Equal, or both null."""
    return (a == b) | (a.isna() & b.isna())


def compare(got: pd.DataFrame, rule: pd.DataFrame, no_ttl: pd.DataFrame) -> dict:
    """Row-by-row counts of one result against both references, per view."""
    out = {"rows": len(got), "rows_expected": len(rule)}
    if not got.index.equals(rule.index):
        missing = rule.index.difference(got.index)
        out["rows_missing"] = len(missing)
        out["rows_extra_or_repeated"] = len(got) - (len(rule) - len(missing))
        got = got[~got.index.duplicated()].reindex(rule.index)
    for view, cols in (("driver_state", STATE), ("driver_stats", STATS)):
        ok = np.logical_and.reduce([same(got[c], rule[c]) for c in cols])
        ok_no_ttl = np.logical_and.reduce([same(got[c], no_ttl[c]) for c in cols])
        stale = got[cols[0]].notna() & rule[cols[0]].isna() & no_ttl[cols[0]].notna()
        lost = got[cols[0]].isna() & rule[cols[0]].notna()
        out[view] = {
            "differ_from_feast_rule": int((~ok).sum()),
            "differ_from_merge_asof_without_ttl": int((~ok_no_ttl).sum()),
            "value_older_than_ttl": int(stale.sum()),
            "null_where_a_value_is_due": int(lost.sum()),
        }
    return out


def references(updates: pd.DataFrame, entities: pd.DataFrame) -> tuple:
    """Feast's rule (the test's reference) and the same join with no TTL at all."""
    no_limit = dict.fromkeys(TTL)  # merge_asof's tolerance=None
    return reference(updates, entities), reference(updates, entities, ttl=no_limit)


def crafted_case(base, kind: str, seed: int, ties: bool):
    """The offline-store test's crafted data (ties at one second kept or dropped) landed
    under a prefix of its own, and what the default store returns for it, held to the
    references: (settings, tag, entity rows, references, the report's first figures)."""
    tag = uuid.uuid4().hex[:8]
    settings = base.with_overrides(prefix=f"tests/{kind}{tag}")
    rng = np.random.default_rng(seed)
    updates = crafted_updates(rng)
    if not ties:
        updates = updates.drop_duplicates(["driver_id", "ts"], keep=False)
    land(settings, updates)
    entities = entity_rows(updates, rng)
    rule, no_ttl = references(updates, entities)
    t0 = time.perf_counter()
    ours = retrieve(features.apply(settings, f"t_{kind}{tag}"), entities)
    data = {
        "updates": len(updates),
        "entity_rows": len(entities),
        "default store": {**compare(ours, rule, no_ttl), "s": time.perf_counter() - t0},
    }
    return settings, tag, entities, (rule, no_ttl), data


def save(report: dict, out: str) -> None:
    """Write the report so far and print it."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str), flush=True)


def main(run, doc: str, out: str) -> None:
    """A comparison script's command line: a profile and where the report goes; ``run``
    saves what is done as it goes, this saves the whole report at the end."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("params", nargs="?", default="params/ci.yaml")
    parser.add_argument("--out", default=out)
    args = parser.parse_args()
    save(run(args.params, args.out), args.out)
