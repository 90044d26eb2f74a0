"""Data sources: the ETL's parquet datasets in S3, and a push source for the stream."""

import os

from feast import FileSource, PushSource
from feast.data_format import ParquetFormat


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set: use the repository through ridematch_nb.features, "
            "which sets it from the params profile"
        )
    return value


LAKE = _env("RIDEMATCH_LAKE_URI")  # s3://<bucket>[/<prefix>]
S3_ENDPOINT = _env("RIDEMATCH_S3_ENDPOINT")

# How the store names the dataset's files: DuckDB reads them through a glob over every
# date=/hour= partition, others (dask, Ray, Spark) take the folder. Set per offline store
# by ridematch_nb.offline; the data and the definitions are the same.
FILES = os.environ.get("RIDEMATCH_LAKE_FILES", "")

# Every driver_update the ETL landed: position, status and rolling statistics.
driver_updates = FileSource(
    name="driver_updates",
    path=f"{LAKE}/driver_update/{FILES}",
    file_format=ParquetFormat(),
    timestamp_field="timestamp",
    s3_endpoint_override=S3_ENDPOINT,
    description="ETL output: one row per driver_update event",
)

# The newest driver state pushed straight from the stream between materializations.
driver_updates_push = PushSource(
    name="driver_updates_push",
    batch_source=driver_updates,
    description="Fresh driver updates written online as they arrive",
)
