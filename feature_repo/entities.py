"""Entities: who the features describe."""

from feast import Entity, ValueType

# A driver of the marketplace, keyed by the driver_id of the event stream.
driver = Entity(
    name="driver",
    join_keys=["driver_id"],
    value_type=ValueType.STRING,
    description="A driver of the simulated marketplace",
)

# A rider; request-side features are computed per request (see ridematch_nb.model.training).
rider = Entity(
    name="rider",
    join_keys=["rider_id"],
    value_type=ValueType.STRING,
    description="A rider of the simulated marketplace",
)
