"""Kafka -> validated, typed, partitioned parquet in S3: nothing lost, nothing doubled.

The promises of a sink connector, kept here in a few rules:

- Records are cut into chunks per partition, on record count or on event time
  (never on the wall clock), so the same records from the same offset make the
  same chunks. A chunk's files are named by (topic, partition, first, last offset).
- A chunk is written in order: a pending manifest listing its objects, the
  objects themselves (each PUT durable when it returns), then the offset commit,
  then the manifest is removed. Offsets are committed only for records in files.
- When a partition is assigned, manifests at or past its committed offset belong
  to an attempt that never committed: their objects are deleted before the
  records are read again, so a crash at any point leaves nothing a reader counts twice.
  A commit refused because the group moved on leaves its manifest to that next owner.
- Bad records (not JSON, unknown type, missing or mistyped fields, coordinates
  outside the world, naive timestamps) go to ``_rejected/`` with their raw bytes,
  reason, partition and offset, and are counted: consumed = landed + rejected.
"""

from __future__ import annotations

import json
import logging
import queue
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from operator import attrgetter

import numpy as np
from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata
from tqdm.auto import tqdm

from ridematch_nb.config import ETL_GROUP, ROLL_EVENT_S, ROLL_RECORDS, ParameterError, Settings
from ridematch_nb.lake.storage import Lake, dataset_prefix, forget_topic_files, pending_key
from ridematch_nb.lake.writer import WriterProcess
from ridematch_nb.stream.kafka_io import group_consumer, polls, stop_on_sigterm
from ridematch_nb.stream.topics import reset_group_offsets

log = logging.getLogger(__name__)

MODES = ("drain", "follow")
# the fields of a ConsumerRecord the writer needs (attrgetter: the cheapest way to copy)
_VALUE, _KEY = attrgetter("value"), attrgetter("key")
_TIMESTAMP, _OFFSET = attrgetter("timestamp"), attrgetter("offset")


@dataclass
class ETLSummary:
    """What a run did. ``consumed == sum(landed) + sum(rejected)`` always holds."""

    mode: str
    group: str
    topic: str
    consumed: int = 0
    landed: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    files_written: int = 0
    chunks: int = 0
    stale_objects_removed: int = 0
    partitions: list[int] = field(default_factory=list)
    seconds: float = 0.0
    events_per_s: float = 0.0
    first_records_s: float = 0.0  # until the first records came: mostly the group join
    lag: dict[int, int] = field(default_factory=dict)  # partition -> records behind (lower bound)

    def to_dict(self) -> dict:
        return asdict(self)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, etl: ETL) -> None:
        self.etl = etl

    # Runs on the client's IO thread, which may not block: no writes or commits here.
    def on_partitions_revoked(self, revoked) -> None:
        # Unwritten, uncommitted: whoever owns the partition next reads these again.
        # The writer drops its buffer when the loop next runs (sends may block).
        for tp in revoked:
            self.etl.next_offset.pop(tp.partition, None)
            self.etl.revoked.add(tp.partition)
            log.debug("revoked partition %d", tp.partition)

    def on_partitions_assigned(self, assigned) -> None:
        self.etl.to_clean.update(tp.partition for tp in assigned)
        self.etl.summary.partitions = sorted(
            set(self.etl.summary.partitions) | {tp.partition for tp in assigned}
        )


class ETL:
    """One worker of the consumer group. Several workers split the partitions."""

    def __init__(
        self,
        settings: Settings,
        group: str = ETL_GROUP,
        prefix: str | None = None,
        roll_records: int = ROLL_RECORDS,
        roll_event_s: float = ROLL_EVENT_S,
        topic: str | None = None,
    ) -> None:
        if roll_records < 1:
            raise ParameterError(f"parameter roll_records={roll_records!r} must be >= 1")
        if roll_event_s <= 0:
            raise ParameterError(f"parameter roll_event_s={roll_event_s!r} must be positive")
        self.settings, self.group = settings, group
        self.prefix = dataset_prefix(settings, prefix)
        self.topic = topic or settings.topic
        self.roll_records, self.roll_event_s = roll_records, roll_event_s
        self.writer = WriterProcess(settings, self.prefix, self.topic, roll_records, roll_event_s)
        try:
            self._join(settings, group)
        except BaseException:
            self.writer.close()  # a half-built worker must not leave its writer running
            raise

    def _join(self, settings: Settings, group: str) -> None:
        """The worker's state and its membership of the group (may fail: no broker)."""
        self.lake = Lake(settings)
        self.to_clean: set[int] = set()
        self.revoked: set[int] = set()
        # partition -> offset of the next record to take: what this worker has really
        # taken, unlike the client's position, which survives a dropped buffer
        self.next_offset: dict[int, int] = {}
        self.summary = ETLSummary(mode="", group=group, topic=self.topic)
        self.landed: Counter = Counter()
        self.rejected: Counter = Counter()
        self.consumer = group_consumer(settings, group, self.topic, listener=_Rebalance(self))

    # ---- crash recovery ---------------------------------------------------------------

    def _take_assignment(self) -> set[int]:
        """For newly assigned partitions: delete what attempts that never committed left
        behind, and rewind to the committed offset (the client may have kept a read
        position past records whose buffer was dropped at the rebalance). Returns them."""
        fresh = set(self.to_clean)
        if fresh:
            self._settle_until("sync", "synced")  # no write may race the clean-up
        while self.to_clean:
            partition = self.to_clean.pop()
            tp = TopicPartition(self.topic, partition)
            committed = self.consumer.committed(tp) or 0
            log.debug("assigned partition %d: rewind to committed offset %d", partition, committed)
            self.consumer.seek(tp, committed)
            self.next_offset[partition] = committed
            prefix = pending_key(self.prefix, self.topic, partition, 0, 0).rsplit("/", 1)[0] + "/"
            for key in self.lake.keys(prefix):
                first = int(key.rsplit("/", 1)[1].split("+")[0])
                stale = []
                if first >= committed:
                    stale = json.loads(self.lake.get(key))["keys"]
                    log.info(
                        "partition %d: removing %d objects of an uncommitted chunk at %d",
                        partition,
                        len(stale),
                        first,
                    )
                self.lake.delete([*stale, key])
                self.summary.stale_objects_removed += len(stale)
        return fresh

    # ---- writing ----------------------------------------------------------------------

    def _settle(self, block: bool = False, marker: str | None = None) -> None:
        """Act on the writer's replies, in the order it wrote: commit each written chunk
        (so a partition's offsets only move forward over files that exist), account for
        dropped buffers, raise its errors. With ``block``, waits until ``marker`` comes."""
        while True:
            try:
                replies = self.writer.replies
                reply = replies.get(timeout=1.0) if block else replies.get_nowait()
            except queue.Empty:
                if not block:
                    return
                continue
            kind = reply[0]
            if kind == "written":
                self._committed(reply[1])
            elif kind == "dropped":
                self.summary.consumed -= reply[1]
            elif kind == "error":
                raise reply[1]
            elif kind == "died":
                raise self.writer.died()
            elif kind == marker:
                return

    def _settle_until(self, request: str, marker: str) -> None:
        self.writer.send(request)
        self._settle(block=True, marker=marker)

    def _committed(self, chunk: dict) -> None:
        partition, first, last = chunk["partition"], chunk["first"], chunk["last"]
        try:
            # written after the partition was taken away: the broker would still accept
            # the commit from a live member, so it is refused here
            if TopicPartition(self.topic, partition) not in self.consumer.assignment():
                raise CommitFailedError("partition no longer assigned to this worker")
            self._commit(partition, last + 1)
        except CommitFailedError:
            # The group moved on (a rebalance, or the broker forgot this member across a
            # restart): the partition is not ours to commit. The manifest stays, so whoever
            # owns the partition next deletes these files and reads the records again.
            log.warning(
                "partition %d moved on before offsets %d-%d were committed; "
                "its next owner rewrites them",
                partition,
                first,
                last,
            )
            self.summary.consumed -= chunk["count"]
            self.next_offset.pop(partition, None)
            return
        self.writer.send("delete", [chunk["manifest"]])
        self.landed.update(chunk["landed"])
        self.rejected.update(chunk["rejected"])
        self.summary.files_written += chunk["files"]
        self.summary.chunks += 1

    def _commit(self, partition: int, next_offset: int, attempts: int = 10) -> None:
        tp = TopicPartition(self.topic, partition)
        for attempt in range(1, attempts + 1):
            try:
                self.consumer.commit({tp: OffsetAndMetadata(next_offset, None, -1)})
                log.debug("committed partition %d at %d", partition, next_offset)
                return
            except CommitFailedError:
                raise  # the group moved on: this worker no longer owns the partition
            except RebalanceInProgressError as exc:
                # the group is moving: only the next poll() completes the rebalance, so a
                # retry here cannot succeed, and the partition may not be ours after it
                raise CommitFailedError(str(exc)) from exc
            except KafkaError as exc:
                if attempt == attempts:
                    raise
                log.warning("commit of partition %d failed (%s); retrying", partition, exc)
                time.sleep(min(5.0, 0.5 * attempt))

    def _take(self, partition: int, polled: list, limit: int | None) -> bool:
        """Hand one partition's polled records to the writer. Takes at most ``limit``
        records; returns True when it did."""
        stop = limit is not None and len(polled) >= limit
        records = polled[:limit] if stop else polled
        self.writer.send(
            "take",
            partition,
            list(map(_VALUE, records)),
            list(map(_KEY, records)),
            list(map(_TIMESTAMP, records)),
            np.fromiter(map(_OFFSET, records), np.int64, len(records)),
        )
        self.next_offset[partition] = records[-1].offset + 1
        self.summary.consumed += len(records)
        return stop

    def _drop_revoked(self) -> None:
        while self.revoked:
            self.writer.send("drop", self.revoked.pop())

    # ---- the loop ---------------------------------------------------------------------

    def _caught_up(self) -> bool:
        """Every assigned partition taken up to the high watermark of its last fetch."""
        for tp in self.consumer.assignment():
            high, taken = self.consumer.highwater(tp), self.next_offset.get(tp.partition)
            if high is None or taken is None or taken < high:
                return False
        return True

    def run(
        self,
        mode: str = "drain",
        idle_s: float = 5.0,
        max_records: int | None = None,
        progress: bool = True,
        join_timeout_s: float = 60.0,
    ) -> ETLSummary:
        """Consume and land until done (drain) or until Ctrl+C / SIGTERM (follow)."""
        if mode not in MODES:
            raise ParameterError(f"parameter mode={mode!r} must be one of {MODES}")
        self.summary.mode = mode
        t0 = self.t0 = time.perf_counter()
        try:
            with (
                stop_on_sigterm() as stop,
                tqdm(unit="ev", desc=f"etl {mode}", disable=not progress, mininterval=0.5) as bar,
            ):
                self._loop(mode, idle_s, max_records, join_timeout_s, stop, bar)
        except KeyboardInterrupt:
            log.info("interrupted: writing what is buffered, then committing")
        self._drop_revoked()
        self._settle_until("flush", "flushed")  # what the writer holds, written and committed
        self._finish(t0)
        return self.summary

    def _loop(self, mode, idle_s, max_records, join_timeout_s, stop, bar) -> None:
        quiet_since, joined_by = time.monotonic(), time.monotonic() + join_timeout_s
        for batch in polls(self.consumer, self.settings, stop):
            self._drop_revoked()
            rewound = self._take_assignment()
            self._settle()  # commit what the writer finished since the last poll
            batch = {tp: recs for tp, recs in batch.items() if tp.partition not in rewound}
            if batch:
                quiet_since = time.monotonic()
                if not self.summary.first_records_s:
                    self.summary.first_records_s = round(time.perf_counter() - self.t0, 3)
                for tp, records in batch.items():
                    left = max_records - self.summary.consumed if max_records else None
                    done = self._take(tp.partition, records, left)
                    bar.update(min(len(records), left) if left is not None else len(records))
                    if done:
                        return
                continue
            if mode == "follow":
                continue
            if not self.consumer.assignment():
                if time.monotonic() > joined_by:
                    raise TimeoutError(
                        f"ETL worker got no partition of {self.topic} from group "
                        f"{self.group} within {join_timeout_s:.0f} s"
                    )
                continue
            if time.monotonic() - quiet_since >= idle_s and self._caught_up():
                return

    def _finish(self, t0: float) -> None:
        s = self.summary
        s.landed, s.rejected = (
            dict(sorted(self.landed.items())),
            dict(sorted(self.rejected.items())),
        )
        s.seconds = round(time.perf_counter() - t0, 3)
        s.events_per_s = round(s.consumed / max(s.seconds, 1e-9), 1)
        assigned = list(self.consumer.assignment())
        if assigned:
            # the high watermark of the last fetch is the true log end on every broker
            ends = self.consumer.end_offsets(assigned)
            s.lag = {
                tp.partition: max(
                    0,
                    (self.consumer.highwater(tp) or ends[tp]) - (self.consumer.committed(tp) or 0),
                )
                for tp in sorted(assigned)
            }

    def close(self) -> None:
        self.writer.close()
        self.consumer.close()


def run(
    settings: Settings,
    mode: str = "drain",
    group: str = ETL_GROUP,
    prefix: str | None = None,
    idle_s: float = 5.0,
    max_records: int | None = None,
    roll_records: int = ROLL_RECORDS,
    roll_event_s: float = ROLL_EVENT_S,
    topic: str | None = None,
    progress: bool = True,
) -> ETLSummary:
    """Run one ETL worker to completion (the notebook's and CLI's entry point). Nothing is
    left running whatever fails: a worker that cannot join stops its writer itself."""
    etl = ETL(
        settings,
        group=group,
        prefix=prefix,
        roll_records=roll_records,
        roll_event_s=roll_event_s,
        topic=topic,
    )
    try:
        return etl.run(mode=mode, idle_s=idle_s, max_records=max_records, progress=progress)
    finally:
        etl.close()


def forget(
    settings: Settings,
    topic: str,
    partitions: int,
    group: str = ETL_GROUP,
    prefix: str | None = None,
) -> int:
    """Forget what the ETL derived from an earlier incarnation of ``topic``: its files in
    the lake and the group's offsets. Whoever recreates the topic calls this: a recreated
    topic starts again at offset 0, so stale offsets and files would hide or double
    records. Returns the number of objects deleted."""
    removed = forget_topic_files(settings, topic, prefix)
    reset_group_offsets(settings, group, topic, partitions)
    return removed
