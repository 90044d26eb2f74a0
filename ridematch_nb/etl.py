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
from collections import Counter, defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from tqdm.auto import tqdm

from ridematch_nb.columnar import LANDED, ROW, DecodedBatch, decode_batch
from ridematch_nb.columnar import to_table as _typed_rows
from ridematch_nb.config import Settings
from ridematch_nb.events import SCHEMAS
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
# Chunks uploading while the next records decode; more only holds more memory.
MAX_IN_FLIGHT = 2
MODES = ("drain", "follow")
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


LINEAGE = [("kafka_partition", pa.int32()), ("kafka_offset", pa.int64())]
# The landed files: the event's typed columns, then where in Kafka the record was.
SCHEMAS_ARROW = {
    etype: pa.schema([*schema, *(pa.field(n, t) for n, t in LINEAGE)])
    for etype, schema in LANDED.items()
}


def to_table(event_type: str, rows: list[tuple[dict, datetime, int, int]]) -> pa.Table:
    """Valid events as ``(event, parsed timestamp, partition, offset)`` to a landed table,
    as the ETL writes it (for crafted data in tests and examples)."""
    table = _typed_rows(event_type, [(e, ts, i) for i, (e, ts, _, _) in enumerate(rows)])
    return pa.Table.from_arrays(
        [
            *table.drop_columns([ROW]).columns,
            pa.array([p for _, _, p, _ in rows], pa.int32()),
            pa.array([o for _, _, _, o in rows], pa.int64()),
        ],
        schema=SCHEMAS_ARROW[event_type],
    )


@dataclass
class Records:
    """One partition's records from one poll, decoded as a batch."""

    partition: int
    offsets: np.ndarray
    raw: list  # the ConsumerRecords, for the rejected rows' key, bytes and timestamp
    decoded: DecodedBatch

    @classmethod
    def of(cls, partition: int, records: list) -> Records:
        offsets = np.fromiter((r.offset for r in records), np.int64, len(records))
        return cls(partition, offsets, records, decode_batch([r.value for r in records]))

    def landed(self, event_type: str, lo: int, hi: int) -> pa.Table:
        """Accepted rows of one type among rows lo..hi-1, with their Kafka lineage."""
        table = self.decoded.rows_between(event_type, lo, hi)
        rows = table.column(ROW).to_numpy()
        table = table.drop_columns([ROW])
        table = table.append_column(
            "kafka_partition", pa.array(np.full(len(rows), self.partition, np.int32))
        )
        return table.append_column("kafka_offset", pa.array(self.offsets[rows]))

    def rejected(self, lo: int, hi: int) -> list[dict]:
        return [
            {
                "kafka_partition": self.partition,
                "kafka_offset": int(self.offsets[row]),
                "kafka_timestamp_ms": self.raw[row].timestamp,
                "key": self.raw[row].key,
                "raw": self.raw[row].value,
                "reason": reason,
                "detail": detail,
            }
            for row, reason, detail in self.decoded.rejected
            if lo <= row < hi
        ]


@dataclass
class Chunk:
    """Consecutive records of one partition, waiting to be written as files."""

    partition: int
    first: int = -1
    last: int = -1
    count: int = 0
    min_ts: float = float("inf")
    max_ts: float = float("-inf")
    tables: dict[str, list[pa.Table]] = field(default_factory=lambda: defaultdict(list))
    rejected: list[dict] = field(default_factory=list)

    def room(self, event_s: np.ndarray, roll_records: int, roll_event_s: float) -> int:
        """How many of the next records fit: the chunk is full once it holds
        ``roll_records`` records or spans ``roll_event_s`` of event time, checked after
        each record as if they came one by one (so chunks never depend on poll sizes)."""
        lows = np.fmin.accumulate(np.concatenate(([self.min_ts], event_s)))[1:]
        highs = np.fmax.accumulate(np.concatenate(([self.max_ts], event_s)))[1:]
        counts = self.count + np.arange(1, len(event_s) + 1)
        full = (counts >= roll_records) | (highs - lows >= roll_event_s)
        return int(np.argmax(full)) + 1 if full.any() else len(event_s)

    def add(self, records: Records, lo: int, hi: int) -> None:
        """Take rows lo..hi-1 of a decoded poll."""
        if self.first < 0:
            self.first = int(records.offsets[lo])
        self.last = int(records.offsets[hi - 1])
        self.count += hi - lo
        event_s = records.decoded.event_s[lo:hi]
        if not np.isnan(event_s).all():
            self.min_ts = min(self.min_ts, float(np.nanmin(event_s)))
            self.max_ts = max(self.max_ts, float(np.nanmax(event_s)))
        for etype in SCHEMAS:
            table = records.landed(etype, lo, hi)
            if table.num_rows:
                self.tables[etype].append(table)
        self.rejected += records.rejected(lo, hi)

    def files(self) -> dict[tuple[str, str, int], pa.Table]:
        """The chunk's rows per (event type, date, hour) of event time, in offset order."""
        out = {}
        for etype, parts in self.tables.items():
            table = pa.concat_tables(parts).combine_chunks()
            hours = pc.cast(table.column("timestamp"), pa.int64()).to_numpy() // 3_600_000_000
            for hour in np.unique(hours):
                when = datetime.fromtimestamp(int(hour) * 3600, tz=UTC)
                rows = table if hours[0] == hours[-1] == hour else table.filter(hours == hour)
                out[(etype, when.strftime("%Y-%m-%d"), when.hour)] = rows
        return out


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
        self.uploads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="etl-upload")
        self.in_flight: deque = deque()  # (chunk, manifest, tables, files, future), oldest first
        self.consumer = group_consumer(settings, group, self.topic, listener=_Rebalance(self))

    # ---- crash recovery ---------------------------------------------------------------

    def _take_assignment(self) -> set[int]:
        """For newly assigned partitions: delete what attempts that never committed left
        behind, and rewind to the committed offset (the client may have kept a read
        position past records whose buffer was dropped at the rebalance). Returns them."""
        fresh = set(self.to_clean)
        if fresh:
            self._settle(wait_for=len(self.in_flight))  # no upload may race the clean-up
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
        """Hand a full chunk to the upload thread (parquet encoding and S3 puts wait on
        I/O and release the GIL, so the next records decode meanwhile); its offsets are
        committed here, on the consumer's thread, once its upload is done."""
        stem = chunk_name(self.topic, chunk.partition, chunk.first, chunk.last)
        tables = chunk.files()
        files = {
            data_key(self.prefix, etype, date, hour, stem): table
            for (etype, date, hour), table in sorted(tables.items())
        }
        if chunk.rejected:
            files[rejected_key(self.prefix, stem)] = pa.Table.from_pylist(
                chunk.rejected, schema=REJECTED_SCHEMA
            )
        manifest = pending_key(self.prefix, self.topic, chunk.partition, chunk.first, chunk.last)
        upload = self.uploads.submit(self._upload, manifest, files)
        self.in_flight.append((chunk, manifest, tables, len(files), upload))
        self._settle(wait_for=len(self.in_flight) - MAX_IN_FLIGHT)

    def _upload(self, manifest: str, files: dict[str, pa.Table]) -> None:
        """Upload thread: the manifest first, then every object, each durable on return."""
        self.lake.put_json(manifest, {"keys": sorted(files)})
        for key, table in files.items():
            self.lake.put_table(key, table)

    def _settle(self, wait_for: int = 0) -> None:
        """Commit the chunks whose upload is done, oldest first (so a partition's offsets
        only move forward over files that exist). Waits for the oldest ``wait_for``."""
        while self.in_flight:
            chunk, manifest, tables, n_files, upload = self.in_flight[0]
            if wait_for <= 0 and not upload.done():
                return
            upload.result()  # an upload that failed raises here (S3Unavailable)
            self.in_flight.popleft()
            wait_for -= 1
            self._committed(chunk, manifest, tables, n_files)

    def _committed(self, chunk: Chunk, manifest: str, tables: dict, n_files: int) -> None:
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
        for (etype, _, _), table in tables.items():
            self.landed[etype] += table.num_rows
        for rej in chunk.rejected:
            self.rejected[rej["reason"]] += 1
        self.summary.files_written += n_files
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

    def _take(self, partition: int, polled: list, limit: int | None) -> bool:
        """Decode one partition's polled records and add them to its chunks, writing each
        chunk as it fills. Takes at most ``limit`` records; returns True when it did."""
        stop = limit is not None and len(polled) >= limit
        records = Records.of(partition, polled[:limit] if stop else polled)
        lo, n = 0, len(records.offsets)
        while lo < n:
            chunk = self.chunks.get(partition)
            if chunk is None:
                chunk = self.chunks[partition] = Chunk(partition)
            room = chunk.room(records.decoded.event_s[lo:], self.roll_records, self.roll_event_s)
            chunk.add(records, lo, lo + room)
            lo += room
            self.next_offset[partition] = int(records.offsets[lo - 1]) + 1
            self.summary.consumed += room
            if (
                lo < n
                or chunk.count >= self.roll_records
                or chunk.max_ts - chunk.min_ts >= (self.roll_event_s)
            ):
                self._flush(partition)
        return stop

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
        t0 = self.t0 = time.perf_counter()
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
        self._settle(wait_for=len(self.in_flight))
        self._finish(t0)
        return self.summary

    def _loop(self, mode, idle_s, max_records, join_timeout_s, stop, bar) -> None:
        quiet_since, joined_by = time.monotonic(), time.monotonic() + join_timeout_s
        outage: dict = {}
        while not stop["now"]:
            batch = poll_through_outages(self.consumer, self.settings, outage)
            rewound = self._take_assignment()
            self._settle()  # commit what finished uploading since the last poll
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
        self.uploads.shutdown(wait=True, cancel_futures=True)
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
