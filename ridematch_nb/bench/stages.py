"""Benchmarks: each stage's rate next to the raw limit of the same client, measured in
the same run, as medians of several repetitions (these machines are noisy).

    python -m ridematch_nb bench --sizes 100000 1000000 --repeat 3 [--online]

Event stages, at each size:

- ``generate`` (simulate + serialize + produce, delivery confirmed) next to
  ``produce_raw`` (kafka-python sending the same records pre-serialized, same settings);
- ``etl`` (Kafka -> validated parquet in S3, offsets committed) next to ``consume_raw``
  (the same consumer settings, nothing parsed) and ``naive`` (json.loads per message
  into one pandas frame per type, nothing written). The consumer rates run from the
  first records to the last: the ETL's group join (a fixed ~3 s on this broker) is
  reported on its own.

Each measurement runs in a forked child, so its peak memory (proportional set size of
the child and its own children, sampled every 50 ms, above what it started with) is its
own. With ``--online``:
materialization, online lookups (the serving reader, Feast, raw redis-py on the same
hashes), freshness under the stream push, and the whole match. Results are printed as a
table and written to outputs/bench/<timestamp>.json. The topics and lake objects a run
creates are deleted at its end.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import uuid
from collections.abc import Callable
from datetime import datetime

from ridematch_nb.bench.events import PAIRS, bench_size
from ridematch_nb.bench.harness import delete_landed
from ridematch_nb.bench.online import online_figures
from ridematch_nb.config import PROJECT_ROOT, ParameterError, Settings

log = logging.getLogger(__name__)

BENCH_DIR = PROJECT_ROOT / "outputs" / "bench"
__all__ = ["PAIRS", "run_bench", "table"]


def machine() -> dict:
    from importlib.metadata import version

    import psutil

    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {
            p: version(p) for p in ("kafka-python", "pyarrow", "feast", "redis", "scikit-learn")
        },
    }


def run_bench(
    settings: Settings,
    sizes: list[int],
    repeat: int = 3,
    say: Callable[[str], None] = print,
    online: bool = False,
) -> dict:
    """Measure every pair at every size; prints the table, writes the JSON, returns both."""
    bad = [n for n in sizes if n < 1000]
    if bad or not sizes:
        raise ParameterError(f"parameter sizes={sizes!r}: give sizes of at least 1000 events")
    if repeat < 1:
        raise ParameterError(f"parameter repeat={repeat!r} must be >= 1")
    tag = uuid.uuid4().hex[:6]
    results: dict = {
        "started": datetime.now().isoformat(timespec="seconds"),
        "tag": tag,  # in the names of this run's topics and lake prefix (bench/<tag>/)
        "repeat": repeat,
        "machine": machine(),
        "sizes": {},
    }
    try:
        for n in sizes:
            results["sizes"][str(n)] = bench_size(settings, n, repeat, tag, say)
        if online:
            results.update(online_figures(settings, repeat, say))
    finally:
        delete_landed(settings, f"bench/{tag}")
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2))
    for line in table(results):
        say(line)
    results["path"] = str(path)
    return results


def table(results: dict) -> list[str]:
    """The results as an aligned text table (events, then the online figures)."""
    lines = [
        f"{'events':>10}  {'stage':<9} {'rate/s':>9}  {'limit':<12} {'rate/s':>9}  "
        f"{'ratio':>6}  {'peak MiB':>8}"
    ]
    for n, row in results["sizes"].items():
        for stage, limit in PAIRS:
            lines.append(
                f"{int(n):>10,}  {stage:<9} {row[stage]['median']:>9,.0f}  {limit:<12} "
                f"{row[limit]['median']:>9,.0f}  {row[f'{stage}_vs_{limit}']:>6.2f}  "
                f"{row[stage]['peak_mib']:>8,.0f}"
            )
        lines.append(
            f"{'':>10}  etl group join {row['etl']['join_s']:.1f} s (not in the rate); "
            f"with it {row['etl']['with_join_median']:,.0f}/s"
        )
    if "materialize" in results:
        m = results["materialize"]
        lines.append(
            f"materialize: {m['rows_per_s']['median']:,.0f} source rows/s over "
            f"{m['source_rows']:,} rows, peak {m['rows_per_s']['peak_mib']:,.0f} MiB"
        )
    for n, row in results.get("online_lookup", {}).items():
        lines.append(
            f"online lookup, {n:>2} drivers: reader p50 {row['reader']['p50_ms']} / p99 "
            f"{row['reader']['p99_ms']} ms | raw redis-py p50 {row['redis_raw']['p50_ms']} / "
            f"p99 {row['redis_raw']['p99_ms']} ms ({row['reader_vs_raw_p99']:.1f}x) | "
            f"feast p50 {row['feast']['p50_ms']} / p99 {row['feast']['p99_ms']} ms"
        )
    if "freshness" in results:
        f = results["freshness"]
        lines.append(
            f"freshness under the stream push: {f['visible']}/{f['updates']} visible, "
            f"p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms"
        )
    if "match" in results:
        m = results["match"]
        lines.append(
            f"whole match ({m['requests']} requests, {m['mean_candidates']:.1f} candidates "
            f"on average): p50 {m['total']['p50_ms']} ms, p99 {m['total']['p99_ms']} ms"
        )
    return lines


# ---- online figures ---------------------------------------------------------------------
