"""Feature views: what the matching model knows about a driver at a moment."""

from datetime import timedelta

from data_sources import driver_updates_push
from entities import driver
from feast import FeatureView, Field
from feast.types import Float64, Int64, String

# Where a driver is and what it is doing. Drivers report every minute or two while
# online, so a value older than 30 minutes says little about now.
driver_state = FeatureView(
    name="driver_state",
    entities=[driver],
    ttl=timedelta(minutes=30),
    schema=[
        Field(name="lat", dtype=Float64),
        Field(name="lon", dtype=Float64),
        Field(name="status", dtype=String),
    ],
    source=driver_updates_push,
    online=True,
    description="Latest position and status of each driver",
)

# How a driver answers offers: its own rolling 7-day statistics, slow to change.
driver_stats = FeatureView(
    name="driver_stats",
    entities=[driver],
    ttl=timedelta(days=7),
    schema=[
        Field(name="accept_rate_7d", dtype=Float64),
        Field(name="avg_response_ms", dtype=Int64),
    ],
    source=driver_updates_push,
    online=True,
    description="Rolling 7-day accept rate and mean response time of each driver",
)
