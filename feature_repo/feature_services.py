"""Feature services: the feature sets models are trained and served with."""

from feast import FeatureService
from feature_views import driver_state, driver_stats

# Version 1 of the driver-matching model's inputs from the store.
driver_match_v1 = FeatureService(
    name="driver_match_v1",
    features=[driver_state, driver_stats],
    description="Driver features of the matching model, version 1",
)
