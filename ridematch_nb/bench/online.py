"""The online side next to its limits: materialization, online lookups (the serving
reader, Feast, raw redis-py on the same hashes), freshness under the stream push, and
the whole match (after `make demo`)."""

from __future__ import annotations

import logging
import statistics
import threading
import time
import uuid
from collections.abc import Callable

from ridematch_nb.bench.harness import delete_topics, isolated, median
from ridematch_nb.config import PROJECT_ROOT, Settings
from ridematch_nb.contract.events import encode
from ridematch_nb.model import matching
from ridematch_nb.stream.kafka_io import Publisher, connect_producer
from ridematch_nb.stream.topics import ensure_topic

log = logging.getLogger(__name__)


def online_figures(settings: Settings, repeat: int, say: Callable[[str], None]) -> dict:
    from ridematch_nb.features.store import event_time_range

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
    from ridematch_nb.features import online
    from ridematch_nb.features import store as features

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
    from ridematch_nb.features import store as features
    from ridematch_nb.lake.storage import read_dataset

    features.apply(settings)
    rows = read_dataset(settings, "driver_update", columns=["timestamp"]).num_rows
    start, end = features.event_time_range(settings)

    def once() -> dict:
        from datetime import timedelta

        fs = features.store(settings)
        t0 = time.perf_counter()
        fs.materialize(start_date=start, end_date=end + timedelta(seconds=1))
        return {"rate": rows / (time.perf_counter() - t0)}

    return {"source_rows": rows, "rows_per_s": median([isolated(once) for _ in range(repeat)])}


def bench_match(settings: Settings, n_requests: int = 300) -> dict | None:
    """The whole match (candidates + features + scoring) for requests spread over the
    landed day, with the newest model in outputs/runs, as notebook 06 serves them."""
    from ridematch_nb.features import online
    from ridematch_nb.features import store as features
    from ridematch_nb.lake import storage
    from ridematch_nb.model import matching, training

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
    lat = matching.latency_table([m.timings_ms for m in matches])
    parts = {
        part: {"p50_ms": float(lat.at[part, "p50_ms"]), "p99_ms": float(lat.at[part, "p99_ms"])}
        for part in lat.index
    }
    candidates = [m.ranked_count + m.skipped_missing for m in matches]
    return {
        "requests": len(matches),
        "mean_candidates": statistics.mean(candidates),
        "model": str(cards[-1].parent.relative_to(PROJECT_ROOT)),
        **parts,
    }


def bench_freshness(settings: Settings, n: int = 1000, rate_per_s: float = 250.0) -> dict:
    """Produce-to-readable-online latency while the stream push runs: ``n`` driver updates
    at a steady rate, each for its own driver, polled online until visible."""

    from ridematch_nb.contract.events import format_ts
    from ridematch_nb.features import online
    from ridematch_nb.features import store as features

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
    delete_topics(settings, [topic])
    # the made-up drivers leave the online store and the idle index
    from ridematch_nb.features.online import index_key

    reader.redis.delete(*(reader._key(d) for d in sent))
    reader.redis.zrem(index_key(fs.project), *sent)
    return {"updates": n, "visible": len(lat_ms), **matching.percentiles(lat_ms, (0.5, 0.99))}
