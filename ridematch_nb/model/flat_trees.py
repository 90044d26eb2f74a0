"""The trained trees, flattened into numpy arrays, for the few rows of one request.

scikit-learn's ``predict_proba`` calls each tree's compiled predictor in turn; for a
request's 20 candidates and a hundred trees, that per-tree call is most of the time
(py-spy and cProfile on the match service: 2.4 ms a request, 1.3 of them in 112 calls
of ``TreePredictor.predict``). Here every tree's nodes sit in one array and all trees
step down together, one numpy gather per level: the same arithmetic (a value at or
below the node's threshold goes left, a missing one where the node sends missing
values), so the same scores, which ``tests/unit/test_flat_trees.py`` holds to
scikit-learn's on random and missing inputs. Categorical splits are not handled: a
model with one is refused, and ``TrainedModel`` then scores with scikit-learn.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit


class FlatTrees:
    """A binary ``HistGradientBoostingClassifier``'s trees in flat arrays."""

    def __init__(self, model) -> None:
        if model.n_trees_per_iteration_ != 1:
            raise ValueError("FlatTrees handles binary classifiers only")
        nodes = [predictor.nodes for (predictor,) in model._predictors]
        if any(n["is_categorical"].any() for n in nodes):
            raise ValueError("FlatTrees does not handle categorical splits")
        offsets = np.cumsum([0] + [len(n) for n in nodes[:-1]])
        flat = np.concatenate(nodes)
        shift = np.repeat(offsets, [len(n) for n in nodes])
        self.roots = offsets.astype(np.intp)
        self.feature = flat["feature_idx"].astype(np.intp)
        self.threshold = flat["num_threshold"].astype(float)
        self.missing_left = flat["missing_go_to_left"].astype(bool)
        self.leaf = flat["is_leaf"].astype(bool)
        # children as indices into the flat arrays; a leaf points at itself, so a row
        # that reached its leaf stays there while deeper trees go on stepping
        own = np.arange(len(flat))
        self.left = np.where(self.leaf, own, flat["left"] + shift).astype(np.intp)
        self.right = np.where(self.leaf, own, flat["right"] + shift).astype(np.intp)
        self.value = flat["value"].astype(float)
        self.depth = int(flat["depth"].max())
        self.baseline = float(np.ravel(model._baseline_prediction)[0])

    def raw(self, X: np.ndarray) -> np.ndarray:
        """The decision function: baseline plus the sum of each tree's leaf value."""
        X = np.asarray(X, dtype=float)
        rows = np.arange(len(X))[:, None]
        at = np.broadcast_to(self.roots, (len(X), len(self.roots))).copy()
        for _ in range(self.depth):
            x = X[rows, self.feature[at]]
            go_left = np.where(np.isnan(x), self.missing_left[at], x <= self.threshold[at])
            at = np.where(go_left, self.left[at], self.right[at])
        return self.baseline + self.value[at].sum(axis=1)

    def proba(self, X: np.ndarray) -> np.ndarray:
        """Probability of the positive class (what ``predict_proba(X)[:, 1]`` gives)."""
        return expit(self.raw(X))
