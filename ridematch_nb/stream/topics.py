"""Topics as a whole: the admin client, creating, deleting and resetting a topic and
its group offsets, and bounded reads of a topic back (for inspection and check-events).

Tansu quirk: ``end_offsets()`` reports the base offset of the last record batch,
not the log end. The high watermark in fetch responses is the true end, so reads
here stop when every partition has reached it (and the topic has gone quiet).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError
from kafka.structs import OffsetAndMetadata

from ridematch_nb.config import Settings
from ridematch_nb.contract.events import MAX_VALUE_BYTES
from ridematch_nb.stream.kafka_io import FETCH_TUNING, TopicResetError, connect, polls


def admin_client(settings: Settings, attempts: int = 1) -> KafkaAdminClient:
    return connect(
        settings,
        lambda: KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap,
            bootstrap_timeout_ms=3000,
            # creating and deleting topics: Tansu writes them to S3, which on a busy
            # machine took longer than 10 s (two backfills at once timed out)
            request_timeout_ms=30000,
        ),
        attempts,
        1.0,
    )


def kafka_check(bootstrap: str, timeout_s: float = 3.0) -> list[str]:
    """Topics the broker lists; raises if it does not answer the Kafka protocol."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout_s * 1000),
        bootstrap_timeout_ms=int(timeout_s * 1000),
    )
    try:
        return admin.list_topics()
    finally:
        admin.close()


def ensure_topic(
    settings: Settings,
    topic: str,
    partitions: int,
    reset: bool = False,
    delete_timeout_s: float = 30.0,
) -> int:
    """Create the topic if missing (``reset`` deletes it first); returns its partition count.

    A reset either gives a new, empty topic or raises TopicResetError: a topic that
    outlives its deletion would silently append the new history to the old one."""
    admin = admin_client(settings)
    try:
        if reset:
            delete_topic(admin, topic, delete_timeout_s)
        try:
            admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        except TopicAlreadyExistsError as exc:
            if reset:
                raise TopicResetError(
                    f"topic {topic!r} on {settings.kafka_bootstrap} was deleted but exists "
                    "again: another client recreated it; run the reset again"
                ) from exc
        described = admin.describe_topics([topic])[0]
        return len(described["partitions"])
    finally:
        admin.close()


def delete_topic(admin, topic: str, timeout_s: float = 30.0, poll_s: float = 0.2) -> None:
    """Delete ``topic`` if it exists and wait until the broker no longer lists it;
    TopicResetError when it is still listed after ``timeout_s``."""
    if topic not in admin.list_topics():
        return
    admin.delete_topics([topic])
    deadline = time.monotonic() + timeout_s
    while topic in admin.list_topics():
        if time.monotonic() >= deadline:
            raise TopicResetError(
                f"topic {topic!r} is still listed {timeout_s:.0f} s after its deletion; "
                "recreating it now would append to its old history.\n  fix: wait and run "
                "again, or restart the broker (make stack-down && make stack-up)"
            )
        time.sleep(poll_s)


def reset_group_offsets(settings: Settings, group: str, topic: str, partitions: int) -> None:
    """Commit offset 0 for every partition of ``topic`` in ``group``: the group starts
    from the beginning of a recreated topic."""
    consumer = connect(
        settings,
        lambda: KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            bootstrap_timeout_ms=3000,
        ),
        attempts=1,
        backoff_s=0,
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.commit({tp: OffsetAndMetadata(0, None, -1) for tp in tps})
    finally:
        consumer.close()


def reader(
    settings: Settings,
    topic: str,
    group: str | None = None,
    from_beginning: bool = False,
    wait_s: float = 0.0,
    attempts: int = 1,
) -> tuple[KafkaConsumer, list[TopicPartition]]:
    """A consumer assigned every partition of ``topic`` by hand, with the pipeline's fetch
    settings, waiting up to ``wait_s`` for the topic to exist.

    Without ``group`` its positions are the caller's to set. With one it starts where the
    group committed (else at the start or the end, ``from_beginning``) and ``commit()``
    stores its offsets there, outside any generation, which the broker accepts for a group
    without members: no group join, so no wait for one (a join on the embedded broker
    takes half the session timeout). One such reader per group: two would both read all.
    """
    consumer = connect(
        settings,
        lambda: KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            bootstrap_timeout_ms=3000,
            **FETCH_TUNING,
        ),
        attempts=attempts,
        backoff_s=1.0,
    )
    deadline = time.monotonic() + wait_s
    while not (parts := consumer.partitions_for_topic(topic)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not parts:
        consumer.close()
        raise UnknownTopicOrPartitionError(
            f"topic {topic!r} does not exist on {settings.kafka_bootstrap}"
            + (f" (waited {wait_s:g} s)" if wait_s else "")
            + "; generate events first (notebook 01 or `python -m ridematch_nb generate`)"
        )
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    return consumer, tps


def caught_up(consumer: KafkaConsumer, tps) -> bool:
    """Every partition's read position has reached the high watermark of its last fetch."""
    for tp in tps:
        high = consumer.highwater(tp)
        if high is None or consumer.position(tp) < high:
            return False
    return True


def _drain(
    consumer: KafkaConsumer,
    tps: list[TopicPartition],
    settings: Settings,
    limit: int | None,
    idle_s: float,
) -> Iterator:
    """Records until ``limit``, or until every partition is caught up and nothing has
    arrived for ``idle_s``."""
    seen, quiet_since = 0, time.monotonic()
    for batch in polls(consumer, settings, timeout_ms=250):
        if limit is not None and seen >= limit:
            return
        if not batch:
            if caught_up(consumer, tps) and time.monotonic() - quiet_since >= idle_s:
                return
            continue
        quiet_since = time.monotonic()
        for records in batch.values():
            for record in records:
                yield record
                seen += 1
                if limit is not None and seen >= limit:
                    return


def read_records(
    settings: Settings, topic: str, max_events: int | None = None, idle_s: float = 2.0
) -> list:
    """Raw records from the start of every partition, bounded by count and quiet time."""
    consumer, tps = reader(settings, topic)
    try:
        consumer.seek_to_beginning(*tps)
        return list(_drain(consumer, tps, settings, max_events, idle_s))
    finally:
        consumer.close()


def latest_records(settings: Settings, topic: str, n: int, idle_s: float = 1.5) -> list:
    """The newest ``n`` records of the topic, oldest first (the seed's check_kafka_events).

    Each partition is read from at least ``n`` records before its reported end (which
    on Tansu can be short of the real end) through to the real end.
    """
    consumer, tps = reader(settings, topic)
    try:
        ends = consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(0, ends[tp] - n))
        records = list(_drain(consumer, tps, settings, None, idle_s))
    finally:
        consumer.close()
    records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
    return records[-n:] if n else []


def pretty(record) -> str:
    """One record as the seed's checker showed it: where it sits, its key, its JSON."""
    value = record.value
    if value is None:
        body = "null (a tombstone)"
    elif len(value) > MAX_VALUE_BYTES:
        body = f"{len(value):,} bytes, too large to show: {value[:120]!r}..."
    else:
        try:
            body = json.dumps(json.loads(value), indent=2)
        except Exception as exc:  # any value is shown, whatever it holds
            body = f"{value[:200]!r}  (not readable JSON: {type(exc).__name__})"
    key = record.key.decode(errors="replace") if record.key else None
    return f"--- partition {record.partition} offset {record.offset} key {key}\n{body}"
