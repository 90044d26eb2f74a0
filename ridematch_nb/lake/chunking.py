"""The ETL's chunking policy, pure: how one partition's records are cut into chunks, and
how a chunk splits into files. It carries the deterministic-chunking promise: the same
records from the same offset make the same chunks, whatever the poll sizes, because a
chunk closes on its record count or its event-time window (never the wall clock), checked
record by record. Windows are ``roll_event_s`` long and aligned to the epoch, so with an
hour a chunk is a clock hour of its partition and writes one file per event type (plus a
small one for records that arrive late from the hour before), where a chunk spanning an
hour from wherever it began would straddle two and write two.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ridematch_nb.contract.columnar import OFFSET, PARTITION, ROW, with_lineage
from ridematch_nb.contract.decoder import DecodedBatch
from ridematch_nb.contract.events import SCHEMAS

# Late records (an offer's outcome is stamped when the offer was made, up to its 15 s
# timeout earlier) stay in the chunk of a later window. A chunk whose records span more
# than its window and this margin holds a time far out of order (a clock set in the
# future, a realtime stream after a backfill dated later): it closes after that record,
# so one stray timestamp never holds a partition's records back.
MAX_LATE_S = 60.0


@dataclass
class Records:
    """One partition's records from one poll, decoded as a batch."""

    partition: int
    offsets: np.ndarray
    keys: list
    timestamps: list  # Kafka's, in ms: kept for rejected rows
    values: list
    decoded: DecodedBatch

    def landed(self, event_type: str, lo: int, hi: int) -> pa.Table:
        """Accepted rows of one type among rows lo..hi-1, with their Kafka lineage."""
        table = self.decoded.rows_between(event_type, lo, hi)
        rows = table.column(ROW).to_numpy()
        return with_lineage(table, np.full(len(rows), self.partition), self.offsets[rows])

    def rejected(self, lo: int, hi: int) -> list[dict]:
        return [
            {
                PARTITION: self.partition,
                OFFSET: int(self.offsets[row]),
                "kafka_timestamp_ms": self.timestamps[row],
                "key": self.keys[row],
                "raw": self.values[row],
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
    window: float = float("-inf")  # the latest event-time window among its records
    min_ts: float = float("inf")
    max_ts: float = float("-inf")
    tables: dict[str, list[pa.Table]] = field(default_factory=lambda: defaultdict(list))
    rejected: list[dict] = field(default_factory=list)

    def room(self, event_s: np.ndarray, roll_records: int, roll_event_s: float) -> int:
        """How many of the next records fit, as if they came one by one (so chunks never
        depend on poll sizes): a chunk closes before the first record of a later
        event-time window than any it holds (a late record of an earlier window stays;
        records without a time never close it), or after the record that brings it to
        ``roll_records`` records or to a span past its window and ``MAX_LATE_S``."""
        windows = np.floor(event_s / roll_event_s)
        held = np.fmax.accumulate(np.concatenate(([self.window], windows)))[:-1]
        later = (windows > held) & np.isfinite(held)
        lows = np.fmin.accumulate(np.concatenate(([self.min_ts], event_s)))[1:]
        highs = np.fmax.accumulate(np.concatenate(([self.max_ts], event_s)))[1:]
        counts = self.count + np.arange(1, len(event_s) + 1)
        full = (counts >= roll_records) | (highs - lows >= roll_event_s + MAX_LATE_S)
        ends = [len(event_s)]
        if later.any():
            ends.append(int(np.argmax(later)))
        if full.any():
            ends.append(int(np.argmax(full)) + 1)
        return min(ends)

    def is_full(self, roll_records: int, roll_event_s: float) -> bool:
        span = self.max_ts - self.min_ts
        return self.count >= roll_records or span >= roll_event_s + MAX_LATE_S

    def add(self, records: Records, lo: int, hi: int, roll_event_s: float) -> None:
        """Take rows lo..hi-1 of a decoded poll."""
        if self.first < 0:
            self.first = int(records.offsets[lo])
        self.last = int(records.offsets[hi - 1])
        self.count += hi - lo
        event_s = records.decoded.event_s[lo:hi]
        if not np.isnan(event_s).all():
            self.window = max(self.window, float(np.floor(np.nanmax(event_s) / roll_event_s)))
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
            distinct = np.unique(hours)  # rows are in offset order, not event-time order
            for hour in distinct:
                when = datetime.fromtimestamp(int(hour) * 3600, tz=UTC)
                rows = table if len(distinct) == 1 else table.filter(hours == hour)
                out[(etype, when.strftime("%Y-%m-%d"), when.hour)] = rows
        return out


class Chunker:
    """Open chunks per partition; records go in, full chunks come out."""

    def __init__(self, roll_records: int, roll_event_s: float) -> None:
        self.roll_records, self.roll_event_s = roll_records, roll_event_s
        self.chunks: dict[int, Chunk] = {}

    def take(self, records: Records) -> list[Chunk]:
        """Add one poll's decoded records of a partition; returns the chunks that filled."""
        partition, full, lo, n = records.partition, [], 0, len(records.offsets)
        while lo < n:
            chunk = self.chunks.setdefault(partition, Chunk(partition))
            room = chunk.room(records.decoded.event_s[lo:], self.roll_records, self.roll_event_s)
            if room:  # none when the poll begins with the next window's first record
                chunk.add(records, lo, lo + room, self.roll_event_s)
            lo += room
            if lo < n or chunk.is_full(self.roll_records, self.roll_event_s):
                full.append(self.chunks.pop(partition))
        return full

    def drop(self, partition: int) -> int:
        """Forget a partition's open chunk (its partition was taken away); its size."""
        chunk = self.chunks.pop(partition, None)
        return chunk.count if chunk else 0

    def flush(self) -> list[Chunk]:
        """Every open chunk, full or not, by partition."""
        return [self.chunks.pop(p) for p in sorted(self.chunks)]
