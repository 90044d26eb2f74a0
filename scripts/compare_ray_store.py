"""Compare Feast's Ray offline store (params/ray.yaml) with the default store and an
independent merge_asof, on the crafted data of the offline-store test (needs Ray:
`.venv/bin/pip install -c constraints.txt "ray[data]==2.60.0"`, and the stack up).

    .venv/bin/python scripts/compare_ray_store.py [params/ci.yaml] [--out FILE.json]

Two data sets: the test's crafted updates without ties (no two updates of a driver at
one second), and the same with ties. Three ways through Ray's store: its default
(broadcast join: the lake is below 100 MB), and its "distributed" windowed join forced
(broadcast threshold below zero) with the default 1-hour window and with 30-minute
windows. Each result is held, row by row, to two references: Feast's rule (newest row
at or before the entity row, kept only within the view's TTL: what the default store
returns) and the same merge_asof without the TTL. Prints and writes the counts.
"""

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

from ridematch_nb.config import load_settings
from ridematch_nb.features import offline
from ridematch_nb.features import store as features
from ridematch_nb.stack.control import LocalStack
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

# Ray store options per variant (merged over params/ray.yaml's offline_store)
VARIANTS = {
    "broadcast (default)": {},
    "windowed 1H (forced)": {"broadcast_join_threshold_mb": -1},
    "windowed 30min (forced)": {
        "broadcast_join_threshold_mb": -1,
        "window_size_for_joins": "30min",
    },
}


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


def run(params: str, out: str) -> dict:
    base = LocalStack(load_settings(params)).settings
    ray_feast = load_settings("params/ray.yaml").feast
    report = {}
    for name, seed, ties in (("with ties", 13, True), ("no ties", 5, False)):
        settings, tag, entities, (rule, no_ttl), data = crafted_case(base, "ray", seed, ties)
        for variant, options in VARIANTS.items():
            if ties and variant != "broadcast (default)":
                continue
            conf = {**ray_feast, "offline_store": {**ray_feast["offline_store"], **options}}
            ray_settings = settings.with_overrides(feast=conf)
            os.environ.update(offline.feast_store_env(ray_settings))  # Ray's S3 keys
            t0 = time.perf_counter()
            got = retrieve(features.apply(ray_settings, f"t_ray{tag}"), entities)
            data[f"ray {variant}"] = {**compare(got, rule, no_ttl), "s": time.perf_counter() - t0}
            report[name] = data
            save(report, out)  # Ray is slow here: keep what is done
        report[name] = data
    return report


def save(report: dict, out: str) -> None:
    """Write the report so far and print it."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps(report, indent=2, default=str), flush=True)


def main(run=run, doc: str = __doc__, out: str = "outputs/compare_ray_store.json") -> None:
    """A comparison script's command line: a profile and where the report goes; ``run``
    saves what is done as it goes, this saves the whole report at the end."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("params", nargs="?", default="params/ci.yaml")
    parser.add_argument("--out", default=out)
    args = parser.parse_args()
    save(run(args.params, args.out), args.out)


if __name__ == "__main__":
    main()
