"""Kafka clients for the pipeline: a producer that counts real deliveries, topic
set-up, and bounded reads of the topic (for inspection and check-events).

Tansu quirk: ``end_offsets()`` reports the base offset of the last record batch,
not the log end. The high watermark in fetch responses is the true end, so reads
here stop when every partition has reached it (and the topic has gone quiet).
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from kafka.structs import OffsetAndMetadata
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_fixed,
)

from ridematch_nb.config import Settings
from ridematch_nb.events import MAX_VALUE_BYTES

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 5
# Group joins on Tansu wait about half the session timeout; keep it short.
KAFKA_SESSION_TIMEOUT_MS = 6000
KAFKA_HEARTBEAT_MS = 2000
# Measured here: batching decides the producer's rate (defaults gave 12-29k/s).
PRODUCER_TUNING = {"batch_size": 512 * 1024, "linger_ms": 20}
# A backfill has no reader waiting for its events, and Tansu keeps one S3 object per
# produced batch and lists every object of a partition on each fetch: a history sent
# in small batches reads back slower the longer it gets (a week in 10 KB batches: 150
# events/s). So a backfill waits for full batches of a MiB.
BACKFILL_TUNING = {"batch_size": 2**20, "linger_ms": 5000, "max_request_size": 8 * 2**20}
# Large fetches: Tansu answers one partition at a time, and small fetches crawl.
FETCH_TUNING = {
    "max_poll_records": 20_000,
    "fetch_max_bytes": 64 * 2**20,
    "max_partition_fetch_bytes": 16 * 2**20,
}


class KafkaUnavailable(RuntimeError):
    """The broker cannot be reached; the message names the address and the fix."""


class TopicResetError(RuntimeError):
    """A topic could not be recreated empty: appending would mix two histories."""


def _unavailable(settings: Settings, attempts: int, exc: Exception) -> KafkaUnavailable:
    return KafkaUnavailable(
        f"Kafka at {settings.kafka_bootstrap} is not reachable after {attempts} attempt"
        f"{'s' if attempts > 1 else ''} ({exc}).\n"
        f"  fix: start the local stack with `make stack-up`, "
        f"or check services.kafka_bootstrap in {settings.params_file.name}"
    )


def _connect(settings: Settings, make, attempts: int, backoff_s: float):
    """Call ``make()`` until the broker answers, ``attempts`` times at most."""

    def warn(state: RetryCallState) -> None:
        log.warning(
            "Kafka at %s: attempt %d/%d failed (%s)",
            settings.kafka_bootstrap,
            state.attempt_number,
            attempts,
            state.outcome.exception(),
        )

    retrying = Retrying(
        retry=retry_if_exception_type(KafkaError),
        stop=stop_after_attempt(attempts),
        wait=wait_fixed(backoff_s),
        after=warn,
    )
    try:
        return retrying(make)
    except RetryError as exc:
        last = exc.last_attempt.exception()
        raise _unavailable(settings, attempts, last) from last


def connect_producer(
    settings: Settings, attempts: int = CONNECT_ATTEMPTS, backoff_s: float = 1.0, **overrides
) -> KafkaProducer:
    """An idempotent, acks=all producer; retries the connection ``attempts`` times."""
    config = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "bootstrap_timeout_ms": 3000,
        **PRODUCER_TUNING,
        **overrides,
    }
    return _connect(settings, lambda: KafkaProducer(**config), attempts, backoff_s)


def group_consumer(
    settings: Settings,
    group: str,
    topic: str | None = None,
    from_beginning: bool = True,
    listener=None,
    attempts: int = CONNECT_ATTEMPTS,
) -> KafkaConsumer:
    """A consumer-group member with manual commits, short sessions and large fetches,
    subscribed to ``topic`` (the profile's by default)."""

    def make() -> KafkaConsumer:
        consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            session_timeout_ms=KAFKA_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=KAFKA_HEARTBEAT_MS,
            bootstrap_timeout_ms=3000,
            **FETCH_TUNING,
        )
        consumer.subscribe([topic or settings.topic], listener=listener)
        return consumer

    return _connect(settings, make, attempts, backoff_s=1.0)


# How long a follow loop rides out a broker it cannot reach before it gives up.
OUTAGE_GIVE_UP_S = 120.0


def polls(
    consumer: KafkaConsumer, settings: Settings, stop: dict | None = None, timeout_ms: int = 500
) -> Iterator[dict]:
    """The one consume loop of the project: every poll of ``consumer`` (empty ones too, so
    the caller can keep house between fetches) until ``stop["now"]`` turns True or the
    caller breaks out. The ETL, the push loop, check-events, notebook 02's read and the
    bench all consume through it.

    A broker that cannot be reached (a restart: kafka-python 3.0 raises connection
    errors out of poll while it reconnects) is retried every second, for
    ``OUTAGE_GIVE_UP_S`` at most, then KafkaUnavailable; a stop request ends the wait."""

    def stopping(_state: RetryCallState | None = None) -> bool:
        return bool(stop and stop["now"])

    def warn(state: RetryCallState) -> None:
        if state.attempt_number == 1:
            exc = state.outcome.exception()
            log.warning("Kafka at %s unreachable (%s); retrying", settings.kafka_bootstrap, exc)

    retrying = Retrying(
        retry=retry_if_exception_type((KafkaConnectionError, KafkaTimeoutError)),
        stop=stop_after_delay(OUTAGE_GIVE_UP_S) | stopping,
        wait=wait_fixed(1.0),
        before_sleep=warn,
    )
    while not stopping():
        try:
            batch = retrying(consumer.poll, timeout_ms=timeout_ms)
        except RetryError as exc:
            if stopping():
                return
            last = exc.last_attempt.exception()
            raise _unavailable(settings, 1, last) from last
        if retrying.statistics.get("attempt_number", 1) > 1:
            log.info("Kafka at %s reachable again", settings.kafka_bootstrap)
        yield batch


@contextlib.contextmanager
def stop_on_sigterm():
    """A flag dict whose ``now`` turns True on SIGTERM, so follow loops end cleanly
    (writing and committing what they hold). Outside the main thread signals cannot be
    caught; the flag then only changes by other means (Ctrl+C, bounds)."""
    stop = {"now": False}
    try:
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    except ValueError:
        previous = None
    try:
        yield stop
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def admin_client(settings: Settings, attempts: int = 1) -> KafkaAdminClient:
    return _connect(
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
    consumer = _connect(
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


@dataclass
class Delivery:
    """Counts from the producer's own acknowledgements: nothing counts as delivered unacked."""

    sent: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    # partition -> [first, last] offset acknowledged: exactly where the records went
    offsets: dict[int, list[int]] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return self.sent - self.delivered - self.failed

    def _ok(self, meta) -> None:
        self.delivered += 1
        span = self.offsets.get(meta.partition)
        if span is None:
            self.offsets[meta.partition] = [meta.offset, meta.offset]
        else:
            span[0], span[1] = min(span[0], meta.offset), max(span[1], meta.offset)

    def _err(self, exc: Exception) -> None:
        self.failed += 1
        if len(self.errors) < 5:
            self.errors.append(f"{type(exc).__name__}: {exc}")


class Publisher:
    """Sends keyed, pre-encoded records to one topic and tracks their delivery."""

    def __init__(self, producer: KafkaProducer, topic: str) -> None:
        self.producer, self.topic, self.delivery = producer, topic, Delivery()
        self._ok, self._err = self.delivery._ok, self.delivery._err  # bound once, not per send

    def send(self, key: bytes, value: bytes) -> None:
        future = self.producer.send(self.topic, key=key, value=value)
        self.delivery.sent += 1
        future.add_callback(self._ok).add_errback(self._err)

    def flush(self, timeout_s: float = 60.0) -> Delivery:
        self.producer.flush(timeout=timeout_s)
        return self.delivery

    def close(self) -> None:
        self.producer.close(timeout=10)


def reader(settings: Settings, topic: str) -> tuple[KafkaConsumer, list[TopicPartition]]:
    """A consumer outside any group, assigned every partition of ``topic`` (which must
    exist), with the pipeline's fetch settings; positions are the caller's to set."""
    consumer = _connect(
        settings,
        lambda: KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            bootstrap_timeout_ms=3000,
            **FETCH_TUNING,
        ),
        attempts=1,
        backoff_s=0,
    )
    parts = consumer.partitions_for_topic(topic)
    if not parts:
        consumer.close()
        raise UnknownTopicOrPartitionError(
            f"topic {topic!r} does not exist on {settings.kafka_bootstrap}; "
            "generate events first (notebook 01 or `python -m ridematch_nb generate`)"
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
