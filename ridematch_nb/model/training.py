"""The matching model: one training row per offer, labelled by the driver's answer,
with driver features from Feast as of the offer time (point in time) and request
features computed by the same function offline and online.

Baselines: the nearest driver (score = -pickup distance) and the driver's own
accept_rate_7d. Split by time: the model is judged on a later period it never saw.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import log_loss, ndcg_score, roc_auc_score

from ridematch_nb.config import Settings
from ridematch_nb.features.store import STORE_FEATURES
from ridematch_nb.geo import CITY_TZ, distance_km
from ridematch_nb.lake.storage import read_dataset
from ridematch_nb.model.flat_trees import FlatTrees

MODEL_FEATURES = [
    "pickup_km",
    "trip_km",
    "hour_sin",
    "hour_cos",
    "accept_rate_7d",
    "avg_response_ms",
    "stale_status",
]
LABEL = "accepted"


class ModelMismatch(ValueError):
    """A saved model expects features the store does not serve (or the other way round)."""


def request_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Derived features, computed identically for training rows and live requests.

    Needs: lat, lon (the driver, from the store), origin_lat/lon, dest_lat/lon,
    timestamp (UTC), status (from the store)."""
    return pd.DataFrame(derived_features(frame, frame["timestamp"]), index=frame.index)


def derived_features(cols, timestamps) -> dict[str, np.ndarray]:
    """The math of ``request_features`` on any columns (a frame, or a dict of arrays as
    serving builds for a request's candidates); ``timestamps`` is one per row, or one
    for all. Serving calls this directly: pandas frames cost more than the math."""
    lat, lon = np.asarray(cols["lat"], float), np.asarray(cols["lon"], float)
    o_lat, o_lon = np.asarray(cols["origin_lat"], float), np.asarray(cols["origin_lon"], float)
    d_lat, d_lon = np.asarray(cols["dest_lat"], float), np.asarray(cols["dest_lon"], float)
    # one request: a Timestamp converts faster than an index
    one = np.ndim(timestamps) == 0
    local = (pd.Timestamp if one else pd.DatetimeIndex)(timestamps).tz_convert(CITY_TZ)
    frac = np.atleast_1d(np.asarray((local.hour + local.minute / 60) / 24))
    n = len(lat)
    return {
        "pickup_km": distance_km(lat, lon, o_lat, o_lon),
        "trip_km": np.broadcast_to(distance_km(o_lat, o_lon, d_lat, d_lon), n).copy(),
        "hour_sin": np.broadcast_to(np.sin(2 * math.pi * frac), n).copy(),
        "hour_cos": np.broadcast_to(np.cos(2 * math.pi * frac), n).copy(),
        # the store's last status is not 'idle' when the driver's newest report predates
        # the moment it became free: a sign its position is stale too
        "stale_status": (np.asarray(cols["status"]) != "idle").astype(float),
    }


def offers_with_requests(settings: Settings) -> pd.DataFrame:
    """Every landed offer with its request's origin and destination."""
    offers = read_dataset(settings, "offer_outcome").to_pandas()
    requests = read_dataset(
        settings,
        "rider_request",
        columns=["request_id", "origin_lat", "origin_lon", "dest_lat", "dest_lon"],
    ).to_pandas()
    return offers.merge(requests, on="request_id", how="inner", validate="many_to_one")


def training_set(fs, offers: pd.DataFrame, feature_service: str) -> pd.DataFrame:
    """Driver features as of each offer's time (Feast point-in-time join) + request features."""
    entity_df = offers[["driver_id", "timestamp", "offer_id"]].rename(
        columns={"timestamp": "event_timestamp"}
    )
    hist = fs.get_historical_features(
        entity_df=entity_df, features=fs.get_feature_service(feature_service)
    ).to_df()
    offers = offers.rename(columns={"pickup_km": "offer_pickup_km"})  # the simulator's own
    rows = offers.drop(columns=["driver_lat", "driver_lon"]).merge(
        hist.drop(columns=["driver_id", "event_timestamp"]), on="offer_id", how="inner"
    )
    rows = rows.dropna(subset=STORE_FEATURES).reset_index(drop=True)
    return pd.concat([rows, request_features(rows)], axis=1)


def split_by_time(rows: pd.DataFrame, test_share: float = 0.25):
    """Train on the earlier part of the period, test on the later (no random split)."""
    cut = rows["timestamp"].quantile(1 - test_share)
    return rows[rows["timestamp"] < cut], rows[rows["timestamp"] >= cut], cut


def ranking_metrics(test: pd.DataFrame, score: np.ndarray) -> dict:
    """Per request with several offers and one acceptance: is the top-scored driver the
    one who accepted (top-1), and NDCG of the whole ranking."""
    frame = test.assign(score=score)
    top1, ndcg, n = [], [], 0
    for _, group in frame.groupby("request_id"):
        if len(group) < 2 or not group[LABEL].any():
            continue
        n += 1
        top1.append(bool(group.loc[group["score"].idxmax(), LABEL]))
        ndcg.append(ndcg_score([group[LABEL].astype(float)], [group["score"]]))
    return {
        "requests": n,
        "top1": float(np.mean(top1)) if n else None,
        "ndcg": float(np.mean(ndcg)) if n else None,
    }


def evaluate(test: pd.DataFrame, scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """AUC, log loss (for probabilities) and ranking metrics of every scorer."""
    rows = []
    for name, score in scores.items():
        is_prob = bool(np.all((score >= 0) & (score <= 1)))
        rows.append(
            {
                "scorer": name,
                "auc": roc_auc_score(test[LABEL], score),
                "log_loss": log_loss(test[LABEL], np.clip(score, 1e-6, 1 - 1e-6))
                if is_prob
                else None,
                **ranking_metrics(test, score),
            }
        )
    return pd.DataFrame(rows).set_index("scorer")


def logged_bias(test: pd.DataFrame, scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """What the logged ranking metrics reward. Dispatch offered nearest-first and stopped
    at the first acceptance, so in every ranked request the accepted offer is the last
    and farthest one made: a scorer that knows only the order offers were made in
    (later first) gets a perfect top-1, and any scorer that prefers near drivers is
    marked down. First offers are not chosen by their outcome: there, each scorer's AUC
    measures what it knows about acceptance without that bias."""
    first = test["offer_rank"].to_numpy() == 1
    last_first = ranking_metrics(test, test["offer_rank"].to_numpy(dtype=float))
    rows = [
        {
            "scorer": name,
            "first_offer_auc": roc_auc_score(test[LABEL][first], score[first]),
            "top1": ranking_metrics(test, score)["top1"],
        }
        for name, score in scores.items()
    ]
    rows.append({"scorer": "last_offered_first", "first_offer_auc": None, **last_first})
    return pd.DataFrame(rows).set_index("scorer")[["first_offer_auc", "top1"]]


@dataclass
class TrainedModel:
    model: HistGradientBoostingClassifier
    feature_service: str
    features: list[str]
    params: dict
    data_range: dict
    metrics: dict = field(default_factory=dict)
    _flat: FlatTrees | bool | None = field(default=None, init=False, repr=False, compare=False)

    def scores(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(frame[self.features])[:, 1]

    def flat_trees(self) -> FlatTrees | None:
        """The trees flattened, built at the first call (the service makes it when it
        loads a model, not in its first request); None for a model FlatTrees does not
        handle, which scikit-learn then scores."""
        if self._flat is None:
            try:
                self._flat = FlatTrees(self.model)
            except ValueError:
                self._flat = False
        return self._flat or None

    def score_columns(self, cols: dict) -> np.ndarray:
        """``scores`` for a handful of rows given as columns (serving one request's
        candidates, the dispatch replay): a DataFrame costs more than the trees there,
        and scikit-learn's call per tree more than the trees flattened (``FlatTrees``:
        the same scores). The columns go in the model's feature order, which is what
        the names checked."""
        X = np.column_stack([np.asarray(cols[f], dtype=float) for f in self.features])
        flat = self.flat_trees()
        if flat:
            return flat.proba(X)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            return self.model.predict_proba(X)[:, 1]


def train(train_rows: pd.DataFrame, feature_service: str, seed: int = 0, **params) -> TrainedModel:
    """Gradient-boosted trees on the model features (early stopping on a time-later slice)."""
    settings = {
        "max_iter": 300,
        "learning_rate": 0.05,
        "max_leaf_nodes": 8,  # small trees: a few thousand offers, a handful of features
        "min_samples_leaf": 40,
        "l2_regularization": 1.0,
        "early_stopping": True,
        "random_state": seed,
        **params,
    }
    model = HistGradientBoostingClassifier(**settings)
    model.fit(train_rows[MODEL_FEATURES], train_rows[LABEL].astype(int))
    rng = {
        "from": str(train_rows["timestamp"].min()),
        "to": str(train_rows["timestamp"].max()),
        "rows": len(train_rows),
    }
    return TrainedModel(model, feature_service, list(MODEL_FEATURES), settings, rng)


def baseline_scores(test: pd.DataFrame, trained: TrainedModel) -> dict[str, np.ndarray]:
    return {
        "model": trained.scores(test),
        "nearest_driver": -test["pickup_km"].to_numpy(),
        "accept_rate_7d": test["accept_rate_7d"].to_numpy(),
    }


def save(trained: TrainedModel, folder: Path, reference: pd.DataFrame | None = None) -> Path:
    """The model and a card: feature service, features, parameters, data range, metrics,
    library versions; with ``reference`` (the training rows), the sample the service
    measures feature drift against."""
    import joblib

    from ridematch_nb.model.drift import save_reference

    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(trained.model, folder / "model.joblib")
    if reference is not None:
        save_reference(reference, trained.features, folder)
    card = {
        "feature_service": trained.feature_service,
        "store_features": STORE_FEATURES,
        "model_features": trained.features,
        "params": trained.params,
        "train_data": trained.data_range,
        "metrics": trained.metrics,
        "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {p: version(p) for p in ("scikit-learn", "feast", "pandas", "numpy")},
    }
    (folder / "model_card.json").write_text(json.dumps(card, indent=2, default=str))
    return folder


def load(folder: Path, fs) -> TrainedModel:
    """Load a saved model, refusing it when the store's feature service differs."""
    import joblib

    card = json.loads((folder / "model_card.json").read_text())
    service = fs.get_feature_service(card["feature_service"])
    served = sorted(f.name for proj in service.feature_view_projections for f in proj.features)
    if served != sorted(card["store_features"]):
        raise ModelMismatch(
            f"model in {folder} was trained on {sorted(card['store_features'])} from "
            f"{card['feature_service']}, but the store serves {served}: retrain (notebook 05)"
        )
    model = joblib.load(folder / "model.joblib")
    return TrainedModel(
        model,
        card["feature_service"],
        card["model_features"],
        card["params"],
        card["train_data"],
        card["metrics"],
    )


def importance(trained: TrainedModel, rows: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Permutation importance of each model feature on ``rows`` (drop in AUC when the
    feature is shuffled, mean and spread over 5 shuffles), largest first."""
    from sklearn.inspection import permutation_importance

    result = permutation_importance(
        trained.model,
        rows[trained.features],
        rows[LABEL].astype(int),
        scoring="roc_auc",
        n_repeats=5,
        random_state=seed,
    )
    table = pd.DataFrame(
        {"mean": result.importances_mean, "std": result.importances_std}, index=trained.features
    )
    return table.sort_values("mean", ascending=False)
