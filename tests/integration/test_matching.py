"""Matching on crafted drivers: only idle drivers within the radius, missing ones skipped."""

from datetime import UTC, datetime, timedelta

import pandas as pd
import redis

from ridematch_nb.features import online
from ridematch_nb.features import store as features
from ridematch_nb.geo import distance_km
from ridematch_nb.model import matching, training
from tests.helpers.lake import land, update

T0 = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)
ORIGIN = (40.750, -73.985)


def _tiny_model() -> training.TrainedModel:
    rows = pd.DataFrame({f: [0.0, 1.0, 0.5, 0.2] * 10 for f in training.MODEL_FEATURES})
    rows["accepted"] = [True, False, True, False] * 10
    rows["timestamp"] = pd.Timestamp(T0)
    return training.train(rows, features.FEATURE_SERVICE, max_iter=5, early_stopping=False)


def test_ranks_only_idle_drivers_within_the_radius_and_skips_missing(settings, unique):
    settings = settings.with_overrides(prefix=f"tests/{unique}")
    project = f"t_{unique}"
    near_idle = [update("d_near1", 1, 40.755), update("d_near2", 2, 40.745)]
    far_idle = [update("d_far", 3, 40.850)]  # ~11 km north
    near_busy = [update("d_busy", 4, 40.751, status="on_trip")]
    land(settings, near_idle + far_idle + near_busy)
    fs = features.apply(settings, project)
    features.materialize(fs, settings)
    latest = features.latest_offline(settings)
    assert online.rebuild_index(settings, project, latest) == 3  # the three idle ones
    # a driver in the index that the online store does not know
    redis.Redis.from_url(settings.redis_url).geoadd(
        online.index_key(project), [ORIGIN[1], ORIGIN[0] + 0.001, "d_ghost"]
    )

    matcher = matching.Matcher(settings, fs, _tiny_model(), project, radius_km=3.0)
    result = matcher.match(
        {
            "request_id": "r1",
            "origin_lat": ORIGIN[0],
            "origin_lon": ORIGIN[1],
            "dest_lat": 40.70,
            "dest_lon": -74.01,
            "timestamp": T0 + timedelta(minutes=5),
        }
    )
    assert set(result.ranked["driver_id"]) == {"d_near1", "d_near2"}
    assert result.skipped_missing == 1
    assert (result.ranked["status"] == "idle").all()
    for row in result.ranked.itertuples():
        assert row.pickup_km <= 3.0
        lat = latest.loc[row.driver_id, "lat"]
        assert abs(row.pickup_km - distance_km(lat, -73.98, *ORIGIN)) < 1e-9
    assert list(result.ranked["score"]) == sorted(result.ranked["score"], reverse=True)
    assert set(result.timings_ms) == {"candidates", "features", "scoring", "total"}
