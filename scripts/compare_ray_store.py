"""Compare Feast's Ray offline store (params/ray.yaml) with the default store and an
independent merge_asof, on the crafted data of the offline-store test (needs Ray:
`.venv/bin/pip install -c constraints.txt "ray[data]==2.60.0"`, and the stack up).

    .venv/bin/python scripts/compare_ray_store.py [params/ci.yaml]

Prints, per feature, how often each store agrees with the reference, and where Ray
gives a value the reference says is past the view's TTL.
"""

import os
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ridematch_nb import features, offline
from ridematch_nb.config import load_settings
from ridematch_nb.stack import LocalStack
from tests.integration.test_offline_store import (
    crafted_updates,
    entity_rows,
    land,
    reference,
    retrieve,
)


def main(params: str = "params/ci.yaml") -> None:
    base = LocalStack(load_settings(params)).settings
    tag = uuid.uuid4().hex[:8]
    settings = base.with_overrides(prefix=f"tests/ray{tag}")
    rng = np.random.default_rng(5)
    updates = crafted_updates(rng).drop_duplicates(["driver_id", "ts"], keep=False)
    land(settings, updates)
    entities = entity_rows(updates, rng)
    ours = retrieve(features.apply(settings, f"t_ray{tag}"), entities)
    ray_profile = load_settings("params/ray.yaml")
    ray_settings = settings.with_overrides(feast=ray_profile.feast)
    os.environ.update(offline.feast_store_env(ray_settings))  # Ray reads S3 keys from there
    t0 = time.perf_counter()
    theirs = retrieve(features.apply(ray_settings, f"t_ray{tag}"), entities)
    print(f"Ray store: {time.perf_counter() - t0:.0f} s for {len(theirs)} entity rows")
    want = reference(updates, entities)
    for col in ("lat", "status", "accept_rate_7d"):
        a, b, w = ours[col], theirs[col], want[col]
        print(
            f"{col}: default==reference {((a == w) | (a.isna() & w.isna())).mean():.3f}, "
            f"ray==reference {((b == w) | (b.isna() & w.isna())).mean():.3f}; "
            f"ray has a value past the TTL in {(b.notna() & w.isna()).sum()} rows, "
            f"a different value in {(b.notna() & w.notna() & (b != w)).sum()}"
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
