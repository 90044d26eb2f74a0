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

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from comparison import compare, crafted_case, features, main, retrieve, save, start_with_store_env

from ridematch_nb.config import load_settings
from ridematch_nb.stack.control import LocalStack

# Ray store options per variant (merged over params/ray.yaml's offline_store)
VARIANTS = {
    "broadcast (default)": {},
    "windowed 1H (forced)": {"broadcast_join_threshold_mb": -1},
    "windowed 30min (forced)": {
        "broadcast_join_threshold_mb": -1,
        "window_size_for_joins": "30min",
    },
}


def run(params: str, out: str) -> dict:
    base = LocalStack(load_settings(params)).settings
    ray_feast = load_settings("params/ray.yaml").feast
    start_with_store_env(base)  # Ray's store reads the S3 keys from the environment
    report = {}
    for name, seed, ties in (("with ties", 13, True), ("no ties", 5, False)):
        settings, tag, entities, (rule, no_ttl), data = crafted_case(base, "ray", seed, ties)
        for variant, options in VARIANTS.items():
            if ties and variant != "broadcast (default)":
                continue
            conf = {**ray_feast, "offline_store": {**ray_feast["offline_store"], **options}}
            ray_settings = settings.with_overrides(feast=conf)
            t0 = time.perf_counter()
            got = retrieve(features.apply(ray_settings, f"t_ray{tag}"), entities)
            data[f"ray {variant}"] = {**compare(got, rule, no_ttl), "s": time.perf_counter() - t0}
            report[name] = data
            save(report, out)  # Ray is slow here: keep what is done
        report[name] = data
    return report


if __name__ == "__main__":
    main(run, __doc__, "outputs/compare_ray_store.json")
