"""The S3 data lake: object names, durable writes, listing and reading the datasets.

Layout in the data bucket (``services.bucket``), under an optional prefix:

    <event_type>/date=YYYY-MM-DD/hour=HH/<topic>+<partition>+<first>+<last>.parquet
    _rejected/<topic>+<partition>+<first>+<last>.parquet
    _etl/pending/<topic>/<partition>/<first>+<last>.json   (chunks written, not yet committed)

Names come from the Kafka offsets they hold, so writing the same records again
overwrites the same objects instead of adding new ones.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from ridematch_nb.config import Settings
from ridematch_nb.contract.columnar import SCHEMAS_ARROW
from ridematch_nb.contract.events import EVENT_TYPES

log = logging.getLogger(__name__)

REJECTED = "_rejected"
PENDING = "_etl/pending"


class S3Unavailable(RuntimeError):
    """S3 cannot be reached or refused a write; names the endpoint and the fix."""


def chunk_name(topic: str, partition: int, first: int, last: int) -> str:
    """The deterministic file stem of a chunk of one partition's offsets."""
    return f"{topic}+{partition}+{first:020d}+{last:020d}"


def data_key(prefix: str, event_type: str, date: str, hour: int, stem: str) -> str:
    return lake_path(prefix, f"{event_type}/date={date}/hour={hour:02d}/{stem}.parquet")


def rejected_key(prefix: str, stem: str) -> str:
    return lake_path(prefix, f"{REJECTED}/{stem}.parquet")


def pending_key(prefix: str, topic: str, partition: int, first: int, last: int) -> str:
    return lake_path(prefix, f"{PENDING}/{topic}/{partition}/{first:020d}+{last:020d}.json")


def dataset_prefix(settings: Settings, prefix: str | None = None) -> str:
    """The dataset root inside the bucket: the one given, else the profile's."""
    return (settings.prefix if prefix is None else prefix).strip("/")


def lake_path(prefix: str, rest: str) -> str:
    return f"{prefix.strip('/')}/{rest}" if prefix.strip("/") else rest


def s3_client(settings: Settings, credentials: bool = True, **kw):
    """A botocore S3 client for the configured endpoint (unsigned if credentials=False)."""
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config

    cfg = Config(
        connect_timeout=kw.pop("connect_timeout", 3),
        read_timeout=kw.pop("read_timeout", 10),
        retries={"max_attempts": kw.pop("max_attempts", 2)},
        **({} if credentials else {"signature_version": UNSIGNED}),
    )
    extra = {}
    if credentials:
        key, secret = settings.s3_credentials()
        extra = {"aws_access_key_id": key, "aws_secret_access_key": secret}
    session = botocore.session.get_session()
    return session.create_client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        region_name=settings.s3_region,
        config=cfg,
        **extra,
        **kw,
    )


@dataclass
class Lake:
    """Durable puts, listing and deletes in the data bucket, with errors that name S3."""

    settings: Settings

    def __post_init__(self) -> None:
        self.bucket = self.settings.bucket
        self.client = s3_client(self.settings, max_attempts=3, read_timeout=30)

    def _fail(self, action: str, exc: Exception) -> S3Unavailable:
        return S3Unavailable(
            f"S3 at {self.settings.s3_endpoint} failed to {action} in bucket {self.bucket} "
            f"({type(exc).__name__}: {exc}).\n  fix: start the local stack with `make stack-up` "
            f"(or check services.s3_endpoint and the S3 keys); nothing after the last "
            f"committed offset was committed, so a rerun continues from there"
        )

    def put(self, key: str, body: bytes) -> None:
        """PUT an object; when this returns, S3 has it durably."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"write {key}", exc) from exc

    def put_table(self, key: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self.put(key, buf.getvalue())

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"read {key}", exc) from exc

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (botocore's paginator follows the continuation)."""
        return list(self.etags(prefix))

    def etags(self, prefix: str) -> dict[str, str]:
        """Every key under ``prefix`` with its ETag (which changes with the content)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        )
        try:
            return {obj["Key"]: obj["ETag"] for page in pages for obj in page.get("Contents", [])}
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(f"list {prefix}", exc) from exc

    def delete(self, keys: Iterable[str]) -> None:
        """Delete objects; raises unless S3 deleted every one. DeleteObjects answers 200
        even when it refused some keys: the refusals come back in its ``Errors``."""
        keys = list(keys)
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            try:
                reply = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
            except (BotoCoreError, ClientError) as exc:
                raise self._fail("delete objects", exc) from exc
            refused = reply.get("Errors") or []
            if refused:
                first = refused[0]
                raise S3Unavailable(
                    f"S3 at {self.settings.s3_endpoint} refused to delete {len(refused)} of "
                    f"{len(batch)} objects in bucket {self.bucket}, e.g. {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message', '')}".rstrip()
                    + "\n  fix: check the S3 keys' permissions; nothing was committed past "
                    "these objects, so a rerun deletes them again"
                )

    def put_json(self, key: str, data: dict) -> None:
        self.put(key, json.dumps(data).encode())


def filesystem(settings: Settings):
    """A pyarrow S3 filesystem for the configured endpoint and keys."""
    from pyarrow import fs

    key, secret = settings.s3_credentials()
    scheme, _, host = settings.s3_endpoint.partition("://")
    return fs.S3FileSystem(
        access_key=key,
        secret_key=secret,
        endpoint_override=host,
        scheme=scheme or "https",
        region=settings.s3_region,
    )


def read_dataset(
    settings: Settings,
    event_type: str,
    prefix: str | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """One landed dataset (all its date/hour partitions) as a table; empty if none landed."""
    import pyarrow.dataset as ds

    root = f"{settings.bucket}/{lake_path(dataset_prefix(settings, prefix), event_type)}"
    schema = SCHEMAS_ARROW[event_type]
    try:
        dataset = ds.dataset(
            root,
            filesystem=filesystem(settings),
            format="parquet",
            schema=schema,
            partitioning="hive",
            exclude_invalid_files=False,
        )
        # files are small and S3 answers each after a round trip: read 16 at a time
        return dataset.to_table(columns=columns, fragment_readahead=16)
    except FileNotFoundError:
        return schema.empty_table() if columns is None else schema.empty_table().select(columns)
    except OSError as exc:
        raise S3Unavailable(
            f"S3 at {settings.s3_endpoint}: cannot read {root} ({exc}).\n"
            "  fix: start the local stack with `make stack-up`"
        ) from exc


def read_rejected(settings: Settings, prefix: str | None = None) -> pa.Table:
    """Everything in the rejected area: raw bytes, reason, partition and offset."""
    lake = Lake(settings)
    keys = lake.keys(lake_path(dataset_prefix(settings, prefix), REJECTED) + "/")
    tables = [pq.read_table(io.BytesIO(lake.get(k))) for k in keys]
    return pa.concat_tables(tables) if tables else pa.table({})


def forget_topic_files(settings: Settings, topic: str, prefix: str | None = None) -> int:
    """Delete every file landed or rejected from ``topic`` and its pending manifests (the
    lake's part of forgetting a topic's earlier history). Returns how many went."""
    lake = Lake(settings)
    root = dataset_prefix(settings, prefix)
    stale = [
        key
        for area in [*EVENT_TYPES, REJECTED, f"{PENDING}/{topic}"]
        for key in lake.keys(lake_path(root, area) + "/")
        if area.startswith(PENDING) or key.rsplit("/", 1)[1].startswith(f"{topic}+")
    ]
    lake.delete(stale)
    return len(stale)
