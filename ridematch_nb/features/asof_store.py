"""Feast's DuckDB offline store with the point-in-time join done as an ASOF join.

Feast 0.67's DuckDB store (``feast.infra.offline_stores.ibis.point_in_time_join``) joins
every entity row to *every* feature row of its entity inside the view's TTL, then keeps
the newest per entity row with a window function. For ``driver_stats`` (TTL 7 days)
that is every earlier update of the driver: 27,878 offers of the demo day fan out to
about 14.5 million pairs, which took 36 s and 1.9 GiB, and grows with the square of
the history (a week: 7 x the offers times 7 x the updates each).

The join asked for is "the newest feature row at or before t, if not older than the
TTL", which is exactly what an ASOF join computes without pairing rows: DuckDB sorts
both sides once and walks them together (``ASOF LEFT JOIN``), linear in the data. The
TTL is then a comparison on the one row found: when the newest row at or before t is
older than the TTL, every other candidate is older still, so the value is null,
as Feast's semantics say. Everything else is Feast's own: the store is a subclass of
its DuckDB store (reading, materialization, writing, saved datasets unchanged), the
retrieval job is its ``IbisRetrievalJob``, feature views, projections, field mappings,
TTLs and full feature names come from Feast as they would for any store.

Rows at equal event timestamps. Feast orders them by the source's created-timestamp
column when it has one, otherwise it leaves the choice to the engine. This store adds
``tie_break``: columns that order such rows (the last one wins), used after the
created timestamp. The project sets it to the Kafka partition and offset the ETL lands
with every row, so of two updates of a driver in the same second the one produced last
is the value, in training and in materialization alike (``pull_latest_from_table_or_query``
applies the same order), and the same as the lake's newest row that the online check uses.

Entity rows: each is returned exactly once (duplicates too), with nulls where a view
has no value in time; Feast's dask store drops rows with no value at all.
"""

from __future__ import annotations

from datetime import UTC, datetime

import ibis
import pandas as pd
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.duckdb import (
    DuckDBOfflineStore,
    DuckDBOfflineStoreConfig,
    _read_data_source,
    _write_data_source,
)
from feast.infra.offline_stores.ibis import (
    IbisRetrievalJob,
    _get_entity_df_event_timestamp_range,
    _to_utc,
    pull_all_from_table_or_query_ibis,
)
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.on_demand_feature_view import OnDemandFeatureView
from ibis.expr import datatypes as dt
from pydantic import Field, StrictStr

from ridematch_nb.features.offline import ASOF_STORE as STORE_TYPE

UTC_TIME = dt.Timestamp(timezone="UTC")


class AsofDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """The store's options; its ``type`` is the dotted path the settings hand Feast."""

    type: StrictStr = STORE_TYPE
    # Columns of the sources that order rows with equal event timestamps: the last wins.
    tie_break: list[str] = Field(default_factory=list)
    # Where the lake is, and its keys: the store reads through a DuckDB connection of its
    # own made from these (ridematch_nb.features.offline), not through process-wide settings.
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_key_id: str | None = Field(default=None, repr=False)
    s3_secret: str | None = Field(default=None, repr=False)


def _read(config, source, repo_path: str):
    """A source as an ibis table, read through the connection for this store config when
    it names the lake (else through ibis's default backend, as Feast's store does)."""
    from ridematch_nb.features import offline

    store = config.offline_store
    if not getattr(store, "s3_endpoint", None):
        return _read_data_source(source, repo_path)
    lake = offline.LakeAccess(store.s3_endpoint, store.s3_region, store.s3_key_id, store.s3_secret)
    con = offline.connection(lake)
    return con.read_parquet(source.path)


def _order(table, timestamp: str, created: str | None, tie_break: list[str]) -> list:
    """Newest first: event time, then created time, then the tie-break columns."""
    cols = (
        [timestamp] + ([created] if created else []) + [c for c in tie_break if c in table.columns]
    )
    return [ibis.desc(table[c]) for c in cols]


def _newest_per_key(table, keys: list[str], timestamp: str, created, tie_break) -> object:
    """One row per (keys, event time): the last by created time and tie-break (nothing
    to do when neither exists, then the engine picks among equal times as Feast's does)."""
    order = _order(table, timestamp, created, tie_break)[1:]
    if not order:
        return table
    window = ibis.window(group_by=[table[k] for k in [*keys, timestamp]], order_by=order)
    ranked = table.mutate(__rank=ibis.row_number().over(window))
    return ranked.filter(ranked["__rank"] == 0).drop("__rank")


def _requested(fv, feature_refs: list[str], full_feature_names: bool) -> dict[str, str]:
    """The view's requested features: source column -> output column."""
    prefix = fv.projection.name_to_use()
    features = [r.split(":", 1)[1] for r in feature_refs if r.startswith(f"{prefix}:")]
    base = fv.projection.name_alias or fv.name
    return {f: f"{base}__{f}" if full_feature_names else f for f in features}


def _source_key(fv) -> tuple:
    """Views with equal keys over the same source rows share one ASOF join."""
    source = fv.batch_source
    if source is None:
        raise ValueError(f"Feature view '{fv.name}' has no batch_source and cannot be queried.")
    keys = fv.projection.join_key_map or {e.name: e.name for e in fv.entity_columns}
    return (
        source.name,
        getattr(source, "path", None),
        tuple(sorted(source.field_mapping.items())),
        source.timestamp_field,
        source.created_timestamp_column,
        tuple(keys.items()),
    )


def _group_table(config, views, feature_refs, full_feature_names, repo_path, index, tie_break):
    """The shared source of a group of views as (key columns, event time, every requested
    feature of every view), one row per key and time, named apart from the entity table;
    and per view its output columns and TTL."""
    source = views[0].batch_source
    table = _read(config, source, repo_path)
    for old, new in source.field_mapping.items():
        if old in table.columns:
            table = table.rename({new: old})
    timestamp, created = source.timestamp_field, source.created_timestamp_column
    table = table.mutate(**{c: table[c].cast(UTC_TIME) for c in [timestamp, created] if c})
    keys = views[0].projection.join_key_map or {e.name: e.name for e in views[0].entity_columns}
    table = _newest_per_key(table, list(keys), timestamp, created, tie_break)
    ts_col = f"__ts_{index}"
    key_cols = {k: f"__key_{index}_{i}" for i, k in enumerate(keys)}
    outputs, per_view = {}, []
    for fv in views:
        names = _requested(fv, feature_refs, full_feature_names)
        outputs.update({out: table[f] for f, out in names.items()})
        per_view.append((list(names.values()), fv.ttl))
    table = table.select(
        **{key_cols[k]: table[k] for k in keys}, **{ts_col: table[timestamp]}, **outputs
    )
    on_keys = {keys[k]: key_cols[k] for k in keys}  # entity column -> key column
    return table, ts_col, on_keys, per_view


def asof_point_in_time_join(entity, event_ts: str, groups) -> object:
    """For each group of views over one source: the newest row at or before the entity
    row's time (ASOF LEFT JOIN on the join keys); each view's features kept only if that
    row is within the view's own TTL."""
    out = entity
    columns = list(entity.columns)
    for table, ts_col, on_keys, per_view in groups:
        joined = out.asof_join(
            table,
            on=out[event_ts] >= table[ts_col],
            predicates=[out[e] == table[k] for e, k in on_keys.items()],
        )
        kept = {}
        for features, ttl in per_view:
            fresh = joined[ts_col].notnull()
            if ttl:
                age = ibis.interval(seconds=int(ttl.total_seconds()))
                fresh = fresh & (joined[ts_col] >= joined[event_ts] - age)
            kept.update(
                {f: ibis.ifelse(fresh, joined[f], ibis.null(joined[f].type())) for f in features}
            )
        out = joined.select(*[joined[c] for c in columns], **kept)
        columns += list(kept)
    return out


class AsofDuckDBOfflineStore(DuckDBOfflineStore):
    """Feast's DuckDB store whose historical retrieval is an ASOF join (see module doc)."""

    @staticmethod
    def get_historical_features(
        config,
        feature_views,
        feature_refs,
        entity_df,
        registry,
        project,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        if not isinstance(entity_df, pd.DataFrame):
            raise ValueError(f"{STORE_TYPE} takes the entity rows as a pandas DataFrame, not SQL")
        if filter_by_created_timestamp and any(
            fv.batch_source.created_timestamp_column for fv in feature_views
        ):
            raise NotImplementedError(
                f"{STORE_TYPE}: filter_by_created_timestamp needs a second inequality an "
                "ASOF join does not take; use Feast's duckdb store for it"
            )
        schema = dict(zip(entity_df.columns, entity_df.dtypes, strict=True))
        event_ts = offline_utils.infer_event_timestamp_from_entity_df(entity_schema=schema)
        span = _get_entity_df_event_timestamp_range(entity_df, event_ts)
        entity_df = _to_utc(entity_df.copy(), event_ts)
        repo_path = str(config.repo_path)
        tie_break = list(getattr(config.offline_store, "tie_break", []) or [])
        by_source: dict[tuple, list] = {}
        for fv in feature_views:
            by_source.setdefault(_source_key(fv), []).append(fv)
        groups = [
            _group_table(config, views, feature_refs, full_feature_names, repo_path, i, tie_break)
            for i, views in enumerate(by_source.values())
        ]
        table = asof_point_in_time_join(ibis.memtable(entity_df), event_ts, groups)
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
        for odfv in [v for v in odfvs if v.mode == "substrait"]:
            table = odfv.transform_ibis(table, full_feature_names)
        return IbisRetrievalJob(
            table,
            [v for v in odfvs if v.mode != "substrait"],
            full_feature_names,
            metadata=RetrievalMetadata(
                features=feature_refs,
                keys=list(set(entity_df.columns) - {event_ts}),
                min_event_timestamp=span[0],
                max_event_timestamp=span[1],
            ),
            data_source_writer=_write_data_source,
            staging_location=config.offline_store.staging_location,
            staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override,
            repo_path=repo_path,
        )

    @staticmethod
    def pull_all_from_table_or_query(
        config,
        data_source,
        join_key_columns,
        feature_name_columns,
        timestamp_field: str,
        created_timestamp_column=None,
        start_date=None,
        end_date=None,
    ) -> RetrievalJob:
        """Feast's own, reading through this config's connection (the local engine's
        materialization reads the whole window with it)."""
        return pull_all_from_table_or_query_ibis(
            config=config,
            data_source=data_source,
            join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns,
            timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column,
            start_date=start_date,
            end_date=end_date,
            data_source_reader=lambda source, repo_path: _read(config, source, repo_path),
            data_source_writer=_write_data_source,
            staging_location=config.offline_store.staging_location,
            staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override,
        )

    @staticmethod
    def pull_latest_from_table_or_query(
        config,
        data_source,
        join_key_columns,
        feature_name_columns,
        timestamp_field,
        created_timestamp_column,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        """Materialization's newest row per entity in the window, rows at equal times
        ordered by the same tie-break as retrieval."""
        tie_break = list(getattr(config.offline_store, "tie_break", []) or [])
        fields = [*join_key_columns, *feature_name_columns, timestamp_field]
        if created_timestamp_column:
            fields.append(created_timestamp_column)
        table = _read(config, data_source, str(config.repo_path))
        extra = [c for c in tie_break if c in table.columns and c not in fields]
        table = table.select(*fields, *extra)
        start, end = (d.astimezone(tz=UTC).replace(tzinfo=None) for d in (start_date, end_date))
        ts = table[timestamp_field].cast("timestamp")
        table = table.filter(ts >= ibis.literal(start), ts <= ibis.literal(end))
        order = _order(table, timestamp_field, created_timestamp_column, tie_break)
        window = ibis.window(group_by=[table[k] for k in join_key_columns], order_by=order)
        table = table.mutate(__rank=ibis.row_number().over(window))
        table = table.filter(table["__rank"] == 0).drop("__rank", *extra)
        return IbisRetrievalJob(
            table=table,
            on_demand_feature_views=[],
            full_feature_names=False,
            metadata=None,
            data_source_writer=_write_data_source,
            staging_location=config.offline_store.staging_location,
            staging_location_endpoint_override=config.offline_store.staging_location_endpoint_override,
            repo_path=str(config.repo_path),
        )
