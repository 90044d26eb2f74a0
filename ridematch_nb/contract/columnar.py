"""The event contract in Arrow: the typed columns each event type lands as, the
lineage columns (where in Kafka a row came from), the rejected values' columns, and
tables built from validated events. Decoding raw Kafka values at once: ``decoder``.
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from ridematch_nb.contract.events import SCHEMAS

ARROW_TYPES = {
    "str": pa.string(),
    "uuid": pa.string(),
    "float": pa.float64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
ROW = "_row"  # position of a row in its batch, kept until lineage is attached


def landed_schema(event_type: str) -> pa.Schema:
    """The landed columns of an event type: typed, coordinates split (no lineage)."""
    cols = []
    for name, spec in SCHEMAS[event_type].items():
        if name == "event_type":
            continue
        if spec.kind == "latlon":
            cols += [(f"{name}_lat", pa.float64()), (f"{name}_lon", pa.float64())]
        else:
            cols.append((name, ARROW_TYPES[spec.kind]))
    return pa.schema(cols)


LANDED = {etype: landed_schema(etype) for etype in SCHEMAS}
LINEAGE = [("kafka_partition", pa.int32()), ("kafka_offset", pa.int64())]
# Their names, for the readers: ties at one timestamp break by (partition, offset).
PARTITION, OFFSET = LINEAGE_COLUMNS = [name for name, _ in LINEAGE]
# The landed files: the event's typed columns, then where in Kafka the record was.
SCHEMAS_ARROW = {
    etype: pa.schema([*schema, *(pa.field(n, t) for n, t in LINEAGE)])
    for etype, schema in LANDED.items()
}
REJECTED_SCHEMA = pa.schema(
    [
        *LINEAGE,
        ("kafka_timestamp_ms", pa.int64()),
        ("key", pa.binary()),
        ("raw", pa.binary()),
        ("reason", pa.string()),
        ("detail", pa.string()),
    ]
)


def with_lineage(table: pa.Table, partitions, offsets) -> pa.Table:
    """A decoded table (with ``_row``) as landed: ``_row`` out, Kafka partition and
    offset of each row in."""
    table = table.drop_columns([ROW])
    for (name, kind), values in zip(LINEAGE, (partitions, offsets), strict=True):
        table = table.append_column(name, pa.array(values, kind))
    return table


def to_table(event_type: str, rows: list[tuple[dict, datetime, int]]) -> pa.Table:
    """Validated events of one type as ``(event, parsed timestamp, row)`` to a typed table
    with a ``_row`` column (the record-by-record path, and crafted test data)."""
    schema = LANDED[event_type]
    cols: dict[str, list] = {f.name: [] for f in schema}
    cols[ROW] = []
    for event, ts, row in rows:
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
        cols[ROW].append(row)
    return pa.table(cols, schema=schema.append(pa.field(ROW, pa.int64())))


def landed_table(event_type: str, rows: list[tuple[dict, datetime, int, int]]) -> pa.Table:
    """Valid events as ``(event, parsed timestamp, partition, offset)`` to a landed table,
    as the ETL writes it (for crafted data in tests and examples)."""
    table = to_table(event_type, [(e, ts, i) for i, (e, ts, _, _) in enumerate(rows)])
    return with_lineage(table, [p for _, _, p, _ in rows], [o for _, _, _, o in rows])
