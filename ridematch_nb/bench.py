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

import contextlib
import gc
import json
import logging
import multiprocessing
import os
import platform
import statistics
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from datetime import datetime
from functools import partial

from kafka.errors import UnknownTopicOrPartitionError

from ridematch_nb import etl, kafka_io, matching
from ridematch_nb.config import PROJECT_ROOT, ParameterError, Settings
from ridematch_nb.events import encode, key_of
from ridematch_nb.generate import backfill
from ridematch_nb.kafka_io import (
    Publisher,
    admin_client,
    connect_producer,
    ensure_topic,
)
from ridematch_nb.sim import WorldParams, simulate

log = logging.getLogger(__name__)

BENCH_DIR = PROJECT_ROOT / "outputs" / "bench"
PARTITIONS = 6
EVENTS_PER_SIM_HOUR = 10.6 * 3600  # ~10 driver updates + requests + outcomes per tick
PAIRS = [("generate", "produce_raw"), ("etl", "consume_raw"), ("etl", "naive")]


# ---- measuring in a child process ------------------------------------------------------


def _memory_tree(proc) -> int:
    """Proportional set size (PSS) of a process and its children: a forked child shares
    its parent's pages, and PSS counts each shared page once across the tree, where
    adding up RSS would count it in every process."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        with contextlib.suppress(Exception):  # a child that just ended holds nothing
            total += p.memory_full_info().pss
    return total


def _child(conn, fn: Callable[[], dict]) -> None:
    import psutil

    gc.freeze()  # what the child inherited stays shared: the collector never touches it
    proc = psutil.Process()
    start = peak = _memory_tree(proc)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, _memory_tree(proc))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
        done.set()
        sampler.join()
        peak = max(peak, _memory_tree(proc))
        conn.send({**result, "peak_mib": round((peak - start) / 2**20, 1)})
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def isolated(fn: Callable[[], dict]) -> dict:
    """Run ``fn`` in a forked child; its result plus ``peak_mib``, the child's (and its
    children's) peak memory (PSS) above what it started with."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(send, fn), daemon=False)
    child.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        result = {"error": f"the measuring process died (exit code {child.exitcode})"}
    child.join()
    if "error" in result:
        raise RuntimeError(f"benchmark stage failed:\n{result['error']}")
    return result


def _median(results: list[dict], key: str = "rate") -> dict:
    rates = [r[key] for r in results]
    return {
        "median": round(statistics.median(rates), 1),
        "runs": [round(r, 1) for r in rates],
        "peak_mib": max(r["peak_mib"] for r in results),
    }


# ---- the event stages ------------------------------------------------------------------


def _world(seed: int) -> WorldParams:
    return WorldParams(seed=seed, n_drivers=1000, n_riders=5000)


def _hours_for(n: int) -> float:
    return max(n / EVENTS_PER_SIM_HOUR, 1 / 60)


def produce_raw(settings: Settings, topic: str, n: int) -> dict:
    """The producer alone: the generator's first ``n`` records, encoded before the clock
    starts, sent and confirmed."""
    records = [(key_of(e), encode(e)) for e in simulate(_world(1), _hours_for(n))][:n]
    ensure_topic(settings, topic, PARTITIONS)
    pub = Publisher(connect_producer(settings), topic)
    t0 = time.perf_counter()
    for key, value in records:
        pub.send(key, value)
    delivery = pub.flush()
    seconds = time.perf_counter() - t0
    pub.close()
    return {"rate": delivery.delivered / seconds, "n": delivery.delivered}


def generate(settings: Settings, topic: str, hours: float) -> dict:
    summary = backfill(
        settings,
        _world(1),
        hours,
        partitions=PARTITIONS,
        topic=topic,
        progress=False,
        reset_topic=False,
    )
    return {"rate": summary.delivered / summary.seconds, "n": summary.delivered}


def _drain(settings: Settings, topic: str, n: int, take: Callable[[list], None]) -> dict:
    """Read ``n`` records with the pipeline's fetch settings, handing each partition's
    batch to ``take``; the rate runs from the first records to the last."""
    consumer, tps = kafka_io.reader(settings, topic)
    consumer.seek_to_beginning(*tps)
    got, t0, deadline = 0, None, time.monotonic() + 60
    try:
        for batch in kafka_io.polls(consumer, settings):
            if got >= n:
                break
            if batch and t0 is None:
                t0 = time.perf_counter()
            if batch:
                deadline = time.monotonic() + 60
            elif time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: read {got:,} of {n:,} records, then nothing for 60 s")
            for records in batch.values():
                take(records)
                got += len(records)
        seconds = time.perf_counter() - t0
    finally:
        consumer.close()
    return {"rate": got / seconds, "n": got}


def consume_raw(settings: Settings, topic: str, n: int) -> dict:
    """The consumer alone: n records fetched, nothing parsed."""
    return _drain(settings, topic, n, lambda records: None)


def naive(settings: Settings, topic: str, n: int) -> dict:
    """The obvious path: json.loads per message, then one pandas frame per event type."""
    import pandas as pd

    rows: dict[str, list] = {}
    unreadable = 0

    def take(records: list) -> None:
        nonlocal unreadable
        for record in records:
            try:  # naive, but not fragile: a value it cannot read is counted, not fatal
                event = json.loads(record.value)
                rows.setdefault(event["event_type"], []).append(event)
            except Exception:
                unreadable += 1

    result = _drain(settings, topic, n, take)
    t0 = time.perf_counter()
    frames = {etype: pd.DataFrame(items) for etype, items in rows.items()}
    # the frames are part of the work: add their time at the same rate definition
    seconds = result["n"] / result["rate"] + time.perf_counter() - t0
    assert sum(len(f) for f in frames.values()) + unreadable == result["n"]
    return {"rate": result["n"] / seconds, "n": result["n"], "unreadable": unreadable}


def etl_stage(settings: Settings, topic: str, n: int, prefix: str) -> dict:
    """The ETL, one worker of a fresh group; the group join is reported apart."""
    summary = etl.run(
        settings,
        group=f"bench-{uuid.uuid4().hex[:6]}",
        prefix=prefix,
        topic=topic,
        max_records=n,
        progress=False,
    )
    working = summary.seconds - summary.first_records_s
    return {
        "rate": summary.consumed / working,
        "n": summary.consumed,
        "join_s": summary.first_records_s,
        "with_join_rate": summary.consumed / summary.seconds,
    }


def bench_size(settings: Settings, n: int, repeat: int, tag: str, say) -> dict:
    """Every event stage at one size, each the median of ``repeat`` runs, interleaved
    with its limit so both see the same machine."""
    hours = _hours_for(n)
    topics: list[str] = []

    def topic() -> str:
        topics.append(f"bench-{tag}-{n}-{len(topics)}")
        return topics[-1]

    runs: dict[str, list[dict]] = {s: [] for s in ("produce_raw", "generate")}
    for i in range(repeat):
        say(f"  {n:,} events, run {i + 1}/{repeat}: produce_raw, generate")
        raw_topic, gen_topic = topic(), topic()  # named here: the children cannot tell us
        runs["produce_raw"].append(isolated(partial(produce_raw, settings, raw_topic, n)))
        runs["generate"].append(isolated(partial(generate, settings, gen_topic, hours)))
    events = runs["generate"][-1]["n"]
    source = topics[-1]
    runs.update(consume_raw=[], naive=[], etl=[])
    prefix = f"bench/{tag}"
    for i in range(repeat):
        say(f"  {n:,} events, run {i + 1}/{repeat}: consume_raw, naive, etl")
        runs["consume_raw"].append(isolated(partial(consume_raw, settings, source, events)))
        runs["naive"].append(isolated(partial(naive, settings, source, events)))
        sub = f"{prefix}/{n}-{i}"
        runs["etl"].append(isolated(partial(etl_stage, settings, source, events, sub)))
    _delete_topics(settings, topics)
    row = {"events": events, **{stage: _median(r) for stage, r in runs.items()}}
    row["etl"]["join_s"] = statistics.median(r["join_s"] for r in runs["etl"])
    row["etl"]["with_join_median"] = round(
        statistics.median(r["with_join_rate"] for r in runs["etl"]), 1
    )
    for stage, limit in PAIRS:
        row[f"{stage}_vs_{limit}"] = round(row[stage]["median"] / row[limit]["median"], 3)
    return row


def _delete_topics(settings: Settings, topics: list[str]) -> None:
    """Bench topics go: every extra topic slows every producer a little (kafka-python
    rebuilds the set of known topics on each send)."""
    admin = admin_client(settings)
    try:
        for name in topics:
            with contextlib.suppress(UnknownTopicOrPartitionError):
                admin.delete_topics([name])
        deadline = time.monotonic() + 15
        while set(topics) & set(admin.list_topics()) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = set(topics) & set(admin.list_topics())
        if left:
            log.warning("bench topics still listed after deletion: %s", sorted(left))
    finally:
        admin.close()


def _delete_landed(settings: Settings, prefix: str) -> int:
    from ridematch_nb.storage import Lake

    lake = Lake(settings)
    keys = lake.keys(f"{prefix}/")
    lake.delete(keys)
    return len(keys)


# ---- the whole run ----------------------------------------------------------------------


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
            results.update(_online_figures(settings, repeat, say))
    finally:
        _delete_landed(settings, f"bench/{tag}")
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


def _online_figures(settings: Settings, repeat: int, say: Callable[[str], None]) -> dict:
    from ridematch_nb.features import event_time_range

    if event_time_range(settings) is None:
        say("online: skipped, the lake has no driver updates (run make demo first)")
        return {}
    say("online: materialize")
    out = {"materialize": bench_materialize(settings, repeat)}
    say("online: lookups")
    out["online_lookup"] = bench_online(settings)
    say("online: freshness under the stream push")
    out["freshness"] = isolated(lambda: bench_freshness(settings))
    say("online: whole match")
    match = bench_match(settings)
    if match:
        out["match"] = match
    else:
        say("online: match skipped, no trained model in outputs/runs (run make demo first)")
    return out


def bench_online(settings: Settings, sizes: tuple[int, ...] = (1, 50), repeat: int = 500) -> dict:
    """Online lookup of the feature service: the serving reader, Feast's
    get_online_features, and a raw redis-py pipeline HMGETting the same fields of the
    same keys, interleaved so all three see the same machine load."""
    from ridematch_nb import features, online

    fs = features.store(settings)
    reader = online.OnlineReader(fs, settings)
    service = fs.get_feature_service(features.FEATURE_SERVICE)
    out = {}
    for n in sizes:
        ids = [f"driver_{i}" for i in range(n)]
        keys = [reader._key(d) for d in ids]
        fields = reader._fields
        times: dict[str, list[float]] = {"reader": [], "feast": [], "redis_raw": []}
        for _ in range(repeat):
            t0 = time.perf_counter()
            reader.columns(ids)
            t1 = time.perf_counter()
            fs.get_online_features(
                features=service, entity_rows=[{"driver_id": d} for d in ids]
            ).to_dict()
            t2 = time.perf_counter()
            pipe = reader.redis.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(key, fields)
            pipe.execute()
            t3 = time.perf_counter()
            times["reader"].append((t1 - t0) * 1e3)
            times["feast"].append((t2 - t1) * 1e3)
            times["redis_raw"].append((t3 - t2) * 1e3)
        row = {name: matching.percentiles(samples, (0.5, 0.99)) for name, samples in times.items()}
        row["reader_vs_raw_p99"] = round(row["reader"]["p99_ms"] / row["redis_raw"]["p99_ms"], 2)
        out[str(n)] = row
    return out


def bench_materialize(settings: Settings, repeat: int = 3) -> dict:
    """Full materialization of the lake's driver updates: source rows scanned per second."""
    from ridematch_nb import features
    from ridematch_nb.storage import read_dataset

    features.apply(settings)
    rows = read_dataset(settings, "driver_update", columns=["timestamp"]).num_rows
    start, end = features.event_time_range(settings)

    def once() -> dict:
        from datetime import timedelta

        fs = features.store(settings)
        t0 = time.perf_counter()
        fs.materialize(start_date=start, end_date=end + timedelta(seconds=1))
        return {"rate": rows / (time.perf_counter() - t0)}

    return {"source_rows": rows, "rows_per_s": _median([isolated(once) for _ in range(repeat)])}


def bench_match(settings: Settings, n_requests: int = 300) -> dict | None:
    """The whole match (candidates + features + scoring) for requests spread over the
    landed day, with the newest model in outputs/runs, as notebook 06 serves them."""
    from ridematch_nb import features, matching, online, storage, training

    cards = sorted(PROJECT_ROOT.glob("outputs/runs/*/model/model_card.json"))
    if not cards:
        return None
    fs = features.store(settings)
    trained = training.load(cards[-1].parent, fs)
    online.rebuild_index(settings, fs.project, features.latest_offline(settings))
    requests = storage.read_dataset(settings, "rider_request").to_pandas()
    step = max(1, len(requests) // n_requests)
    picked = requests.sort_values("timestamp").iloc[::step].head(n_requests)
    matcher = matching.Matcher(settings, fs, trained, fs.project)
    records = picked.to_dict("records")
    for request in records[:20]:  # warm up: connections, caches
        matcher.match(request)
    matches = [matcher.match(r) for r in records]
    lat = matching.latency_table(matches)
    parts = {
        part: {"p50_ms": float(lat.at[part, "p50_ms"]), "p99_ms": float(lat.at[part, "p99_ms"])}
        for part in lat.index
    }
    candidates = [len(m.ranked) + m.skipped_missing for m in matches]
    return {
        "requests": len(matches),
        "mean_candidates": statistics.mean(candidates),
        "model": str(cards[-1].parent.relative_to(PROJECT_ROOT)),
        **parts,
    }


def bench_freshness(settings: Settings, n: int = 1000, rate_per_s: float = 250.0) -> dict:
    """Produce-to-readable-online latency while the stream push runs: ``n`` driver updates
    at a steady rate, each for its own driver, polled online until visible."""

    from ridematch_nb import features, online
    from ridematch_nb.events import format_ts

    fs = features.store(settings)
    reader = online.OnlineReader(fs, settings)
    tag = uuid.uuid4().hex[:6]
    topic = f"bench-fresh-{tag}"
    ensure_topic(settings, topic, 2)
    pusher = threading.Thread(
        target=online.stream_to_online,
        kwargs=dict(
            settings=settings,
            fs=fs,
            mode="follow",
            group=f"fresh-{tag}",
            from_beginning=True,
            max_records=n + 1,
            topic=topic,
        ),
        daemon=True,
    )
    pusher.start()
    pub = Publisher(connect_producer(settings), topic)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            pending = [d for d in list(sent) if d not in seen]
            if pending:
                statuses = reader.columns(pending)["status"]
                now = time.perf_counter()
                for d, status in zip(pending, statuses, strict=True):
                    if status is not None:
                        seen[d] = now
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    for i in range(-1, n):  # update -1 warms up: measuring starts once the push has joined
        if i == 0:
            deadline = time.monotonic() + 30
            while f"fresh_{tag}_-1" not in seen and time.monotonic() < deadline:
                time.sleep(0.01)
        driver = f"fresh_{tag}_{i}"
        event = {
            "event_type": "driver_update",
            "driver_id": driver,
            "lat": 40.75,
            "lon": -73.98,
            "status": "idle",
            "timestamp": format_ts(int(time.time())),
            "accept_rate_7d": 0.5,
            "avg_response_ms": 1000,
        }
        sent[driver] = time.perf_counter()
        pub.send(driver.encode(), encode(event))
        if i == -1:
            pub.flush()
        time.sleep(1 / rate_per_s)
    pub.flush()
    pub.close()
    deadline = time.monotonic() + 30
    while len(seen) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    done.set()
    lat_ms = [(seen[d] - sent[d]) * 1e3 for d in seen if not d.endswith("_-1")]
    pusher.join(timeout=10)
    _delete_topics(settings, [topic])
    # the made-up drivers leave the online store and the idle index
    from ridematch_nb.online import index_key

    reader.redis.delete(*(reader._key(d) for d in sent))
    reader.redis.zrem(index_key(fs.project), *sent)
    return {"updates": n, "visible": len(lat_ms), **matching.percentiles(lat_ms, (0.5, 0.99))}
