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

# Every driver_update the ETL landed: position, status and rolling statistics. The
# path names the files of every date=/hour= partition (a glob every offline store
# Feast offers understands; a bare folder is not read by its DuckDB store).
driver_updates = FileSource(
    name="driver_updates",
    path=f"{LAKE}/driver_update/date=*/hour=*/*.parquet",
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
