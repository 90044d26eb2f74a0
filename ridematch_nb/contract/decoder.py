"""Decoding a whole batch of raw Kafka values at once into the landed columns
(``columnar``), with the per-record reference deciding every doubtful case.

Why a batch decoder: ``json.loads`` plus a field-by-field check costs about 10 us a
record in Python, more than the Kafka client spends fetching it. Here the batch is
parsed by Arrow's JSON reader (C++, typed by an explicit schema) and checked with
vectorized compute functions. The per-record reference (``events.decode``) still
decides every doubtful case:

- a value Arrow cannot read (not JSON, wrong JSON types, not an object, bad UTF-8,
  a line that is not exactly one value) sends its half of the batch down a bisection,
  until small pieces go record by record through ``events.decode``;
- a row Arrow read but that fails any vectorized check (unknown type, null or missing
  field, range, choice, pattern, non-finite number) goes through ``events.decode`` too,
  which either rejects it with its exact reason or accepts it.

Values Arrow must never see (tombstones, values over ``events.MAX_VALUE_BYTES``, values
holding a line break) are replaced by ``null`` before parsing, which makes their rows
doubtful. A row whose count of ``"`` differs from its type's canonical count (a repeated
or extra field name, an escaped quote) is doubtful too: Arrow keeps one of two repeated
names silently, the reference refuses them. And should the fast path itself fail in a way
nobody foresaw, its whole batch goes record by record: slower, never lost.

So the fast path only accepts what the reference accepts, and every rejection carries
the reference's reason: the two paths land the same rows (a unit test holds them to it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from ridematch_nb.contract.columnar import ARROW_TYPES, LANDED, ROW, to_table
from ridematch_nb.contract.events import (
    MAX_VALUE_BYTES,
    SCHEMAS,
    UUID_RE,
    InvalidEvent,
    decode,
    parse_ts,
)

log = logging.getLogger(__name__)

# Arrow's regex engine (RE2) with full-string anchors: the same language as events.py.
_UUID = UUID_RE.pattern
# Stricter than events.TIMESTAMP_RE on purpose: field ranges are checked here so the
# cast below only meets impossible dates (Feb 30), which send the batch's rows of that
# type record by record.
_TIMESTAMP = (
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
    r"(\.\d{1,6})?Z$"
)
# Below this many records a doubtful piece goes record by record.
_BISECT_LEAF = 32


def _json_schema() -> pa.Schema:
    """Every field of every event type as the JSON reader should type it (one union:
    fields shared by several types have the same kind in each)."""
    kinds: dict[str, pa.DataType] = {}
    for schema in SCHEMAS.values():
        for name, spec in schema.items():
            if spec.kind == "latlon":
                kinds[name] = pa.list_(pa.float64())
            elif spec.kind in ("timestamp", "uuid"):
                kinds[name] = pa.string()
            else:
                kinds[name] = ARROW_TYPES[spec.kind]
    return pa.schema(list(kinds.items()))


JSON_SCHEMA = _json_schema()
_PARSE = pj.ParseOptions(
    explicit_schema=pa.schema([("v", pa.struct(list(JSON_SCHEMA)))]),
    unexpected_field_behavior="ignore",
)


@dataclass
class DecodedBatch:
    """A batch of raw values, decoded: a table per event type (rows in batch order, with
    ``_row``), each row's event time (NaN for a rejected row), and the rejected rows."""

    n: int
    tables: dict[str, pa.Table]
    event_s: np.ndarray
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # row, reason, detail

    def rows_between(self, event_type: str, lo: int, hi: int) -> pa.Table:
        """The accepted rows of one type among batch rows ``lo`` .. ``hi - 1``."""
        table = self.tables[event_type]
        rows = table.column(ROW).to_numpy()
        a, b = np.searchsorted(rows, [lo, hi])
        return table.slice(a, b - a)


def _quotes_expected(schema) -> int:
    """``"`` in a compact event of this type: two per name, two per string value."""
    strings = sum(spec.kind in ("str", "uuid", "timestamp") for spec in schema.values())
    return 2 * (len(schema) + strings)


_QUOTES = {etype: _quotes_expected(schema) for etype, schema in SCHEMAS.items()}
_NULL = b"null"


def _arrow_safe(values: list[bytes | None]) -> list[bytes]:
    """The values Arrow may parse; the others as ``null`` (decided record by record)."""
    safe = list(values)
    for i, value in enumerate(values):
        if value is None or len(value) > MAX_VALUE_BYTES or b"\n" in value or b"\r" in value:
            safe[i] = _NULL
    return safe


def decode_batch(values: list[bytes | None]) -> DecodedBatch:
    """Decode and validate a batch of raw values (see the module docstring)."""
    n = len(values)
    try:
        tables, slow = _fast_path(values)
    except Exception:  # never fatal: the reference decides every row instead
        log.exception("batch decoder failed; deciding %d records one by one", n)
        tables, slow = {etype: [] for etype in SCHEMAS}, list(range(n))
    rejected, by_type = [], {etype: [] for etype in SCHEMAS}
    for row in sorted(slow):
        try:
            event = decode(values[row])
        except InvalidEvent as exc:
            rejected.append((row, exc.reason, str(exc)[:500]))
            continue
        by_type[event["event_type"]].append((event, parse_ts(event["timestamp"]), row))
    event_s = np.full(n, np.nan)
    out = {}
    for etype in SCHEMAS:
        parts = tables[etype] + ([to_table(etype, by_type[etype])] if by_type[etype] else [])
        table = pa.concat_tables(parts) if parts else _empty(etype)
        if len(parts) > 1:
            table = table.sort_by(ROW)
        table = table.combine_chunks()
        out[etype] = table
        if table.num_rows:
            micros = pc.cast(table.column("timestamp"), pa.int64()).to_numpy()
            event_s[table.column(ROW).to_numpy()] = micros / 1e6
    return DecodedBatch(n=n, tables=out, event_s=event_s, rejected=rejected)


def _fast_path(values: list[bytes | None]) -> tuple[dict[str, list[pa.Table]], list[int]]:
    """Arrow's parse and the vectorized checks: landed tables by type, doubtful rows."""
    safe = _arrow_safe(values)
    fast: list[pa.Table] = []
    slow: list[int] = []
    _parse_or_bisect(safe, 0, len(safe), fast, slow)
    tables: dict[str, list[pa.Table]] = {etype: [] for etype in SCHEMAS}
    parsed = pa.concat_tables(fast) if fast else None
    if parsed is not None and parsed.num_rows:
        quotes = np.fromiter((v.count(b'"') for v in safe), np.int64, len(safe))
        slow.extend(_typed_tables(parsed, tables, quotes))
    return tables, slow


def _empty(event_type: str) -> pa.Table:
    return LANDED[event_type].append(pa.field(ROW, pa.int64())).empty_table()


def _parse_or_bisect(values, lo: int, hi: int, fast: list, slow: list) -> None:
    """Parse values[lo:hi] with Arrow; on anything doubtful, halve, down to single records."""
    if hi - lo <= _BISECT_LEAF:
        table = _try_parse(values[lo:hi])
        if table is None:
            slow.extend(range(lo, hi))
            return
    else:
        table = _try_parse(values[lo:hi])
        if table is None:
            mid = (lo + hi) // 2
            _parse_or_bisect(values, lo, mid, fast, slow)
            _parse_or_bisect(values, mid, hi, fast, slow)
            return
    fast.append(table.append_column(ROW, pa.array(np.arange(lo, hi, dtype=np.int64))))


def _try_parse(values) -> pa.Table | None:
    """values as one newline-delimited buffer, each wrapped as ``{"v": <value>}`` so a line
    holding no value or two values is a parse error, not a shifted row; None when any
    value is not exactly one JSON object of the expected JSON types."""
    body = b'}\n{"v":'.join(values)  # no value holds a line break (see _arrow_safe)
    if not body.isascii():  # Arrow reads strings without checking their UTF-8
        try:
            body.decode()
        except UnicodeDecodeError:
            return None
    try:
        wrapped = pj.read_json(pa.py_buffer(b'{"v":' + body + b"}"), parse_options=_PARSE)
    except Exception:  # any failure to parse: bad UTF-8, wrong types, not one value...
        return None
    if wrapped.num_rows != len(values):
        return None
    inner = wrapped.column("v")
    return pa.table({f.name: pc.struct_field(inner, f.name) for f in JSON_SCHEMA})


def _typed_tables(parsed: pa.Table, tables: dict[str, list], quotes: np.ndarray) -> list[int]:
    """Split parsed rows by type into landed tables; returns the rows that fail a check
    (``quotes``: the count of ``"`` in each value of the batch)."""
    etype = parsed.column("event_type")
    known = pc.fill_null(pc.is_in(etype, value_set=pa.array(list(SCHEMAS))), False)
    doubtful = [pc.invert(known)]
    for name, schema in SCHEMAS.items():
        of_type = pc.fill_null(pc.equal(etype, name), False)
        if not pc.any(of_type).as_py():
            continue
        rows = parsed.filter(of_type)
        canonical = quotes[rows.column(ROW).to_numpy()] == _QUOTES[name]
        ok = pc.and_(_checks(rows, schema), pa.array(canonical))
        doubtful.append(_scatter(of_type, pc.invert(ok)))
        good = rows.filter(ok)
        if good.num_rows:
            tables[name].append(_landed(name, good))
    bad = doubtful[0]
    for mask in doubtful[1:]:
        bad = pc.or_(bad, mask)
    return parsed.column(ROW).filter(bad).to_pylist()


def _scatter(where: pa.ChunkedArray, values: pa.ChunkedArray) -> pa.Array:
    """A full-length mask: ``values`` at the rows where ``where`` holds, else False."""
    out = np.zeros(len(where), dtype=bool)
    out[where.to_numpy(zero_copy_only=False)] = values.to_numpy(zero_copy_only=False)
    return pa.array(out)


def _checks(rows: pa.Table, schema) -> pa.ChunkedArray:
    """True where every field of the row's type passes the contract's checks."""
    ok = None
    for name, spec in schema.items():
        if name == "event_type":
            continue
        col = rows.column(name)
        if spec.kind == "latlon":
            lat, lon = _element(col, 0), _element(col, 1)
            good = pc.and_(pc.equal(pc.list_value_length(col), 2), _in_range(lat, "lat"))
            good = pc.and_(good, _in_range(lon, "lon"))
        elif spec.kind in ("str",):
            good = pc.greater(pc.utf8_length(col), 0)
            if spec.choices:
                good = pc.and_(good, pc.is_in(col, value_set=pa.array(spec.choices)))
        elif spec.kind == "uuid":
            good = pc.match_substring_regex(col, _UUID)
        elif spec.kind == "timestamp":
            good = pc.match_substring_regex(col, _TIMESTAMP)
            try:
                pc.cast(col.filter(pc.fill_null(good, False)), ARROW_TYPES["timestamp"])
            except pa.ArrowInvalid:
                good = pc.and_(good, False)  # an impossible date among them
        elif spec.kind == "bool":
            good = pc.is_valid(col)
        else:
            good = pc.is_valid(col)
            if spec.kind == "float":
                good = pc.and_(good, pc.is_finite(col))
            if spec.low is not None:
                good = pc.and_(good, pc.greater_equal(col, spec.low))
            if spec.high is not None:
                good = pc.and_(good, pc.less_equal(col, spec.high))
        good = pc.fill_null(good, False)
        ok = good if ok is None else pc.and_(ok, good)
    return ok


def _element(col, i: int):
    """Element ``i`` of each list, null where the list is shorter or null."""
    length = pc.fill_null(pc.list_value_length(col), 0)
    safe = pc.if_else(pc.greater(length, i), col, pa.scalar([0.0, 0.0], col.type))
    return pc.list_element(safe, i)


def _in_range(values, axis: str):
    spec = SCHEMAS["driver_update"][axis]
    good = pc.and_(pc.greater_equal(values, spec.low), pc.less_equal(values, spec.high))
    return pc.and_(pc.is_finite(values), good)


def _landed(event_type: str, rows: pa.Table) -> pa.Table:
    """Checked rows of one type in their landed columns, plus ``_row``."""
    cols, names = [], []
    for name, spec in SCHEMAS[event_type].items():
        if name == "event_type":
            continue
        col = rows.column(name)
        if spec.kind == "latlon":
            cols += [pc.list_element(col, 0), pc.list_element(col, 1)]
            names += [f"{name}_lat", f"{name}_lon"]
        elif spec.kind == "timestamp":
            cols.append(pc.cast(col, ARROW_TYPES["timestamp"]))
            names.append(name)
        else:
            cols.append(col)
            names.append(name)
    cols.append(rows.column(ROW))
    names.append(ROW)
    return pa.Table.from_arrays(cols, schema=LANDED[event_type].append(pa.field(ROW, pa.int64())))


def to_frames(values) -> tuple[dict[str, Any], dict[str, int]]:
    """Raw values to one pandas DataFrame per event type in the landed columns (typed, UTC
    timestamps, ``origin``/``dest`` split into ``*_lat``/``*_lon``), plus a count of the
    values that broke the contract, by reason. Nothing is dropped silently."""
    decoded = decode_batch(list(values))
    frames = {
        etype: table.drop_columns([ROW]).to_pandas() for etype, table in decoded.tables.items()
    }
    rejected: dict[str, int] = {}
    for _, reason, _ in decoded.rejected:
        rejected[reason] = rejected.get(reason, 0) + 1
    return frames, rejected
