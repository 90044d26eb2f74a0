"""Kafka clients for the pipeline: connections that ride out a broker restart, a
producer that counts real deliveries, group consumers and the one consume loop
(``polls``). Topics as a whole (set-up, deletion, reading back) are in ``topics``.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
)
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
from ridematch_nb.stream.group_timing import KAFKA_HEARTBEAT_MS, KAFKA_SESSION_TIMEOUT_MS

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 5
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


def connect(settings: Settings, make, attempts: int, backoff_s: float):
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
    return connect(settings, lambda: KafkaProducer(**config), attempts, backoff_s)


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

    return connect(settings, make, attempts, backoff_s=1.0)


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
