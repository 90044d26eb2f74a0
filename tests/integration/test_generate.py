import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from ridematch_nb.config import PROJECT_ROOT
from ridematch_nb.contract.events import decode, encode, key_of
from ridematch_nb.lake.storage import Lake
from ridematch_nb.ports import free_port
from ridematch_nb.sim.world import WorldParams, simulate
from ridematch_nb.stream.generate import backfill, realtime
from ridematch_nb.stream.kafka_io import KafkaUnavailable, connect_producer
from ridematch_nb.stream.topics import read_records
from tests.conftest import TEST_PARAMS

WORLD = WorldParams(seed=21, n_drivers=120, n_riders=300, start="2026-10-05T12:00:00Z")


def _broker_batch_objects(settings, topic: str) -> list[str]:
    """The S3 keys of the batches Tansu stored for ``topic`` (its default cluster id)."""
    lake = Lake(replace(settings, bucket=settings.stack.broker_bucket))
    return [k for k in lake.keys(f"clusters/tansu_cluster/topics/{topic}/") if "/records/" in k]


def test_backfill_delivers_exactly_the_simulated_stream(settings, unique):
    topic = f"test-gen-{unique}"
    summary = backfill(settings, WORLD, 0.25, partitions=3, topic=topic, progress=False)
    expected = list(simulate(WORLD, 0.25))
    assert summary.sent == summary.delivered == len(expected) and summary.failed == 0
    assert sum(summary.by_type.values()) == summary.delivered
    h = hashlib.sha256()
    for e in expected:
        h.update(key_of(e) + b"\0" + encode(e) + b"\n")
    assert summary.stream_sha256 == h.hexdigest()

    records = read_records(settings, topic, idle_s=2.0)
    assert len(records) == len(expected)
    # per key, Kafka keeps the simulator's order byte for byte
    by_key_kafka, by_key_sim = {}, {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_key_kafka.setdefault(r.key, []).append(r.value)
    for e in expected:
        by_key_sim.setdefault(key_of(e), []).append(encode(e))
    assert by_key_kafka == by_key_sim

    # Tansu keeps one S3 object per produced batch and lists them all on each fetch:
    # a backfill sends few, large batches (10 KB ones made a week unreadable)
    if settings.stack is not None:  # the embedded Tansu, whose bucket we can list
        objects = _broker_batch_objects(settings, topic)
        assert 3 <= len(objects) <= 2 * 3, f"{len(objects)} objects for {len(records)} records"

    # a rerun recreates the topic: same stream, not a second copy
    again = backfill(settings, WORLD, 0.25, partitions=3, topic=topic, progress=False)
    assert again.stream_sha256 == summary.stream_sha256
    assert len(read_records(settings, topic, idle_s=2.0)) == len(expected)


def test_realtime_prints_the_seed_progress_line_and_counts_deliveries(settings, unique):
    lines = []
    summary = realtime(
        settings,
        WORLD,
        seconds=3,
        topic=f"test-rt-{unique}",
        partitions=2,
        say=lines.append,
        every=1,
    )
    progress = [line for line in lines if line.startswith("📊 Batch #")]
    assert len(progress) == 3
    assert "Delivered:" in progress[0] and "Total:" in progress[0] and "Pending:" in progress[0]
    assert summary.delivered == summary.sent > 0 and summary.ticks == 3
    assert any("Connected to Kafka" in line for line in lines)


def test_broker_down_gives_up_after_five_attempts_naming_the_address(settings):
    dead = settings.with_overrides(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    with pytest.raises(KafkaUnavailable) as err:
        connect_producer(dead, backoff_s=0.1)
    message = str(err.value)
    assert dead.kafka_bootstrap in message and "5 attempts" in message
    assert "make stack-up" in message


def _cli(*args, env=None, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "ridematch_nb", *args],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


def test_cli_generate_with_the_broker_down_exits_with_a_clear_message(settings):
    port = free_port()
    proc = _cli(
        "generate",
        "--mode",
        "backfill",
        "--hours",
        "0.01",
        "--params",
        TEST_PARAMS,
        env={"RIDEMATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}"},
    )
    assert proc.returncode == 2
    assert f"127.0.0.1:{port}" in proc.stderr and "5 attempts" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_check_events_prints_the_latest_events(settings, unique):
    topic = f"test-check-{unique}"
    summary = backfill(settings, WORLD, 0.1, partitions=3, topic=topic, progress=False)
    proc = _cli("check-events", "4", "--params", TEST_PARAMS, env={"RIDEMATCH_TOPIC": topic})
    assert proc.returncode == 0, proc.stderr
    blocks = proc.stdout.split("--- partition")[1:]
    assert len(blocks) == 4
    events = [json.loads(b.split("\n", 1)[1]) for b in blocks]
    for event in events:
        decode(json.dumps(event).encode())
    tail = [encode(e) for e in list(simulate(WORLD, 0.1))[-200:]]
    assert all(encode(e) in tail for e in events), "check-events did not show the newest events"
    assert summary.delivered > 1000
