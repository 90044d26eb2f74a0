"""Benchmarks: each stage's rate next to the raw limit of the same client, measured in
the same run, as medians of several repetitions (these machines are noisy).

    python -m ridematch_nb bench --sizes 50000 200000 --repeat 3

With ``--online``: Feast materialization (source rows/s) and online lookups of 1 and
50 drivers through Feast next to a raw redis-py pipeline reading the same hashes.

Pairs: ``generate`` (simulate + serialize + produce, delivery confirmed) against
``produce_raw`` (pre-serialized bytes, same producer settings); ``etl`` (Kafka ->
validated parquet in S3, committed) against ``consume_raw`` (the same consumer
settings, no parsing). Results go to outputs/bench/<timestamp>.json.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import datetime

from kafka import KafkaConsumer, TopicPartition

from ridematch_nb import etl
from ridematch_nb.config import PROJECT_ROOT, Settings
from ridematch_nb.events import encode, key_of
from ridematch_nb.generate import backfill
from ridematch_nb.kafka_io import FETCH_TUNING, Publisher, connect_producer, ensure_topic
from ridematch_nb.sim import WorldParams, simulate

BENCH_DIR = PROJECT_ROOT / "outputs" / "bench"
PARTITIONS = 6
EVENTS_PER_SIM_HOUR = 10.6 * 3600  # ~10 driver updates + requests + outcomes per tick


def _world(seed: int) -> WorldParams:
    return WorldParams(seed=seed, n_drivers=1000, n_riders=5000)


def _hours_for(n: int) -> float:
    return max(n / EVENTS_PER_SIM_HOUR, 1 / 60)


def produce_raw(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """Events/s of the producer alone: pre-encoded records, delivery confirmed."""
    ensure_topic(settings, topic, PARTITIONS)
    pub = Publisher(connect_producer(settings), topic)
    t0 = time.perf_counter()
    for key, value in records:
        pub.send(key, value)
    delivery = pub.flush()
    seconds = time.perf_counter() - t0
    pub.close()
    return delivery.delivered / seconds


def consume_raw(settings: Settings, topic: str, n: int) -> float:
    """Events/s of the consumer alone: n records fetched, nothing parsed."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, enable_auto_commit=False, **FETCH_TUNING
    )
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got, t0 = 0, time.perf_counter()
    while got < n:
        got += sum(len(r) for r in consumer.poll(timeout_ms=500).values())
    seconds = time.perf_counter() - t0
    consumer.close()
    return got / seconds


def _median(fn: Callable[[], float], repeat: int) -> dict:
    rates = [fn() for _ in range(repeat)]
    return {"median": round(statistics.median(rates), 1), "runs": [round(r, 1) for r in rates]}


def bench_size(settings: Settings, n: int, repeat: int, tag: str) -> dict:
    """Every pair at one size, each the median of ``repeat`` runs."""
    hours = _hours_for(n)
    records = [(key_of(e), encode(e)) for e in simulate(_world(1), hours)][:n]
    topics = iter(f"bench-{tag}-{n}-{i}" for i in range(10_000))
    last = {}

    def generate() -> float:
        topic = next(topics)
        summary = backfill(
            settings,
            _world(1),
            hours,
            partitions=PARTITIONS,
            topic=topic,
            progress=False,
            reset_topic=False,
        )
        last.update(topic=topic, n=summary.delivered)
        return summary.delivered / summary.seconds

    def etl_run() -> float:
        run_id = uuid.uuid4().hex[:6]
        summary = etl.run(
            settings,
            group=f"bench-{run_id}",
            prefix=f"bench/{tag}/{run_id}",
            topic=last["topic"],
            max_records=last["n"],
            progress=False,
        )
        return summary.consumed / summary.seconds

    row = {
        "produce_raw": _median(lambda: produce_raw(settings, next(topics), records), repeat),
        "generate": _median(generate, repeat),
    }
    row["consume_raw"] = _median(lambda: consume_raw(settings, last["topic"], last["n"]), repeat)
    row["etl"] = _median(etl_run, repeat)
    row["generate_vs_raw"] = round(row["generate"]["median"] / row["produce_raw"]["median"], 3)
    row["etl_vs_raw"] = round(row["etl"]["median"] / row["consume_raw"]["median"], 3)
    return row


def run_bench(
    settings: Settings,
    sizes: list[int],
    repeat: int = 3,
    say: Callable[[str], None] = print,
    online: bool = False,
) -> dict:
    """Measure every pair at every size; returns the results and writes them as JSON."""
    tag = uuid.uuid4().hex[:6]
    results: dict = {
        "started": datetime.now().isoformat(timespec="seconds"),
        "repeat": repeat,
        "sizes": {},
    }
    for n in sizes:
        say(f"size {n:,}: {repeat} repetitions of each stage ...")
        row = bench_size(settings, n, repeat, tag)
        results["sizes"][str(n)] = row
        say(table_line(n, row))
    if online:
        results.update(_online_figures(settings, repeat, say))
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"{datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2))
    results["path"] = str(path)
    return results


def _online_figures(settings: Settings, repeat: int, say: Callable[[str], None]) -> dict:
    from ridematch_nb.features import event_time_range

    if event_time_range(settings) is None:
        say("online: skipped, the lake has no driver updates (run make demo first)")
        return {}
    mat = bench_materialize(settings, repeat)
    say(
        f"  materialize: {mat['rows_per_s']['median']:,.0f} source rows/s "
        f"over {mat['source_rows']:,} rows"
    )
    lookup = bench_online(settings)
    for n, row in lookup.items():
        say(
            f"  online lookup of {n:>2} drivers: feast p50 {row['feast']['p50_ms']} ms, "
            f"p99 {row['feast']['p99_ms']} ms | redis-py pipeline p50 "
            f"{row['redis_pipeline']['p50_ms']} ms, p99 {row['redis_pipeline']['p99_ms']} ms"
        )
    fresh = bench_freshness(settings)
    say(
        f"  freshness under the stream push: {fresh['visible']}/{fresh['updates']} visible, "
        f"p50 {fresh['p50_ms']} ms, p99 {fresh['p99_ms']} ms"
    )
    return {"materialize": mat, "online_lookup": lookup, "freshness": fresh}


def table_line(n: int, row: dict) -> str:
    return (
        f"  {n:>9,} events | generate {row['generate']['median']:>9,.0f}/s vs produce_raw "
        f"{row['produce_raw']['median']:>9,.0f}/s ({row['generate_vs_raw']:.0%}) | "
        f"etl {row['etl']['median']:>9,.0f}/s vs consume_raw "
        f"{row['consume_raw']['median']:>9,.0f}/s ({row['etl_vs_raw']:.0%})"
    )


def _percentiles(samples_ms: list[float]) -> dict:
    arr = sorted(samples_ms)
    pick = lambda q: arr[min(len(arr) - 1, int(q * len(arr)))]  # noqa: E731
    return {"p50_ms": round(pick(0.5), 3), "p99_ms": round(pick(0.99), 3)}


def bench_online(settings: Settings, sizes: tuple[int, ...] = (1, 50), repeat: int = 300) -> dict:
    """Online lookup of the feature service through Feast against a raw redis-py pipeline
    reading the same hashes, interleaved so both see the same machine load."""
    import redis

    from ridematch_nb import features

    fs = features.store(settings)
    service = fs.get_feature_service(features.FEATURE_SERVICE)
    client = redis.Redis.from_url(settings.redis_url)
    project = fs.project.encode()
    keys = [k for k in client.scan_iter(count=5000) if k.endswith(project)]
    out = {}
    for n in sizes:
        ids = [f"driver_{i}" for i in range(n)]
        own = keys[:n]
        feast_ms, raw_ms = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fs.get_online_features(
                features=service, entity_rows=[{"driver_id": d} for d in ids]
            ).to_dict()
            t1 = time.perf_counter()
            pipe = client.pipeline(transaction=False)
            for key in own:
                pipe.hgetall(key)
            pipe.execute()
            t2 = time.perf_counter()
            feast_ms.append((t1 - t0) * 1e3)
            raw_ms.append((t2 - t1) * 1e3)
        out[str(n)] = {"feast": _percentiles(feast_ms), "redis_pipeline": _percentiles(raw_ms)}
    return out


def bench_materialize(settings: Settings, repeat: int = 3) -> dict:
    """Full materialization of the lake's driver updates: source rows scanned per second."""
    from datetime import timedelta

    from ridematch_nb import features
    from ridematch_nb.storage import read_dataset

    fs = features.apply(settings)
    rows = read_dataset(settings, "driver_update", columns=["timestamp"]).num_rows
    start, end = features.event_time_range(settings)

    def once() -> float:
        t0 = time.perf_counter()
        fs.materialize(start_date=start, end_date=end + timedelta(seconds=1))
        return rows / (time.perf_counter() - t0)

    return {"source_rows": rows, "rows_per_s": _median(once, repeat)}


def bench_freshness(settings: Settings, n: int = 1000, rate_per_s: float = 250.0) -> dict:
    """Produce-to-readable-online latency while the stream push runs: ``n`` driver updates
    at a steady rate, each for its own driver, polled online until visible."""
    import threading

    import pandas as pd

    from ridematch_nb import features
    from ridematch_nb.events import format_ts

    fs = features.store(settings)
    tag = uuid.uuid4().hex[:6]
    topic = f"bench-fresh-{tag}"
    ensure_topic(settings, topic, 2)
    pusher = threading.Thread(
        target=features.stream_to_online,
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
                online = fs.get_online_features(
                    features=["driver_state:status"],
                    entity_rows=[{"driver_id": d} for d in pending],
                )
                now = time.perf_counter()
                for d, status in zip(pending, online.to_dict()["status"], strict=True):
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
    summary = pd.Series(lat_ms).quantile([0.5, 0.99]).round(1) if lat_ms else None
    return {
        "updates": n,
        "visible": len(lat_ms),
        "p50_ms": float(summary[0.5]) if lat_ms else None,
        "p99_ms": float(summary[0.99]) if lat_ms else None,
    }
