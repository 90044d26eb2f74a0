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
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import datetime

import pyarrow as pa
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from tqdm.auto import tqdm

from ridematch_nb.config import Settings
from ridematch_nb.events import SCHEMAS, InvalidEvent, decode, parse_ts
from ridematch_nb.kafka_io import (
    _connect,
    group_consumer,
    poll_through_outages,
    stop_on_sigterm,
)
from ridematch_nb.storage import (
    PENDING,
    REJECTED,
    Lake,
    chunk_name,
    data_key,
    dataset_prefix,
    lake_path,
    pending_key,
    rejected_key,
)

log = logging.getLogger(__name__)

DEFAULT_GROUP = "ridematch-etl"
MODES = ("drain", "follow")
_ARROW = {
    "str": pa.string(),
    "uuid": pa.string(),
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
REJECTED_SCHEMA = pa.schema(
    [
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("kafka_timestamp_ms", pa.int64()),
        ("key", pa.binary()),
        ("raw", pa.binary()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)


def arrow_schema(event_type: str) -> pa.Schema:
    """The landed columns of an event type: typed, coordinates split, plus Kafka lineage."""
    cols = []
    for name, spec in SCHEMAS[event_type].items():
        if name == "event_type":
            continue
        if spec.kind == "latlon":
            cols += [(f"{name}_lat", pa.float64()), (f"{name}_lon", pa.float64())]
        else:
            cols.append((name, _ARROW[spec.kind]))
    cols += [("kafka_partition", pa.int32()), ("kafka_offset", pa.int64())]
    return pa.schema(cols)


SCHEMAS_ARROW = {etype: arrow_schema(etype) for etype in SCHEMAS}


def to_table(event_type: str, rows: list[tuple[dict, datetime, int, int]]) -> pa.Table:
    """Validated events of one type to a typed table (timestamps already parsed)."""
    schema = SCHEMAS_ARROW[event_type]
    cols: dict[str, list] = {f.name: [] for f in schema}
    for event, ts, partition, offset in rows:
        for name, spec in SCHEMAS[event_type].items():
            if name == "event_type":
                continue
            if spec.kind == "latlon":
                cols[f"{name}_lat"].append(float(event[name][0]))
                cols[f"{name}_lon"].append(float(event[name][1]))
            elif name == "timestamp":
                cols[name].append(ts)
            elif spec.kind == "float":
                cols[name].append(float(event[name]))
            elif spec.kind == "int":
                cols[name].append(int(event[name]))
            else:
                cols[name].append(event[name])
        cols["kafka_partition"].append(partition)
        cols["kafka_offset"].append(offset)
    return pa.table(cols, schema=schema)


@dataclass
class Chunk:
    """Consecutive records of one partition, waiting to be written as files."""

    partition: int
    first: int = -1
    last: int = -1
    count: int = 0
    min_ts: float = float("inf")
    max_ts: float = float("-inf")
    rows: dict[tuple[str, str, int], list] = field(default_factory=lambda: defaultdict(list))
    rejected: list[dict] = field(default_factory=list)

    def add(self, record) -> None:
        if self.first < 0:
            self.first = record.offset
        self.last = record.offset
        self.count += 1
        try:
            event = decode(record.value)
            ts = parse_ts(event["timestamp"])
        except InvalidEvent as exc:
            self.rejected.append(
                {
                    "kafka_partition": record.partition,
                    "kafka_offset": record.offset,
                    "kafka_timestamp_ms": record.timestamp,
                    "key": record.key,
                    "raw": record.value,
                    "reason": exc.reason,
                    "detail": str(exc)[:500],
                }
            )
            return
        epoch = ts.timestamp()
        self.min_ts, self.max_ts = min(self.min_ts, epoch), max(self.max_ts, epoch)
        group = (event["event_type"], ts.strftime("%Y-%m-%d"), ts.hour)
        self.rows[group].append((event, ts, record.partition, record.offset))


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
    lag: dict[int, int] = field(default_factory=dict)  # partition -> records behind (lower bound)

    def to_dict(self) -> dict:
        return asdict(self)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, etl: ETL) -> None:
        self.etl = etl

    # Runs on the client's IO thread, which may not block: no writes or commits here.
    def on_partitions_revoked(self, revoked) -> None:
        # Unwritten, uncommitted: whoever owns the partition next reads these again.
        for tp in revoked:
            self.etl.next_offset.pop(tp.partition, None)
            chunk = self.etl.chunks.pop(tp.partition, None)
            log.debug(
                "revoked partition %d (dropping %s buffered)",
                tp.partition,
                chunk.count if chunk else 0,
            )
            if chunk is not None:
                self.etl.summary.consumed -= chunk.count

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
        group: str = DEFAULT_GROUP,
        prefix: str | None = None,
        roll_records: int = 100_000,
        roll_event_s: float = 3600.0,
        topic: str | None = None,
    ) -> None:
        if roll_records < 1:
            raise ValueError(f"parameter roll_records={roll_records!r} must be >= 1")
        if roll_event_s <= 0:
            raise ValueError(f"parameter roll_event_s={roll_event_s!r} must be positive")
        self.settings, self.group = settings, group
        self.prefix = dataset_prefix(settings, prefix)
        self.topic = topic or settings.topic
        self.roll_records, self.roll_event_s = roll_records, roll_event_s
        self.lake = Lake(settings)
        self.chunks: dict[int, Chunk] = {}
        self.to_clean: set[int] = set()
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

    def _write(self, chunk: Chunk) -> None:
        stem = chunk_name(self.topic, chunk.partition, chunk.first, chunk.last)
        files = {
            data_key(self.prefix, etype, date, hour, stem): to_table(etype, rows)
            for (etype, date, hour), rows in sorted(chunk.rows.items())
        }
        if chunk.rejected:
            files[rejected_key(self.prefix, stem)] = pa.Table.from_pylist(
                chunk.rejected, schema=REJECTED_SCHEMA
            )
        manifest = pending_key(self.prefix, self.topic, chunk.partition, chunk.first, chunk.last)
        self.lake.put_json(manifest, {"keys": sorted(files)})
        for key, table in files.items():
            self.lake.put_table(key, table)
        try:
            self._commit(chunk.partition, chunk.last + 1)
        except CommitFailedError:
            # The group moved on (a rebalance, or the broker forgot this member across a
            # restart): the partition is not ours to commit. The manifest stays, so whoever
            # owns the partition next deletes these files and reads the records again.
            log.warning(
                "partition %d moved on before offsets %d-%d were committed; "
                "its next owner rewrites them",
                chunk.partition,
                chunk.first,
                chunk.last,
            )
            self.summary.consumed -= chunk.count
            self.next_offset.pop(chunk.partition, None)
            return
        self.lake.delete([manifest])
        for (etype, _, _), rows in chunk.rows.items():
            self.landed[etype] += len(rows)
        for rej in chunk.rejected:
            self.rejected[rej["reason"]] += 1
        self.summary.files_written += len(files)
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
            except KafkaError as exc:
                if attempt == attempts:
                    raise
                log.warning("commit of partition %d failed (%s); retrying", partition, exc)
                time.sleep(min(5.0, 0.5 * attempt))

    def _flush(self, partition: int) -> None:
        chunk = self.chunks.pop(partition, None)
        if chunk is not None and chunk.count:
            self._write(chunk)

    def _take(self, record) -> None:
        chunk = self.chunks.get(record.partition)
        if chunk is None:
            chunk = self.chunks[record.partition] = Chunk(record.partition)
        chunk.add(record)
        self.next_offset[record.partition] = record.offset + 1
        self.summary.consumed += 1
        if chunk.count >= self.roll_records or chunk.max_ts - chunk.min_ts >= self.roll_event_s:
            self._flush(record.partition)

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
            raise ValueError(f"parameter mode={mode!r} must be one of {MODES}")
        self.summary.mode = mode
        t0 = time.perf_counter()
        try:
            with (
                stop_on_sigterm() as stop,
                tqdm(unit="ev", desc=f"etl {mode}", disable=not progress, mininterval=0.5) as bar,
            ):
                self._loop(mode, idle_s, max_records, join_timeout_s, stop, bar)
        except KeyboardInterrupt:
            log.info("interrupted: writing what is buffered, then committing")
        for partition in sorted(self.chunks):
            self._flush(partition)
        self._finish(t0)
        return self.summary

    def _loop(self, mode, idle_s, max_records, join_timeout_s, stop, bar) -> None:
        quiet_since, joined_by = time.monotonic(), time.monotonic() + join_timeout_s
        outage: dict = {}
        while not stop["now"]:
            batch = poll_through_outages(self.consumer, self.settings, outage)
            rewound = self._take_assignment()
            batch = {tp: recs for tp, recs in batch.items() if tp.partition not in rewound}
            if batch:
                quiet_since = time.monotonic()
                for records in batch.values():
                    for record in records:
                        self._take(record)
                        if max_records and self.summary.consumed >= max_records:
                            return
                bar.update(sum(len(r) for r in batch.values()))
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
        self.consumer.close()


def run(
    settings: Settings,
    mode: str = "drain",
    group: str = DEFAULT_GROUP,
    prefix: str | None = None,
    idle_s: float = 5.0,
    max_records: int | None = None,
    roll_records: int = 100_000,
    roll_event_s: float = 3600.0,
    topic: str | None = None,
    progress: bool = True,
) -> ETLSummary:
    """Run one ETL worker to completion (the notebook's and CLI's entry point)."""
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
    group: str = DEFAULT_GROUP,
    prefix: str | None = None,
) -> int:
    """Forget what the ETL derived from an earlier incarnation of ``topic``: its landed and
    rejected files and pending manifests, and the group's offsets (reset to 0). A recreated
    topic starts again at offset 0, so stale offsets and files would hide or double records.
    Returns the number of objects deleted."""
    lake = Lake(settings)
    prefix = dataset_prefix(settings, prefix)
    stale = [
        key
        for area in [*SCHEMAS, REJECTED, f"{PENDING}/{topic}"]
        for key in lake.keys(lake_path(prefix, area) + "/")
        if area.startswith(PENDING) or key.rsplit("/", 1)[1].startswith(f"{topic}+")
    ]
    lake.delete(stale)
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
    return len(stale)
