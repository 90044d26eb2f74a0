"""A consumer written for the original project reads our topic: its check_kafka_events.py
with only the address changed (confluent-kafka, i.e. librdkafka: a group, earliest,
polls of 5 s, the first empty poll ends it), given the group settings our docs name."""

import json
import time

from confluent_kafka import Consumer

from ridematch_nb.contract.events import decode
from ridematch_nb.sim.world import WorldParams
from ridematch_nb.stream.generate import backfill
from ridematch_nb.stream.group_timing import OTHER_CLIENTS_GROUP_SETTINGS

ORIGINAL_POLL_S = 5.0  # check_kafka_events.py: consumer.poll(timeout=5.0)
WORLD = WorldParams(seed=23, n_drivers=60, n_riders=150, start="2026-10-05T12:00:00Z")


def check_events(bootstrap: str, topic: str, group: str, n: int, extra: dict):
    """The original's loop: up to ``n`` messages, giving up at the first empty poll.
    Returns the events read and the seconds until the first one (None: none came)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"} | extra
    )
    consumer.subscribe([topic])
    events, first_s, t0 = [], None, time.perf_counter()
    try:
        while len(events) < n:
            msg = consumer.poll(timeout=ORIGINAL_POLL_S)
            if msg is None:
                break
            if msg.error():
                continue
            events.append(json.loads(msg.value().decode("utf-8")))
            first_s = first_s or time.perf_counter() - t0
    finally:
        consumer.close()
    return events, first_s


def test_the_originals_consumer_reads_events_within_its_poll_with_the_documented_settings(
    settings, unique, capsys
):
    topic = f"test-foreign-{unique}"
    sent = backfill(settings, WORLD, 0.05, partitions=3, topic=topic, progress=False)
    extra = OTHER_CLIENTS_GROUP_SETTINGS
    events, first_s = check_events(
        settings.kafka_bootstrap, topic, f"event-checker-{unique}", 5, extra
    )
    with capsys.disabled():
        took = f"{first_s:.2f} s" if first_s else "never"
        print(f"\nlibrdkafka group member: first record after {took}, with {extra}")
    assert sent.delivered > 5
    assert len(events) == 5, f"the original's loop read {len(events)} of 5 events"
    for event in events:
        decode(json.dumps(event).encode())  # each is one of our events, as we sent it
    assert first_s < ORIGINAL_POLL_S
