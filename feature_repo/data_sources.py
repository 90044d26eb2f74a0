"""Data sources: the ETL's parquet datasets in S3, and a push source for the stream.

Static on purpose: no endpoint, key or profile here. The path is the local profile's
lake; ridematch_nb.features.store gives copies of these definitions each profile's lake path
(its bucket and prefix, as its offline store names the files) and S3 endpoint.
"""

from feast import FileSource, PushSource
from feast.data_format import ParquetFormat

# Every driver_update the ETL landed: position, status and rolling statistics.
driver_updates = FileSource(
    name="driver_updates",
    path="s3://ridematch-raw/driver_update/",
    file_format=ParquetFormat(),
    timestamp_field="timestamp",
    description="ETL output: one row per driver_update event",
)

# The newest driver state pushed straight from the stream between materializations.
driver_updates_push = PushSource(
    name="driver_updates_push",
    batch_source=driver_updates,
    description="Fresh driver updates written online as they arrive",
)
