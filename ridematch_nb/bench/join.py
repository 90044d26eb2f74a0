"""How long each consumer of the topic waits for its first records, side by side in one
run: what a group join costs on the embedded broker, and what ours pay now.

    python -m ridematch_nb bench --join [--repeat 5]

On the embedded broker (Tansu) a JoinGroup is answered only once half the group's
session timeout has passed (``kafka_io`` says where), so a group member's first records
come about S/2 after it subscribes. Measured, each the median of ``repeat`` runs on a
fresh group of a small topic of its own:

- ``etl``: ``etl.run``'s ``first_records_s`` (a group member: several workers share one).
- ``push-online``: ``online.stream_to_online``'s (partitions assigned by hand, no join).
- ``group, the previous settings``: a kafka-python member with the 6 s session both had.
- ``librdkafka, the documented settings``: the original project's consumer
  (confluent-kafka) with ``kafka_io.OTHER_CLIENTS_GROUP_SETTINGS``;
  ``librdkafka, its defaults`` (45 s session) once: polls of 5 s see nothing for ~23 s.

Writes outputs/bench/<timestamp>-join.json.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from datetime import datetime

from kafka import KafkaConsumer, KafkaProducer

from ridematch_nb.bench.harness import delete_landed, delete_topics
from ridematch_nb.bench.stages import BENCH_DIR, machine
from ridematch_nb.config import Settings
from ridematch_nb.lake import etl
from ridematch_nb.stream.group_timing import OTHER_CLIENTS_GROUP_SETTINGS
from ridematch_nb.stream.topics import ensure_topic

PREVIOUS_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 2000}
LIBRDKAFKA_DEFAULT_SESSION_S = 45.0


def _topic(settings: Settings, tag: str, n: int = 60) -> str:
    """A topic of its own with ``n`` driver updates over 3 partitions."""
    from ridematch_nb.contract.events import encode, format_ts

    topic = f"bench-join-{tag}"
    ensure_topic(settings, topic, 3)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    for i in range(n):
        event = {
            "event_type": "driver_update",
            "driver_id": f"join_{tag}_{i}",
            "lat": 40.75,
            "lon": -73.98,
            "status": "idle",
            "timestamp": format_ts(int(time.time())),
            "accept_rate_7d": 0.5,
            "avg_response_ms": 1000,
        }
        producer.send(topic, encode(event), partition=i % 3)
    producer.flush()
    producer.close()
    return topic


def etl_join(settings: Settings, topic: str) -> float:
    prefix = f"bench/join-{uuid.uuid4().hex[:6]}"
    group = f"bench-join-{uuid.uuid4().hex[:6]}"
    summary = etl.run(
        settings, group=group, prefix=prefix, topic=topic, max_records=1, progress=False
    )
    delete_landed(settings, prefix)
    return summary.first_records_s


def push_join(settings: Settings, topic: str) -> float:
    from ridematch_nb.features import online
    from ridematch_nb.features import store as features

    fs = features.store(settings)
    counts = online.stream_to_online(
        settings,
        fs,
        mode="follow",
        group=f"bench-push-{uuid.uuid4().hex[:6]}",
        from_beginning=True,
        max_records=1,
        topic=topic,
    )
    return counts["first_records_s"]


def kafka_python_join(settings: Settings, topic: str, **group) -> float:
    t0 = time.perf_counter()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=f"bench-group-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **group,
    )
    try:
        while not consumer.poll(timeout_ms=100):
            pass
        return time.perf_counter() - t0
    finally:
        consumer.close()


def librdkafka_join(settings: Settings, topic: str, extra: dict, limit_s: float = 60) -> float:
    """The original's check_kafka_events consumer, timed to its first record (polls of
    5 s repeated here, where the original stops at its first empty one)."""
    from confluent_kafka import Consumer

    t0 = time.perf_counter()
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap,
            "group.id": f"bench-checker-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            **extra,
        }
    )
    consumer.subscribe([topic])
    try:
        while time.perf_counter() - t0 < limit_s:
            msg = consumer.poll(timeout=5.0)
            if msg is not None and not msg.error():
                return time.perf_counter() - t0
        return float("nan")
    finally:
        consumer.close()


def run_join_bench(settings: Settings, repeat: int = 5, say=print) -> dict:
    """Every consumer's wait for its first records, ``repeat`` times interleaved."""
    tag = uuid.uuid4().hex[:6]
    topic = _topic(settings, tag)
    cases = {
        "etl": lambda: etl_join(settings, topic),
        "push-online": lambda: push_join(settings, topic),
        "group, the previous settings (6 s session)": lambda: kafka_python_join(
            settings, topic, **PREVIOUS_GROUP
        ),
        "librdkafka, the documented settings": lambda: librdkafka_join(
            settings, topic, OTHER_CLIENTS_GROUP_SETTINGS
        ),
    }
    runs: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for i in range(repeat):
            say(f"run {i + 1}/{repeat}")
            for name, case in cases.items():
                runs[name].append(round(case(), 3))
        say(f"librdkafka with its defaults ({LIBRDKAFKA_DEFAULT_SESSION_S:g} s session), once")
        defaults = round(librdkafka_join(settings, topic, {}), 3)
    finally:
        delete_topics(settings, [topic])
    table = {name: {"median_s": statistics.median(v), "runs_s": v} for name, v in runs.items()}
    table["librdkafka, its defaults (45 s session)"] = {"median_s": defaults, "runs_s": [defaults]}
    say(f"{'consumer':<46} {'first records after (s), median':>32}")
    for name, row in table.items():
        say(f"{name:<46} {row['median_s']:>32.2f}")
    results = {"machine": machine(), "repeat": repeat, "first_records_s": table}
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"{datetime.now():%Y%m%d-%H%M%S}-join.json"
    path.write_text(json.dumps(results, indent=2))
    return {**results, "path": path}
