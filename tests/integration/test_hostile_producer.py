"""A hostile producer on the real stack: every consumer of the topic reads the corpus
through, gives each value its reason, and lands or pushes every valid event."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from ridematch_nb.bench import events as bench_events
from ridematch_nb.contract.decoder import to_frames
from ridematch_nb.contract.events import encode, key_of
from ridematch_nb.features import online
from ridematch_nb.features import store as features
from ridematch_nb.lake import etl
from ridematch_nb.lake.storage import read_rejected
from ridematch_nb.sim.world import WorldParams, simulate
from ridematch_nb.stream.kafka_io import Publisher, connect_producer
from ridematch_nb.stream.topics import ensure_topic, read_records
from tests.conftest import TEST_PARAMS
from tests.helpers.hostile import HOSTILE

REASONS = dict(Counter(reason for _, reason in HOSTILE.values()))


@pytest.fixture(scope="module")
def hostile_topic(settings):
    """One partition: valid events with the whole corpus spread among them."""
    import uuid

    topic = f"test-hostile-{uuid.uuid4().hex[:8]}"
    ensure_topic(settings, topic, 1)
    valid = list(simulate(WorldParams(seed=8, n_drivers=40, n_riders=80, request_rate=1.0), 0.1))
    corpus = list(HOSTILE.values())
    pub = Publisher(connect_producer(settings, max_request_size=4 * 2**20), topic)
    step = max(1, len(valid) // len(corpus))
    sent_bad: dict[int, tuple] = {}
    for i, event in enumerate(valid):
        if i % step == 0 and corpus:
            raw, reason = corpus.pop()
            sent_bad[pub.delivery.sent] = (raw, reason)
            pub.send(b"hostile", raw)
        pub.send(key_of(event), encode(event))
    for raw, reason in corpus:
        sent_bad[pub.delivery.sent] = (raw, reason)
        pub.send(b"hostile", raw)
    delivery = pub.flush()
    pub.close()
    assert delivery.failed == 0 and delivery.offsets[0][0] == 0
    return topic, valid, sent_bad  # offset -> (raw, reason): one partition, from 0


def test_etl_rejects_each_value_with_its_reason_raw_bytes_and_offset(settings, hostile_topic):
    topic, valid, bad = hostile_topic
    prefix = f"tests/hostile-{topic}"
    summary = etl.run(settings, group=f"g-{topic}", prefix=prefix, topic=topic, idle_s=1.0)
    assert summary.rejected == REASONS
    assert sum(summary.landed.values()) == len(valid)
    rejected = read_rejected(settings, prefix).to_pylist()
    got = {row["kafka_offset"]: (row["raw"], row["reason"]) for row in rejected}
    assert got == bad


def test_push_loop_reads_through_the_corpus(settings, hostile_topic, unique):
    topic, valid, _ = hostile_topic
    isolated = settings.with_overrides(prefix=f"tests/{unique}")
    fs = features.apply(isolated, f"t_{unique}")
    counts = online.stream_to_online(
        isolated, fs, mode="drain", from_beginning=True, idle_s=1.0, topic=topic, group=unique
    )
    assert counts["rejected"] == REASONS
    assert counts["read"] == len(valid) + len(HOSTILE)
    drivers = {e["driver_id"] for e in valid if e["event_type"] == "driver_update"}
    assert counts["pushed"] == len(drivers)  # the newest state of each, one poll here


def test_notebook_02s_reading_and_decoding_count_the_corpus(settings, hostile_topic):
    topic, valid, _ = hostile_topic
    records = read_records(settings, topic, idle_s=1.0)
    frames, rejected = to_frames(r.value for r in records)
    assert rejected == REASONS
    assert sum(len(df) for df in frames.values()) == len(valid)


def test_check_events_prints_the_latest_values_whatever_they_hold(settings, hostile_topic):
    topic, valid, _ = hostile_topic
    env = {**os.environ, "RIDEMATCH_TOPIC": topic, "RIDEMATCH_PARAMS": TEST_PARAMS}
    n = len(valid) + len(HOSTILE)
    out = subprocess.run(
        [sys.executable, "-m", "ridematch_nb", "check-events", str(n)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("--- partition 0 offset") == n
    assert "null (a tombstone)" in out.stdout and "too large to show" in out.stdout


def test_the_bench_naive_reader_counts_what_it_cannot_read(settings, hostile_topic):
    topic, valid, _ = hostile_topic
    result = bench_events.naive(settings, topic, len(valid) + len(HOSTILE))
    assert result["n"] == len(valid) + len(HOSTILE)
    assert result["unreadable"] >= 10
