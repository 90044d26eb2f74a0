"""The ETL on the real stack: exactly once through crashes, poison, outages and restarts."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from ridematch_nb.config import PROJECT_ROOT
from ridematch_nb.contract.events import SCHEMAS, encode
from ridematch_nb.lake import etl
from ridematch_nb.lake.storage import Lake, S3Unavailable, read_dataset, read_rejected
from ridematch_nb.sim.world import WorldParams
from ridematch_nb.stream.generate import backfill
from ridematch_nb.stream.kafka_io import Publisher, connect_producer
from ridematch_nb.stream.topics import ensure_topic
from tests.conftest import TEST_PARAMS
from tests.helpers.samples import GOOD_DRIVER_UPDATE
from tests.helpers.tcp_proxy import Proxy

WORLD = WorldParams(seed=5, n_drivers=150, n_riders=400, start="2026-10-05T12:00:00Z")


def _env(topic: str) -> dict:
    return {**os.environ, "RIDEMATCH_TOPIC": topic, "RIDEMATCH_PARAMS": TEST_PARAMS}


def landed_offsets(settings, prefix: str) -> list[tuple[int, int]]:
    """Every (partition, offset) a reader of the lake would see, duplicates included."""
    out = []
    for etype in SCHEMAS:
        table = read_dataset(settings, etype, prefix, columns=["kafka_partition", "kafka_offset"])
        out += zip(
            table["kafka_partition"].to_pylist(), table["kafka_offset"].to_pylist(), strict=True
        )
    rejected = read_rejected(settings, prefix)
    if rejected.num_rows:
        out += zip(
            rejected["kafka_partition"].to_pylist(),
            rejected["kafka_offset"].to_pylist(),
            strict=True,
        )
    return out


def rerun(settings, group: str, prefix: str, topic: str):
    """A normal worker after a failure, cutting chunks differently from the failed one
    (so stale files could not hide by simply being overwritten)."""
    return etl.run(
        settings,
        group=group,
        prefix=prefix,
        topic=topic,
        idle_s=2,
        roll_records=1000,
        progress=False,
    )


def produced(summary) -> set[tuple[int, int]]:
    return {
        (int(p), o) for p, (first, last) in summary.offsets.items() for o in range(first, last + 1)
    }


def assert_exactly_once(settings, prefix, expected: set) -> None:
    seen = landed_offsets(settings, prefix)
    doubled = [k for k, n in Counter(seen).items() if n > 1]
    assert not doubled, f"{len(doubled)} records landed twice, e.g. {doubled[:3]}"
    assert set(seen) == expected
    lake = Lake(settings)
    assert lake.keys(f"{prefix}/_etl/pending/") == [], "a pending manifest was left behind"


@pytest.fixture
def events_topic(settings, unique):
    """A topic holding a small simulated history (3 partitions)."""
    topic = f"test-etl-{unique}"
    summary = backfill(settings, WORLD, 0.2, partitions=3, topic=topic, progress=False)
    return topic, summary


def test_round_trip_lands_every_event_once_with_the_generators_counts(
    settings, unique, events_topic
):
    topic, gen = events_topic
    prefix = f"tests/{unique}"
    summary = etl.run(
        settings,
        group=f"g-{unique}",
        prefix=prefix,
        topic=topic,
        idle_s=2,
        roll_records=2000,
        progress=False,
    )
    assert summary.consumed == gen.delivered
    assert summary.landed == gen.by_type and summary.rejected == {}
    assert summary.partitions == [0, 1, 2] and all(v == 0 for v in summary.lag.values())
    assert_exactly_once(settings, prefix, produced(gen))
    # typed columns, timestamps as UTC
    table = read_dataset(settings, "rider_request", prefix)
    assert str(table.schema.field("timestamp").type) == "timestamp[us, tz=UTC]"
    assert table.schema.field("origin_lat").type == "double"
    # a second run finds nothing new and writes nothing
    again = etl.run(
        settings, group=f"g-{unique}", prefix=prefix, topic=topic, idle_s=2, progress=False
    )
    assert again.consumed == 0 and again.files_written == 0


GOOD = GOOD_DRIVER_UPDATE
POISON = {
    b"this is not json": "not_json",
    encode({**GOOD, "event_type": "driver_teleport"}): "unknown_event_type",
    encode({k: v for k, v in GOOD.items() if k != "lat"}): "missing_field",
    encode({**GOOD, "accept_rate_7d": "high"}): "bad_field",
    encode({**GOOD, "lat": 48.85, "lon": 2.35}): "out_of_range",
    encode({**GOOD, "timestamp": "2026-10-05T12:00:00"}): "bad_timestamp",
}


def test_poison_goes_to_the_rejected_area_and_the_good_records_land(settings, unique):
    topic, prefix = f"test-poison-{unique}", f"tests/{unique}"
    ensure_topic(settings, topic, 2)
    pub = Publisher(connect_producer(settings), topic)
    good = 0
    for i in range(300):
        if i % 50 == 7:
            for raw in POISON:
                pub.send(b"driver_1", raw)
        pub.send(f"driver_{i}".encode(), encode({**GOOD, "driver_id": f"driver_{i}"}))
        good += 1
    pub.flush()
    pub.close()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ridematch_nb",
            "etl",
            "--group",
            f"g-{unique}",
            "--prefix",
            prefix,
            "--idle-s",
            "2",
        ],
        cwd=PROJECT_ROOT,
        env=_env(topic),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rejected = read_rejected(settings, prefix).to_pylist()
    assert len(rejected) == 6 * len(POISON)
    assert Counter(r["reason"] for r in rejected) == Counter(
        {reason: 6 for reason in POISON.values()}
    )
    for row in rejected:
        assert POISON[row["raw"]] == row["reason"]
        assert row["kafka_offset"] >= 0 and row["kafka_partition"] in (0, 1)
    assert read_dataset(settings, "driver_update", prefix).num_rows == good
    assert f"rejected {6 * len(POISON)}" in proc.stdout


@pytest.mark.parametrize("when", ["before-commit", "mid-write"])
def test_sigkill_then_rerun_leaves_every_record_exactly_once(settings, unique, events_topic, when):
    topic, gen = events_topic
    group, prefix = f"g-{unique}", f"tests/{unique}"
    crash = subprocess.run(
        [sys.executable, "-m", "tests.helpers.crash_etl", when, group, prefix, "700"],
        cwd=PROJECT_ROOT,
        env=_env(topic),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crash.returncode == -signal.SIGKILL, crash.stderr[-2000:]
    left = Lake(settings).keys(f"{prefix}/")
    assert any("/_etl/pending/" in k for k in left), "the crash left no pending chunk"
    # the rerun cuts chunks differently, so stale files would not simply be overwritten
    summary = rerun(settings, group, prefix, topic)
    assert summary.stale_objects_removed >= 1
    assert summary.consumed == gen.delivered  # nothing was committed by the dead worker
    assert_exactly_once(settings, prefix, produced(gen))


def test_s3_going_away_mid_run_fails_clearly_and_commits_nothing_unwritten(
    settings, unique, events_topic
):
    topic, gen = events_topic
    group, prefix = f"g-{unique}", f"tests/{unique}"
    proxy = Proxy(settings.s3_port)
    via_proxy = settings.with_overrides(s3_endpoint=f"http://127.0.0.1:{proxy.port}")
    lake = Lake(settings)

    def cut_when_some_landed():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(1 for k in lake.keys(f"{prefix}/") if k.endswith(".parquet")) >= 3:
                proxy.stop()
                return
            time.sleep(0.05)

    cutter = threading.Thread(target=cut_when_some_landed)
    cutter.start()
    with pytest.raises(S3Unavailable) as err:
        etl.run(
            via_proxy,
            group=group,
            prefix=prefix,
            topic=topic,
            idle_s=2,
            roll_records=300,
            progress=False,
        )
    cutter.join()
    assert f"127.0.0.1:{proxy.port}" in str(err.value) and "make stack-up" in str(err.value)

    # every committed offset is covered by files that are really in S3
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group)
    committed = {p: consumer.committed(TopicPartition(topic, p)) or 0 for p in range(3)}
    consumer.close()
    assert sum(committed.values()) < gen.delivered
    written = set(landed_offsets(settings, prefix))
    for p, upto in committed.items():
        assert {(p, o) for o in range(upto)} <= written

    summary = rerun(settings, group, prefix, topic)
    assert summary.consumed == gen.delivered - sum(committed.values())
    assert_exactly_once(settings, prefix, produced(gen))


def test_two_workers_at_once_land_everything_once(settings, unique):
    topic, group, prefix = f"test-two-{unique}", f"g-{unique}", f"tests/{unique}"
    gen = backfill(settings, WORLD, 1.0, partitions=6, topic=topic, progress=False)
    cmd = [
        sys.executable,
        "-m",
        "ridematch_nb",
        "etl",
        "--group",
        group,
        "--prefix",
        prefix,
        "--idle-s",
        "3",
        "--roll-records",
        "2000",
    ]
    workers = [
        subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env=_env(topic),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=240) for w in workers]
    assert [w.returncode for w in workers] == [0, 0], [o[1][-1000:] for o in outputs]
    consumed = [int(o[0].split("consumed ", 1)[1].split()[0]) for o in outputs]
    assert sum(consumed) == gen.delivered
    assert_exactly_once(settings, prefix, produced(gen))


def test_follow_survives_a_broker_restart_and_stops_cleanly(own_broker, unique):
    settings = own_broker.settings
    topic, group, prefix = f"test-follow-{unique}", f"g-{unique}", f"tests/{unique}"
    ensure_topic(settings, topic, 2)

    def produce(n: int, start: int) -> None:
        pub = Publisher(connect_producer(settings), topic)
        for i in range(start, start + n):
            pub.send(f"driver_{i % 40}".encode(), encode({**GOOD, "driver_id": f"driver_{i}"}))
        pub.flush()
        pub.close()

    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ridematch_nb",
            "-v",  # its log explains a failure below
            "etl",
            "--mode",
            "follow",
            "--group",
            group,
            "--prefix",
            prefix,
            "--roll-records",
            "100",
        ],
        cwd=PROJECT_ROOT,
        env={**_env(topic), "RIDEMATCH_KAFKA_BOOTSTRAP": settings.kafka_bootstrap},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def wait_landed(n: int, timeout: float = 90) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = len(landed_offsets(settings, prefix))
            if got >= n:
                return got
            time.sleep(0.5)
        return len(landed_offsets(settings, prefix))

    try:
        produce(1000, 0)
        assert wait_landed(800) >= 800
        own_broker.stop("kafka")
        time.sleep(5)  # long enough for the worker's client to fail polls, not just reconnect
        own_broker.start("kafka")
        produce(1000, 1000)
        after_restart = wait_landed(1800)
    finally:
        worker.send_signal(signal.SIGTERM)
        _out, errs = worker.communicate(timeout=60)
    assert after_restart >= 1800, f"no progress after the broker restart: {errs[-3000:]}"
    assert worker.returncode == 0, errs[-2000:]
    seen = landed_offsets(settings, prefix)
    assert len(seen) == len(set(seen)) == 2000
    assert {p for p, _ in seen} == {0, 1}
