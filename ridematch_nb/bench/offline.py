"""Benchmark of the offline store: the training set Feast builds against its limit.

    python -m ridematch_nb bench --offline [--repeat 3] [--compare duckdb dask]

On whatever the profile's lake holds (after ``make demo``: the demo day), side by side
in one run, each measurement in a forked child with its peak memory (``bench.isolated``):

- ``limit``: read the same datasets from S3 with pyarrow (the offers, and the driver
  updates' join key, time and features) and join them with pandas ``merge_asof`` by
  driver, backward, within each view's TTL: the least work that gives the same rows;
- ``store``: the profile's Feast store building the training set as notebook 05 does:
  the offers read from S3 as entity rows, ``get_historical_features`` of the
  ``driver_match_v1`` service, ``to_df()``;
- ``--compare``: other stores Feast offers, measured once each (``duckdb``: Feast's own
  DuckDB store; ``dask``: the store used before; minutes and gigabytes on a day);
- ``materialize``: a full materialization of the lake into Redis with the profile's store;
- ``--scale PROFILE``: the same two measurements on another profile's lake (e.g.
  ``params/week.yaml`` after its 01-03), interleaved with this one's in every repeat, and
  how each grew: the week against the day, side by side on one noisy machine.

Both paths read the offers, so the ratio compares the joins and the reading of the
driver updates. The number of complete rows (every feature present) of each path is
reported beside its time: they must agree.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from datetime import datetime

from ridematch_nb.bench.harness import isolated, median
from ridematch_nb.bench.online import bench_materialize
from ridematch_nb.bench.stages import BENCH_DIR, machine
from ridematch_nb.config import Settings

COMPARE_STORES = {"duckdb": {"type": "duckdb"}, "dask": {"type": "dask"}}
OFFER_COLUMNS = ["offer_id", "driver_id", "timestamp"]


def view_ttls(settings: Settings) -> dict[str, tuple[list[str], float]]:
    """Each view of the feature service: its features and TTL in seconds."""
    from ridematch_nb.features import store as features

    fs = features.store(settings)
    out = {}
    for projection in fs.get_feature_service(features.FEATURE_SERVICE).feature_view_projections:
        view = fs.get_feature_view(projection.name)
        out[view.name] = ([f.name for f in projection.features], view.ttl.total_seconds())
    return out


def limit_join(settings: Settings, views: dict) -> dict:
    """pyarrow reads from S3 + pandas merge_asof per view: the floor for the same rows."""
    import pandas as pd

    from ridematch_nb.lake.storage import read_dataset

    t0 = time.perf_counter()
    offers = read_dataset(settings, "offer_outcome", columns=OFFER_COLUMNS).to_pandas()
    feats = [f for cols, _ in views.values() for f in cols]
    updates = read_dataset(
        settings, "driver_update", columns=["driver_id", "timestamp", *feats]
    ).to_pandas()
    read_s = time.perf_counter() - t0
    left = offers.sort_values("timestamp")
    right = updates.sort_values("timestamp")
    out = left
    for cols, ttl in views.values():
        joined = pd.merge_asof(
            left,
            right[["driver_id", "timestamp", *cols]],
            on="timestamp",
            by="driver_id",
            direction="backward",
            tolerance=pd.Timedelta(seconds=ttl),
        )
        out = out.merge(joined[["offer_id", *cols]], on="offer_id")
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "read_s": read_s,
        "rows": len(out),
        "complete_rows": int(out[feats].notna().all(axis=1).sum()),
        "updates": len(updates),
    }


def store_build(settings: Settings, store: dict | None = None) -> dict:
    """The training set's driver features from Feast, as notebook 05 gets them."""
    from ridematch_nb.features import store as features
    from ridematch_nb.lake.storage import read_dataset

    if store is not None:
        settings = settings.with_overrides(feast={**settings.feast, "offline_store": store})
    t0 = time.perf_counter()
    fs = features.store(settings)
    offers = read_dataset(settings, "offer_outcome", columns=OFFER_COLUMNS).to_pandas()
    entity_df = offers.rename(columns={"timestamp": "event_timestamp"})
    service = fs.get_feature_service(features.FEATURE_SERVICE)
    df = fs.get_historical_features(entity_df=entity_df, features=service).to_df()
    seconds = time.perf_counter() - t0
    feats = [c for c in df.columns if c not in entity_df.columns]
    return {
        "seconds": seconds,
        "rows": len(df),
        "complete_rows": int(df[feats].notna().all(axis=1).sum()),
    }


def _safe(fn: Callable[[], dict]) -> dict:
    """A store that fails (e.g. out of memory, or S3 keys not exported for Feast's dask
    store) is a result, not the end of the run."""
    try:
        return isolated(fn)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        named = [line for line in lines if "Error" in line or "Exception" in line]
        return {"error": (named or lines)[-1][:300]}


def _ready(settings: Settings) -> dict:
    """The lake's views and TTLs, once the registry holds the current definitions."""
    from ridematch_nb.features import store as features

    if features.event_time_range(settings) is None:
        raise ValueError(
            f"the lake of {settings.params_file.name} holds no driver updates: "
            "run `make demo` (or 01-03 with that profile) first"
        )
    features.apply(settings)
    return view_ttls(settings)


def _measure(settings: Settings, views: dict, runs: dict) -> None:
    runs["limit"].append(isolated(lambda: limit_join(settings, views)))
    runs["store"].append(isolated(lambda: store_build(settings)))


def _summarize(runs: dict) -> dict:
    """Medians of the limit's and the store's runs, and the store against the limit."""
    out = {}
    for name, items in runs.items():
        out[name] = {
            **median(items, "seconds"),
            "rows": items[-1]["rows"],
            "complete_rows": items[-1]["complete_rows"],
        }
    out["limit"]["read_s"] = round(statistics.median(r["read_s"] for r in runs["limit"]), 2)
    out["limit"]["updates"] = runs["limit"][-1]["updates"]
    out["store_vs_limit"] = round(out["store"]["median"] / out["limit"]["median"], 2)
    return out


def _growth(base: dict, other: dict) -> dict:
    """How far each measurement grew from ``base`` to ``other`` (a larger lake)."""
    ratio = lambda a, b: round(a / b, 2)  # noqa: E731
    return {
        "offers": ratio(other["limit"]["rows"], base["limit"]["rows"]),
        "updates": ratio(other["limit"]["updates"], base["limit"]["updates"]),
        "limit_time": ratio(other["limit"]["median"], base["limit"]["median"]),
        "store_time": ratio(other["store"]["median"], base["store"]["median"]),
        "store_peak": ratio(other["store"]["peak_mib"], base["store"]["peak_mib"]),
    }


def run_offline_bench(
    settings: Settings,
    repeat: int = 3,
    compare: list[str] | None = None,
    say: Callable[[str], None] = print,
    materialize: bool = True,
    scale: Settings | None = None,
) -> dict:
    """Measure, print a table, write outputs/bench/<timestamp>-offline.json."""
    from ridematch_nb.features import offline

    if repeat < 1:
        raise ValueError(f"parameter repeat={repeat!r} must be >= 1")
    unknown = sorted(set(compare or []) - set(COMPARE_STORES))
    if unknown:
        raise ValueError(f"parameter compare={unknown}: known stores are {sorted(COMPARE_STORES)}")
    views = _ready(settings)
    scale_views = _ready(scale) if scale is not None else None
    runs: dict[str, list[dict]] = {"limit": [], "store": []}
    scale_runs: dict[str, list[dict]] = {"limit": [], "store": []}
    for i in range(repeat):
        say(f"offline, run {i + 1}/{repeat}: limit (pyarrow + merge_asof), the profile's store")
        _measure(settings, views, runs)
        if scale is not None:
            say(f"offline, run {i + 1}/{repeat}: the same on {scale.params_file.name}'s lake")
            _measure(scale, scale_views, scale_runs)
    results: dict = {
        "started": datetime.now().isoformat(timespec="seconds"),
        "repeat": repeat,
        "machine": machine(),
        "profile": str(settings.params_file),
        "store_config": offline.store_configs(settings)["offline_store"],
        **_summarize(runs),
    }
    if scale is not None:
        results["scale"] = {"profile": str(scale.params_file), **_summarize(scale_runs)}
        results["scale"]["growth"] = _growth(results, results["scale"])
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"{datetime.now():%Y%m%d-%H%M%S}-offline.json"
    save = lambda: path.write_text(json.dumps(results, indent=2, default=str))  # noqa: E731
    save()  # after each stage: a slow comparison that fails keeps what came before
    shown = table(results)
    for line in shown:
        say(line)
    results["compare"] = {}
    for name in compare or []:
        say(f"offline: Feast's {name} store (once)")
        # Feast's dask store reads S3 keys only from the environment, which the package
        # never writes: without them exported it fails fast naming them (use_feast_store)
        store = COMPARE_STORES[name]
        results["compare"][name] = _safe(lambda s=store: store_build(settings, s))
        save()
    if materialize:
        say("offline: full materialization into Redis with the profile's store")
        results["materialize"] = bench_materialize(settings, repeat)
        save()
    for line in table(results)[len(shown) :]:
        say(line)
    results["path"] = str(path)
    return results


def table(results: dict) -> list[str]:
    lim, st = results["limit"], results["store"]
    lines = [
        f"training set of {lim['rows']:,} offers over {lim['updates']:,} driver updates "
        f"(median of {results['repeat']}):",
        f"  limit  pyarrow + merge_asof   {lim['median']:>7.2f} s (read {lim['read_s']} s)  "
        f"peak {lim['peak_mib']:>6,.0f} MiB  complete rows {lim['complete_rows']:,}",
        f"  store  {results['store_config']['type'][-22:]:<22} {st['median']:>7.2f} s"
        f"{'':>13}peak {st['peak_mib']:>6,.0f} MiB  complete rows {st['complete_rows']:,}"
        f"  ({results['store_vs_limit']:.2f}x the limit)",
    ]
    if "scale" in results:
        sc, g = results["scale"], results["scale"]["growth"]
        lines += [
            f"the same on {sc['profile']}: {sc['limit']['rows']:,} offers over "
            f"{sc['limit']['updates']:,} driver updates ({g['offers']}x / {g['updates']}x):",
            f"  limit {sc['limit']['median']:>7.2f} s ({g['limit_time']}x)"
            f"  peak {sc['limit']['peak_mib']:>6,.0f} MiB",
            f"  store {sc['store']['median']:>7.2f} s ({g['store_time']}x)"
            f"  peak {sc['store']['peak_mib']:>6,.0f} MiB ({g['store_peak']}x)"
            f"  complete rows {sc['store']['complete_rows']:,}",
        ]
    for name, r in results.get("compare", {}).items():
        if "error" in r:
            lines.append(f"  Feast's {name} store: failed: {r['error']}")
        else:
            lines.append(
                f"  Feast's {name} store {r['seconds']:>7.2f} s  peak {r['peak_mib']:,.0f} MiB"
                f"  complete rows {r['complete_rows']:,}"
            )
    if "materialize" in results:
        m = results["materialize"]
        lines.append(
            f"materialize: {m['rows_per_s']['median']:,.0f} source rows/s over "
            f"{m['source_rows']:,} rows, peak {m['rows_per_s']['peak_mib']:,.0f} MiB"
        )
    return lines
