"""The flattened trees score what scikit-learn scores, missing values included."""

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from ridematch_nb.model.flat_trees import FlatTrees
from ridematch_nb.model.training import TrainedModel


def _model(seed=0, **params):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(3000, 5))
    X[rng.random(X.shape) < 0.1] = np.nan  # trees learn where missing values go
    y = (np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) * X[:, 2] ** 2 > 0.3).astype(int)
    y ^= (rng.random(len(y)) < 0.1).astype(int)
    settings = {"max_iter": 60, "max_leaf_nodes": 12, "random_state": seed, **params}
    return HistGradientBoostingClassifier(**settings).fit(X, y), rng


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_same_probabilities_as_scikit_learn(seed):
    model, rng = _model(seed)
    X = rng.normal(scale=2, size=(500, 5))
    X[rng.random(X.shape) < 0.2] = np.nan
    got = FlatTrees(model).proba(X)
    assert np.abs(got - model.predict_proba(X)[:, 1]).max() < 1e-12
    assert got.std() > 0.05  # the trees do split: not a constant


def test_a_value_on_a_threshold_goes_left_as_in_scikit_learn():
    model, _ = _model()
    nodes = model._predictors[0][0].nodes
    split = nodes[~nodes["is_leaf"].astype(bool)][0]
    X = np.zeros((3, 5))
    X[:, split["feature_idx"]] = [
        split["num_threshold"],
        np.nextafter(split["num_threshold"], 9),
        np.nan,
    ]
    assert np.abs(FlatTrees(model).proba(X) - model.predict_proba(X)[:, 1]).max() < 1e-12


def test_score_columns_uses_them_and_falls_back_for_categorical_splits():
    model, rng = _model()
    features = [f"f{i}" for i in range(5)]
    trained = TrainedModel(model, "svc", features, {}, {})
    cols = {f: rng.normal(size=20) for f in features}
    frame = pd.DataFrame(cols)
    assert np.allclose(trained.score_columns(cols), model.predict_proba(frame.to_numpy())[:, 1])
    assert isinstance(trained._flat, FlatTrees)
    X = np.column_stack([rng.integers(0, 4, 2000), rng.normal(size=2000)])
    y = (X[:, 0] == 2).astype(int)
    categorical = HistGradientBoostingClassifier(max_iter=10, categorical_features=[0]).fit(X, y)
    with pytest.raises(ValueError, match="categorical"):
        FlatTrees(categorical)
    fallback = TrainedModel(categorical, "svc", ["c", "x"], {}, {})
    got = fallback.score_columns({"c": X[:50, 0], "x": X[:50, 1]})
    assert fallback._flat is False
    assert np.allclose(got, categorical.predict_proba(X[:50])[:, 1])
