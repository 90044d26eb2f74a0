"""Does Feast's Ray compute engine (params/ray.yaml, batch_engine ray.engine) put the lake's
newest row of every driver into Redis, as the default engine does? (Needs Ray and the
stack up, as scripts/compare_ray_store.py.)

    .venv/bin/python scripts/compare_ray_materialize.py [params/ci.yaml] [--out FILE.json]

The test's crafted updates (no ties), landed twice: as they are (9 days ending weeks
ago) and shifted so the newest update is one minute old. Each copy is materialized by
the default engine and by Ray's, each into a Feast project of its own, then every
driver's online values are held to its newest lake row (features.verify, as notebook 04
checks). Also counted: drivers whose newest row is within each view's TTL of now.
"""

import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comparison import (
    STATE,
    STATS,
    TTL,
    crafted_updates,
    features,
    land,
    main,
    save,
    start_with_store_env,
)

from ridematch_nb.config import load_settings
from ridematch_nb.stack.control import LocalStack


def check(fs, settings, drivers: list[str]) -> dict:
    """Per view: drivers whose online values all equal the lake's newest row, and
    drivers with no value online."""
    table = features.verify(fs, settings, drivers)
    out = {}
    for view, cols in (("driver_state", STATE), ("driver_stats", STATS)):
        part = table[table.feature.isin(cols)]
        per_driver = part.groupby("driver_id")
        out[view] = {
            "drivers_equal_to_newest_lake_row": int(per_driver.match.all().sum()),
            "drivers_with_no_value_online": int(
                per_driver.online.apply(lambda s: s.isna().all()).sum()
            ),
        }
    return out


def run(params: str, out: str) -> dict:
    base = LocalStack(load_settings(params)).settings
    ray_feast = load_settings("params/ray.yaml").feast
    start_with_store_env(base)  # Ray's engine reads the S3 keys from the environment
    report = {}
    for name, recent in (("shifted to end a minute ago", True), ("as crafted (weeks old)", False)):
        tag = uuid.uuid4().hex[:8]
        settings = base.with_overrides(prefix=f"tests/raymat{tag}")
        updates = crafted_updates(np.random.default_rng(5))
        updates = updates.drop_duplicates(["driver_id", "ts"], keep=False)
        if recent:
            now = datetime.now(UTC).replace(microsecond=0)
            updates["ts"] += now - timedelta(minutes=1) - updates.ts.max()
        land(settings, updates)
        drivers = sorted(updates.driver_id.unique())
        newest = updates.groupby("driver_id").ts.max()
        now = datetime.now(UTC)
        data = {
            "drivers": len(drivers),
            "newest_row_within_ttl_of_now": {
                "driver_state": int((newest >= now - TTL["state"]).sum()),
                "driver_stats": int((newest >= now - TTL["stats"]).sum()),
            },
        }
        t0 = time.perf_counter()
        fs = features.apply(settings, f"t_rmd{tag}")
        features.materialize(fs, settings)
        data["default engine"] = {**check(fs, settings, drivers), "s": time.perf_counter() - t0}
        ray_settings = settings.with_overrides(feast=ray_feast)
        t0 = time.perf_counter()
        fs = features.apply(ray_settings, f"t_rmr{tag}")
        features.materialize(fs, ray_settings)
        data["ray engine"] = {**check(fs, ray_settings, drivers), "s": time.perf_counter() - t0}
        report[name] = data
        save(report, out)  # Ray is slow here: keep what is done
    return report


if __name__ == "__main__":
    main(run, __doc__, "outputs/compare_ray_materialize.json")
