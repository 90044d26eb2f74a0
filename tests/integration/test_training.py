"""Training rows from Feast point-in-time joins, on crafted data; model card checks."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from ridematch_nb.contract.columnar import landed_table as to_table
from ridematch_nb.features import store as features
from ridematch_nb.lake.storage import Lake, chunk_name, data_key
from ridematch_nb.model import training

T0 = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)


def _ts(minute: float) -> tuple[str, datetime]:
    ts = T0 + timedelta(minutes=minute)
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ"), ts


def _land(settings, etype: str, events: list[dict]) -> None:
    rows = [(e, _ts_of(e), 0, i) for i, e in enumerate(events)]
    stem = chunk_name("crafted", 0, 0, len(rows) - 1)
    Lake(settings).put_table(
        data_key(settings.prefix, etype, "2026-10-05", 12, stem), to_table(etype, rows)
    )


def _ts_of(event: dict) -> datetime:
    return datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _update(driver, minute, rate):
    return {
        "event_type": "driver_update",
        "driver_id": driver,
        "lat": 40.75,
        "lon": -73.98,
        "status": "idle",
        "timestamp": _ts(minute)[0],
        "accept_rate_7d": rate,
        "avg_response_ms": 900,
    }


def test_a_value_written_after_the_offer_never_reaches_its_training_row(settings, unique):
    settings = settings.with_overrides(prefix=f"tests/{unique}")
    _land(
        settings,
        "driver_update",
        [
            _update("driver_l", 0, 0.20),
            _update("driver_l", 10, 0.99),  # crafted: after the offer at minute 5
        ],
    )
    request_id = str(uuid.uuid4())
    _land(
        settings,
        "rider_request",
        [
            {
                "event_type": "rider_request",
                "request_id": request_id,
                "rider_id": "rider_1",
                "origin": [40.76, -73.98],
                "dest": [40.70, -74.01],
                "timestamp": _ts(5)[0],
                "pref_vehicle": "sedan",
            }
        ],
    )
    _land(
        settings,
        "offer_outcome",
        [
            {
                "event_type": "offer_outcome",
                "offer_id": str(uuid.uuid4()),
                "request_id": request_id,
                "driver_id": "driver_l",
                "rider_id": "rider_1",
                "offer_rank": 1,
                "accepted": True,
                "response_ms": 1200,
                "pickup_km": 1.1,
                "driver_lat": 40.75,
                "driver_lon": -73.98,
                "timestamp": _ts(5)[0],
            }
        ],
    )
    fs = features.apply(settings, f"t_{unique}")
    rows = training.training_set(
        fs, training.offers_with_requests(settings), features.FEATURE_SERVICE
    )
    assert len(rows) == 1
    assert rows.loc[0, "accept_rate_7d"] == 0.20
    assert rows.loc[0, "pickup_km"] == pytest.approx(1.11, abs=0.02)  # from the store's position


def test_a_model_whose_features_differ_from_the_store_is_refused(settings, unique, tmp_path):
    settings = settings.with_overrides(prefix=f"tests/{unique}")
    _land(settings, "driver_update", [_update("driver_m", 0, 0.5)])
    fs = features.apply(settings, f"t_{unique}")
    rows = pd.DataFrame({f: [0.0, 1.0, 0.5, 0.2] for f in training.MODEL_FEATURES})
    rows["accepted"] = [True, False, True, False]
    rows["timestamp"] = pd.Timestamp(T0)
    trained = training.train(rows, features.FEATURE_SERVICE, max_iter=5, early_stopping=False)
    folder = training.save(trained, tmp_path / "model")
    assert training.load(folder, fs).features == training.MODEL_FEATURES
    card = json.loads((folder / "model_card.json").read_text())
    card["store_features"] = [*card["store_features"], "surge_multiplier"]
    (folder / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(training.ModelMismatch, match="surge_multiplier"):
        training.load(folder, fs)
